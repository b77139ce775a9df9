"""Streams whose token Salt no longer honours are closed.

A token is checked when a stream opens; afterwards its expiry is known
(:meth:`ServerConnection.expire`), but it can also be revoked: ``/logout``,
Salt's ``LoadAuth.rm_token``, a deleted token file. So once a tick the binding
asks :meth:`TokenRecheck.calls` for one :class:`GetToken` per distinct token
held by a streaming connection (:attr:`EventStreams.tokens`, kept as streams
attach and detach, so a tick costs one look per token, not per connection),
runs them in worker threads, and feeds each answer to :meth:`TokenRecheck.done`,
which closes every stream holding a token Salt no longer knows: websockets with
1008 and a reason, ``/events`` by ending the response. A token whose check is
still running is not asked about again. The tokens are ones Salt accepted for
these streams, never a client's guess; they are still compared in constant time.

A check that fails (Salt's token store unreachable) closes nothing: expiry is
still enforced locally, and the next tick asks again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .kinds import CloseCode
from .connection import ServerConnection
from .salt_calls import GetToken
from .tokens import TokenStatus, check_token, same_token

REVOKED_REASON = "token revoked"
EXPIRED_REASON = "token expired"
# Salt's cache rounds a token's expiry down to a whole second (Cache.store's
# int() of the timestamp), so it forgets a token up to this long before the
# record's ``expire``.
SALT_EXPIRY_ROUNDING = 1.0


class TokenRecheck:
    def __init__(self) -> None:
        self._checking: set[str] = set()  # tokens whose check is in flight

    def calls(self, tokens: Iterable[str]) -> list[GetToken]:
        """One :class:`GetToken` for each of the distinct stream ``tokens``
        (:attr:`EventStreams.tokens`) that is not being checked already."""
        fresh = [token for token in tokens if token not in self._checking]
        self._checking.update(fresh)
        return [GetToken(token) for token in fresh]

    def done(
        self, call: GetToken, record: Mapping[str, Any] | None, now: float, connections: Iterable[ServerConnection]
    ) -> list[ServerConnection]:
        """Salt's answer to ``call`` at time ``now``: unless the token is still
        valid, close the streams among ``connections`` holding it; returns the
        connections closed (to wake). Only this rare case looks at every connection."""
        self._checking.discard(call.token)
        status = check_token(record, now)
        if status is TokenStatus.VALID:
            return []
        closed = []
        for conn in list(connections):
            token = conn.stream_token
            if token is None or not same_token(token, call.token):
                continue
            # Salt forgets (and deletes) a token once it expires: gone at its
            # expiry is expired, not revoked.
            expiry = conn.token_expire
            expired = status is TokenStatus.EXPIRED or (expiry is not None and now >= expiry - SALT_EXPIRY_ROUNDING)
            conn.close(CloseCode.POLICY_VIOLATION, EXPIRED_REASON if expired else REVOKED_REASON)
            closed.append(conn)
        return closed

    def failed(self, call: GetToken) -> None:
        """``call`` raised: keep its streams open; the next tick asks again."""
        self._checking.discard(call.token)

    def __len__(self) -> int:
        """Checks in flight."""
        return len(self._checking)
