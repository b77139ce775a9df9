"""Token checks: pure decisions over a token record and a time the binding supplies.

The record is what Salt's ``LoadAuth.get_tok(token)`` returns: ``{}`` for an
unknown (or already-deleted expired) token, else a dict with ``start``,
``expire``, ``name``, ``eauth``. The binding fetches it off the event loop and
passes "now" in; nothing here reads a clock.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, unquote_plus

from .kinds import TOKEN_IN_PATH

_HEX = frozenset("0123456789abcdefABCDEF")


class TokenStatus(enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


def check_token(record: Mapping[str, Any] | None, now: float) -> TokenStatus:
    """Classify a token record at time ``now`` (seconds since the epoch)."""
    if not record:
        return TokenStatus.UNKNOWN
    expire = record.get("expire")
    if not isinstance(expire, (int, float)) or isinstance(expire, bool):
        return TokenStatus.UNKNOWN
    return TokenStatus.VALID if expire > now else TokenStatus.EXPIRED


def is_token_shaped(token: str, length: int) -> bool:
    """True if ``token`` is exactly ``length`` hex digits (the master's hash_type digest)."""
    return len(token) == length and all(c in _HEX for c in token)


def same_token(a: str, b: str) -> bool:
    """Constant-time comparison, for any local token comparison."""
    return hmac.compare_digest(a.encode(), b.encode())


# Query-string keys whose values are credentials, whatever their shape.
# (``salt_token``: rest_cherrypy's /events takes a token under that name too.)
SECRET_QUERY_KEYS = frozenset({"token", "salt_token", "session_id", "x-auth-token", "password"})
MASK = "<token>"
# Any run of 32 or more hex digits: a token of every hash_type Salt offers
# (md5's 32 up to sha512's 128), never a jid (20 digits).
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])")


def redact_path(target: str, length: int) -> str:
    """A request target fit for logs: tokens in the path and the query are masked.

    ``/all_events/<64 hex>?x=1`` → ``/all_events/<token>?x=1``; also a
    percent-encoded token, the segment after ``/all_events/`` or
    ``/formatted_events/`` of any shape, and the value of a ``token``,
    ``session_id`` or ``password`` query parameter.
    """
    path, sep, query = target.partition("?")
    segments = path.split("/")
    for i, segment in enumerate(segments):
        after_route = i > 0 and segments[i - 1] in TOKEN_IN_PATH
        if (after_route and segment) or is_token_shaped(unquote(segment), length):
            segments[i] = MASK
    pairs = []
    for pair in query.split("&") if query else ():
        key, eq, value = pair.partition("=")
        if unquote_plus(key).lower() in SECRET_QUERY_KEYS or is_token_shaped(unquote_plus(value), length):
            value = MASK
        pairs.append(key + eq + value)
    return "/".join(segments) + sep + "&".join(pairs)


def redact_tokens(text: str) -> str:
    """``text`` with every run of 32+ hex digits (a token of any ``hash_type``)
    masked: the last line of defence for log records (see ``saltnado_runtime.logs``)."""
    return _HEX_RUN.sub(MASK, text)
