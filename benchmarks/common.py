"""What every benchmark records beside its figures (the command, the date and the machine), and the paths they share.

Benchmarks run as ``python benchmarks/x.py`` from any directory: every path they use is absolute (under the project,
or the shared data beside it), given to the profiles as overrides by :func:`bench_config`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PROJECT = Path(__file__).resolve().parents[1]
DATA = PROJECT.parent / "shared" / "data"                # the corpora, beside the project
MOSI_TABLE = DATA / "mosi" / "mosi_utterances.csv"      # CMU-MOSI: transcripts, labels and the a0..a72 features
sys.path.insert(0, str(PROJECT / "tests"))              # tests/mock_chat_server.py and the test fixtures

# Per profile, the overrides that replace its relative paths (which would depend on the working directory).
PROFILE_PATHS = {
    "mosi-offline": [f"data.root={MOSI_TABLE}", f"speech_encoder.model={MOSI_TABLE}"],
    "mosi-offline-base": [f"data.root={MOSI_TABLE}", f"speech_encoder.model={MOSI_TABLE}"],
}


def project_paths(profile: str | None) -> list[str]:
    """Overrides giving the runs, the feature cache and the profile's data absolute paths under the project."""
    return [f"runs_dir={PROJECT / 'runs'}", f"cache_dir={PROJECT / '.cache' / 'features'}",
            *PROFILE_PATHS.get(str(profile), [])]


def bench_config(profile: str | None, overrides=()):
    """``load_experiment(profile, overrides)`` with :func:`project_paths` first (so given overrides still win)."""
    from merits.experiment import load_experiment

    return load_experiment(profile, project_paths(profile) + list(overrides))


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(name: str, figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = dict(figures)
    script = Path(sys.argv[0]).resolve()
    script = script.relative_to(PROJECT) if script.is_relative_to(PROJECT) else script
    record.update(command=" ".join(["python", str(script)] + sys.argv[1:]), date=datetime.datetime.now().isoformat(timespec="seconds"),
                  machine=machine())
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")
    return path


def frozen_text_embeddings(texts: list[str], model: str = "all-MiniLM-L6-v2", batch: int = 256):
    """(N, D) mean-pooled embeddings of a frozen text encoder: the logistic-regression references' text features."""
    import numpy as np
    import torch

    from merits.encoders.text import TextBatcher, load_tokenizer_and_encoder, pool

    tok, enc = load_tokenizer_and_encoder(model)
    batcher = TextBatcher(tok, 128)
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            b = batcher.encode(texts[i:i + batch])
            out.append(pool(enc(**b).last_hidden_state, b["attention_mask"], "mean").numpy())
    return np.concatenate(out)


# The benchmark experiments other benchmarks read: name -> (profile, overrides). meld_text.py and mosi_hierarchy.py
# train them; predict_speed.py, causal_context.py and meld_stage2_sweep.py read their checkpoints and embeddings.
BENCH_RUNS = {
    "meld": ("offline", ["name=bench-meld-text", "seeds=[0, 1, 2]"]),
    "mosi": ("mosi-offline", ["name=bench-mosi-hierarchy", "seeds=[0, 1, 2, 3, 4]", "combined=true"]),
    # the stronger offline tier (all-mpnet-base-v2; merits[base]): meld_text.py / mosi_hierarchy.py --base
    "meld_base": ("offline-base", ["name=bench-meld-text-base", "seeds=[0, 1, 2]"]),
    "mosi_base": ("mosi-offline-base", ["name=bench-mosi-hierarchy-base", "seeds=[0, 1, 2, 3, 4]", "combined=true"]),
}


def tier(dataset: str, argv: list[str]) -> tuple[str, list[str]]:
    """(BENCH_RUNS key, the other arguments): ``--base`` picks the stronger offline tier's run."""
    return (f"{dataset}_base" if "--base" in argv else dataset), [a for a in argv if a != "--base"]


def finished_run(profile: str, overrides: list[str]):
    """A benchmark's trained run (``merits.predict.TrainedRun``) as it is on disk when its final stage is finished for
    its first seed, whatever code version trained it (only its checkpoints and outputs are read); otherwise it is
    trained first."""
    from merits.errors import ConfigError
    from merits.pipeline import run_experiment
    from merits.predict import TrainedRun

    cfg = bench_config(profile, overrides)
    try:
        run = TrainedRun.open(Path(cfg.runs_dir) / cfg.name)
        for seed in cfg.seeds:
            run.checkpoint(run.final_stage(), seed)
        return run
    except ConfigError:
        run_experiment(cfg)
        return TrainedRun.open(Path(cfg.runs_dir) / cfg.name)


def seconds_per_epoch(run_dir: str, stage: str, seed: int, metrics: dict) -> float:
    """A stage's seconds per epoch; a stacked Stage I has none of its own: the median of its fold models'."""
    if "seconds_per_epoch" in metrics:
        return metrics["seconds_per_epoch"]
    folds = sorted(Path(run_dir, stage, "folds", f"seed-{seed}").glob("fold-*/metrics.json"))
    return float(np.median([json.loads(f.read_text())["seconds_per_epoch"] for f in folds]))
