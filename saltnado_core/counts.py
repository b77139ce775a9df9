"""What the streams have done, for ``GET /metrics`` and ``GET /stats``: read
from the core's own objects when asked, never counted on the fan-out's hot path.

Each subscriber's queue (:class:`~saltnado_core.bounded.BoundedQueue`) already
keeps what happened to it — messages taken (``delivered``, counted once per
drain), messages dropped into gaps (``missed_total``), gaps, whether it was cut
off as too slow (``overflowed``) — and each subscriber set
(:class:`~saltnado_core.broadcast.Fanout`) the messages too big for a queue
(``dropped``). While a subscriber is attached its figures are read from its
queue; when it leaves, they are added to its stream's ``departed``
:class:`StreamCounts` (:attr:`EventStreams.departed
<saltnado_core.streams.EventStreams.departed>`, :attr:`Subscriptions.departed
<saltnado_core.subscriptions.Subscriptions.departed>`). So a total never goes
down when a client leaves: a Prometheus counter that drops reads as a restart.

A connection is attached to its stream exactly while
:attr:`ServerConnection.attached <saltnado_core.connection.ServerConnection.attached>`
(it joins when its client is ready and leaves when the stream ends), so no
subscriber is counted twice nor missed between the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .kinds import StreamKind

if TYPE_CHECKING:  # the modules below import this one
    from .bounded import BoundedQueue
    from .connection import ServerConnection
    from .streams import EventStreams
    from .subscriptions import Subscriptions

HTTP = "http"  # a connection with no stream (yet): requests and responses
HUB = "hub"  # in-process subscribers (an embedding host's ``server.hub``)
# Every stream label, in the order reports list them: each stream kind, then the hub
STREAM_LABELS = (*(kind.value for kind in StreamKind), HUB)
CONNECTION_LABELS = (HTTP, *(kind.value for kind in StreamKind))


@dataclass(slots=True)
class StreamCounts:
    """One stream's figures: totals since the server started, and ``open`` and
    ``queued_bytes`` as they are now. Mutable: a stream's ``departed`` counts
    grow as subscribers leave; a report works on copies."""

    open: int = 0  # subscribers attached now
    delivered: int = 0  # messages subscribers took from their queues (a writer's drain)
    missed: int = 0  # messages dropped into gaps (slow_client_policy: gap)
    gaps: int = 0  # gaps, each told with one gap notice once the subscriber catches up
    cut_off: int = 0  # subscribers cut off as too slow (slow_client_policy: close)
    too_big: int = 0  # messages bigger than a subscriber's whole queue, replaced by a dropped notice
    queued_bytes: int = 0  # queued now, not yet taken

    def add(self, queue: BoundedQueue[Any], attached: bool) -> None:
        """Add what ``queue`` has done; an ``attached`` one also counts as open
        with what it holds now."""
        self.delivered += queue.delivered
        self.missed += queue.missed_total
        self.gaps += queue.gaps
        self.cut_off += queue.overflowed
        if attached:
            self.open += 1
            self.queued_bytes += queue.queued_bytes


def connection_label(conn: ServerConnection) -> str:
    """What a client connection is for: ``http`` until a stream is accepted, then
    the stream's kind (until the socket is dropped)."""
    return conn.stream.kind.value if conn.stream is not None else HTTP


def connections_open(connections: Iterable[ServerConnection]) -> dict[str, int]:
    """Open client connections by :func:`connection_label`, every label present."""
    counts = dict.fromkeys(CONNECTION_LABELS, 0)
    for conn in connections:
        counts[connection_label(conn)] += 1
    return counts


def stream_counts(
    streams: EventStreams, connections: Iterable[ServerConnection], subscriptions: Subscriptions | None = None
) -> dict[str, StreamCounts]:
    """Every stream's :class:`StreamCounts` now (by :data:`STREAM_LABELS`): those
    of subscribers gone, plus those of ``connections`` attached to a stream and
    of the in-process ``subscriptions``. Costs one pass over the connections."""
    counts = {kind.value: replace(streams.departed[kind]) for kind in StreamKind}
    for conn in connections:
        if conn.attached:
            assert conn.stream is not None
            counts[conn.stream.kind.value].add(conn.outbox, attached=True)
    for broadcast in streams.broadcasts:
        counts[broadcast.kind.value].too_big += broadcast.dropped
    hub = StreamCounts()
    if subscriptions is not None:
        hub = replace(subscriptions.departed)
        for subscription in subscriptions.live:
            hub.add(subscription, attached=True)
        hub.too_big = subscriptions.dropped
    counts[HUB] = hub
    return counts
