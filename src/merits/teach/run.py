"""The ``teach`` step: ask a teacher for a sentiment label of every transcript of a manifest, store each answer.

    run = label_manifest(manifest, teacher, store)      # resumes from the store, never asks twice
    pretrain_manifest = pseudo_labelled_manifest(manifest, store, teacher)

``run_teach(cfg)`` and ``run_agreement(cfg)`` are the entry points of ``merits teach`` / ``merits agreement``;
``cfg`` is a :class:`TeachConfig`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from merits.config import DataConfig
from merits.data.manifest import SPLITS, Manifest, blank
from merits.errors import ConfigError, DataError
from merits.teach.agreement import AgreementConfig, agreement_table
from merits.locks import held
from merits.teach.base import BudgetExhausted, Teacher, TeacherError
from merits.teach.chat import ChatTeacherConfig
from merits.teach.label_store import LabelStore, join_labels, pseudo_labelled_manifest, text_hash
from merits.teach.local_lm import LocalTeacherConfig
from merits.teach.prompt import PromptConfig
from merits.teach.registry import build_teacher, check_teacher
from merits.teach.vader import VaderTeacherConfig

log = logging.getLogger("merits")


@dataclass
class TeachConfig:
    """``merits teach`` / ``merits agreement``: which manifest, which teacher, where the answers are stored.

    Load with ``load_config(path_or_None, overrides, cls=TeachConfig)`` (shipped: teach-vader, teach-local,
    teach-openai). Each teacher's settings are its own section (``chat``, ``local``, ``vader``: see
    :mod:`merits.teach.registry`).
    """

    teacher: str = "vader"                     # chat | local | vader (merits.teach.registry.TEACHERS)
    store: str = "runs/labels.sqlite"          # the SQLite label store (created if absent)
    manifest: str | None = None                # a saved manifest directory; None = build it from `data`
    data: DataConfig = field(default_factory=DataConfig)
    splits: list[str] = field(default_factory=list)  # only these splits; empty = all
    limit: int | None = None                   # label at most this many utterances (in manifest order)
    retry_errors: bool = True                  # ask again for items whose last attempt failed transiently
    retry_refused: bool = False                # ask again (and pay again) for requests the server refused (HTTP 400,
                                               # malformed replies): deterministic, so off unless asked
    export: str | None = None                  # write the 3-class pseudo-labelled manifest to this directory
    prompt: PromptConfig = field(default_factory=PromptConfig)
    chat: ChatTeacherConfig = field(default_factory=ChatTeacherConfig)
    local: LocalTeacherConfig = field(default_factory=LocalTeacherConfig)
    vader: VaderTeacherConfig = field(default_factory=VaderTeacherConfig)
    agreement: AgreementConfig = field(default_factory=AgreementConfig)

    def __post_init__(self) -> None:
        check_teacher(self.teacher)
        bad = sorted(set(self.splits) - set(SPLITS))
        if bad:
            raise ConfigError(f"splits: unknown {bad}; use train, validation, test")


@dataclass
class LabelRun:
    """What one labelling run did, and where the selection stands afterwards."""

    corpus: str
    teacher: str
    prompt_hash: str
    selected: int                 # utterances with text in the chosen splits (after the limit)
    skipped_empty: int            # utterances left out because their text is empty
    already_stored: int           # answers found in the store, not asked again
    asked: int                    # utterances sent to the teacher in this run
    answered: int                 # answers stored in this run
    seconds: float
    labels_per_s: float           # answers stored per second of this run
    counts: dict = field(default_factory=dict)  # over the selection after the run: ok / invalid / error / missing / stale
    invalid_rate: float = 0.0     # invalid / (ok + invalid) over the selection
    stopped: str | None = None    # why the run stopped before asking for everything (request budget, dead teacher)
    failed: bool = False          # stopped by an error of the teacher (not by the budget): the exit status says so

    def summary(self) -> str:
        c = self.counts
        text = (f"{self.teacher} on {self.corpus} (prompt {self.prompt_hash}): {self.selected} utterances, "
                f"{self.already_stored} already stored, {self.answered} of {self.asked} answered now "
                f"({self.labels_per_s:.1f} labels/s); ok {c.get('ok', 0)}, invalid {c.get('invalid', 0)} "
                f"({100 * self.invalid_rate:.1f}% of answers), errors {c.get('error', 0)}, refused {c.get('refused', 0)}, "
                f"missing {c.get('missing', 0) + c.get('stale', 0)}")
        if self.skipped_empty:
            text += f"; {self.skipped_empty} empty transcripts skipped"
        if self.stopped:
            text += f"\nstopped early: {self.stopped}. Every answer received is stored; rerun to continue."
            if self.failed:
                text = "error: " + text
        return text

    def to_dict(self) -> dict:
        return asdict(self)


def label_manifest(manifest: Manifest, teacher: Teacher, store: LabelStore, splits=None, limit: int | None = None,
                   retry_errors: bool = True, show_progress: bool = True, retry_refused: bool = False) -> LabelRun:
    """Label the manifest's transcripts with ``teacher``, storing each answer as it arrives.

    Utterances already stored for this teacher and prompt (with the same text) are not asked again; with
    ``retry_errors`` those whose last attempt failed (status error) are. A spent request budget, or a teacher that
    cannot go on (refused key, dead endpoint), ends the run cleanly (``LabelRun.stopped``; ``failed`` for the
    latter): what was answered is stored, the rest is asked for by the next run. One run at a time labels into a
    store (its lock): a second waits, then asks only for what the first left, so no text is paid for twice.
    """
    with held(store.path, f"label store {store.path}"):
        return _label(manifest, teacher, store, splits, limit, retry_errors, retry_refused, show_progress)


@dataclass
class Selection:
    """What a labelling run works on: the selected rows, and of them the ones the store does not hold yet."""

    table: object              # the selected rows (with text)
    skipped_empty: int
    ids: list
    texts: list
    hashes: list
    pending: list              # positions in ids / texts / hashes still to ask for


def select(manifest: Manifest, teacher: Teacher, store: LabelStore, splits=None, limit=None, retry_errors=True,
           retry_refused=False) -> Selection:
    """The rows to label (splits, limit, non-empty text) and those not stored yet for this teacher and prompt
    (or whose text changed): the single-process run and the corpus-scale pipeline choose alike."""
    t = manifest.table
    if splits:
        t = t[t["split"].isin(list(splits))]
    empty = blank(t["text"])
    t = t[~empty]
    if limit is not None:
        t = t.head(limit)
    if t.empty:
        raise DataError(f"manifest of {manifest.corpus!r} has no transcripts to label"
                        + (f" in splits {list(splits)}" if splits else ""))
    ids, texts = t["utterance_id"].tolist(), t["text"].tolist()
    hashes = [text_hash(x) for x in texts]
    store.register_prompt(teacher.prompt_hash, teacher.prompt_text)
    store.claim(manifest.corpus, manifest.source)
    stored = store.stored(manifest.corpus, teacher.name, teacher.prompt_hash, include_errors=not retry_errors,
                          include_refused=not retry_refused)
    pending = [i for i, (u, h) in enumerate(zip(ids, hashes)) if stored.get(u) != h]
    stale = sum(1 for i in pending if ids[i] in stored)
    # the same text already answered by this teacher and prompt (another corpus, another utterance, a row another
    # corpus of the same name replaced): stored for these rows without paying again
    reused = store.reuse(manifest.corpus, teacher.name, teacher.prompt_hash, [(ids[i], hashes[i]) for i in pending])
    if reused:
        log.info("%d utterances reuse an answer already bought for the same text: not asked again", len(reused))
        pending = [i for i in pending if ids[i] not in reused]
        stale = sum(1 for i in pending if ids[i] in stored)
    if stale:
        log.info("%d utterances changed text since they were labelled: asking again", stale)
    return Selection(t, int(empty.sum()), ids, texts, hashes, pending)


def report(manifest: Manifest, teacher: Teacher, store: LabelStore, sel: Selection, answered: int, seconds: float,
           stopped: str | None, failed: bool) -> LabelRun:
    """The run's counts over the selection, read back from the store."""
    selection = Manifest(manifest.corpus, manifest.labels, sel.table, manifest.source)
    if store.stored(manifest.corpus, teacher.name, teacher.prompt_hash):
        status = join_labels(selection, store, teacher)["teacher_label_status"].value_counts().to_dict()
    else:  # nothing stored yet for this teacher (e.g. its endpoint was down from the first request)
        status = {"missing": len(sel.table)}
    counts = {k: int(v) for k, v in status.items()}
    given = counts.get("ok", 0) + counts.get("invalid", 0)
    run = LabelRun(manifest.corpus, teacher.name, teacher.prompt_hash, len(sel.table), sel.skipped_empty,
                   len(sel.ids) - len(sel.pending), len(sel.pending), answered, seconds,
                   answered / seconds if seconds > 0 else 0.0, counts,
                   counts.get("invalid", 0) / given if given else 0.0, stopped, failed)
    log.debug("%s", run.summary())  # callers print or log it (the CLI prints it)
    return run


def _label(manifest: Manifest, teacher: Teacher, store: LabelStore, splits, limit, retry_errors, retry_refused,
           show_progress) -> LabelRun:
    from merits.progress import progress

    sel = select(manifest, teacher, store, splits, limit, retry_errors, retry_refused)
    pending = sel.pending
    bar = progress(None, total=len(pending), unit="label", desc=f"teach {teacher.name}") if show_progress else None
    answered = 0

    def on_result(k: int, answer) -> None:
        nonlocal answered
        i = pending[k]
        store.put(manifest.corpus, sel.ids[i], teacher.name, teacher.prompt_hash, sel.hashes[i], answer)
        answered += 1
        if bar is not None:
            bar.update(1)

    stopped, failed, start = None, False, time.perf_counter()
    try:
        if pending:
            teacher.label([sel.texts[i] for i in pending], on_result)
    except BudgetExhausted as e:
        stopped = str(e)
        log.warning("%s", e)
    except TeacherError as e:  # the counts are still reported: what was answered is stored
        stopped, failed = str(e), True
    finally:
        if bar is not None:
            bar.close()
    return report(manifest, teacher, store, sel, answered, time.perf_counter() - start, stopped, failed)


def load_manifest(cfg: TeachConfig) -> Manifest:
    """The manifest a TeachConfig names: a saved manifest directory, or one built from ``data``."""
    from merits.data import prepare_config

    return Manifest.load(cfg.manifest) if cfg.manifest else prepare_config(cfg.data)


def run_teach(cfg: TeachConfig) -> LabelRun:
    """``merits teach``: label the configured manifest, then export the pseudo-labelled manifest if asked."""
    manifest = load_manifest(cfg)
    if cfg.export:  # the 3-class export must never replace its own input (its gold labels) or a run's files
        from merits.runs import check_output

        check_output(cfg.export, [cfg.manifest], "export")
    teacher = build_teacher(cfg)
    with LabelStore(cfg.store) as store:
        run = label_manifest(manifest, teacher, store, splits=cfg.splits or None, limit=cfg.limit,
                             retry_errors=cfg.retry_errors, retry_refused=cfg.retry_refused)
        if cfg.export and not run.failed:
            out = pseudo_labelled_manifest(manifest, store, teacher)
            out.save(cfg.export)
            log.info("pseudo-labelled manifest (%d utterances) written to %s", len(out.table), cfg.export)
    return run


def run_agreement(cfg: TeachConfig, teachers=None):
    """``merits agreement``: every teacher stored for the configured manifest against its reference labels."""
    manifest = load_manifest(cfg)
    if cfg.splits:
        manifest = manifest.select(manifest.table.loc[manifest.table["split"].isin(cfg.splits), "utterance_id"])
    with LabelStore(cfg.store) as store:
        return agreement_table(manifest, store, **asdict(cfg.agreement), teachers=teachers)
