"""The model side of ``merits serve``, free of HTTP: a trained run's checkpoints loaded once (a
:class:`merits.predict.Predictor`) behind one worker thread.

Every prediction runs on that one thread, so the models are never used by two requests at once and torch keeps its
own threads for the maths. Requests that queue up while a prediction runs are taken together: their conversations
are predicted as one input (one Stage I pass over all their turns, Stage II / III batched over the conversations),
up to ``max_batch`` conversations, then split back per request. A request whose input fails inside a merged batch
is retried alone, so a bad request never fails the good ones it was batched with.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from merits.data.manifest import Manifest, is_blank
from merits.errors import MeritsError
from merits.predict import Predictor, PredictResult, TrainedRun, TurnPrediction
from merits.prediction_report import shares as _shares
from merits.progress import quiet_thread
from merits.serve.config import ServeConfig
from merits.serve.live import LiveStore
from merits.turns import Conversation, Turn, manifest_of

log = logging.getLogger("merits")
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class RequestError(MeritsError):
    """Input the service cannot use: becomes a 4xx answer with this message (``status``: the HTTP code)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    conversations: list[Conversation] | None  # a batchable prediction, or
    call: object = None                        # any other work for the model thread (a callable)
    online: bool = False
    future: Future = field(default_factory=Future)


class Service:
    """One trained run, ready to answer: ``predict`` (conversations), ``segment`` (whole recordings) and live
    conversations (``add_turn``, ``conversation``, ``forget``). Thread-safe; every method blocks until answered."""

    def __init__(self, run_dir: str | Path, cfg: ServeConfig | None = None):
        self.cfg = cfg = cfg or ServeConfig()
        self.run = TrainedRun.open(run_dir)
        self.predictor = Predictor(self.run, cfg.seeds, cfg.stage, cfg.device)
        self.labels = self.run.labels
        # every turn must bring audio when a speech stage decodes it (a precomputed feature table looks ids up
        # instead); the speech encoder is thereby built at start-up, not by the first request
        self.needs_audio = "audio" in self.predictor.modalities and self.predictor.speech_encoder().needs_audio
        store = Path(cfg.live_store) if cfg.live_store else self.run.directory / "serve" / "live.sqlite"
        self.live = LiveStore(store)
        self.live_audio = store.parent / "live-audio"  # the audio live turns keep (a run with a speech stage)
        self.stats = {"requests": 0, "batches": 0, "batched_requests": 0, "conversations": 0, "turns": 0}
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="merits-predict", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ what the run is
    def describe(self) -> dict:
        graph = self.run.graph
        return {"run": self.run.directory.name, "labels": list(self.labels), "stage": self.predictor.stage,
                "stages": {s.name: s.label for s in self.predictor.stages}, "reads": sorted(self.predictor.modalities),
                "seeds": self.predictor.seeds, "device": str(self.predictor.device),
                "causal": self.predictor.causal, "final_stage_label": graph[self.predictor.stage].label}

    # ------------------------------------------------------------------ requests
    def predict(self, conversations: list[Conversation], online: bool = False) -> dict:
        """Each turn's emotion (label, confidence, class probabilities, every stage's label) and each
        conversation's shares; batched with other queued requests."""
        self._check(conversations)
        return self._submit(_Job(conversations, online=online))

    def segment(self, recordings: list[tuple[str, str]]) -> dict:
        """Whole recordings [(name, path)] cut into utterances by Whisper (as ``merits predict --segment``), then
        every stage: one conversation per recording."""
        def work() -> dict:
            rows = [{"utterance_id": name, "conversation_id": name, "turn": 0, "split": "test", "text": "",
                     "label": "", "audio_path": path} for name, path in recordings]
            manifest = Manifest("upload", self.labels, pd.DataFrame(rows), source="merits serve").validate()
            with tempfile.TemporaryDirectory(prefix="merits-serve-") as work_dir:
                result = self._predict(manifest, Path(work_dir), replace(self.cfg.asr, segment=True))
            return self._answer(result)
        return self._submit(_Job(None, work))

    def add_turn(self, conversation: str, turn: Turn) -> dict:
        """Live use: append a turn and predict it from the conversation so far (what a live system knows now)."""
        self._check_id(conversation)
        self._check([Conversation(conversation, [turn])])
        return self._submit(_Job(None, lambda: self._add_turn(conversation, turn)))

    def conversation(self, conversation: str) -> dict:
        """A live conversation's turns, each with the emotion predicted when it was added, and its shares."""
        self._check_id(conversation)
        turns = self.live.turns(conversation)
        if not turns:
            raise RequestError(f"no live conversation {conversation!r} (POST a turn to "
                               f"/v1/conversations/{conversation}/turns to start one)", 404)
        return self._live_answer(conversation, turns)

    def forget(self, conversation: str) -> dict:
        """Forget a live conversation and the audio it kept (on the model thread: never while a turn of it is
        being added)."""
        self._check_id(conversation)
        return self._submit(_Job(None, lambda: self._forget(conversation)))

    def _forget(self, conversation: str) -> dict:
        if not self.live.turns(conversation):
            raise RequestError(f"no live conversation {conversation!r}", 404)
        for path in self.live.delete(conversation):
            Path(path).unlink(missing_ok=True)
        shutil.rmtree(self.live_audio / conversation, ignore_errors=True)
        return {"deleted": conversation}

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)
        self.live.close()

    # ------------------------------------------------------------------ checks (in the request's own thread)
    def _check_id(self, conversation: str) -> None:
        if not CONVERSATION_ID.fullmatch(conversation):  # match() let "abc\n" through ($ matches before \n)
            raise RequestError(f"conversation id {conversation!r}: use 1-128 letters, digits, '.', '_', ':' or '-', "
                               f"starting with a letter or digit")

    def _check(self, conversations: list[Conversation]) -> None:
        cfg, labels = self.cfg, set(self.labels)
        if not conversations:
            raise RequestError("no conversations: send at least one with at least one turn")
        turns = sum(len(c.turns) for c in conversations)
        if turns > cfg.max_turns:
            raise RequestError(f"{turns} turns in one request; this server takes at most {cfg.max_turns} "
                               f"(max_turns): split the request", 413)
        ids = [c.id for c in conversations]
        if len(set(ids)) < len(ids):
            raise RequestError(f"conversation ids repeat in one request: {sorted({i for i in ids if ids.count(i) > 1})}")
        for c in conversations:
            if not c.turns:
                raise RequestError(f"conversation {c.id!r} has no turns")
            for k, t in enumerate(c.turns):
                where = f"conversation {c.id!r}, turn {k}"
                if len(t.text) > cfg.max_text_chars:
                    raise RequestError(f"{where}: {len(t.text)} characters of text; this server takes at most "
                                       f"{cfg.max_text_chars} per turn (max_text_chars)", 413)
                if is_blank(t.text) and not t.audio:  # zero-width spaces are no text
                    raise RequestError(f"{where}: empty text and no audio: nothing to predict from")
                if self.needs_audio and not t.audio:
                    raise RequestError(f"{where}: no audio, and {self.describe()['final_stage_label']} of this run "
                                       f"needs audio for every turn")
                if t.label and t.label not in labels:
                    raise RequestError(f"{where}: label {t.label!r} is not a class of this run "
                                       f"(its classes: {', '.join(self.labels)})")

    # ------------------------------------------------------------------ the model thread
    def _submit(self, job: _Job) -> dict:
        self._jobs.put(job)
        return job.future.result()

    def _work(self) -> None:
        quiet_thread()  # a bar per request would fill the log: requests are logged as one line each instead
        while True:
            jobs = [self._jobs.get()]
            while True:  # everything queued meanwhile is answered in this round
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            if None in jobs:  # close(): answer what is queued, then stop
                jobs = [j for j in jobs if j is not None]
                self._round(jobs)
                return
            self._round(jobs)

    def _round(self, jobs: list[_Job]) -> None:
        for online in (False, True):
            batchable = [j for j in jobs if j.conversations is not None and j.online == online]
            group: list[_Job] = []
            for job in batchable:  # groups of at most max_batch conversations (a bigger request runs alone)
                if group and sum(len(j.conversations) for j in group) + len(job.conversations) > self.cfg.max_batch:
                    self._batch(group, online)
                    group = []
                group.append(job)
            if group:
                self._batch(group, online)
        for job in jobs:
            if job.call is not None:
                self._settle(job, job.call)

    def _settle(self, job: _Job, fn) -> None:
        self.stats["requests"] += 1
        try:
            job.future.set_result(fn())
        except BaseException as e:  # the caller's thread re-raises it (and turns it into an HTTP answer)
            job.future.set_exception(e)

    def _batch(self, group: list[_Job], online: bool) -> None:
        """Several requests' conversations as one input; a failure is retried one request at a time."""
        if len(group) > 1:
            try:
                tagged = [(f"r{i}", job) for i, job in enumerate(group)]
                answer = self._conversations(tagged, online)
            except Exception:
                answer = None
            if answer is not None:
                self.stats["batches"] += 1
                self.stats["batched_requests"] += len(group)
                for (tag, job) in tagged:
                    self.stats["requests"] += 1
                    job.future.set_result(answer[tag])
                return
        for job in group:
            self.stats["batches"] += 1
            self.stats["batched_requests"] += 1
            self._settle(job, lambda job=job: self._conversations([("r0", job)], online)["r0"])

    def _conversations(self, tagged: list[tuple[str, _Job]], online: bool) -> dict[str, dict]:
        names = {f"{tag}|{c.id}": (tag, c.id) for tag, job in tagged for c in job.conversations}
        manifest = manifest_of([Conversation(f"{tag}|{c.id}", c.turns) for tag, job in tagged for c in job.conversations],
                               self.labels, "merits serve", name="request")
        with tempfile.TemporaryDirectory(prefix="merits-serve-") as work:
            result = self._predict(manifest, Path(work), self.cfg.asr, online)
        answer = self._answer(result)
        out: dict[str, dict] = {tag: {**{k: v for k, v in answer.items() if k != "conversations"},
                                      "conversations": []} for tag, _ in tagged}
        for conv in answer["conversations"]:
            tag, original = names[conv["id"]]
            out[tag]["conversations"].append({**conv, "id": original})
        for tag in out:  # what was left out, under the caller's names
            out[tag]["left_out"] = [_untag(u) for u in answer["left_out"] if u.startswith(f"{tag}|")]
        return out

    def _predict(self, manifest: Manifest, work: Path, asr, online: bool = False,
                 window: int | None = None) -> PredictResult:
        start = time.perf_counter()
        result = self.predictor.predict(manifest, work, asr, online, window)
        self.stats["conversations"] += int(manifest.table["conversation_id"].nunique())
        self.stats["turns"] += len(result.turns)
        log.info("predicted %d turns of %d conversations in %.3f s", len(result.turns),
                 manifest.table["conversation_id"].nunique(), time.perf_counter() - start)
        return result

    # ------------------------------------------------------------------ live conversations (model thread)
    def _add_turn(self, conversation: str, turn: Turn) -> dict:
        stored = self.live.turns(conversation)
        k = stored[-1]["turn"] + 1 if stored else 0
        kept = ""
        if turn.audio and "audio" in self.predictor.modalities:  # later turns' predictions read this audio again
            folder = self.live_audio / conversation
            folder.mkdir(parents=True, exist_ok=True)
            kept = str(folder / f"{k:05d}{Path(turn.audio).suffix}")
            shutil.copyfile(turn.audio, kept)
        past = [Turn(s["text"], s["audio"], speaker=s["speaker"]) for s in stored]
        window = self.cfg.live_window
        context = past[-(window - 1):] if window and window > 1 else [] if window == 1 else past
        turns = context + [Turn(turn.text, kept or turn.audio, turn.label, turn.speaker)]
        first = k - len(context)  # the turn number of the first turn read
        manifest = manifest_of([Conversation(conversation, turns)], self.labels, "merits serve", first, name="live")
        try:
            with tempfile.TemporaryDirectory(prefix="merits-live-") as work:
                # the turns so far and nothing later: the last turn's prediction is its online one, for a causal
                # and a bidirectional run alike
                result = self._predict(manifest, Path(work), self.cfg.asr)
            row = _turn_json(result.turns[-1])
            if not row["label"]:
                raise RequestError(f"turn {k} of {conversation!r} could not be predicted: "
                                   + "; ".join(result.summary["notes"] or ["its audio is unusable"]))
            self.live.add(conversation, k, row["text"], kept, row, turn.speaker)
        except BaseException:
            if kept:
                Path(kept).unlink(missing_ok=True)
            raise
        answer = self._live_answer(conversation, self.live.turns(conversation))
        return {**answer, "turn": row}

    def _live_answer(self, conversation: str, turns: list[dict]) -> dict:
        table = pd.DataFrame([{"conversation_id": conversation, "turn": t["turn"], "predicted": t["result"]["label"],
                               "confidence": t["result"]["confidence"]} for t in turns])
        shares = _shares(table, self.labels)[conversation]
        return {"run": self.run.directory.name, "labels": list(self.labels), "id": conversation,
                "turns": [t["result"] for t in turns], **shares}

    # ------------------------------------------------------------------ answers
    def _answer(self, result: PredictResult) -> dict:
        """The prediction as JSON: per conversation (under its id in the input) its turns and shares."""
        convs = [{"id": c.id, "turns": [_turn_json(t) for t in c.turns], "shares": c.shares, "dominant": c.dominant,
                  "tied": c.tied, **({"mean_confidence": c.mean_confidence} if c.mean_confidence is not None else {})}
                 for c in result.conversations]
        s = result.summary
        return {"run": self.run.directory.name, "stage": s["stage"], "labels": list(self.labels),
                "seeds": s["seeds"], "online": s["online"], "conversations": convs, "left_out": s["left_out"],
                "notes": s["notes"], "scores": s["scores"]}


def _untag(utterance_id: str) -> str:
    """``r3|call-1|4`` -> ``call-1|4`` (the request tag removed)."""
    return utterance_id.split("|", 1)[1]


def _turn_json(t: TurnPrediction) -> dict:
    """A typed turn prediction as the API answers it: optional fields only where the input has them."""
    row = {"turn": t.turn, **({"speaker": t.speaker} if t.speaker else {}), "text": t.text, "label": t.label,
           "confidence": t.confidence, "probabilities": t.probabilities, "stages": t.stages}
    row.update({k: getattr(t, k) for k in ("start", "end") if getattr(t, k) is not None})
    if t.gold:
        row["gold"] = t.gold
    return row


def new_request_id() -> str:
    return uuid.uuid4().hex[:12]


__all__ = ["Conversation", "RequestError", "Service", "Turn"]
