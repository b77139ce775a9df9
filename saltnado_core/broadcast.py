"""Fan-out: one message offered to every subscriber's bounded queue.

The binding's event feed calls :meth:`Broadcast.publish` with bytes that were
encoded once; each :class:`Outbox` keeps a reference to the same object (no
copy, no per-subscriber encoding). A subscriber's connection drains its outbox
in one coalesced write. The bound and what a subscriber too slow for it gets
(``close`` or ``gap``) are :class:`~saltnado_core.bounded.BoundedQueue`'s; a
subscriber's :class:`~saltnado_core.tagfilter.TagFilter` is checked here,
before its queue is touched. On ``/all_events`` the gap notice is a text frame
in the stream's own shape, ``{"data": {"missed": N}, "tag": "saltnado/gap"}``;
on ``/events`` the same JSON as an SSE event. A message bigger than a
subscriber's whole queue (JSON escaping makes an event up to six times its
msgpack size) is never offered to it: it gets the dropped notice, framed the
same way, in its place (:func:`~saltnado_core.bounded.dropped_event`).

:class:`Broadcast` is the :class:`Fanout` of encoded bytes; in-process
subscribers (:mod:`saltnado_core.subscriptions`) have one of decoded events.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Generic, ParamSpec, TypeVar

from .bounded import BoundedQueue, Overflow, dropped_event, gap_event, no_waiter
from .eventbus import SaltEvent
from .kinds import StreamKind
from .messages import event_json
from .tagfilter import TagFilter

__all__ = [  # Overflow: Outbox's argument
    "Broadcast", "Fanout", "Outbox", "Overflow", "dropped_notice", "gap_frame", "gap_notice",
]

T = TypeVar("T")
P = ParamSpec("P")


def framed_notice(kind: StreamKind, notice: Callable[P, SaltEvent]) -> Callable[P, bytes]:
    """The server's ``notice`` event (made from the arguments), framed as
    ``kind`` frames every event."""
    frame = kind.frame

    def framed(*args: P.args, **kwargs: P.kwargs) -> bytes:
        event = notice(*args, **kwargs)
        return frame(event.tag, event_json(event))

    return framed


def gap_notice(kind: StreamKind) -> Callable[[int], bytes]:
    """How ``kind``'s clients are told they missed N messages."""
    return framed_notice(kind, gap_event)


def dropped_notice(kind: StreamKind) -> Callable[[str | None, int], bytes]:
    """How ``kind``'s clients are told a message too big for them was dropped."""
    return framed_notice(kind, dropped_event)


gap_frame = gap_notice(StreamKind.ALL_EVENTS)  # a websocket text frame: an outbox's default


class Outbox(BoundedQueue[bytes]):
    """A bounded FIFO of already-encoded messages for one streaming client.

    ``wake`` and ``overflow``: see :class:`~saltnado_core.bounded.BoundedQueue`.
    Its gap notice is a websocket text frame until :meth:`Broadcast.subscribe`
    hands it the stream's own.
    """

    __slots__ = ()

    size_of = staticmethod(len)
    # A list, not a deque: an idle subscriber's empty list is 56 bytes, an empty
    # deque ~600 (it keeps a 64-slot block), and most drains take everything.
    _empty = list

    _queue: list[bytes]

    def __init__(
        self, max_messages: int, max_bytes: int, wake: Callable[[], None] = no_waiter, overflow: Overflow = Overflow()
    ) -> None:
        super().__init__(max_messages, max_bytes, gap_frame, wake, overflow)

    def drain(self, max_bytes: int) -> bytes:
        """Remove and join queued messages, about ``max_bytes`` at most (at least one)."""
        queue = self._queue
        if not queue:
            return b""
        if self._bytes <= max_bytes:
            data = b"".join(queue)
            self.delivered += len(queue)
            queue.clear()
            self._taken(self._bytes)
            return data
        count, taken = 1, len(queue[0])
        while count < len(queue) and taken + len(queue[count]) <= max_bytes:
            taken += len(queue[count])
            count += 1
        data = b"".join(queue[:count])
        del queue[:count]
        self.delivered += count
        self._taken(taken)
        return data


class Fanout(Generic[T]):
    """The set of subscribers to one stream, each a :class:`BoundedQueue` of ``T``.

    ``size_of`` sizes a message as the subscribers' queues do (it is sized once
    per publish, not once per subscriber). ``dropped_notice(tag, size)`` makes
    what a subscriber whose ``max_bytes`` is below a message's size gets in its
    place (counted in :attr:`dropped`). ``gap_notice`` makes this stream's gap
    notice; subscribing a queue hands it over (None: each queue keeps its own).
    """

    def __init__(
        self,
        size_of: Callable[[T], int],
        dropped_notice: Callable[[str | None, int], T],
        gap_notice: Callable[[int], T] | None = None,
    ) -> None:
        # Subscribers grouped by filter (None: every message), each group in
        # subscription order: publish checks each distinct filter once and never
        # visits the subscribers of a group that does not want the message.
        # Equal filters share a group (glob filters are even the same object).
        self._groups: dict[TagFilter | None, dict[BoundedQueue[T], None]] = {}
        # a filtered subscriber → its filter, to find its group; kept here, not on
        # the queue, so an idle subscriber is no bigger for having one (and an
        # unfiltered one costs no entry here at all)
        self._filters: dict[BoundedQueue[T], TagFilter] = {}
        self._count = 0
        self.size_of = size_of
        self.dropped_notice = dropped_notice
        self.gap_notice = gap_notice
        self.dropped = 0  # messages too big for some subscriber's queue, dropped for it
        # the smallest max_bytes any subscriber has had: a message no bigger fits
        # every queue, so publish checks one number, not every queue
        self._smallest: float = math.inf

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[BoundedQueue[T]]:
        for group in list(self._groups.values()):
            yield from list(group)

    def subscribe(self, subscriber: BoundedQueue[T], filter: TagFilter | None = None) -> None:
        """Add ``subscriber``, offered the messages whose tag ``filter`` lets
        through (None: every message); subscribing again replaces its filter."""
        self.unsubscribe(subscriber)
        if self.gap_notice is not None:
            subscriber.gap_notice = self.gap_notice
        self._smallest = min(self._smallest, subscriber.max_bytes)
        self._groups.setdefault(filter, {})[subscriber] = None
        if filter is not None:
            self._filters[subscriber] = filter
        self._count += 1

    def unsubscribe(self, subscriber: BoundedQueue[T]) -> None:
        wanted = self._filters.pop(subscriber, None)
        group = self._groups.get(wanted)
        if group is not None and subscriber in group:
            del group[subscriber]
            self._count -= 1
            if not group:  # publish never visits an empty group
                del self._groups[wanted]

    def clear(self) -> None:
        self._groups.clear()
        self._filters.clear()
        self._count = 0

    def publish(self, message: T, tag: str | None = None, master: str | None = None) -> int:
        """Offer ``message`` to every subscriber whose filter passes ``tag``;
        returns how many were cut off now.

        ``tag`` is the event's; None (a server notice, a keep-alive) passes every
        filter; ``master``: the master it came from (an event log's, for
        ``?master=`` filters). Cut-off subscribers (close policy) are removed: a connection
        closes with the :class:`Overflow` code when it next writes. A subscriber
        whose ``max_bytes`` is below the message's size is offered the dropped
        notice instead: it could never take the message, so the policy is not for it.
        """
        size = self.size_of(message)
        if size > self._smallest:
            return self._publish_too_big(message, size, tag, master)
        cut_off = []
        for wanted, group in self._groups.items():
            if wanted is not None and tag is not None and not wanted.matches(tag, master):
                continue  # not wanted: no queue of the group is touched
            for queue in group:
                if not queue.put(message, size):
                    cut_off.append(queue)
        return self._cut_off(cut_off)

    def _publish_too_big(self, message: T, size: int, tag: str | None, master: str | None = None) -> int:
        """:meth:`publish` for a message bigger than some subscriber's bound
        (rare: the queue bounds are checked one by one)."""
        notice: T | None = None  # made once, for all the subscribers it is for
        notice_size = 0
        cut_off = []
        for wanted, group in self._groups.items():
            if wanted is not None and tag is not None and not wanted.matches(tag, master):
                continue
            for queue in group:
                if size <= queue.max_bytes:
                    taken = queue.put(message, size)
                else:
                    if notice is None:
                        notice = self.dropped_notice(tag, size)
                        notice_size = self.size_of(notice)
                    taken = queue.put(notice, notice_size)
                if not taken:
                    cut_off.append(queue)
        if notice is not None:
            self.dropped += 1
        return self._cut_off(cut_off)

    def _cut_off(self, queues: list[BoundedQueue[T]]) -> int:
        for queue in queues:
            self.unsubscribe(queue)
        return len(queues)


class Broadcast(Fanout[bytes]):
    """The outboxes subscribed to one stream of ``kind`` (e.g. ``all_events``
    frames); subscribing an outbox gives it ``kind``'s gap notice, and a message
    too big for an outbox is replaced by ``kind``'s dropped notice."""

    def __init__(self, kind: StreamKind = StreamKind.ALL_EVENTS) -> None:
        super().__init__(Outbox.size_of, dropped_notice(kind), gap_notice(kind))
        self.kind = kind
