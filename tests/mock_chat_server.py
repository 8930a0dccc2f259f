"""A local OpenAI-compatible chat-completions server: for tests, benchmarks, and trying ``merits teach`` offline.

It answers ``POST /v1/chat/completions`` after a fixed delay with a keyword rule ("good" / "love" / "great" ->
"Positive.", "bad" / "hate" / "awful" -> " NEGATIVE\\n", else "neutral!"), and injects faults when the text holds
a marker, on the first request for that text only (a retry then succeeds):

    [429]  HTTP 429 with ``Retry-After: 1``        [500]  HTTP 500          [hang]  no answer for 30 s
    [malformed]  HTTP 200 with a body that is not JSON (every time)     [chatty]  "I think it is positive"

A request with vLLM's structured outputs (``structured_outputs: {"choice": [...]}`` or ``guided_choice``) is answered
with exactly one of the choices, as vLLM does; the fields are recorded per request.

With ``api_key`` set, a request without ``Authorization: Bearer <api_key>`` gets HTTP 401. Every request is
recorded (text, arrival time, status). It only ever listens on 127.0.0.1.

    python tests/mock_chat_server.py --port 8011 --delay 0.2

It lives under tests/ (not in the package): only tests, benchmarks and people trying merits out need it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import Counter

POSITIVE, NEGATIVE = ("good", "love", "great"), ("bad", "hate", "awful")


def keyword_answer(text: str) -> str:
    low = text.lower()
    if any(w in low for w in POSITIVE):
        return "Positive."
    if any(w in low for w in NEGATIVE):
        return " NEGATIVE\n"
    return "neutral!"


def _completion(content: str) -> dict:
    return {"id": "mock", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


class MockChatServer:
    """Runs in a background thread with its own event loop; ``start()`` returns once it listens."""

    def __init__(self, delay_s: float = 0.0, api_key: str | None = None, port: int = 0, hang_s: float = 30.0):
        self.delay_s = delay_s
        self.api_key = api_key
        self.port = port
        self.hang_s = hang_s
        self.requests: list[dict] = []      # {"text", "t", "status", "authorization_ok", "fields"}
        self.counts: Counter = Counter()    # text -> requests received
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _record(self, text: str, status: int, auth_ok: bool, fields: dict | None = None) -> int:
        with self._lock:
            self.counts[text] += 1
            self.requests.append({"text": text, "t": time.monotonic(), "status": status, "authorization_ok": auth_ok,
                                  "fields": fields or {}})
            return self.counts[text]

    async def _handle(self, request):
        from aiohttp import web

        body = await request.json()
        text = body["messages"][-1]["content"]
        auth_ok = self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"
        first = self.counts[text] == 0
        status = 200
        if not auth_ok:
            status = 401
        elif first and "[429]" in text:
            status = 429
        elif first and "[500]" in text:
            status = 500
        structured = {k: body[k] for k in ("structured_outputs", "guided_choice") if k in body}
        self._record(text, status, auth_ok, structured)
        if status == 401:
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        if status == 429:
            return web.json_response({"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "1"})
        if status == 500:
            return web.json_response({"error": {"message": "internal error"}}, status=500)
        await asyncio.sleep(self.hang_s if first and "[hang]" in text else self.delay_s)
        if "[malformed]" in text:
            return web.Response(text='{"choices": [{"message": ', content_type="application/json")
        content = "I think it is positive" if "[chatty]" in text else keyword_answer(text)
        choices = (structured.get("structured_outputs") or {}).get("choice") or structured.get("guided_choice")
        if choices:  # like vLLM's structured outputs: exactly one of the choices, whatever the model meant
            content = next((c for c in choices if c in content.lower()), choices[0])
        return web.Response(text=json.dumps(_completion(content)), content_type="application/json")

    async def _counts(self, request):
        from aiohttp import web

        with self._lock:
            return web.json_response(dict(self.counts))

    async def _serve(self, ready: threading.Event) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/requests", self._counts)  # requests received per message (benchmarks read it)
        # handler_cancellation: a client that gave up (timeout) ends its handler, so stop() never waits for a hang.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=512)
        await site.start()
        self.port = self._runner.addresses[0][1]
        ready.set()

    def start(self) -> "MockChatServer":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="mock-chat-server")
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop).result(timeout=10)
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "MockChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--api-key", help="require this bearer key")
    args = parser.parse_args(argv)
    server = MockChatServer(args.delay, args.api_key, args.port).start()
    print(f"listening on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
