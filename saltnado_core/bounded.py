"""One subscriber's bounded queue, and what a subscriber too slow for it gets.

Every subscriber to the live events — a streaming client's outbox of encoded
frames (:class:`~saltnado_core.broadcast.Outbox`) or an in-process subscription
of decoded events (:class:`~saltnado_core.subscriptions.Subscription`) — gets
them through a :class:`BoundedQueue`. A subscriber that keeps up never loses a
message. When its queue would exceed ``max_messages`` or ``max_bytes``, one
explicit policy (:class:`Overflow`, ``rest_tornado: slow_client_*``) applies,
so memory stays bounded and no other subscriber is slowed:

``close`` (the default)
    the queued messages are freed and the subscriber is cut off: a streaming
    client's connection is closed with ``code`` (1013 "try again later" or 1008
    "policy violation") and ``reason``, an in-process subscriber gets them in an
    exception.
``gap``
    the subscriber stays subscribed and *new* messages are dropped (tail drop)
    until it has drained its queue to half of both bounds; then one gap notice
    saying how many messages it missed is queued, and delivery resumes. Tail
    drop keeps what was delivered a contiguous prefix, puts the notice exactly
    where the hole is, costs O(1) per dropped message (no queued memory is
    touched), and the half-way mark gives one notice per gap, not one per event.
    The notice is the event ``saltnado/gap`` with data ``{"missed": N}``
    (:func:`gap_event`), encoded for the subscriber as any event is.

A message larger than a subscriber's whole ``max_bytes`` is another matter: no
subscriber could take it however fast it reads, so the fan-out
(:class:`~saltnado_core.broadcast.Fanout`) never offers it and no policy
applies; the subscriber is offered the event ``saltnado/dropped`` with data
``{"tag": <the event's tag>, "bytes": N}`` (:func:`dropped_event`) in its place.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .eventbus import SaltEvent
from .kinds import CloseCode

GAP_TAG = "saltnado/gap"
DROPPED_TAG = "saltnado/dropped"
# a dropped notice carries this much of the tag: the notice itself must stay small
DROPPED_TAG_CHARS = 256

T = TypeVar("T")


class SlowClientPolicy(str, enum.Enum):
    """``rest_tornado: slow_client_policy`` (a ``str`` enum: ``policy == "gap"`` works)."""

    CLOSE = "close"  # free the queue and cut the subscriber off
    GAP = "gap"  # drop new messages, then say how many were missed


@dataclass(frozen=True, slots=True)
class Overflow:
    """What a subscriber whose queue is full gets (``rest_tornado: slow_client_*``):
    under the ``close`` policy, a close with ``code`` and ``reason``; under ``gap``,
    a gap notice, and it stays subscribed. ``policy`` may be given as its config
    string (``"gap"``)."""

    code: int = CloseCode.TRY_AGAIN_LATER
    reason: str = "client too slow: outbox full"
    policy: SlowClientPolicy = SlowClientPolicy.CLOSE

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", SlowClientPolicy(self.policy))


def gap_event(missed: int) -> SaltEvent:
    """The gap notice: ``saltnado/gap`` with ``{"missed": N}`` (gap policy)."""
    return SaltEvent(GAP_TAG, {"missed": missed})


def dropped_event(tag: str | None, size: int) -> SaltEvent:
    """The dropped notice: ``saltnado/dropped`` with ``{"tag": <tag>, "bytes": N}``,
    for a message of ``size`` bytes too big for the subscriber's queue (``tag``:
    the event's, at most ``DROPPED_TAG_CHARS`` of it; None for a message that is
    not an event, such as a ``/formatted_events`` view)."""
    return SaltEvent(DROPPED_TAG, {"tag": None if tag is None else tag[:DROPPED_TAG_CHARS], "bytes": size})


def no_waiter() -> None:
    """The default ``wake``: nobody to tell."""


class BoundedQueue(Generic[T]):
    """A bounded FIFO of one subscriber's messages under the slow-client policy.

    A subclass says what a message is: ``size_of(item)`` (a class attribute) is
    what it counts against ``max_bytes``, ``_empty()`` makes the empty store,
    and ``gap_notice(missed)`` (per queue, as it depends on the stream) makes
    the gap notice. ``wake`` is called (with no arguments) whenever the queue
    goes from empty to non-empty, or overflows, so the binding can schedule one
    write or resume one waiter. Whatever the policy, at most ``max_messages``
    messages and ``max_bytes`` bytes are queued (gap notices included).
    """

    # No instance dict: an idle subscriber is this object and its empty store.
    __slots__ = (
        "_queue", "_bytes", "max_messages", "max_bytes", "wake", "overflow", "overflowed",
        "gap_notice", "missed", "missed_total", "gaps", "delivered",
    )

    size_of: Callable[[T], int]
    _empty: Callable[[], MutableSequence[T]]

    def __init__(
        self,
        max_messages: int,
        max_bytes: int,
        gap_notice: Callable[[int], T],
        wake: Callable[[], None] = no_waiter,
        overflow: Overflow = Overflow(),
    ) -> None:
        self._queue = self._empty()
        self._bytes = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.wake = wake
        self.overflow = overflow
        self.overflowed = False  # close policy: cut off
        self.gap_notice = gap_notice
        self.missed = 0  # gap policy: messages dropped since the last gap notice
        self.missed_total = 0  # … and over the queue's life
        self.gaps = 0  # gap policy: how many gaps so far
        # messages the subscriber has taken (a drain counts what it takes, not one
        # by one), for /metrics: never touched by the fan-out's put
        self.delivered = 0

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def offer(self, item: T) -> bool:
        """Queue ``item``. False if the subscriber is cut off (close policy:
        ``overflowed`` is set and the queue freed); True otherwise, including an
        item dropped into a gap (gap policy: counted in ``missed``)."""
        return self.put(item, self.size_of(item))

    def put(self, item: T, size: int) -> bool:
        """:meth:`offer` for an item whose ``size_of`` is known: the fan-out
        sizes a message once, not once per subscriber."""
        # The fan-out's hot path (once per event per subscriber): attribute reads
        # and arithmetic, no Python call until the queue is full.
        if self.missed:
            self._resume()
            if self.missed:
                self.missed += 1
                self.missed_total += 1
                return True
        elif self.overflowed:
            return False
        queue = self._queue
        if len(queue) >= self.max_messages or self._bytes + size > self.max_bytes:
            return self._full()
        queue.append(item)
        self._bytes += size
        if len(queue) == 1:
            self.wake()
        return True

    def clear(self) -> None:
        """Free what is queued (the subscriber is leaving); the policy state stays."""
        self._queue.clear()
        self._bytes = 0

    def _full(self) -> bool:
        """The policy, for an item that does not fit (see the module docstring)."""
        if self.overflow.policy is SlowClientPolicy.GAP:
            self.missed = 1
            self.missed_total += 1
            self.gaps += 1
            self._resume()  # an empty queue and an item too big for it: say so now
            return True
        self.overflowed = True
        self.clear()
        self.wake()
        return False

    def _taken(self, size: int) -> None:
        """``size`` bytes of messages were removed from the front of the queue."""
        self._bytes -= size
        if self.missed:
            self._resume()

    def _resume(self) -> None:
        """Gap policy: once drained to half of both bounds, queue the gap notice."""
        queue = self._queue
        if len(queue) * 2 > self.max_messages or self._bytes * 2 > self.max_bytes:
            return
        notice = self.gap_notice(self.missed)
        size = self.size_of(notice)
        if len(queue) >= self.max_messages or self._bytes + size > self.max_bytes:
            return  # bounds too small for even the notice: stay in the gap
        self.missed = 0
        queue.append(notice)
        self._bytes += size
        if len(queue) == 1:
            self.wake()
