"""In-process subscribers: host code that wants :class:`SaltEvent` objects, not a socket.

An embedding host (a dashboard backend, a chat-ops bot) subscribes with a tag
prefix or tag globs (the same filters as a streaming client's ``?tag=``,
:mod:`saltnado_core.tagfilter`) and receives the decoded events themselves. Each :class:`Subscription`
is a :class:`~saltnado_core.bounded.BoundedQueue` under the same rule as a
streaming client's outbox (``outbox_max_messages`` / ``outbox_max_bytes`` from
:class:`Limits`, counted on each event's raw body, and the ``limits.overflow``
policy): a subscriber that keeps up loses nothing. One that falls behind is,
under the ``close`` policy, cut off — :meth:`Subscription.next_event` raises
:class:`SlowSubscriber` with the close code and reason a websocket client would
get; under ``gap``, new events are dropped until it has caught up to half the
bounds, then it receives one ``SaltEvent("saltnado/gap", {"missed": N})`` where
the hole is. An event whose raw body is bigger than a subscription's whole
``max_bytes`` is not the subscriber's slowness: it gets
``SaltEvent("saltnado/dropped", {"tag": <tag>, "bytes": N})`` in its place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import cast

from .bounded import BoundedQueue, Overflow, dropped_event, gap_event, no_waiter
from .broadcast import Fanout
from .config import Limits
from .counts import StreamCounts
from .eventbus import SaltEvent
from .tagfilter import glob_filter, tag_filter


class SlowSubscriber(Exception):
    """The subscriber fell behind its bound and was dropped; ``code``/``reason``
    are what a websocket client would have been closed with."""

    def __init__(self, overflow: Overflow) -> None:
        super().__init__(f"{overflow.code}: {overflow.reason}")
        self.code = overflow.code
        self.reason = overflow.reason


def _raw_size(event: SaltEvent) -> int:
    return len(event.raw)


class Subscription(BoundedQueue[SaltEvent]):
    """One in-process subscriber's queue of decoded events.

    ``wake`` is called when the queue goes from empty to non-empty, when it
    overflows and when the subscription ends, so the binding can resume a waiter.
    """

    __slots__ = ("ended",)

    size_of = staticmethod(_raw_size)
    _empty = deque  # consumed one event at a time, from the front
    _queue: deque[SaltEvent]

    def __init__(
        self, max_events: int, max_bytes: int, wake: Callable[[], None] = no_waiter, overflow: Overflow = Overflow()
    ) -> None:
        super().__init__(max_events, max_bytes, gap_event, wake, overflow)
        self.ended = False  # the server stopped: nothing more will arrive

    def next_event(self) -> SaltEvent | None:
        """The oldest queued event; None if there is none yet (or ``ended``).

        Raises :class:`SlowSubscriber` once the subscriber has been cut off.
        """
        if self.overflowed:
            raise SlowSubscriber(self.overflow)
        if not self._queue:
            return None
        event = self._queue.popleft()
        self.delivered += 1
        self._taken(self.size_of(event))
        return event

    def end(self) -> None:
        """No more events will come; queued ones are still delivered."""
        if not self.ended:
            self.ended = True
            self.wake()


class Subscriptions:
    """Every in-process subscriber of one server; :meth:`publish` offers each event once."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._fanout: Fanout[SaltEvent] = Fanout(Subscription.size_of, dropped_event)
        self._ended = False
        # subscriptions not yet unsubscribed (a cut-off one too, until its consumer
        # leaves), and what those that left had done: for /metrics (saltnado_core.counts)
        self.live: set[Subscription] = set()
        self.departed = StreamCounts()

    def __len__(self) -> int:
        return len(self._fanout)

    def subscribe(
        self,
        tag_prefix: str | tuple[str, ...] = "",
        wake: Callable[[], None] = no_waiter,
        max_events: int | None = None,
        max_bytes: int | None = None,
        tags: tuple[str, ...] = (),
    ) -> Subscription:
        """A new subscription to the events whose tag starts with ``tag_prefix``
        (or any of a tuple) — or, with ``tags``, is matched by one of these globs
        (a streaming client's ``?tag=``; both given: either will do) — bounded
        like a streaming client's outbox unless told otherwise.

        Raises :class:`~saltnado_core.tagfilter.BadTagPattern` for a bad glob."""
        if tags:
            prefixes = (tag_prefix,) if isinstance(tag_prefix, str) else tuple(tag_prefix)
            wanted = glob_filter(tags, () if prefixes == ("",) else prefixes)
        else:
            wanted = tag_filter(tag_prefix)
        subscription = Subscription(
            self.limits.outbox_max_messages if max_events is None else max_events,
            self.limits.outbox_max_bytes if max_bytes is None else max_bytes,
            wake,
            self.limits.overflow,
        )
        self.live.add(subscription)
        if self._ended:
            subscription.end()
        else:
            self._fanout.subscribe(subscription, wanted)
        return subscription

    @property
    def dropped(self) -> int:
        """Events dropped for being bigger than a subscription's ``max_bytes``."""
        return self._fanout.dropped

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop offering events to ``subscription`` (idempotent)."""
        self._fanout.unsubscribe(subscription)
        if subscription in self.live:
            self.live.discard(subscription)
            self.departed.add(subscription, attached=False)

    def publish(self, event: SaltEvent) -> int:
        """Offer ``event`` to every subscriber whose filter passes its tag;
        returns how many were cut off now."""
        return self._fanout.publish(event, event.tag)

    def notify(self, notice: SaltEvent) -> int:
        """A server notice (the event bus going down or coming back) to every
        subscriber, whatever its filter; bounded like an event."""
        return self._fanout.publish(notice)

    def end_all(self) -> None:
        """The server is stopping: end every subscription (and any made later)."""
        self._ended = True
        for subscription in self._fanout:
            cast(Subscription, subscription).end()  # only Subscriptions are subscribed
        self._fanout.clear()
