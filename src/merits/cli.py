"""The one command line: ``merits <step> ...``.

    merits demo                         Stage I + II text on the embedded MELD with the offline encoder
    merits prepare meld --root DIR      build, check and save a corpus manifest; print its counts
    merits train CONFIG [key=value ...] run an experiment (every stage, every seed) and print Table I
    merits report RUN_DIR               print the report of a finished experiment
    merits teach CONFIG [key=value ...] label a manifest's transcripts with a teacher (LLM or VADER) into a store
    merits agreement CONFIG [key=value ...]  the stored teachers' agreement with gold sentiment or valence
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
    path = Path(args.run_dir) / "report.md"
    if not path.is_file():
        raise MeritsError(f"{args.run_dir} has no report.md: is it a finished experiment directory (runs/<name>)?")
    print(path.read_text())


def _teach_config(args):
    from merits.config import TeachConfig, load_config

    # `merits teach key=value ...` (no profile) starts from the defaults.
    if "=" in args.config:
        return load_config(None, [args.config, *args.overrides], cls=TeachConfig)
    return load_config(args.config, args.overrides, cls=TeachConfig)


def cmd_teach(args) -> int:
    from merits.pretrain.teach import run_teach

    run = run_teach(_teach_config(args))
    print(run.summary())
    return 3 if run.stopped else 0  # not everything was labelled: scripts can tell, a rerun continues


def cmd_agreement(args) -> None:
    import json

    from merits.pretrain.teach import run_agreement

    table = run_agreement(_teach_config(args), args.teacher)
    print(table.to_markdown())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(table.to_dict(), indent=2))
        print(f"\nwritten to {args.json}")


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

    p = sub.add_parser("report", help="print the report of a finished experiment")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("teach", help="pseudo-label transcripts with a teacher into the label store (resumable)")
    p.add_argument("config", help="a YAML file or shipped profile (teach-vader, teach-local, teach-openai), "
                                  "or directly the first key=value override")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. data.corpus=meld splits=[train] limit=200 "
                                                "chat.base_url=http://localhost:8000/v1 export=manifests/pseudo")
    p.set_defaults(func=cmd_teach)

    p = sub.add_parser("agreement", help="agreement of stored teacher labels with gold sentiment or valence")
    p.add_argument("config", help="the teach config (its store and manifest are read), or the first key=value")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. agreement.reference=valence agreement.negative_below=3")
    p.add_argument("--teacher", action="append", help="only this teacher name (repeatable; default: all stored)")
    p.add_argument("--json", help="also write the table as JSON to this file")
    p.set_defaults(func=cmd_agreement)
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
        rc = args.func(args)
    except MeritsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept under runs/ and skipped on the next run", file=sys.stderr)
        return 130
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
