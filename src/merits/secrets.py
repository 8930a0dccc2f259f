"""Keeping secrets out of what merits shows or stores: URLs with credentials, API keys."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_QUERY = re.compile(r"(key|token|secret|password|sig|auth)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` without its secrets: ``user:password@`` becomes ``***@`` and key-like query values ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode([(k, "***" if SECRET_QUERY.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The secret pieces of ``url`` (password, user, key-like query values), for replacing wherever they appear."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [x for x in (parts.password, parts.username) if x]
    found += [v for k, v in parse_qsl(parts.query) if SECRET_QUERY.search(k) and v]
    return found


def redactor(*secrets: str | None):
    """A function that replaces every given secret (longest first) by ``***`` in a text."""
    pieces = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(text: str) -> str:
        for piece in pieces:
            text = text.replace(piece, "***")
        return text

    return redact
