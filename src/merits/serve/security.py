"""Who may use ``merits serve``: API keys, the Host allow-list, no cross-site writes, bounded request bodies.

- API keys (``Authorization: Bearer <key>``) come from a file (``api_keys_file``, one per line) or the environment
  (``api_keys_env``, comma-separated), never from the command line (a process list shows it). With keys, every
  ``/v1/*`` endpoint and ``/health`` need one, compared in constant time; the page, the static files and the
  API docs stay open. A server listening on anything but loopback refuses to start without keys.
- Host allow-list (Starlette's TrustedHostMiddleware): a request whose ``Host`` is not the server's own name is
  refused, so a page on another site cannot reach it through a rebound DNS name.
- Cross-site writes: a POST / DELETE whose ``Origin`` is another site (or that the browser marks
  ``Sec-Fetch-Site: cross-site``) is refused: a page elsewhere cannot post a turn into a live conversation. The keys
  travel in a header, never a cookie, so a browser never adds them on another site's behalf.
- Request bodies are counted as they arrive (chunked bodies have no Content-Length): past the limit the request is
  answered 413 without reading the rest.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from merits.errors import ConfigError

log = logging.getLogger("merits")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
OPEN_PATHS = ("/", "/docs", "/redoc", "/openapi.json", "/favicon.ico")  # no key needed (and /static/...)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_api_keys(keys_file: str | None, keys_env: str | None) -> list[str]:
    """The accepted keys: the file's non-empty lines (``#`` comments skipped) and the variable's comma-separated
    values. Never logged."""
    keys: list[str] = []
    if keys_file:
        path = Path(keys_file)
        if not path.is_file():
            raise ConfigError(f"api_keys_file {path} does not exist")
        keys += [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if keys_env and os.environ.get(keys_env):
        keys += [k.strip() for k in os.environ[keys_env].split(",") if k.strip()]
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ConfigError(f"{len(short)} API key(s) shorter than 16 characters; use long random keys "
                          "(python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
    return keys


def allowed_hosts(bind: str, extra: list[str]) -> list[str]:
    """The Host names the server answers to: the loopback names, the address it listens on, and ``extra``."""
    hosts = [*LOOPBACK_NAMES, *extra]
    if bind not in ("0.0.0.0", "::", ""):
        hosts.append(bind)
    return sorted(set(hosts))


class Guard:
    """ASGI middleware: keys, cross-site writes, body size. (The Host check is TrustedHostMiddleware's.)"""

    def __init__(self, app, keys: list[str], hosts: list[str], max_body: int):
        self.app, self.keys, self.hosts, self.max_body = app, [k.encode() for k in keys], set(hosts), max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if method not in ("GET", "HEAD", "OPTIONS") and self._cross_site(headers):
            return await _answer(send, 403, "cross-site request refused: this server takes writes from its own page "
                                            "or from clients that send no Origin")
        if self.keys and not (path in OPEN_PATHS or path.startswith("/static/")) and not self._authorised(headers):
            return await _answer(send, 401, "an API key is needed: send 'Authorization: Bearer <key>'",
                                 [(b"www-authenticate", b"Bearer")])
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return await _answer(send, 413, f"request of {int(length) / (1 << 20):.1f} MB; this server takes at most "
                                            f"{self.max_body / (1 << 20):.0f} MB")
        seen, over, started = 0, False, False

        async def counted():
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # a chunked body past the limit: stop reading it
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def sending(message):
            nonlocal started
            if over and not started:
                return  # the app's answer to a body it could not read; the 413 below is sent instead
            started = True
            await send(message)

        from starlette.requests import ClientDisconnect

        try:
            await self.app(scope, counted, sending)
        except ClientDisconnect:
            if not over:  # the client went away: one line, not a traceback
                log.info("client disconnected during %s %s", method, path)
                return
        except RuntimeError as e:  # Starlette's "Unexpected message received: http.disconnect"
            if not over:
                raise
            log.debug("body over the limit: %s", e)
        if over and not started:
            await _answer(send, 413, f"request body over {self.max_body / (1 << 20):.0f} MB: refused")

    def _authorised(self, headers: dict) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        return any(hmac.compare_digest(given, key) for key in self.keys)  # constant time per key

    def _cross_site(self, headers: dict) -> bool:
        if headers.get("sec-fetch-site") == "cross-site":
            return True
        origin = headers.get("origin")
        if not origin or origin == "null":
            return origin == "null"  # a sandboxed frame or a file: page
        host = urlsplit(origin).hostname or ""
        return host not in self.hosts and f"[{host}]" not in self.hosts


async def _answer(send, status: int, error: str, extra: list | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
