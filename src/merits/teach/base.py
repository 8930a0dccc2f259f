"""What every teacher shares: the :class:`Teacher` interface, its :class:`Answer`, the errors that stop a run.

A teacher has a ``name``, the ``prompt_hash`` of what decides its answers, and ``label(texts, on_result)`` which
returns one :class:`Answer` per text and also hands each answer to ``on_result(index, answer)`` as soon as it
exists, so that the caller can store it before the next one arrives (nothing answered is lost when a run is
killed). The back-ends are one module each: :mod:`merits.teach.chat`, :mod:`merits.teach.local_lm`,
:mod:`merits.teach.vader`; :mod:`merits.teach.registry` names them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, TypeVar

from merits.errors import MeritsError
from merits.teach.prompt import Prompt, parse_label

# ok: a label; invalid: an answer that is not a label; error: no answer (transient: timeout, 5xx, 429, connection);
# refused: the server refused this request or answered something that is not a completion (HTTP 400, a malformed
# body): deterministic, so a rerun does not pay for it again unless asked (retry_refused)
STATUSES = ("ok", "invalid", "error", "refused")


class TeacherError(MeritsError):
    """The teacher cannot go on (refused credentials, unknown model, ...): every further request would fail."""


class BudgetExhausted(MeritsError):
    """The run's request budget is spent; answers obtained so far were delivered (and stored)."""


@dataclass
class Answer:
    raw: str | None          # the teacher's answer as received, or what went wrong (status error)
    label: str | None        # positive | negative | neutral, None unless status is ok
    status: str              # ok | invalid | error | refused
    latency_s: float = 0.0   # wall time for this item, retries and waits included
    attempts: int = 1        # requests sent for this item

    @classmethod
    def from_text(cls, raw: str, latency_s: float = 0.0, attempts: int = 1) -> "Answer":
        label = parse_label(raw)
        return cls(raw, label, "ok" if label else "invalid", latency_s, attempts)

    @classmethod
    def failed(cls, reason: str, latency_s: float = 0.0, attempts: int = 1, refused: bool = False) -> "Answer":
        return cls(reason, None, "refused" if refused else "error", latency_s, attempts)


OnResult = Callable[[int, Answer], None]


class Teacher(Protocol):
    name: str            # which teacher (back-end and model), part of the label store's key
    prompt_hash: str     # hash of what decides the answer besides the text (the prompt), part of the key
    prompt_text: str     # the prompt itself, recorded once per hash in the store

    def label(self, texts: Sequence[str], on_result: OnResult | None = None) -> list[Answer | None]:
        """One answer per text (None only for texts not attempted because a budget ran out)."""


C = TypeVar("C")


def teacher_config(cls: type[C], args: tuple, kwargs: dict) -> C:
    """A teacher's settings: its config object given alone (``ChatTeacher(cfg.chat, prompt=p)``), or that config
    built from its fields (``ChatTeacher(url, "gpt-4o", concurrency=4)``), so both ways run the same checks and
    the defaults live in one place, the config dataclass."""
    if len(args) == 1 and not kwargs and isinstance(args[0], cls):
        return args[0]
    return cls(*args, **kwargs)


def prompt_text(prompt: Prompt) -> str:
    """The prompt as the label store records it."""
    return json.dumps({"template": prompt.template, "system": prompt.system})


def batched(texts: Sequence[str], batch_size: int, answer_batch: Callable[[list[str]], list[Answer]],
            on_result: OnResult | None) -> list[Answer]:
    """Run ``answer_batch`` over texts sorted by length (less padding), delivering each batch's answers at once."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[Answer | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        t0 = time.perf_counter()
        answers = answer_batch([texts[i] for i in idx])
        per_item = (time.perf_counter() - t0) / len(idx)
        for i, answer in zip(idx, answers):
            answer.latency_s = per_item
            out[i] = answer
            if on_result:
                on_result(i, answer)
    return out  # type: ignore[return-value]
