"""An exported model against its run folder (``benchmarks/results/export.json``): sizes, cold load time, and the
predictions of every turn, from the CLI, for a MELD run (offline profile: all-MiniLM-L6-v2, Text I + II) and a
CMU-MOSI run (mosi-offline: text and audio, stacked Stage I, Stages II and III).

    python benchmarks/export.py [--meld-epochs 1] [--threads 1]

Keys: ``run_folder_mb``, ``export_mb`` (MELD; per corpus under ``runs``), ``export_fraction``, ``load_seconds``
(``merits.load`` of the exported MELD model in a fresh process, median of 3; ``import_seconds`` beside it),
``identical_predictions`` (both corpora: ``merits predict`` on the run's own manifest, every turn of every split,
from the run folder and from the export: predictions.csv equal cell for cell), ``python_api_lines`` (the README's
Python example), and the seconds each part took. Stage I of MELD is limited to ``--meld-epochs`` epochs: sizes and
replay do not depend on how long it trained.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from common import PROJECT, bench_config, write_result

TARGETS = {"load_seconds": 3.0, "python_api_lines": 5}


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def merits(*args) -> None:
    subprocess.run([sys.executable, "-m", "merits", "-q", *args], check=True, cwd=PROJECT)


def one(corpus: str, meld_epochs: int, threads: int | None, tmp: Path) -> dict:
    from merits.pipeline import run_experiment

    profile = "offline" if corpus == "meld" else "mosi-offline"
    over = [f"name=bench-export-{corpus}", "seeds=[0]"] + ([f"stage1_text.epochs={meld_epochs}"] if corpus == "meld" else [])
    over += [f"threads={threads}"] if threads else []
    cfg = bench_config(profile, over)
    start = time.perf_counter()
    run_experiment(cfg)
    run = Path(cfg.runs_dir) / cfg.name
    out = {"train_seconds": time.perf_counter() - start}
    start = time.perf_counter()
    merits("export", str(run), str(tmp / corpus))
    out["export_seconds"] = time.perf_counter() - start
    tables = {}
    for name, folder in (("run", run), ("export", tmp / corpus)):
        start = time.perf_counter()
        merits("predict", str(folder), str(run / "manifest"), "--out", str(tmp / f"{corpus}-{name}"), "--device", "cpu")
        out[f"predict_{name}_seconds"] = time.perf_counter() - start
        tables[name] = pd.read_csv(tmp / f"{corpus}-{name}" / "predictions.csv", keep_default_na=False)
    a, b = tables["run"], tables["export"]
    out.update(run_folder_mb=folder_mb(run), export_mb=folder_mb(tmp / corpus), turns=len(a),
               identical_predictions=bool(a.shape == b.shape and (a.columns == b.columns).all() and a.equals(b)),
               turns_differing=int((a != b).any(axis=1).sum()) if a.shape == b.shape else len(a))
    return out


def load_seconds(folder: Path) -> tuple[float, float, float]:
    """merits.load in a fresh Python process: (seconds of the load, of `import merits.api` before it, of a second
    load in the same process: the part that is not importing code)."""
    code = ("import time; t = time.perf_counter(); import merits.api; i = time.perf_counter() - t; "
            f"t = time.perf_counter(); merits.load({str(folder)!r}, device='cpu'); a = time.perf_counter() - t; "
            f"t = time.perf_counter(); merits.load({str(folder)!r}, device='cpu'); print(a, i, time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    load, imported, again = (float(x) for x in done.stdout.split()[-3:])
    return load, imported, again


def load_figures(folder: Path) -> dict:
    loads = [load_seconds(folder) for _ in range(3)]
    return {"load_seconds": statistics.median(x for x, _, _ in loads), "load_seconds_each": [x for x, _, _ in loads],
            "import_seconds": statistics.median(i for _, i, _ in loads),
            "second_load_seconds": statistics.median(a for _, _, a in loads),
            "load_average_1min": os.getloadavg()[0]}


def readme_example_lines() -> int:
    """Lines of the README's Python example (the first ```python block), blank lines not counted."""
    block = re.search(r"```python\n(.*?)```", (PROJECT / "README.md").read_text(), re.S)
    return sum(1 for line in block.group(1).splitlines() if line.strip()) if block else -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meld-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--load-only", action="store_true", help="only the load time again (the MELD run must exist); "
                                                           "the other figures stay as committed")
    a = ap.parse_args()
    if a.load_only:
        import json

        from common import RESULTS, bench_config

        figures = json.loads((RESULTS / "export.json").read_text())
        run = Path(bench_config("offline", ["name=bench-export-meld"]).runs_dir) / "bench-export-meld"
        with tempfile.TemporaryDirectory() as tmp:
            merits("export", str(run), str(Path(tmp) / "meld"))
            figures.update(load_figures(Path(tmp) / "meld"))
        figures.pop("command", None)
        write_result("export", figures)
        return
    figures: dict = {"meld_stage1_epochs": a.meld_epochs, "runs": {}, "targets": TARGETS}
    with tempfile.TemporaryDirectory() as tmp:
        for corpus in ("meld", "mosi"):
            figures["runs"][corpus] = one(corpus, a.meld_epochs, a.threads, Path(tmp))
            print(corpus, figures["runs"][corpus], flush=True)
        figures.update(load_figures(Path(tmp) / "meld"))
    meld = figures["runs"]["meld"]
    figures.update(
        run_folder_mb=meld["run_folder_mb"], export_mb=meld["export_mb"],
        export_fraction=meld["export_mb"] / meld["run_folder_mb"],
        identical_predictions=all(r["identical_predictions"] for r in figures["runs"].values()),
        python_api_lines=readme_example_lines())
    write_result("export", figures)


if __name__ == "__main__":
    main()
