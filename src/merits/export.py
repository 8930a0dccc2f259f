"""``merits export RUN OUT``: a trained run as a self-contained model folder, to share and to use anywhere.

A run folder holds every seed, every stage's embeddings of every split, caches and locks; replay needs only each
replayed stage's checkpoint. The exported folder keeps the run layout for exactly that, so ``merits predict``,
``merits serve`` and :func:`merits.load` read it like the run (same code path, identical predictions)::

    OUT/
      config.yaml                      the run's config (the stage graph and every stage's settings)
      manifest/manifest.json           class names, corpus, counts per split (no rows: the training data stays home)
      <stage>/seed-<k>/checkpoint/     safetensors weights + stage.json (replay settings: tokens, context window,
                                       precision, speech encoder); Stage I text: encoder/ (a Hugging Face folder
                                       with its tokenizer, loadable by transformers alone) + head.safetensors
      <stage>/seed-<k>/metrics.json    what that seed scored
      model_card.md                    Hugging Face model-card layout: YAML metadata, then what it is, how it was
                                       trained, how to use it, its limits
      LICENSE                          the licence of the weights it contains
      merits-export.json               format, seeds, final stage, and every file's size and SHA-256, verified on load

Export refuses a run whose checkpoints do not load or are stale (every replayed checkpoint is loaded first), and
writes into ``OUT.partial``, swapped in whole: a killed export leaves no half folder.
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from merits import __version__
from merits.errors import ConfigError
from merits.integrity import LISTING, write_listing
from merits.packaged import packaged
from merits.predict import Predictor, TrainedRun
from merits.runs import DONE, finished_seeds
from merits.stages.base import STAGE_FILE
from merits.training.checkpoint import replace_dir

FORMAT = 1


def export_run(run_dir: str | Path, out: str | Path, seeds: list[int] | None = None,
               stage: str | None = None) -> dict:
    """Export ``run_dir`` (seeds: default every seed finished for every replayed stage, an ensemble; stage: the last
    one replayed, default the run's final stage) into ``out``; returns what was written (sizes in MB)."""
    run = TrainedRun.open(run_dir)
    out = Path(out)
    if run.exported:
        raise ConfigError(f"{run_dir} is already an exported model folder; export the run it came from")
    target = out.resolve()
    if target == run.directory.resolve() or run.directory.resolve() in target.parents:
        raise ConfigError(f"{out} is inside the run {run_dir}: export somewhere else")
    if out.exists() and any(out.iterdir()) and not (out / LISTING).is_file():
        raise ConfigError(f"{out} exists and is not an exported model folder: give a new or empty folder "
                          "(an earlier export there is replaced)")
    chain = run.graph.chain(stage or run.final_stage())
    if seeds is None:
        finished = [set(finished_seeds(run.directory, s.name)) for s in chain]
        seeds = sorted(set.intersection(*finished)) if finished else []
        if not seeds:
            raise ConfigError(f"{run_dir} has no seed finished for every stage up to {chain[-1].name}; "
                              "train them first (merits train)")
    # every checkpoint loads and matches config.yaml (Predictor's checks), before anything is written
    Predictor(run, seeds, chain[-1].name, device="cpu")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copyfile(run.directory / "config.yaml", partial / "config.yaml")
    meta = json.loads((run.directory / "manifest" / "manifest.json").read_text())
    meta.pop("source", None)  # where the training data lay on the trainer's disk: nobody else's business
    (partial / "manifest").mkdir()
    (partial / "manifest" / "manifest.json").write_text(json.dumps(meta, indent=2))
    scores: dict[str, dict[int, dict]] = {}
    for s in chain:
        for seed in seeds:
            src, dst = run.checkpoint(s.name, seed).parent, partial / s.name / f"seed-{seed}"
            shutil.copytree(src / "checkpoint", dst / "checkpoint")
            # an ensemble's members (a stacked Stage I's fold models) live beside it: stage.json names them
            info = json.loads((src / "checkpoint" / STAGE_FILE).read_text())
            for member in info.get("members", []) + info.get("replay", {}).get("members", []):
                at = (src / "checkpoint" / member).resolve().relative_to(run.directory.resolve())
                if not (partial / at).exists():
                    shutil.copytree(run.directory / at, partial / at)
            metrics = json.loads((src / DONE).read_text())["metrics"]
            (dst / "metrics.json").write_text(json.dumps(metrics, indent=2))
            outputs = {str(f.relative_to(dst)): f.stat().st_size for f in sorted(dst.rglob("*")) if f.is_file()}
            (dst / DONE).write_text(json.dumps({"metrics": metrics, "outputs": outputs}, indent=2))
            scores.setdefault(s.name, {})[seed] = metrics
    encoder = _text_encoder(run)
    licence = _licence(encoder)
    card = model_card(run, chain, seeds, scores, meta, encoder, licence)
    (partial / "model_card.md").write_text(card)
    (partial / "LICENSE").write_text(_licence_text(licence, encoder, meta.get("corpus", "")))
    write_listing(partial, {"format": FORMAT, "merits": __version__, "seeds": seeds, "stage": chain[-1].name,
                            "run": run.directory.name, "exported": datetime.datetime.now().isoformat(timespec="seconds")})
    replace_dir(partial, out)
    size = lambda folder: sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())  # noqa: E731
    return {"out": str(out), "seeds": seeds, "stage": chain[-1].name, "export_mb": size(out) / 2**20,
            "run_folder_mb": size(run.directory) / 2**20, "licence": licence}


def _text_encoder(run: TrainedRun) -> str | None:
    """The base text encoder of the run's Stage I text, where it has one."""
    if "text" not in run.cfg.modalities:
        return None
    return run.cfg.text_encoder.model


def _licence(encoder: str | None) -> str:
    entry = packaged(encoder, "text") if encoder else None
    return entry.licence if entry is not None else "other"


def _licence_text(licence: str, encoder: str | None, corpus: str) -> str:
    base = f"the base text encoder {encoder}" if encoder else "the models it contains"
    return (f"The weights in this folder are fine-tuned from {base}, released under {licence}; they are distributed "
            f"under the same licence ({licence}).\n\nThey were trained on {corpus or 'the data named in model_card.md'}: "
            "the training data's own terms of use apply to the use of a model trained on it (see its release).\n"
            "The code that runs them, merits, is under the MIT licence.\n")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def model_card(run: TrainedRun, chain, seeds: list[int], scores: dict, meta: dict, encoder: str | None,
               licence: str) -> str:
    """model_card.md in the Hugging Face layout: YAML metadata (task, languages, labels, metrics with their test
    figures, data), then what it is, how it was trained, how to use it, its limits."""
    corpus = meta.get("corpus", "")
    final = chain[-1]
    audio = any("audio" in s.modalities for s in chain)
    test = {s.name: [scores[s.name][k].get("test", {}).get("weighted_f1") for k in seeds] for s in chain}
    results = [{"type": "f1", "name": f"weighted F1, {s.label} (test, mean of {len(seeds)} seed(s))",
                "value": round(100 * _mean_std(test[s.name])[0], 2)}
               for s in chain if all(v is not None for v in test[s.name])]
    header = {
        "language": ["en"], "license": licence, "library_name": "merits",
        "pipeline_tag": "audio-classification" if audio and "text" not in final.modalities else "text-classification",
        "tags": ["emotion-recognition", "emotion-recognition-in-conversation", "merits"],
        "datasets": [corpus] if corpus else [], "metrics": ["f1"],
        "base_model": encoder, "labels": list(run.labels),
        "model-index": [{"name": run.directory.name, "results": [{
            "task": {"type": "text-classification", "name": "Emotion recognition in conversations"},
            "dataset": {"name": corpus, "type": corpus, "split": "test"}, "metrics": results}]}],
    }
    counts = meta.get("counts", {}).get("labels", {}).get("train", {})
    total = sum(counts.values()) or 1
    share = sorted(((n / total, label) for label, n in counts.items()), reverse=True)
    rows = []
    for s in chain:
        vals = [v for v in test[s.name] if v is not None]
        val = [scores[s.name][k].get("validation", {}).get("weighted_f1") for k in seeds]
        val = [v for v in val if v is not None]
        fmt = lambda xs: f"{100 * _mean_std(xs)[0]:.2f} ± {100 * _mean_std(xs)[1]:.2f}" if xs else "–"  # noqa: E731
        rows.append(f"| {s.label} | {fmt(val)} | {fmt(vals)} |")
    context = getattr(getattr(run.cfg, "stage1_text", None), "context", None)
    pooling = run.cfg.text_encoder.pooling if encoder and any(s.name == "stage1_text" for s in chain) else None
    reads = ("the utterance alone" if context is None or not (context.past or context.future or context.speakers)
             else f"{context.past} past and {context.future} later turn(s)" + (", with speaker names" if
                                                                                 context.speakers else ""))
    lines = [
        "---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
        f"# {run.directory.name}: emotions in conversations ({corpus})", "",
        "## What it is", "",
        f"A MERITS-L model trained with [merits](https://github.com/) on {corpus}: it labels every turn of a "
        f"conversation with one of {len(run.labels)} classes ({', '.join(run.labels)}). Stages replayed: "
        + " → ".join(s.label for s in chain) + f"; the answer is {final.label}'s. "
        + (f"Ensemble of {len(seeds)} seeds (their probabilities averaged). " if len(seeds) > 1 else "")
        + (f"Text encoder fine-tuned from {encoder}, reading {reads}." if encoder else ""), "",
        "## How it was trained", "",
        f"Each stage trained on the frozen outputs of the one before it, seeds {seeds}; the settings are in "
        "`config.yaml`, each stage's replay settings in its `checkpoint/stage.json`. Training data: "
        + ", ".join(f"{n} {split} utterances" for split, n in meta.get("counts", {}).get("utterances", {}).items())
        + ".", "",
        "| stage | validation wF1 | test wF1 |", "|---|---|---|", *rows, "",
        "Weighted F1 in %, mean ± std over the seeds exported.", "",
        "## How to use", "",
        "```python", "import merits", "", 'model = merits.load("path/to/this/folder")',
        'result = model.predict(["I got the job!", "That is wonderful news."])',
        "print(result.to_pandas()[[\"text\", \"predicted\", \"confidence\"]])", "```", "",
        "Or from the shell: `merits predict FOLDER conversations.csv --out predictions/`; "
        "`merits serve FOLDER` for an HTTP service.", "",
        *([f"The fine-tuned text encoder of each seed is a Hugging Face folder of its own "
           f"(`stage1_text/seed-{seeds[0]}/checkpoint/encoder/`, with its tokenizer): "
           f"`transformers.AutoModel.from_pretrained(...)` loads it. The classifier on top is merits' own "
           f"({'mean pooling over the current turn' if pooling == 'mean' else 'the first token'}, then a linear "
           "layer: `head.safetensors`), not a transformers classification head, so the labels come from merits.", ""]
          if pooling else []),
        "## Limits", "",
        "- English only: the encoders and the training data are English.",
        ("- Class imbalance: in training, " + ", ".join(f"{label} {100 * p:.0f}%" for p, label in share)
         + "; rare classes are predicted less reliably than weighted F1 suggests.") if share else
        "- Class balance of the training data unknown.",
        "- " + ("Speaker names are read as text prefixes; no speaker identity model." if context is not None and
                context.speakers else "No speaker identities are used."),
        f"- Trained on {corpus}'s domain; other domains (calls, meetings) may need fine-tuning on their own data.",
        "- Stages II and III read the whole conversation; a turn's label can change as later turns arrive, unless "
        "predicted online.", "",
        "## Licence", "", f"Weights: {licence} (see LICENSE). Code: merits, MIT.", "",
    ]
    return "\n".join(lines)
