"""Fan-out: one encoded message offered to every subscriber's bounded outbox.

The binding's event feed calls :meth:`Broadcast.publish` with bytes that were
encoded once; each :class:`Outbox` keeps a reference to the same object (no copy,
no per-subscriber encoding). A subscriber's connection drains its outbox in one
coalesced write. A subscriber that keeps up never loses a message. When an
outbox would exceed its bounds, one explicit policy (:class:`Overflow`) applies,
so memory stays bounded and no other subscriber is slowed:

``close`` (the default)
    the queued messages are freed and the subscriber's connection is closed with
    ``code`` (1013 "try again later" or 1008 "policy violation") and ``reason``.
``gap``
    the subscriber stays connected and *new* messages are dropped (tail drop)
    until its writer has drained the outbox to half of both bounds; then one gap
    notice saying how many messages it missed is queued, and delivery resumes.
    Tail drop keeps what was delivered a contiguous prefix, puts the notice
    exactly where the hole is, costs O(1) per dropped message (no queued memory
    is touched), and the half-way mark gives one notice per gap, not one per
    event. On ``/all_events`` the notice is a text frame in the stream's own shape,
    ``{"data": {"missed": N}, "tag": "saltnado/gap"}``; on ``/events`` the same
    JSON as an SSE event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .kinds import CloseCode
from .messages import dumps, text_frame

POLICIES = ("close", "gap")
GAP_TAG = "saltnado/gap"


@dataclass(frozen=True, slots=True)
class Overflow:
    """What a subscriber whose outbox is full gets (``rest_tornado: slow_client_*``):
    under the ``close`` policy, a close with ``code`` and ``reason``; under ``gap``,
    a gap notice, and it stays subscribed."""

    code: int = CloseCode.TRY_AGAIN_LATER
    reason: str = "client too slow: outbox full"
    policy: str = "close"


def gap_payload(missed: int) -> bytes:
    """The JSON of a gap notice: ``{"data": {"missed": N}, "tag": "saltnado/gap"}``."""
    return dumps({"data": {"missed": missed}, "tag": GAP_TAG}).encode("utf-8")


def gap_frame(missed: int) -> bytes:
    """A gap notice as a websocket text frame (``/all_events``, ``/formatted_events``)."""
    return text_frame(gap_payload(missed))


class Outbox:
    """A bounded FIFO of already-encoded messages for one subscriber.

    ``wake`` is called (with no arguments) whenever the outbox goes from empty
    to non-empty, or overflows, so the binding can schedule one write.
    ``overflow`` is the slow-subscriber policy (see the module docstring);
    ``gap_notice`` encodes a gap notice for the stream the outbox is subscribed
    to (set by :meth:`Broadcast.subscribe`). Whatever the policy, at most
    ``max_messages`` messages and ``max_bytes`` bytes are queued (gap notices
    included).
    """

    __slots__ = (
        "_queue", "_bytes", "max_messages", "max_bytes", "overflowed", "wake",
        "gap", "gap_notice", "missed", "missed_total", "gaps",
    )

    def __init__(
        self,
        max_messages: int,
        max_bytes: int,
        wake: Callable[[], None] = lambda: None,
        overflow: Overflow = Overflow(),
    ) -> None:
        # A list, not a deque: an idle subscriber's empty list is 56 bytes, an empty
        # deque ~600 (it keeps a 64-slot block), and most drains take everything.
        self._queue: list[bytes] = []
        self._bytes = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.overflowed = False  # close policy: cut off, the connection must close
        self.wake = wake
        self.gap = overflow.policy == "gap"
        self.gap_notice: Callable[[int], bytes] = gap_frame
        self.missed = 0  # gap policy: messages dropped since the last gap notice
        self.missed_total = 0  # … and over the outbox's life
        self.gaps = 0  # gap policy: how many gaps so far

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def offer(self, message: bytes) -> bool:
        """Queue ``message``. False if the subscriber is cut off (close policy:
        ``overflowed`` is set and the queue freed); True otherwise, including a
        message dropped into a gap (gap policy: counted in ``missed``)."""
        if self.missed:
            self._resume()
            if self.missed:
                self.missed += 1
                self.missed_total += 1
                return True
        elif self.overflowed:
            return False
        queue = self._queue
        size = len(message)
        if len(queue) >= self.max_messages or self._bytes + size > self.max_bytes:
            if self.gap:
                self.missed = 1
                self.missed_total += 1
                self.gaps += 1
                self._resume()  # an empty outbox and a message too big for it
                return True
            self.overflowed = True
            queue.clear()
            self._bytes = 0
            self.wake()
            return False
        queue.append(message)
        self._bytes += size
        if len(queue) == 1:
            self.wake()
        return True

    def _resume(self) -> None:
        """Gap policy: once drained to half of both bounds, queue the gap notice."""
        queue = self._queue
        if len(queue) * 2 > self.max_messages or self._bytes * 2 > self.max_bytes:
            return
        notice = self.gap_notice(self.missed)
        if len(queue) >= self.max_messages or self._bytes + len(notice) > self.max_bytes:
            return  # bounds too small for even the notice: stay in the gap
        self.missed = 0
        queue.append(notice)
        self._bytes += len(notice)
        if len(queue) == 1:
            self.wake()

    def drain(self, max_bytes: int) -> bytes:
        """Remove and join queued messages, about ``max_bytes`` at most (at least one)."""
        queue = self._queue
        if not queue:
            return b""
        if self._bytes <= max_bytes:
            data = b"".join(queue)
            queue.clear()
            self._bytes = 0
        else:
            count, taken = 1, len(queue[0])
            while count < len(queue) and taken + len(queue[count]) <= max_bytes:
                taken += len(queue[count])
                count += 1
            data = b"".join(queue[:count])
            del queue[:count]
            self._bytes -= taken
        if self.missed:
            self._resume()
        return data

    def clear(self) -> None:
        self._queue.clear()
        self._bytes = 0


class Broadcast:
    """The set of outboxes subscribed to one stream (e.g. ``all_events`` frames).

    ``gap_notice`` encodes this stream's gap notice (default: a websocket text
    frame); subscribing an outbox hands it over.
    """

    def __init__(self, gap_notice: Callable[[int], bytes] = gap_frame) -> None:
        self._subscribers: dict[Outbox, None] = {}  # insertion-ordered set
        self.gap_notice = gap_notice

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, outbox: Outbox) -> None:
        outbox.gap_notice = self.gap_notice
        self._subscribers[outbox] = None

    def unsubscribe(self, outbox: Outbox) -> None:
        self._subscribers.pop(outbox, None)

    def publish(self, message: bytes) -> int:
        """Offer ``message`` to every subscriber; returns how many were cut off now.

        Cut-off outboxes (close policy) are removed from the broadcast: their
        connection closes them with the :class:`Overflow` code when it next writes.
        """
        overflowed = [outbox for outbox in self._subscribers if not outbox.offer(message)]
        for outbox in overflowed:
            del self._subscribers[outbox]
        return len(overflowed)
