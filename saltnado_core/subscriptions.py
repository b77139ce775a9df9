"""In-process subscribers: host code that wants :class:`SaltEvent` objects, not a socket.

An embedding host (a dashboard backend, a chat-ops bot) subscribes with a tag
prefix and receives the decoded events themselves. Each :class:`Subscription`
is a bounded FIFO under the same rule as a streaming client's outbox
(``outbox_max_messages`` / ``outbox_max_bytes`` from :class:`Limits`, counted on
each event's raw body, and the ``limits.overflow`` policy): a subscriber that
keeps up loses nothing. One that falls behind is, under the ``close`` policy,
cut off — :meth:`Subscription.next_event` raises :class:`SlowSubscriber` with
the close code and reason a websocket client would get; under ``gap``, new
events are dropped until it has caught up to half the bounds, then it receives
one ``SaltEvent("saltnado/gap", {"missed": N})`` where the hole is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .broadcast import GAP_TAG, Overflow
from .config import Limits
from .eventbus import SaltEvent


class SlowSubscriber(Exception):
    """The subscriber fell behind its bound and was dropped; ``code``/``reason``
    are what a websocket client would have been closed with."""

    def __init__(self, overflow: Overflow) -> None:
        super().__init__(f"{overflow.code}: {overflow.reason}")
        self.code = overflow.code
        self.reason = overflow.reason


class Subscription:
    """One subscriber's queue of events whose tag starts with ``tag_prefix``.

    ``wake`` is called when the queue goes from empty to non-empty, when it
    overflows and when the subscription ends, so the binding can resume a waiter.
    """

    __slots__ = (
        "tag_prefix", "max_events", "max_bytes", "wake", "overflow", "overflowed", "ended",
        "missed", "_queue", "_bytes",
    )

    def __init__(
        self,
        tag_prefix: str | tuple[str, ...],
        max_events: int,
        max_bytes: int,
        wake: Callable[[], None] = lambda: None,
        overflow: Overflow = Overflow(),
    ) -> None:
        self.tag_prefix = tag_prefix
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.wake = wake
        self.overflow = overflow
        self.overflowed = False  # close policy: cut off
        self.ended = False  # the server stopped: nothing more will arrive
        self.missed = 0  # gap policy: events dropped since the last gap notice
        self._queue: deque[SaltEvent] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, event: SaltEvent, notice: bool = False) -> bool:
        """Queue ``event`` if its tag matches (a server ``notice``: whatever its tag);
        False once the subscriber is cut off."""
        if self.overflowed or self.ended:
            return False
        if not notice and not event.tag.startswith(self.tag_prefix):
            return True
        if self.missed:
            self._resume()
            if self.missed:
                self.missed += 1
                return True
        size = len(event.raw)
        if len(self._queue) >= self.max_events or self._bytes + size > self.max_bytes:
            if self.overflow.policy == "gap":
                self.missed = 1
                return True
            self.overflowed = True
            self._queue.clear()
            self._bytes = 0
            self.wake()
            return False
        if not self._queue:
            self.wake()
        self._queue.append(event)
        self._bytes += size
        return True

    def next_event(self) -> SaltEvent | None:
        """The oldest queued event; None if there is none yet (or ``ended``).

        Raises :class:`SlowSubscriber` once the subscriber has been cut off.
        """
        if self.overflowed:
            raise SlowSubscriber(self.overflow)
        if not self._queue:
            return None
        event = self._queue.popleft()
        self._bytes -= len(event.raw)
        if self.missed:
            self._resume()
        return event

    def _resume(self) -> None:
        """Gap policy: once caught up to half the bounds, queue the notice where the hole is."""
        if len(self._queue) * 2 <= self.max_events and self._bytes * 2 <= self.max_bytes:
            if not self._queue:
                self.wake()
            self._queue.append(SaltEvent(GAP_TAG, {"missed": self.missed}))
            self.missed = 0

    def end(self) -> None:
        """No more events will come; queued ones are still delivered."""
        if not self.ended:
            self.ended = True
            self.wake()


class Subscriptions:
    """Every in-process subscriber of one server; :meth:`publish` offers each event once."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._subscribers: dict[Subscription, None] = {}  # insertion-ordered set
        self._ended = False

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(
        self,
        tag_prefix: str | tuple[str, ...] = "",
        wake: Callable[[], None] = lambda: None,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> Subscription:
        """A new subscription, bounded like a streaming client's outbox unless told otherwise."""
        subscription = Subscription(
            tag_prefix,
            self.limits.outbox_max_messages if max_events is None else max_events,
            self.limits.outbox_max_bytes if max_bytes is None else max_bytes,
            wake,
            self.limits.overflow,
        )
        if self._ended:
            subscription.end()
        else:
            self._subscribers[subscription] = None
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.pop(subscription, None)

    def publish(self, event: SaltEvent, notice: bool = False) -> int:
        """Offer ``event`` to every subscriber; returns how many were cut off now."""
        dropped = [sub for sub in self._subscribers if not sub.offer(event, notice)]
        for subscription in dropped:
            del self._subscribers[subscription]
        return len(dropped)

    def notify(self, notice: SaltEvent) -> int:
        """A server notice (the event bus going down or coming back) to every
        subscriber, whatever its tag prefix; bounded like an event."""
        return self.publish(notice, notice=True)

    def end_all(self) -> None:
        """The server is stopping: end every subscription (and any made later)."""
        self._ended = True
        for subscription in self._subscribers:
            subscription.end()
        self._subscribers.clear()
