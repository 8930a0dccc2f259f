"""The hierarchy from one config: prepare the manifest, extract speech features where an audio stage runs, then
walk the experiment's stage graph (:func:`merits.stages.graph.build_graph`) for every seed, then the report.

Every stage is cached under ``runs/<experiment>/<stage>/seed-<k>/`` by a content hash of what it reads and its
config, so rerunning a finished experiment only reprints its report and a killed one resumes. Speech features are
extracted once into the feature cache (``cache_dir``); audio stages never read audio. Seeds may run in parallel
processes (``merits train CONFIG --seed k``): stages are locked, and the report is built from every finished seed
on disk.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path


from merits import __version__
from merits.config import config_hash, save_config
from merits.data import prepare_config
from merits.data.manifest import Manifest
from merits.encoders.speech import build_speech_encoder
from merits.errors import ConfigError, DataError, read_json
from merits.experiment import load_experiment
from merits.features import FeatureStore, extract_features
from merits.metrics import check_metric
from merits.report import metric_suffix, write_report
from merits.runs import DONE, finished_seeds, run_cached, stage_dir
from merits.stages.base import Stage, TrainingData
from merits.stages.graph import Graph, build_graph
from merits.runtime import Runtime, seed_everything

log = logging.getLogger("merits")


def build_manifest(cfg, notes: list[str] | None = None) -> Manifest:
    """The experiment's manifest, checked for training: labels everywhere, and label problems warned about (an
    error with ``data.strict_labels``) and added to ``notes`` (the report prints them under the table)."""
    manifest = prepare_config(cfg.data)
    notes = notes if notes is not None else []
    unlabelled = manifest.table.loc[manifest.table["label"] == "", "utterance_id"]
    if len(unlabelled) and cfg.data.unlabelled == "drop":
        manifest = manifest.select(manifest.table.loc[manifest.table["label"] != "", "utterance_id"])
        notes.append(f"Unlabelled: {len(unlabelled)} turns without a label left out (data.unlabelled=drop)")
    elif len(unlabelled) and cfg.data.unlabelled == "context":
        notes.append(f"Unlabelled: {len(unlabelled)} turns without a label kept as conversation context for Stages "
                     "II/III, neither trained on nor scored (data.unlabelled=context)")
    manifest.require_labels(unlabelled=cfg.data.unlabelled)
    problems = manifest.label_problems()
    if problems and cfg.data.strict_labels:
        raise DataError(f"manifest of {manifest.corpus!r}: " + "; ".join(problems) + " (data.strict_labels)")
    for line in problems:
        log.warning("%s: %s", manifest.corpus, line)
        notes.append(f"Labels: {line}")
    return manifest


def training_data(cfg, manifest: Manifest, notes: list[str], runtime: Runtime | None = None) -> TrainingData:
    store, audio = None, None
    runtime = runtime or Runtime.create(cfg.device)
    if "audio" in cfg.modalities:
        # the experiment's device, whole (cuda:1 stays cuda:1), reaches the speech encoder (features are the same on
        # any device: not in the key)
        encoder = build_speech_encoder(replace(cfg.speech_encoder, device=str(runtime.device)))
        dist = runtime.dist
        if dist.is_main:  # one process extracts into the cache; the others then open it
            store = extract_features(manifest, encoder, cfg.cache_dir, cfg.audio)
        dist.barrier()
        if not dist.is_main:
            store = extract_features(manifest, encoder, cfg.cache_dir, cfg.audio)
        audio = manifest.select(store.available_ids) if store.skipped else manifest
        if store.skipped:
            notes.append(f"Audio: {store.summary()}")
    if "text" in cfg.modalities:
        manifest.require_text()
    return TrainingData(manifest, store, audio)


def claim_run_dir(root: Path, manifest: Manifest, overwrite: bool) -> None:
    """A run folder belongs to one manifest: trained on other data, it is refused (naming both), or with
    ``overwrite`` removed first, so that no stage, seed or report of the old data survives beside the new."""
    saved = root / "manifest" / "manifest.json"
    if not saved.is_file():
        return
    old = read_json(saved, "delete the run folder or give the run another name")
    if old.get("fingerprint") == manifest.fingerprint():
        return
    if not overwrite:
        n_old = sum(old.get("counts", {}).get("utterances", {}).values()) or "?"
        raise ConfigError(f"{root} holds a run trained on other data ({old.get('corpus')!r}, {n_old} utterances, from "
                          f"{old.get('source') or 'unknown'}); this config's data is {manifest.corpus!r} "
                          f"({len(manifest.table)} utterances, from {manifest.source or 'unknown'}). Give this run its "
                          "own name (name=...), or replace the old one (overwrite=true)")
    log.warning("overwrite: removing %s, trained on other data", root)
    shutil.rmtree(root)


def stage_key(stage: Stage, settings, data: TrainingData, needs: dict[str, str], seed: int) -> str:
    """The content hash of a stage's output: its needs' keys, what it reads itself, its config, the seed.
    A new release recomputes everything."""
    return config_hash(stage.name, __version__, *(needs[n] for n in stage.needs), *stage.key_parts(settings, data),
                       seed)


def settings_hash(stage: Stage, cfg) -> str:
    """The hash of the config a stage was trained with (its own sections), recorded in its metrics."""
    return config_hash(stage.settings(cfg))


def stale_stages(directory: Path, cfg, graph: Graph) -> list[tuple[str, int]]:
    """(stage, seed) of every finished seed trained with other settings than the run's config.yaml says (a
    ``merits train`` with new settings killed before it retrained them); runs of older versions record none."""
    import json

    stale = []
    for stage in graph:
        want = settings_hash(stage, cfg)
        for seed, folder in finished_seeds(directory, stage.name).items():
            got = json.loads((folder / DONE).read_text())["metrics"].get("settings_hash")
            if got is not None and got != want:
                stale.append((stage.name, seed))
    return stale


def run_experiment(cfg, seeds: list[int] | None = None) -> dict:
    """Run every stage of ``cfg`` for ``seeds`` (default: all of ``cfg.seeds``); return {"per_seed": ...,
    "table": markdown, "dir": ...}. The report covers every seed finished on disk, from this or other processes."""
    seeds = list(cfg.seeds) if seeds is None else list(seeds)
    unknown = sorted(set(seeds) - set(cfg.seeds))
    if unknown:
        raise ConfigError(f"seed(s) {unknown} are not among the experiment's seeds {cfg.seeds}")
    runtime = Runtime.create(cfg.device, cfg.threads)  # once: every stage and encoder works on its device
    dist = runtime.dist
    root = Path(cfg.runs_dir) / cfg.name
    notes: list[str] = []
    manifest = build_manifest(cfg, notes)
    _check_metric(cfg.metric, cfg.metric_classes, manifest.labels)  # before any training, not after
    if dist.is_main:
        claim_run_dir(root, manifest, cfg.overwrite)
        manifest.save(root / "manifest")
        save_config(cfg, root / "config.yaml")
        log.info("%s", manifest.report())
    dist.barrier()
    data = training_data(cfg, manifest, notes, runtime)
    graph = build_graph(cfg)
    keys: dict[int, dict[str, str]] = {seed: {} for seed in seeds}
    for stage in graph:
        settings = stage.settings(cfg)  # the stage's own section(s): all it sees of the experiment
        for seed in seeds:
            key = keys[seed][stage.name] = stage_key(stage, settings, data, keys[seed], seed)
            inputs = {n: stage_dir(cfg.runs_dir, cfg.name, n, seed) for n in stage.needs}

            def compute(out, stage=stage, settings=settings, seed=seed, inputs=inputs):
                seed_everything(seed)
                metrics = stage.train(settings, data, inputs, seed, out, runtime)
                # what it was trained with: merits predict and report check it against the run's config.yaml
                return {**metrics, "settings_hash": settings_hash(stage, cfg)} if metrics else metrics

            run_cached(stage_dir(cfg.runs_dir, cfg.name, stage.name, seed), key, compute, stage.distributed)
    per_seed = finished_metrics(root, graph)
    table = write_report(root, dataset_name(manifest.corpus, cfg), per_seed, graph, notes,
                         (cfg.metric, cfg.metric_classes)) if dist.is_main else ""
    return {"per_seed": per_seed, "table": table, "dir": str(root)}


def train_stage(cfg, name: str, manifest: Manifest, inputs: dict[str, Path], seed: int, out: Path,
                features: FeatureStore | None = None) -> dict:
    """One stage of ``cfg``'s graph trained alone, uncached, into ``out`` on the outputs of its needs at ``inputs``
    (need -> stage directory): for sweeps and ablations over a finished run's frozen outputs."""
    stage = build_graph(cfg)[name]
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    return stage.train(stage.settings(cfg), TrainingData(manifest, features, manifest), inputs, seed, out,
                       Runtime.create(cfg.device, cfg.threads))


def dataset_name(corpus: str, cfg=None) -> str:
    """The results table's heading: a shipped corpus in capitals (MELD, MOSI, IEMOCAP); your own data by its name;
    with the conversation window Stage I text reads, where it reads one (``MELD (Text I context: past 3, speakers)``)."""
    from merits.data import ADAPTERS

    name = corpus.upper() if corpus in ADAPTERS and corpus != "custom" else corpus
    context = cfg.stage1_text.context if cfg is not None and "text" in cfg.modalities else None
    return f"{name} (Text I context: {context.describe()})" if context is not None and context.enabled else name


def finished_metrics(root: Path, graph: Graph) -> dict[str, dict[int, dict]]:
    """{stage: {seed: metrics}} of every seed finished on disk (so parallel seed processes merge)."""
    import json

    out: dict[str, dict[int, dict]] = {}
    for stage in graph:
        done = finished_seeds(root, stage.name)
        if done:
            out[stage.name] = {seed: json.loads((d / DONE).read_text())["metrics"] for seed, d in done.items()}
    return out


def report_run(directory: str | Path, metric: str | None = None, classes: list[str] | None = None) -> str:
    """Rebuild the report of a run directory from every finished seed on disk (``merits report RUN``), in the run's
    metric or in ``metric`` over ``classes`` (computed from the saved confusion matrices: no retraining)."""
    directory = Path(directory)
    cfg = load_run_config(directory)
    graph = build_graph(cfg)
    per_seed = finished_metrics(directory, graph)
    if not per_seed:
        raise ConfigError(f"{directory} has no finished stage yet")
    stale = stale_stages(directory, cfg, graph)
    if stale:
        log.warning("%s: %s trained with other settings than its config.yaml (a merits train interrupted while "
                    "retraining?); rerun merits train to finish them", directory,
                    ", ".join(f"{name}/seed-{seed}" for name, seed in stale))
    manifest = Manifest.load(directory / "manifest")
    chosen = (metric or cfg.metric, list(classes if classes is not None else cfg.metric_classes if metric is None else []))
    _check_metric(*chosen, manifest.labels)
    # a metric asked for is written beside the run's own report, never over it
    return write_report(directory, dataset_name(manifest.corpus, cfg), per_seed, graph, None, chosen,
                        metric_suffix(metric, classes))


def _check_metric(name: str, classes, labels) -> None:
    try:
        check_metric(name, classes, labels)
    except ValueError as e:
        raise ConfigError(f"metric: {e}") from None


def load_run_config(directory: Path):
    """The config a run was trained with; runs of older versions (another config layout) say to retrain."""
    if not ((directory / "config.yaml").is_file() and (directory / "manifest" / "manifest.json").is_file()):
        raise ConfigError(f"{directory} is not a trained experiment: it needs config.yaml and manifest/manifest.json "
                          "(the directory merits train writes, runs/<name>)")
    try:
        return load_experiment(directory / "config.yaml")
    except ConfigError as e:
        raise ConfigError(f"{directory}/config.yaml does not load with this version of merits ({e}); it was written "
                          "by an older one: retrain the run with merits train") from None
