"""Fan-out: one encoded message offered to every subscriber's bounded outbox.

The binding's event feed calls :meth:`Broadcast.publish` with bytes that were
encoded once; each :class:`Outbox` keeps a reference to the same object (no copy,
no per-subscriber encoding). A subscriber's connection drains its outbox in one
coalesced write. When an outbox would exceed its bounds the subscriber is cut off
under one explicit policy (:class:`Overflow`), so memory stays bounded and no
other subscriber is slowed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# RFC 6455 §7.4.1: 1008 policy violation; 1013 "try again later".
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013


@dataclass(frozen=True, slots=True)
class Overflow:
    """What a subscriber whose outbox is full receives: a close code and reason."""

    code: int = CLOSE_TRY_AGAIN_LATER
    reason: str = "client too slow: outbox full"


class Outbox:
    """A bounded FIFO of already-encoded messages for one subscriber.

    ``wake`` is called (with no arguments) whenever the outbox goes from empty
    to non-empty, or overflows, so the binding can schedule one write.
    """

    __slots__ = ("_queue", "_bytes", "max_messages", "max_bytes", "overflowed", "wake")

    def __init__(
        self, max_messages: int, max_bytes: int, wake: Callable[[], None] = lambda: None
    ) -> None:
        self._queue: deque[bytes] = deque()
        self._bytes = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.overflowed = False
        self.wake = wake

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def offer(self, message: bytes) -> bool:
        """Queue ``message``; False (and ``overflowed`` set) if it does not fit."""
        if self.overflowed:
            return False
        size = len(message)
        if len(self._queue) >= self.max_messages or self._bytes + size > self.max_bytes:
            self.overflowed = True
            self._queue.clear()
            self._bytes = 0
            self.wake()
            return False
        was_empty = not self._queue
        self._queue.append(message)
        self._bytes += size
        if was_empty:
            self.wake()
        return True

    def drain(self, max_bytes: int) -> bytes:
        """Remove and join queued messages, about ``max_bytes`` at most (at least one)."""
        queue = self._queue
        if not queue:
            return b""
        if self._bytes <= max_bytes:
            parts = list(queue)
            queue.clear()
            self._bytes = 0
            return b"".join(parts)
        parts = []
        taken = 0
        while queue and (not parts or taken + len(queue[0]) <= max_bytes):
            part = queue.popleft()
            parts.append(part)
            taken += len(part)
        self._bytes -= taken
        return b"".join(parts)

    def clear(self) -> None:
        self._queue.clear()
        self._bytes = 0


class Broadcast:
    """The set of outboxes subscribed to one stream (e.g. ``all_events`` frames)."""

    def __init__(self) -> None:
        self._subscribers: dict[Outbox, None] = {}  # insertion-ordered set

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, outbox: Outbox) -> None:
        self._subscribers[outbox] = None

    def unsubscribe(self, outbox: Outbox) -> None:
        self._subscribers.pop(outbox, None)

    def publish(self, message: bytes) -> int:
        """Offer ``message`` to every subscriber; returns how many overflowed now.

        Overflowed outboxes are removed from the broadcast: their connection
        closes them under the :class:`Overflow` policy when it next writes.
        """
        overflowed = [outbox for outbox in self._subscribers if not outbox.offer(message)]
        for outbox in overflowed:
            del self._subscribers[outbox]
        return len(overflowed)
