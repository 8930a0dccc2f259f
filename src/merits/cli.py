"""The one command line: ``merits <step> ...``.

    merits demo                         Stage I + II text on the embedded MELD with the offline encoder
    merits prepare meld --root DIR      build, check and save a corpus manifest; print its counts
    merits train CONFIG [key=value ...] run an experiment (every stage, every seed) and print Table I
    merits report RUN_DIR [RUN_DIR ...] print the report of a finished experiment (several: one Table I)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from merits.errors import MeritsError

log = logging.getLogger("merits")
DEMO_CONFIG = "offline"


def _options(items) -> dict:
    import yaml

    out = {}
    for item in items or ():
        key, _, raw = item.partition("=")
        out[key] = yaml.safe_load(raw) if raw else None
    return out


def cmd_prepare(args) -> None:
    from merits.data import prepare

    manifest = prepare(args.corpus, args.root, **_options(args.option))
    print(manifest.report())
    if args.out:
        print(f"manifest written to {manifest.save(args.out)}")


def cmd_train(args) -> None:
    from merits.config import load_config
    from merits.pipeline import run_experiment

    cfg = load_config(args.config, args.overrides)
    result = run_experiment(cfg)
    print()
    print(result["table"])
    print(f"\nreport, per-class scores and plots: {result['dir']}/ (report.md, results.json, stages.png, "
          f"<stage>/seed-<k>/confusion_test.png)")


def cmd_demo(args) -> None:
    args.config = DEMO_CONFIG
    cmd_train(args)


def cmd_report(args) -> None:
    if len(args.run_dirs) > 1:  # one Table I column per experiment (e.g. one per dataset)
        from merits.report import combine

        print(combine(args.run_dirs))
        return
    path = Path(args.run_dirs[0]) / "report.md"
    if not path.is_file():
        raise MeritsError(f"{args.run_dirs[0]} has no report.md: is it a finished experiment directory (runs/<name>)?")
    print(path.read_text())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merits", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build and check a corpus manifest")
    p.add_argument("corpus", help="meld | iemocap | mosi | msp_podcast | custom")
    p.add_argument("--root", help="the raw release (default for meld: the embedded text CSVs)")
    p.add_argument("--out", help="directory to save manifest.csv + manifest.json")
    p.add_argument("--option", "-o", action="append", help="adapter option key=value (repeatable)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="run an experiment from a config")
    p.add_argument("config", help="a YAML file, or a shipped profile name (offline, meld, iemocap, mosi)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stage1_text.epochs=2 seeds=[0]")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="the main job on the embedded default (MELD text, offline encoder)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the offline profile")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="print the report of a finished experiment, or one Table I for several")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:
        os.environ["MERITS_QUIET"] = "1"
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        args.func(args)
    except MeritsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept under runs/ and skipped on the next run", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
