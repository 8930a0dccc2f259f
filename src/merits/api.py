"""The Python API: a trained model (a run folder or one exported by ``merits export``) in three lines.

    import merits
    model = merits.load("models/meld-minilm")                  # device="auto": this machine's GPU if it has one
    result = model.predict(["I got the job!", "No way, that's wonderful!"])
    result.to_pandas()                                         # one row per turn: predicted, confidence, p_<label>

A conversation is a list of turns: strings, or dicts with ``text``, ``audio`` (a file path, or an array with its
``sample_rate``), ``speaker``, ``label``; ``predict`` takes one conversation, a list of them (lists, or dicts with
``id`` and ``turns``), or a DataFrame (``text`` / ``audio_path``, optionally ``conversation_id``, ``speaker``,
``label``). It returns a :class:`merits.predict.PredictResult`: ``.turns`` (per turn: label, confidence,
probabilities, every stage's label), ``.conversations`` (per conversation: its turns, shares, dominant emotion),
``.to_pandas()``. ``model.predict_audio(path)`` cuts a whole recording into utterances with Whisper first;
``model.live()`` takes a conversation one turn at a time, each predicted from the turns so far.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from merits.asr.config import ASRConfig
from merits.data.manifest import Manifest
from merits.errors import DataError
from merits.predict import Predictor, PredictResult, TrainedRun, TurnPrediction
from merits.turns import Conversation, Turn, manifest_of


def load(path: str | Path, device: str = "auto", seeds: int | list[int] | None = None,
         stage: str | None = None) -> "Model":
    """The model in ``path`` (a run folder or an exported model folder), its checkpoints loaded once.

    seeds: which trained seeds to replay (several: an ensemble; default: an exported folder's seeds, a run's first);
    stage: stop at this stage (default the last)."""
    return Model(Predictor(TrainedRun.open(path), seeds, stage, device))


class Model:
    """A loaded model: ``predict``, ``predict_audio``, ``live``. Not for two threads at once (``merits serve``
    queues requests onto one thread for that)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.labels: tuple[str, ...] = predictor.run.labels
        self.stages = {s.name: s.label for s in predictor.stages}
        self.seeds = predictor.seeds
        self.device = predictor.device
        self.asr = ASRConfig()  # Whisper for turns with audio but no text (packaged tiny.en by default)

    def __repr__(self) -> str:
        return (f"merits.Model({self.predictor.run.directory.name}: {' -> '.join(self.stages.values())}, "
                f"labels {list(self.labels)}, seeds {self.seeds}, {self.device})")

    def predict(self, conversations, online: bool = False) -> PredictResult:
        """Every turn's emotion (see the module's docstring for what ``conversations`` may be). online: each turn
        from the conversation up to it only, as a live system knows it."""
        with tempfile.TemporaryDirectory(prefix="merits-") as work:
            manifest = manifest_of(_conversations(conversations, Path(work)), self.labels, "merits.load")
            return self._predict(manifest, Path(work), self.asr, online)

    def predict_audio(self, path: str | Path) -> PredictResult:
        """A whole recording (a call, a session) cut into utterances by Whisper, then every stage: one
        conversation, its turns timed by ``start`` / ``end``."""
        name = Path(path).stem
        rows = [{"utterance_id": name, "conversation_id": name, "turn": 0, "split": "test", "text": "", "label": "",
                 "audio_path": str(path)}]
        manifest = Manifest("input", self.labels, pd.DataFrame(rows), source=str(path)).validate()
        with tempfile.TemporaryDirectory(prefix="merits-") as work:
            return self._predict(manifest, Path(work), replace(self.asr, segment=True))

    def live(self, id: str = "live") -> "LiveConversation":
        """A conversation fed one turn at a time (``.add(turn)``), each predicted from the turns so far."""
        return LiveConversation(self, id)

    def _predict(self, manifest: Manifest, work: Path, asr: ASRConfig, online: bool = False) -> PredictResult:
        result = self.predictor.predict(manifest, work, asr, online)
        result.directory = None  # the work folder is gone with the call
        return result


class LiveConversation:
    """One live conversation: ``add`` a turn, get its prediction from the conversation up to it (what a live
    system knows at that moment; later turns never change it). ``turns``: every turn's prediction as it was made."""

    def __init__(self, model: Model, id: str):
        self.model, self.id = model, id
        self._turns: list[Turn] = []
        self._audio = tempfile.TemporaryDirectory(prefix="merits-live-")  # arrays given as audio, kept for later turns
        self.turns: list[TurnPrediction] = []

    def add(self, turn) -> TurnPrediction:
        (given,) = _conversation([turn], Path(self._audio.name), f"{self.id}-{len(self._turns)}").turns
        self._turns.append(given)
        with tempfile.TemporaryDirectory(prefix="merits-") as work:
            manifest = manifest_of([Conversation(self.id, self._turns)], self.model.labels, "merits.load live")
            try:
                result = self.model._predict(manifest, Path(work), self.model.asr)
            except Exception:
                self._turns.pop()
                raise
        last = result.turns[-1]
        if last.label is None:
            self._turns.pop()
            raise DataError(f"turn {len(self._turns)} of live conversation {self.id!r} could not be predicted: "
                            + "; ".join(result.summary["notes"] or ["its audio is unusable"]))
        self.turns.append(last)
        return last


# ---------------------------------------------------------------------------------------------- inputs
def _conversations(given, work: Path) -> list[Conversation]:
    """Whatever ``predict`` was given, as conversations (arrays of audio written as WAV files under ``work``)."""
    if isinstance(given, pd.DataFrame):
        return _from_frame(given)
    if isinstance(given, (str, dict)) and not (isinstance(given, dict) and "turns" in given):
        given = [given]  # one turn: a conversation of one
    if isinstance(given, dict):
        return [_conversation(given["turns"], work, str(given.get("id", "conversation-0")))]
    given = list(given)
    if not given:
        raise DataError("no turns given: a conversation is a list of turns (strings or dicts with text / audio)")
    if all(isinstance(t, (str, dict)) and not (isinstance(t, dict) and "turns" in t) for t in given):
        return [_conversation(given, work, "conversation-0")]
    out = []
    for i, c in enumerate(given):
        if isinstance(c, dict) and "turns" in c:
            out.append(_conversation(c["turns"], work, str(c.get("id", f"conversation-{i}"))))
        elif isinstance(c, (list, tuple)):
            out.append(_conversation(c, work, f"conversation-{i}"))
        else:
            raise DataError(f"conversation {i}: {type(c).__name__}; give every conversation as a list of turns "
                            "(or a dict with 'id' and 'turns'), or one conversation as a list of turns")
    ids = [c.id for c in out]
    if len(set(ids)) < len(ids):
        raise DataError(f"conversation ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return out


def _conversation(turns, work: Path, cid: str) -> Conversation:
    out = []
    for k, t in enumerate(turns):
        where = f"conversation {cid!r}, turn {k}"
        if isinstance(t, str):
            out.append(Turn(text=t))
            continue
        if not isinstance(t, dict):
            raise DataError(f"{where}: {type(t).__name__}; a turn is a string or a dict with text / audio / speaker")
        unknown = sorted(set(t) - {"text", "audio", "sample_rate", "speaker", "label"})
        if unknown:
            raise DataError(f"{where}: unknown keys {unknown}; a turn has text, audio (+ sample_rate), speaker, label")
        audio = t.get("audio", "")
        if isinstance(audio, (np.ndarray, list)):
            audio = _write_wav(np.asarray(audio, dtype=np.float32), t.get("sample_rate"), work / f"{cid}-{k}.wav", where)
        out.append(Turn(str(t.get("text") or ""), str(audio or ""), str(t.get("label") or ""),
                        str(t.get("speaker") or "")))
    return Conversation(cid, out)


def _write_wav(samples: np.ndarray, rate, path: Path, where: str) -> str:
    import soundfile

    if not rate:
        raise DataError(f"{where}: audio given as an array needs its sample_rate (e.g. 16000)")
    if samples.ndim > 2 or samples.size == 0:
        raise DataError(f"{where}: audio array of shape {samples.shape}; give (samples,) or (samples, channels)")
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, int(rate))
    return str(path)


def _from_frame(frame: pd.DataFrame) -> list[Conversation]:
    if "text" not in frame.columns and "audio_path" not in frame.columns:
        raise DataError(f"the DataFrame needs a text or an audio_path column; it has {list(frame.columns)}")
    f = frame.copy()
    if "conversation_id" not in f.columns:
        f["conversation_id"] = "conversation-0"
    if "turn" in f.columns:
        f = f.sort_values(["turn"], kind="stable")
    text = lambda r, key: "" if key not in r or pd.isna(r[key]) else str(r[key])  # noqa: E731
    return [Conversation(str(cid), [Turn(text(r, "text"), text(r, "audio_path"), text(r, "label"), text(r, "speaker"))
                                    for r in g.to_dict("records")])
            for cid, g in f.groupby("conversation_id", sort=False)]
