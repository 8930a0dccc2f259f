"""Predict emotions for new conversations with a trained experiment (``merits predict``).

A finished run ``runs/<name>/`` keeps every stage's checkpoint per seed. Prediction replays the hierarchy on new
data with those weights frozen, for one seed or several (their probabilities averaged); nothing is trained:

    text:  transcripts (``merits asr`` first when only audio is given) --Stage I text--> (N, H) embeddings
    audio: recordings --the run's speech encoder, feature cache--> (N, L, D) --Stage I speech head--> (N, 256)
    each:  --Stage II over each whole conversation--> (N, 2H_m) contextual embeddings
    both:  --Stage III co-attention fusion--> (N, C) logits

Output directory::

    predictions.csv   one row per utterance: ids, turn, text, ``predicted`` (the final stage's label),
                      ``confidence``, ``p_<label>`` per class, ``predicted_<stage>`` per stage replayed, and the
                      gold ``label`` where the input has one
    summary.json      run, seeds, stages, predicted-label counts, scores per stage where gold labels exist,
                      utterances left out for bad audio
    conversations.csv one row per conversation: utterances, the dominant predicted label, the share of each label,
                      mean confidence, the first and last labels
    timelines.png     the predicted label of every turn, one panel per conversation (the first 12)
    metrics.json      where gold labels exist: every stage's scores per split (per class, confusion matrix)
    confusion_<split>.png   the final stage's confusion matrix, where gold labels exist
    asr/, features/   transcripts and speech features made on the way; a rerun reuses them
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from merits.asr.config import ASRConfig
from merits.data.manifest import Manifest, _listing, blank
from merits.encoders.speech import SpeechEncoderConfig, build_speech_encoder
from merits.errors import ConfigError, DataError, read_json
from merits.features import extract_features
from merits.integrity import LISTING, verify_listing
from merits.metrics import classification_metrics, plot_confusion
from merits.pipeline import load_run_config, stale_stages
from merits.prediction_report import conversations, plot_timelines, shares
from merits.runs import DONE, finished_seeds, seed_dir
from merits.spreadsheet import write_csv
from merits.stages.base import Loaded, Stage, View, load_stage
from merits.stages.common import upstream_arrays
from merits.stages.graph import Graph, build_graph
from merits.training import Predictions, predict
from merits.runtime import Runtime

log = logging.getLogger("merits")


@dataclass
class TrainedRun:
    """What prediction needs of a finished experiment directory: its config, its stage graph and its labels."""

    directory: Path
    cfg: object                               # the ExperimentConfig it was trained with
    labels: tuple[str, ...]
    graph: Graph
    exported: dict | None = None              # an exported model folder (merits export): its verified listing

    @classmethod
    def open(cls, directory: str | Path) -> "TrainedRun":
        """A run folder (``runs/<name>``) or a model folder exported from one (``merits export``), which is first
        checked file by file (sizes, SHA-256)."""
        directory = Path(directory)
        exported = None
        if (directory / LISTING).is_file():
            exported = verify_listing(directory, "export the model again (merits export RUN OUT)")
        cfg = load_run_config(directory)
        labels = read_json(directory / "manifest" / "manifest.json", "retrain the run with merits train")["labels"]
        return cls(directory, cfg, tuple(labels), build_graph(cfg), exported)

    @property
    def seeds(self) -> list[int]:
        """Every seed the folder can replay (``--seed all``): an exported folder's, or the run's config's."""
        return list(self.exported["seeds"]) if self.exported else list(self.cfg.seeds)

    @property
    def default_seeds(self) -> list[int]:
        """What a prediction replays unless told: an exported folder's seeds (its ensemble), a run's first seed."""
        return list(self.exported["seeds"]) if self.exported else [self.cfg.seeds[0]]

    def final_stage(self) -> str:
        return self.graph.final.name

    def checkpoint(self, stage: str, seed: int) -> Path:
        """The checkpoint of a finished stage; a clear error naming the seeds that are finished."""
        path = seed_dir(self.directory, stage, seed)
        if not (path / DONE).is_file():
            done = list(finished_seeds(self.directory, stage))
            raise ConfigError(f"{self.directory} has no finished {stage} for seed {seed}"
                              + (f" (finished seeds: {done})" if done else "; train it first (merits train)"))
        return path / "checkpoint"


@dataclass
class StageOutput:
    """One stage's predictions on the input, averaged over the seeds replayed."""

    utterance_ids: list[str]
    label_ids: np.ndarray  # (N,) gold class ids, -1 / -100 where unlabelled
    probs: np.ndarray   # (N, C) softmax probabilities, mean over seeds

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)


@dataclass
class TurnPrediction:
    """One turn's prediction, as ``merits serve`` answers it (``predictions.csv`` holds the same per row)."""

    utterance_id: str
    conversation_id: str
    turn: int
    text: str
    label: str | None                          # the final stage's label; None: the turn was left out (bad audio)
    confidence: float | None                   # its probability (rounded to 4 places, as in predictions.csv)
    probabilities: dict[str, float] | None     # class -> probability, mean over the seeds replayed
    stages: dict[str, str | None]              # every replayed stage -> its label
    gold: str | None = None                    # the input's own label, where it has one
    speaker: str | None = None
    start: float | None = None                 # seconds into its recording, where the input cut the audio
    end: float | None = None
    split: str | None = None                   # the input's split, where it names one
    audio_path: str | None = None              # the turn's audio, where it has one

    def row(self, labels: tuple[str, ...]) -> dict:
        """This turn as a row of ``predictions.csv`` (blank predictions for a turn left out)."""
        probs = self.probabilities or {}
        return {
            "utterance_id": self.utterance_id, "conversation_id": self.conversation_id, "turn": self.turn,
            "split": self.split, "start": self.start, "end": self.end, "speaker": self.speaker, "text": self.text,
            "audio_path": self.audio_path, "label": self.gold or "", "predicted": self.label or "",
            "confidence": self.confidence, **{f"predicted_{s}": label or "" for s, label in self.stages.items()},
            **{f"p_{n}": probs.get(n) for n in labels},
        }


OPTIONAL_COLUMNS = ("split", "start", "end", "speaker", "audio_path", "label")  # in predictions.csv where any turn has one


def turns_table(turns: list[TurnPrediction], labels: tuple[str, ...]) -> pd.DataFrame:
    """``predictions.csv`` drawn from the typed turns: one row each, the optional columns only where the input has
    them (start / end: where it cut its audio; label: where it has gold labels)."""
    table = pd.DataFrame([t.row(labels) for t in turns])
    empty = [c for c in OPTIONAL_COLUMNS if not (table[c].notna() & (table[c] != "")).any()]
    return table.drop(columns=empty)


@dataclass
class ConversationPrediction:
    """One conversation's predictions: its turns in order, and how much of each emotion it holds."""

    id: str
    turns: list[TurnPrediction]
    shares: dict[str, float]           # class -> share of the turns predicted
    dominant: str | None               # the most frequent label (a tie: the one predicted with more confidence)
    tied: list[str]                    # every label of such a tie, else empty
    mean_confidence: float | None


@dataclass
class PredictResult:
    turns: list[TurnPrediction]              # every input turn, in the input's order
    summary: dict                            # summary.json
    directory: Path
    labels: tuple[str, ...]                  # the run's class names
    stages: dict[str, StageOutput] = field(default_factory=dict)
    scores: dict = field(default_factory=dict)  # stage -> split -> every score, where the input has gold labels

    @functools.cached_property
    def table(self) -> pd.DataFrame:
        """predictions.csv: the turns as rows (built once, on first use)."""
        return turns_table(self.turns, self.labels)

    def to_pandas(self) -> pd.DataFrame:
        """The turns as a DataFrame (the columns of predictions.csv)."""
        return self.table

    @property
    def conversations(self) -> list[ConversationPrediction]:
        """The turns grouped by conversation (input order), each with its shares of every emotion."""
        by_id: dict[str, list[TurnPrediction]] = {}
        for t in self.turns:
            by_id.setdefault(t.conversation_id, []).append(t)
        known = shares(self.table, self.labels)
        none = {"shares": {n: 0.0 for n in self.labels}, "dominant": None, "tied": [], "mean_confidence": None}
        return [ConversationPrediction(cid, turns, **known.get(cid, none)) for cid, turns in by_id.items()]


def relabel(manifest: Manifest, labels: tuple[str, ...]) -> Manifest:
    """The input under the run's label names; a gold label the run does not know is a DataError naming rows."""
    return dataclasses.replace(manifest, labels=labels, table=manifest.table.copy()).validate()


class Predictor:
    """A trained run's checkpoints loaded once, ready to predict any number of inputs: ``merits predict`` uses one
    for one input, ``merits serve`` keeps one in memory for every request. The Whisper model and the speech encoder
    are built on first need and kept.

    seeds: one trained seed, or several: every stage's probabilities are then averaged over them (an ensemble).
    Default: the run's first seed (an exported folder: its seeds). stage: stop there (default the run's last).
    """

    def __init__(self, run: TrainedRun, seeds: int | list[int] | None = None, stage: str | None = None,
                 device: str | None = None):
        cfg = run.cfg
        self.run = run
        self.seeds = run.default_seeds if seeds is None else [seeds] if isinstance(seeds, int) else list(seeds)
        self.stage = stage or run.final_stage()
        self.stages = run.graph.chain(self.stage)
        replayed = {st.name for st in self.stages}
        stale = [f"{name}/seed-{seed}" for name, seed in stale_stages(run.directory, cfg, run.graph)
                 if name in replayed and seed in self.seeds]
        if stale:  # the models would not be the ones config.yaml describes
            raise ConfigError(f"{run.directory}: {', '.join(stale)} trained with other settings than the run's "
                              "config.yaml (a merits train with new settings stopped before it retrained them): "
                              "rerun that merits train to finish it")
        # every checkpoint of every seed, loaded before any work: a missing or old one fails first
        self.loaded = {seed: {s.name: load_stage(s, run.checkpoint(s.name, seed)) for s in self.stages}
                       for seed in self.seeds}
        _check_labels(run, self.loaded)
        # the machine that predicts need not be the one that trained: auto picks its GPU if it has one
        self.runtime = Runtime.create(device or "auto")
        self.device = self.runtime.device
        self.replay = {s: info.replay for s, info in self.loaded[self.seeds[0]].items()}
        self.causal = all(getattr(info.model.config, "causal", False)
                          for s, info in self.loaded[self.seeds[0]].items() if run.graph[s].level == "conversation")
        self._encoder = None
        self._transcribers: dict = {}

    def contexts(self, online: bool = False) -> dict[str, dict]:
        """Per utterance stage reading a conversation window: the window trained and the window replayed."""
        out = {}
        for name, info in self.loaded[self.seeds[0]].items():
            window = getattr(info.replay, "window", None)  # the replay of a stage that reads a window (Text I)
            if window is not None and (trained := window()):
                out[name] = {"trained": trained.describe(), "replayed": window(online).describe()}
        return out

    @property
    def modalities(self) -> set[str]:
        """The modalities the replayed stages read: {"text"}, {"audio"} or both."""
        return {m for s in self.stages if s.level == "utterance" for m in s.modalities}

    def speech_encoder(self):
        """The speech encoder the speech stage's checkpoint names, built once."""
        if self._encoder is None:
            encoder_cfg = SpeechEncoderConfig(**self.replay[_utterance_stage(self.stages, "audio").name].speech_encoder)
            self._encoder = build_speech_encoder(replace(encoder_cfg, device=str(self.device)))  # whole: cuda:1
        return self._encoder

    def transcriber(self, asr: ASRConfig):
        """A Whisper model for these ASR settings, loaded once per setting."""
        from merits.asr.transcribe import Transcriber

        key = json.dumps(dataclasses.asdict(asr), sort_keys=True, default=str)
        if key not in self._transcribers:
            self._transcribers[key] = Transcriber(asr)
        return self._transcribers[key]

    def predict(self, manifest: Manifest, work: str | Path, asr: ASRConfig | None = None, online: bool = False,
                window: int | None = None) -> PredictResult:
        """Every replayed stage on ``manifest``. ``work`` keeps what is made on the way (``asr/`` transcripts,
        ``features/`` speech features; a rerun reuses them); nothing else is written.

        online: predict each turn from the conversation up to it only (what a live system knows at that moment);
        by default Stages II and III read the whole conversation, later turns included, as in training. A run whose
        conversation stages are all causal (``causal: true``) is predicted online in one pass over each conversation
        (its outputs at a turn never depend on later turns: linear in the length); a bidirectional run replays every
        turn's prefix (quadratic), or with ``window`` only each turn's last ``window`` turns (linear, an approximation).
        """
        if window is not None and window < 1:
            raise ConfigError(f"the online window must be at least 1 turn, got {window}")
        work = Path(work)
        work.mkdir(parents=True, exist_ok=True)
        manifest, keep, store, notes, unusable = _inputs(self, relabel(manifest, self.run.labels), work, asr)
        # what Stages II/III read: the conversations themselves, or (online) one prefix per turn; the same for every seed
        if online and not self.causal:
            turns, source, last = prefixes(keep, window)
            view = View(keep, turns, source, features=store, online=True)
        else:  # offline, or a causal run: the whole conversation at once is already each turn's online prediction
            view, last = View(keep, features=store, online=online), None
        contexts = self.contexts(online)
        for name, c in contexts.items():
            if c["trained"] != c["replayed"]:  # online, a window with later turns loses them
                future = self.replay[name].context["future"]
                notes.append(f"online: {self.run.graph[name].label} was trained reading {future} later turn(s) "
                             "around each utterance; online it reads none (they are not known yet), so it is not "
                             "replayed exactly as trained (train with stage1_text.context.future=0 for the live form)")
        per_seed = [_replay(self.run.graph, self.stages, self.loaded[seed], view, self.device, last)
                    for seed in self.seeds]
        outputs = {s.name: _average([p[s.name] for p in per_seed]) for s in self.stages}
        turns = _turns(self.run.labels, manifest, outputs, self.stage)
        summary, scores = _outputs(self.run, manifest, keep, outputs, self.stage, self.seeds, notes, online, turns)
        summary["online_mode"] = None if not online else "causal, one pass" if self.causal else (
            f"prefix replay, window {window} turns" if window else "prefix replay, whole prefix")
        summary["label_map"] = manifest.label_map  # how the input's gold labels were renamed, if they were
        summary["text_context"] = contexts  # the conversation window each text stage read
        summary["left_out"] = sorted(unusable) + summary["left_out"]  # bad audio found by ASR, then by the encoder
        return PredictResult(turns, summary, work, self.run.labels, outputs, scores)


def predict_run(run: TrainedRun, manifest: Manifest, out: str | Path, seeds: int | list[int] | None = None,
                stage: str | None = None, device: str | None = None, asr: ASRConfig | None = None,
                online: bool = False, window: int | None = None) -> PredictResult:
    """Replay the run's stages (up to ``stage``, default its last) on ``manifest`` (see :class:`Predictor`); write
    predictions.csv, summary.json, conversations.csv, timelines.png and, with gold labels, metrics.json and the
    confusion matrices into ``out``."""
    result = Predictor(run, seeds, stage, device).predict(manifest, out, asr, online, window)
    write_outputs(result, run)
    return result


def write_outputs(result: PredictResult, run: TrainedRun) -> None:
    """The files of a prediction, into ``result.directory``."""
    out, stage, table = result.directory, result.summary["stage"], result.table
    write_csv(table, out / "predictions.csv")  # text cells that would be spreadsheet formulas escaped
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2))
    write_csv(conversations(table, run.labels), out / "conversations.csv")
    plot_timelines(table, run.labels, out / "timelines.png")
    if result.scores:  # gold labels given: e.g. a cross-corpus evaluation of the trained run
        (out / "metrics.json").write_text(json.dumps(result.scores, indent=2))
        for split, m in result.scores[stage].items():
            plot_confusion(m, out / f"confusion_{split}.png", f"{run.graph[stage].label} on {split}: weighted F1 "
                                                               f"{m['weighted_f1']:.3f}")


def _utterance_stage(stages: list[Stage], modality: str) -> Stage | None:
    """The utterance stage of ``stages`` that reads ``modality`` (text, audio), if any."""
    return next((s for s in stages if s.level == "utterance" and modality in s.modalities), None)


def _inputs(predictor: Predictor, manifest: Manifest, out: Path, asr: ASRConfig | None):
    """What the stages read, made once for every seed: transcripts (Whisper, where text is missing and a text stage
    runs; with ``asr.segment`` every recording is first cut into Whisper's segments) and speech features (with the
    speech encoder the speech stage's checkpoint names). Returns (manifest with transcripts, the
    utterances every stage can use, the feature store or None, notes, the input utterances ASR left out for bad
    audio)."""
    run, stages, device = predictor.run, predictor.stages, predictor.device
    cfg, notes, store, unusable = run.cfg, [], None, []
    text, speech = _utterance_stage(stages, "text"), _utterance_stage(stages, "audio")
    audio_cfg = cfg.audio  # the run's audio policy (decoding, what bad audio does), in ASR as in the features
    segmenting = asr is not None and asr.segment  # whole recordings -> Whisper segments as utterances
    if segmenting or (text and blank(manifest.table["text"]).any()):
        from merits.asr import transcribe_manifest  # only when there is audio to transcribe

        log.info("%s into %s", "segmenting the recordings" if segmenting else "transcribing the utterances without text",
                 out / "asr")
        # bad audio is handled as the run handles it (audio.on_error), in ASR as in feature extraction
        asr = replace(asr or ASRConfig(), audio=audio_cfg, device=str(device))
        if segmenting:
            transcribed = transcribe_manifest(manifest, out / "asr", asr, predictor.transcriber(asr))
            heard = transcribed.manifest
        else:  # only the utterances without text: a transcript the input gives is kept, never replaced
            t = manifest.table
            silent = blank(t["text"])
            transcribed = transcribe_manifest(manifest.select(t.loc[silent, "utterance_id"]), out / "asr", asr,
                                              predictor.transcriber(asr))
            said = transcribed.manifest.table.set_index("utterance_id")["text"]
            t = t.assign(text=t["text"].where(~silent, t["utterance_id"].map(said)))
            heard = dataclasses.replace(manifest, table=t[t["text"].notna()])  # (NaN: left out for bad audio)
        unusable = [i["utterance_id"] for i in transcribed.report["skipped"]["items"]]
        if unusable:
            notes.append(f"left out for bad audio before transcription: {_listing(unusable)}")
        manifest = relabel(heard, run.labels)
        unheard = manifest.table.loc[blank(manifest.table["text"]), "utterance_id"]
        if len(unheard):
            alone = _last_without(run.graph, "text")
            audio_only = f"; an audio-only prediction: stage {alone}" if alone else ""
            raise DataError(f"Whisper found no words in {len(unheard)} utterances ({_listing(unheard)}; see "
                            f"{out / 'asr' / 'asr_report.json'}): the text branch has nothing to read. Drop them from "
                            f"the input{audio_only}")
    keep = manifest
    if speech:
        encoder = predictor.speech_encoder()
        silent = manifest.table.loc[manifest.table["audio_path"] == "", "utterance_id"]
        if encoder.needs_audio and len(silent):  # (a precomputed table is looked up by utterance id instead)
            alone = _last_without(run.graph, "audio")
            raise ConfigError(f"{len(silent)} utterances have no audio_path ({_listing(silent)}), and "
                              f"{stages[-1].label} needs audio" + (f"; for text alone use stage {alone}" if alone else ""))
        store = extract_features(manifest, encoder, out / "features", audio_cfg)
        if store.skipped:
            notes.append(f"left out for bad audio: {store.summary()}")
            keep = manifest.select(store.available_ids)
    if text:
        keep.require_text()
    return manifest, keep, store, notes, unusable


def _last_without(graph: Graph, modality: str) -> str | None:
    """The last stage of the graph that never reads ``modality`` (what to predict with when it is missing)."""
    names = [s.name for s in graph if all(modality not in c.modalities for c in graph.chain(s.name))]
    return names[-1] if names else None


def _check_labels(run: TrainedRun, loaded: dict[int, dict[str, Loaded]]) -> None:
    """Each checkpoint's class names are the truth: the run's manifest must agree with every one of them."""
    for seed, stages in loaded.items():
        for name, info in stages.items():
            if info.labels != run.labels:
                raise ConfigError(f"{run.directory}/{name}/seed-{seed} was trained on the classes {list(info.labels)}, "
                                  f"but the run's manifest lists {list(run.labels)}: the run directory was altered")


def _replay(graph: Graph, stages: list[Stage], loaded: dict[str, Loaded], view: View, dev,
            last: dict[str, str] | None) -> dict[str, Predictions]:
    """Every stage of one seed, in training order, each reading the previous stages' outputs: load, batch, predict.
    ``last`` (online): {prefix id of a turn: its utterance id}; each utterance's conversation-stage prediction is then
    the one at the end of its own prefix."""
    preds: dict[str, Predictions] = {}
    for stage in stages:
        info = loaded[stage.name]
        arrays = upstream_arrays(stage, graph.levels, preds, view, info.replay.reads)
        batches = stage.batches(info.model, view, arrays, info.replay)
        # in the precision it was trained and exported in: replay equals training (bf16 included)
        preds[stage.name] = predict(info.model.to(dev), batches, dev, stage.label, info.replay.precision)
    if last is not None:
        preds = {s: p if graph[s].level == "utterance" else _at(p, last) for s, p in preds.items()}
    return preds


def prefixes(keep: Manifest, window: int | None = None) -> tuple[Manifest, np.ndarray, dict[str, str]]:
    """Online mode: for every turn k of a conversation, a pseudo-conversation ``<conversation>@k`` holding its turns
    0..k, so that bidirectional Stages II and III see no later turn. Returns the prefix manifest (utterance ids
    ``<id>@k``), the row of ``keep`` each prefix row copies, and {prefix id of the last turn: its utterance id}.
    Size: sum over conversations of T(T+1)/2 rows (with ``window`` W: at most T·W), ids ``<id>@k``."""
    t = keep.table.reset_index(drop=True)
    source, prefix, conversation, last = [], [], [], {}
    for conv, g in t.groupby("conversation_id", sort=False):
        order = g.sort_values("turn", kind="stable").index.to_numpy()
        for k in range(len(order)):
            first = 0 if window is None else max(0, k + 1 - window)  # the last `window` turns up to k
            source.extend(order[first:k + 1])
            prefix.extend([k] * (k + 1 - first))
            conversation.extend([conv] * (k + 1 - first))
            last[f"{t.at[order[k], 'utterance_id']}@{k}"] = t.at[order[k], "utterance_id"]
    table = t.iloc[source].reset_index(drop=True)
    suffix = "@" + pd.Series(prefix).astype(str)
    table["utterance_id"] = table["utterance_id"] + suffix
    table["conversation_id"] = pd.Series(conversation).astype(str) + suffix
    return Manifest(keep.corpus, keep.labels, table), np.asarray(source), last


def _at(p: Predictions, last: dict[str, str]) -> Predictions:
    """The rows of prefix predictions that end their prefix, under the utterance's own id."""
    rows = [i for i, u in enumerate(p.utterance_ids) if u in last]
    return Predictions([last[p.utterance_ids[i]] for i in rows], p.label_ids[rows], p.logits[rows], p.embeddings[rows])


def _average(per_seed: list[Predictions]) -> StageOutput:
    """One stage's softmax probabilities averaged over seeds, rows in the first seed's order."""
    first = per_seed[0]
    order = {u: i for i, u in enumerate(first.utterance_ids)}
    probs = np.zeros_like(first.logits, dtype=np.float64)
    for p in per_seed:
        rows = [order[u] for u in p.utterance_ids]
        probs[rows] += torch.softmax(torch.from_numpy(p.logits).double(), -1).numpy()
    return StageOutput(list(first.utterance_ids), first.label_ids, probs / len(per_seed))


def _turns(labels: tuple[str, ...], manifest: Manifest, outputs: dict[str, StageOutput],
           final: str) -> list[TurnPrediction]:
    """Every input turn's prediction, typed, from the stages' outputs (a turn left out has no label)."""
    names = np.array(labels)
    label_of = {s: dict(zip(o.utterance_ids, names[o.predicted])) for s, o in outputs.items()}
    probs_of = dict(zip(outputs[final].utterance_ids, outputs[final].probs))
    turns = []
    for r in manifest.table.to_dict("records"):
        u, p = r["utterance_id"], probs_of.get(r["utterance_id"])
        known = lambda key: r.get(key) is not None and pd.notna(r.get(key)) and r.get(key) != ""  # noqa: E731
        turns.append(TurnPrediction(
            u, str(r["conversation_id"]), int(r["turn"]), r["text"], label_of[final].get(u),
            round(float(p.max()), 4) if p is not None else None,
            {n: round(float(x), 4) for n, x in zip(labels, p)} if p is not None else None,
            {s: label_of[s].get(u) for s in outputs}, r["label"] if known("label") else None,
            r["speaker"] if known("speaker") else None, float(r["start"]) if known("start") else None,
            float(r["end"]) if known("end") else None, r["split"] if known("split") else None,
            r["audio_path"] if known("audio_path") else None))
    return turns


def _outputs(run: TrainedRun, manifest: Manifest, keep: Manifest, outputs: dict[str, StageOutput], final: str,
             seeds: list[int], notes: list[str], online: bool, turns: list[TurnPrediction]) -> tuple[dict, dict]:
    """summary.json, and the full scores (per class, confusion) per stage and split where the input has gold labels."""
    scores: dict[str, dict[str, dict]] = {}  # stage -> split -> all scores, where the input has gold labels
    split_of = dict(zip(keep.table["utterance_id"], keep.table["split"]))
    for s, o in outputs.items():
        splits = np.array([split_of[u] for u in o.utterance_ids])
        for split in dict.fromkeys(splits):
            known = (o.label_ids >= 0) & (splits == split)
            if known.any():
                scores.setdefault(s, {})[split] = classification_metrics(o.label_ids[known], o.predicted[known],
                                                                         run.labels, macro_over_present=True)
    counts = pd.Series([t.label for t in turns if t.label is not None], dtype=object).value_counts()
    absent = {split: m["absent_classes"] for split, m in scores.get(final, {}).items() if m["absent_classes"]}
    for split, classes in absent.items():  # said once, for the final stage (every stage sees the same gold labels)
        notes.append(f"{split}: no gold example of {', '.join(classes)}; macro F1 is over the "
                     f"{len(run.labels) - len(classes)} classes present")
    summary = {
        "run": str(run.directory), "seeds": seeds, "stage": final, "stages": list(outputs),
        "stage_labels": {s: run.graph[s].label for s in outputs}, "online": online,
        "input": manifest.source, "utterances": int(len(manifest.table)),
        "conversations": int(manifest.table["conversation_id"].nunique()), "predicted": len(outputs[final].utterance_ids),
        "left_out": sorted(set(manifest.table["utterance_id"]) - set(keep.table["utterance_id"])),
        "predicted_counts": {n: int(counts.get(n, 0)) for n in run.labels},
        "scores": {s: {split: {k: m[k] for k in ("weighted_f1", "accuracy", "macro_f1", "n", "absent_classes")}
                       for split, m in by_split.items()} for s, by_split in scores.items()},
        "notes": notes,
    }
    return summary, scores
