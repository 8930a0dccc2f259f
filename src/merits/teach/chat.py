"""The chat teacher: any OpenAI-compatible ``/chat/completions`` server (OpenAI, vLLM, llama.cpp server, Ollama, ...).

Asynchronous with bounded concurrency, retries with exponential backoff (honouring ``Retry-After``), a per-request
timeout and a per-run request budget. The API key is read from an environment variable whose *name* is configured
and lives only in the HTTP session's headers: it is never stored, logged, put into an answer or an exception.
aiohttp is imported only when a run starts.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Sequence

from merits.errors import ConfigError
from merits.secrets import redact_url, redactor, url_secrets
from merits.teach.base import Answer, BudgetExhausted, OnResult, TeacherError, prompt_text, teacher_config
from merits.teach.prompt import SENTIMENTS, Prompt

log = logging.getLogger("merits")


@dataclass
class ChatTeacherConfig:
    """An OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp server, Ollama, ...)."""

    base_url: str = "https://api.openai.com/v1"  # an OpenAI-compatible endpoint (vLLM, llama.cpp server, ...)
    model: str = "gpt-3.5-turbo"                # the model the endpoint serves
    api_key_env: str | None = "OPENAI_API_KEY"  # NAME of the environment variable holding the key; null = no key
    concurrency: int = 8                       # requests in flight at once
    timeout_s: float = 30.0                    # per request (one attempt)
    max_retries: int = 5                       # retries after the first attempt on 429 / 5xx / timeout / connection
    backoff_s: float = 1.0                     # first retry wait, doubled per retry (with jitter) unless Retry-After
    max_backoff_s: float = 60.0                # longest wait; a larger Retry-After makes the item an error
    max_requests: int | None = None            # request budget of one run (retries count); null = unlimited.
                                               # Per run: two runs on one store take turns (the store's lock), so
                                               # the second asks only for what the first left
    max_consecutive_failures: int = 8          # circuit breaker: this many failed attempts in a row, over all items
                                               # (connection refused, timeouts, 5xx, 429), stop the run
    max_tokens: int = 8                         # the answer is one label word
    temperature: float = 0.0                    # 0: the same answer for the same prompt
    extra_body: dict = field(default_factory=dict)  # more JSON fields for the request body
    base_urls: list[str] = field(default_factory=list)  # more endpoints serving the same model: requests go
                                               # round-robin over base_url and these (several vLLM servers)
    structured: str = "none"                   # none | choice: vLLM structured outputs restrict the answer to the
                                               # labels ({"structured_outputs": {"choice": [...]}}) | guided_choice
                                               # (older vLLM servers): every answer parses

    def __post_init__(self) -> None:
        for key in ("concurrency", "max_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"chat.{key} must be >= 1, got {getattr(self, key)}")
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0:
            raise ConfigError("chat: timeout_s must be > 0, max_retries and backoff_s >= 0")
        if self.max_consecutive_failures < 1:
            raise ConfigError(f"chat.max_consecutive_failures must be >= 1, got {self.max_consecutive_failures}")
        if self.max_requests is not None and self.max_requests < 1:
            raise ConfigError(f"chat.max_requests must be >= 1 or null, got {self.max_requests}")
        if self.structured not in ("none", "choice", "guided_choice"):
            raise ConfigError(f"chat.structured: {self.structured!r} is not none | choice | guided_choice")


RETRY_STATUSES = {408, 409, 429}  # plus every 5xx: the server may answer next time
FATAL_STATUSES = {401: "the API key was refused", 403: "access is forbidden", 404: "no such endpoint or model"}
SNIPPET = 300  # characters of a response body kept in an error


class _Breaker:
    """Counts failed attempts in a row over every item of a run; at the limit the endpoint is taken for dead and the
    run stops (instead of retrying every item with full backoff, hours for a large corpus)."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row = limit, 0
        self.stop = asyncio.Event()  # set when the run must stop: waiting workers wake up at once

    def success(self) -> None:
        self.in_a_row = 0

    def failure(self, url: str, reason: str) -> None:
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            self.stop.set()
            raise TeacherError(f"{url} failed {self.in_a_row} times in a row (last: {reason}): it looks down, so the "
                               "run stops (chat.max_consecutive_failures); rerun "
                               "when the server is back")


class _Budget:
    """The run's request budget in this process. Several workers share one through a lease-holding object with the
    same ``take()`` (merits.teach.corpus.SharedBudget)."""

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
    """An OpenAI-compatible chat-completions server over HTTP (see the module docstring).

    ``ChatTeacher(cfg, prompt=p)`` with a :class:`ChatTeacherConfig`, or its fields directly:
    ``ChatTeacher("http://localhost:8000/v1", "my-model", api_key_env=None, concurrency=4)``.
    """

    def __init__(self, *args, prompt: Prompt | None = None, **kwargs):
        self.cfg = c = teacher_config(ChatTeacherConfig, args, kwargs)
        self.urls = [u.rstrip("/") + "/chat/completions" for u in [c.base_url, *c.base_urls]]
        self.url = self.urls[0]
        self.shown_url = ", ".join(redact_url(u) for u in self.urls)  # what messages show: no credentials
        self._next = 0  # round-robin position over self.urls
        self.prompt = prompt or Prompt()
        self.body = {"model": c.model, "max_tokens": c.max_tokens, "temperature": c.temperature, **(c.extra_body or {})}
        if c.structured == "choice":
            self.body["structured_outputs"] = {"choice": list(SENTIMENTS)}
        elif c.structured == "guided_choice":
            self.body["guided_choice"] = list(SENTIMENTS)
        self.name = f"chat:{c.model}"
        self.prompt_hash = self.prompt.hash()
        self.prompt_text = prompt_text(self.prompt)
        self.requests_sent = 0  # over this teacher's lifetime, for reports and tests
        self._api_key()  # fail now, before any work, when the key's variable is not set (the key is not kept)

    def __repr__(self) -> str:  # names the variable, never its value
        return f"ChatTeacher(url={self.shown_url!r}, model={self.cfg.model!r}, api_key_env={self.cfg.api_key_env!r})"

    def _api_key(self) -> str | None:
        if not self.cfg.api_key_env:
            return None
        key = os.environ.get(self.cfg.api_key_env)
        if not key:
            raise ConfigError(f"chat.api_key_env: the environment variable {self.cfg.api_key_env} is not set; export it, "
                              "or set chat.api_key_env=null for a server that needs no key")
        if key != key.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
            raise ConfigError(f"the key in ${self.cfg.api_key_env} contains a newline, spaces at its ends or another "
                              "control character (a copy-paste slip?): it cannot go into an HTTP header; set it again")
        if any(url_secrets(u) for u in [self.cfg.base_url, *self.cfg.base_urls]):
            raise ConfigError(f"chat.base_url ({self.shown_url}) carries credentials and chat.api_key_env "
                              f"({self.cfg.api_key_env}) names a key too: use one of them (chat.api_key_env=null to "
                              "keep the URL's)")
        return key

    def label(self, texts, on_result=None, budget=None):
        return asyncio.run(self.alabel(texts, on_result, budget))

    async def alabel(self, texts: Sequence[str], on_result: OnResult | None = None, budget=None) -> list[Answer | None]:
        """``label`` for callers already inside an event loop. ``budget``: a shared request budget (an object with
        ``take()``); default this run's own ``chat.max_requests``."""
        import aiohttp

        key = self._api_key()
        redact = redactor(key, *(s for u in [self.cfg.base_url, *self.cfg.base_urls] for s in url_secrets(u)))
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        budget = budget if budget is not None else _Budget(self.cfg.max_requests)
        breaker = _Breaker(self.cfg.max_consecutive_failures)
        results: list[Answer | None] = [None] * len(texts)
        items = iter(enumerate(texts))  # shared by the workers: each takes the next text when it is free
        failure: list[BaseException] = []

        async def worker(session) -> None:
            for i, text in items:
                if failure:
                    return
                try:
                    answer = await self._one(session, text, budget, redact, breaker)
                    results[i] = answer
                    if on_result:
                        on_result(i, answer)
                except Exception as e:  # noqa: BLE001 - first failure stops every worker, then is raised below
                    failure.append(e)
                    breaker.stop.set()  # wake the workers waiting to retry
                    return

        connector = aiohttp.TCPConnector(limit=self.cfg.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(min(self.cfg.concurrency, len(texts)))))
        if failure:
            other = [e for e in failure if not isinstance(e, BudgetExhausted)]
            if other:
                raise other[0]
            done = sum(r is not None for r in results)
            raise BudgetExhausted(f"request budget of {self.cfg.max_requests} requests (chat.max_requests) exhausted: "
                                  f"{done} of {len(texts)} texts answered, {len(texts) - done} left for the next run")
        return results

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter in [0.5, 1] so that workers hit by the same outage do not retry in lockstep.
        return min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    async def _one(self, session, text: str, budget: _Budget, redact, breaker: "_Breaker") -> Answer:
        import aiohttp

        body = dict(self.body, messages=self.prompt.messages(text))
        start = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            if breaker.stop.is_set():
                raise TeacherError("stopped: another request of this run failed for good")
            budget.take()
            self.requests_sent += 1
            url = self.urls[self._next % len(self.urls)]  # balanced over the endpoints, retries included
            self._next += 1
            retry_after = None
            try:
                async with session.post(url, json=body) as response:
                    payload = await response.read()
                    status = response.status
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            except (asyncio.TimeoutError, aiohttp.ClientError) as e:
                reason = (f"no answer within {self.cfg.timeout_s} s (chat.timeout_s)" if isinstance(e, asyncio.TimeoutError)
                          else redact(f"{type(e).__name__}: {e}"))
            else:
                snippet = redact(payload[:SNIPPET].decode("utf-8", errors="replace"))
                if status == 200:
                    breaker.success()
                    return self._parse(payload, snippet, redact, time.perf_counter() - start, attempt)
                reason = f"HTTP {status}: {snippet}"
                if status in FATAL_STATUSES:
                    if status in (401, 403):
                        hint = (f"check the key in ${self.cfg.api_key_env}" if self.cfg.api_key_env else
                                "the server wants credentials: set chat.api_key_env to the variable holding its key")
                    else:
                        hint = f"check chat.base_url ({self.shown_url}) and chat.model ({self.cfg.model!r})"
                    raise TeacherError(f"{self.shown_url} answered HTTP {status} ({FATAL_STATUSES[status]}): {hint}")
                if status not in RETRY_STATUSES and status < 500:  # e.g. 400: this request is refused, retrying won't help
                    breaker.success()  # the server is alive; it refuses this one request
                    return Answer.failed(reason, time.perf_counter() - start, attempt, refused=True)
            breaker.failure(self.shown_url, reason)
            if attempt > self.cfg.max_retries:
                return Answer.failed(f"gave up after {attempt} attempts: {reason}", time.perf_counter() - start, attempt)
            wait = self._backoff(attempt) if retry_after is None else retry_after
            if wait > self.cfg.max_backoff_s:
                return Answer.failed(f"{reason}; Retry-After {wait:.0f} s exceeds chat.max_backoff_s "
                                     f"({self.cfg.max_backoff_s} s)", time.perf_counter() - start, attempt)
            log.debug("teacher %s: attempt %d failed (%s); retrying in %.2f s", self.name, attempt, reason, wait)
            try:  # a wait that ends early when the run stops (the breaker, or another item's fatal error)
                await asyncio.wait_for(breaker.stop.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    @staticmethod
    def _parse(payload: bytes, snippet: str, redact, latency_s: float, attempts: int) -> Answer:
        """The answer text of a chat completion; a body that is not one is this item's error, not the run's."""
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return Answer.failed(f"malformed response: {snippet}", latency_s, attempts, refused=True)
        if content is not None and not isinstance(content, str):
            return Answer.failed(f"malformed response (content is not text): {snippet}", latency_s, attempts, refused=True)
        return Answer.from_text(redact(content or ""), latency_s, attempts)  # null content (a refusal) is invalid
