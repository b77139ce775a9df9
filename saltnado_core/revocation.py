"""Streams whose token Salt no longer honours are closed.

A token is checked when a stream opens; afterwards its expiry is known and
enforced without Salt (:meth:`ServerConnection.expire`), but it can also be
revoked: ``/logout``, Salt's ``LoadAuth.rm_token``, a deleted token file. Asking
Salt about every stream token every tick costs one ``get_tok`` per distinct token
(~140 µs of a worker thread each: 3,000 tokens are 0.4 s per tick), so the
re-check costs what the store allows instead:

* **A store that is a directory** (the default ``localfs`` cache,
  ``<cachedir>/tokens/<token>.p``): one :class:`ScanTokenStore` per tick, a
  single directory listing whatever the number of tokens. A token held by a
  stream when the listing was asked for has had its file since before (the
  stream was opened with it), so one missing from the listing was removed:
  its streams are closed when the listing comes back, with no ``get_tok``. A
  file rewritten since the last listing (its stamp changed) is asked about with
  one :class:`GetToken`, as a token re-checked below.
* **Any other store** (``rediscluster``, a redis/consul/… cache driver; the
  bridge answers the listing with None): at most ``per_tick`` :class:`GetToken`
  per tick, taking the stream tokens in turn, so each is re-checked at least
  every ``ceil(tokens / per_tick)`` ticks (every tick up to ``per_tick`` tokens).
  A listing that fails (the directory unreadable) does the same for that tick.

Each answer goes to :meth:`TokenRecheck.done`, which closes every stream holding
a token Salt no longer knows: websockets with 1008 and a reason, ``/events`` by
ending the response. A check still running is not asked for again. A
:class:`GetToken` that fails (the store unreachable) closes nothing: expiry is
still enforced locally, and the token is asked about again next tick.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from itertools import compress
from operator import ne
from typing import Any

from .kinds import CloseCode
from .connection import ServerConnection
from .salt_calls import GetToken, ScanTokenStore
from .tokens import TokenStatus, check_token

REVOKED_REASON = "token revoked"
EXPIRED_REASON = "token expired"
# Salt's cache rounds a token's expiry down to a whole second (Cache.store's
# int() of the timestamp), so it forgets a token up to this long before the
# record's ``expire``.
SALT_EXPIRY_ROUNDING = 1.0
# GetToken calls started per tick at most: ~140 µs each, a few ms of one worker
# thread per second whatever the number of tokens.
RECHECKS_PER_TICK = 32

RecheckCall = ScanTokenStore | GetToken


class TokenStore(enum.Enum):
    """What the first :class:`ScanTokenStore` said about Salt's token store."""

    UNKNOWN = "unknown"  # the first listing is not back yet
    LISTED = "listed"  # a directory of token files: one listing per tick
    UNLISTED = "unlisted"  # anything else: GetToken in turn, per_tick at most


class TokenRecheck:
    def __init__(self, per_tick: int = RECHECKS_PER_TICK) -> None:
        self.per_tick = per_tick
        self.store = TokenStore.UNKNOWN
        self._checking: set[str] = set()  # tokens whose GetToken is in flight
        self._scanning = False  # a listing is in flight
        self._scan_failed = False  # the last listing raised
        self._expected: set[str] = set()  # stream tokens when the listing in flight was asked for
        self._stamps: Mapping[str, int] = {}  # the last listing: token → its file's stamp
        self._suspects: set[str] = set()  # to ask about first: a rewritten file, a failed GetToken
        self._turns: deque[str] = deque()  # stream tokens in the order they are re-checked
        self._in_turn: set[str] = set()  # the tokens in _turns

    def calls(self, tokens: Mapping[str, int]) -> list[RecheckCall]:
        """This tick's calls for the distinct stream ``tokens``
        (:attr:`EventStreams.tokens`): a listing of the store unless one is in
        flight or the store cannot be listed, then at most ``per_tick``
        :class:`GetToken` — suspects first, then (store not listed, or its last
        listing failed) the stream tokens in turn — none already in flight."""
        calls: list[RecheckCall] = []
        if self.store is not TokenStore.UNLISTED and not self._scanning:
            self._scanning = True
            self._expected = set(tokens)
            calls.append(ScanTokenStore())
        self._suspects = {token for token in self._suspects if token in tokens}
        picked: list[str] = []
        self._pick(self._suspects, tokens, picked)
        self._suspects.difference_update(picked)
        if self.store is TokenStore.UNLISTED or self._scan_failed:
            self._pick(self._in_turn_order(tokens), tokens, picked)
        self._checking.update(picked)
        return calls + [GetToken(token) for token in picked]

    def _pick(self, candidates: Iterable[str], tokens: Mapping[str, int], picked: list[str]) -> None:
        """Add to ``picked`` the ``candidates`` still held and not in flight, up to
        ``per_tick`` in all; takes no candidate past the last one picked."""
        if len(picked) >= self.per_tick:
            return
        for token in candidates:
            if token in tokens and token not in self._checking and token not in picked:
                picked.append(token)
                if len(picked) >= self.per_tick:
                    return

    def _in_turn_order(self, tokens: Mapping[str, int]) -> Iterable[str]:
        """The stream tokens from the longest unchecked on, each moved to the back
        as it is offered; tokens no stream holds any more are dropped on the way."""
        new = tokens.keys() - self._in_turn
        if new:  # new streams' tokens wait their turn, in the order they came
            self._turns.extend(token for token in tokens if token in new)
            self._in_turn.update(new)
        for _ in range(len(self._turns)):
            token = self._turns.popleft()
            if token not in tokens:
                self._in_turn.discard(token)
                continue
            self._turns.append(token)
            yield token

    def done(
        self, call: RecheckCall, answer: Any, now: float, connections: Iterable[ServerConnection]
    ) -> list[ServerConnection]:
        """Salt's ``answer`` to ``call`` at time ``now``: close the streams among
        ``connections`` holding a token Salt no longer knows (removed from the
        listing, or not valid by its record); returns the connections closed (to
        wake). Only then does it look at every connection."""
        if isinstance(call, ScanTokenStore):
            return self._listed(answer, now, connections)
        self._checking.discard(call.token)
        status = check_token(answer, now)
        if status is TokenStatus.VALID:
            return []
        return _close_holders({call.token}, status, now, connections)

    def _listed(
        self, listing: Mapping[str, int] | None, now: float, connections: Iterable[ServerConnection]
    ) -> list[ServerConnection]:
        self._scanning, self._scan_failed = False, False
        if listing is None:
            self.store = TokenStore.UNLISTED
            self._expected, self._stamps = set(), {}
            return []
        self.store = TokenStore.LISTED
        removed = self._expected.difference(listing)
        kept = list(self._expected - removed)
        stamps = list(map(listing.__getitem__, kept))
        # a file rewritten since the last listing (a token new to it counts as unchanged)
        self._suspects.update(compress(kept, map(ne, stamps, map(self._stamps.get, kept, stamps))))
        self._stamps, self._expected = listing, set()
        if not removed:
            return []
        return _close_holders(removed, TokenStatus.UNKNOWN, now, connections)

    def failed(self, call: RecheckCall) -> None:
        """``call`` raised: keep the streams open; a token is asked about again
        next tick, and the next tick's listing comes with GetToken in turn."""
        if isinstance(call, ScanTokenStore):
            self._scanning, self._scan_failed = False, True
            self._expected = set()
            return
        self._checking.discard(call.token)
        self._suspects.add(call.token)

    def __len__(self) -> int:
        """Checks in flight (a listing counts as one)."""
        return len(self._checking) + self._scanning


def _close_holders(
    tokens: Collection[str], status: TokenStatus, now: float, connections: Iterable[ServerConnection]
) -> list[ServerConnection]:
    """Close the streams among ``connections`` holding one of ``tokens``, which
    Salt answered with ``status`` (not valid) at ``now``. The tokens are ones Salt
    accepted for these streams, never a client's guess, and no client sees when
    this runs: a set lookup leaks nothing a constant-time comparison would hide."""
    closed = []
    for conn in list(connections):
        token = conn.stream_token
        if token is None or token not in tokens:
            continue
        # Salt forgets (and deletes) a token once it expires: gone at its
        # expiry is expired, not revoked.
        expiry = conn.token_expire
        expired = status is TokenStatus.EXPIRED or (expiry is not None and now >= expiry - SALT_EXPIRY_ROUNDING)
        conn.close(CloseCode.POLICY_VIOLATION, EXPIRED_REASON if expired else REVOKED_REASON)
        closed.append(conn)
    return closed
