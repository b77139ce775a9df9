"""Streams whose token Salt no longer honours are closed.

A token is checked when a stream opens; afterwards its expiry is known
(:meth:`ServerConnection.expire`), but it can also be revoked: ``/logout``,
Salt's ``LoadAuth.rm_token``, a deleted token file. So once a tick the binding
asks :meth:`TokenRecheck.calls` for one :class:`GetToken` per distinct token
held by an open stream, runs them in worker threads, and feeds each answer to
:meth:`TokenRecheck.done`, which closes every stream holding a token Salt no
longer knows: websockets with 1008 and a reason, ``/events`` by ending the
response. A token whose check is still running is not asked about again.

A check that fails (Salt's token store unreachable) closes nothing: expiry is
still enforced locally, and the next tick asks again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .broadcast import CLOSE_POLICY_VIOLATION
from .connection import ServerConnection
from .salt_calls import GetToken
from .tokens import TokenStatus, check_token

REVOKED_REASON = "token revoked"
EXPIRED_REASON = "token expired"
# Salt's cache rounds a token's expiry down to a whole second (Cache.store's
# int() of the timestamp), so it forgets a token up to this long before the
# record's ``expire``.
SALT_EXPIRY_ROUNDING = 1.0


class TokenRecheck:
    def __init__(self) -> None:
        # token → the streams holding it, for each check in flight. Keys are tokens
        # that Salt already accepted for these streams, never a client's guess.
        self._checking: dict[str, list[ServerConnection]] = {}

    def calls(self, connections: Iterable[ServerConnection]) -> list[GetToken]:
        """One :class:`GetToken` per distinct token of the open streams among
        ``connections`` that is not being checked already."""
        holders: dict[str, list[ServerConnection]] = {}
        for conn in connections:
            token = conn.stream_token
            if token is not None and token not in self._checking:
                holders.setdefault(token, []).append(conn)
        self._checking.update(holders)
        return [GetToken(token) for token in holders]

    def done(self, call: GetToken, record: Mapping[str, Any] | None, now: float) -> list[ServerConnection]:
        """Salt's answer to ``call`` at time ``now``: close the streams holding the
        token unless it is still valid; returns the connections closed (to wake)."""
        holders = self._checking.pop(call.token, [])
        status = check_token(record, now)
        if status is TokenStatus.VALID:
            return []
        closed = []
        for conn in holders:
            if conn.stream_token is None:  # closed meanwhile
                continue
            # Salt forgets (and deletes) a token once it expires: gone at its
            # expiry is expired, not revoked.
            expiry = conn.token_expire
            expired = status is TokenStatus.EXPIRED or (expiry is not None and now >= expiry - SALT_EXPIRY_ROUNDING)
            conn.close(CLOSE_POLICY_VIOLATION, EXPIRED_REASON if expired else REVOKED_REASON)
            closed.append(conn)
        return closed

    def failed(self, call: GetToken) -> None:
        """``call`` raised: keep its streams open; the next tick asks again."""
        self._checking.pop(call.token, None)

    def __len__(self) -> int:
        """Checks in flight."""
        return len(self._checking)
