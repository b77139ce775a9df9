"""Token checks: pure decisions over a token record and a time the binding supplies.

The record is what Salt's ``LoadAuth.get_tok(token)`` returns: ``{}`` for an
unknown (or already-deleted expired) token, else a dict with ``start``,
``expire``, ``name``, ``eauth``. The binding fetches it off the event loop and
passes "now" in; nothing here reads a clock.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Mapping
from typing import Any

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


def redact(text: str, token: str | None) -> str:
    """``text`` with every occurrence of ``token`` replaced, for logs."""
    if not token:
        return text
    return text.replace(token, token[:4] + "…")


def redact_path(target: str, length: int) -> str:
    """A request target fit for logs: token-shaped path segments are masked.

    ``/all_events/<64 hex>?x=1`` → ``/all_events/<token>?x=1``.
    """
    path, sep, query = target.partition("?")
    segments = [
        "<token>" if is_token_shaped(segment, length) else segment for segment in path.split("/")
    ]
    return "/".join(segments) + sep + query
