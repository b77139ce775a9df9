"""The event streams a server offers, and how one Salt event reaches them.

:meth:`EventStreams.dispatch` encodes an event once per stream that has
subscribers (never per subscriber) and publishes the shared bytes. A
connection joins a stream with :meth:`attach` once its client is ready and
leaves with :meth:`detach`; both are by stream name, as routed: a
:class:`~saltnado_core.kinds.StreamKind`, which frames what its clients are
sent (events, gap notices, the server's notices). The tokens of
attached connections are counted (:attr:`EventStreams.tokens`), so the periodic
re-check of stream tokens with Salt (:mod:`~saltnado_core.revocation`) works on
distinct tokens, not connections. :meth:`EventStreams.notify` sends the
server's own notices (the event bus going down and coming back) to every
stream, ``/formatted_events`` included. An event too big for a client's whole
outbox once encoded is dropped for that client with a ``saltnado/dropped``
notice in its place (:mod:`saltnado_core.broadcast`), counted in
:attr:`EventStreams.dropped`.
"""

from __future__ import annotations

from .broadcast import Broadcast, Outbox
from .eventbus import SaltEvent
from .formatted import FormattedStream, FormattedView
from .kinds import StreamKind
from .messages import SSE_KEEPALIVE, SSE_KEEPALIVE_INTERVAL, event_json
from .salt_calls import SaltCall

# each stream's route name → its kind (``name in STREAM_NAMES``; a name no stream has is a KeyError)
STREAM_NAMES = {kind.value: kind for kind in StreamKind}
# the kinds served from the shared formatted view (saltnado_core.formatted)
FORMATTED_KINDS = frozenset({StreamKind.FORMATTED_EVENTS, StreamKind.WS_FORMATTED})
# the server's own notices when the event bus goes down and comes back (buslink.py)
BUS_DOWN_TAG = "saltnado/bus/down"
BUS_UP_TAG = "saltnado/bus/up"


class EventStreams:
    def __init__(self, view: FormattedView | None = None) -> None:
        """``view``: the ``/formatted_events`` view with its bounds (None: the defaults)."""
        self.all_events = Broadcast(StreamKind.ALL_EVENTS)
        self.events = Broadcast(StreamKind.EVENTS)  # SSE, as HTTP chunks
        self.ws = Broadcast(StreamKind.WS)  # rest_cherrypy's /ws: "data: <json>\n\n" text frames
        self.formatted = FormattedStream(view)
        # the kinds sent every event as it comes, by kind, with each kind's framing
        # looked up once (/formatted_events and /ws?format_events are sent their
        # view's changes instead)
        self._live = {broadcast.kind: broadcast for broadcast in (self.all_events, self.events, self.ws)}
        self._framed = tuple((broadcast.kind.frame, broadcast) for broadcast in self._live.values())
        self._every = (self.all_events, self.events, self.ws, *self.formatted.broadcasts)
        self.dispatched = 0  # events seen, for logs and metrics
        self.tokens: dict[str, int] = {}  # token → attached connections holding it
        self._bus_down: dict[StreamKind, bytes] | None = None  # the down notice per kind, while down
        self._next_keepalive: float | None = None  # see tick

    def attach(self, name: str, outbox: Outbox, token: str, delta: bool = False) -> list[SaltCall]:
        """Subscribe ``outbox`` to stream ``name`` (a :class:`StreamKind` or its
        route name; KeyError for any other) for a client holding ``token``;
        returns Salt calls to run for it. While the event bus is down, the client
        is told so first thing."""
        kind = STREAM_NAMES[name]
        if token:
            self.tokens[token] = self.tokens.get(token, 0) + 1
        calls: list[SaltCall] = []
        if kind in FORMATTED_KINDS:
            calls = self.formatted.attach(outbox, token, delta, listed=kind is StreamKind.WS_FORMATTED)
        else:
            self._live[kind].subscribe(outbox)
        if self._bus_down is not None:
            outbox.offer(self._bus_down[kind])
        return calls

    def detach(self, name: str, outbox: Outbox, token: str = "") -> None:
        """Unsubscribe ``outbox`` (attached with ``token``) from stream ``name``."""
        kind = STREAM_NAMES[name]
        if token and token in self.tokens:
            held = self.tokens.pop(token) - 1
            if held:
                self.tokens[token] = held
        if kind in FORMATTED_KINDS:
            self.formatted.detach(outbox)
        else:
            self._live[kind].unsubscribe(outbox)

    def dispatch(self, event: SaltEvent, now: float = 0.0) -> list[SaltCall]:
        """Publish ``event`` to every stream; ``now`` dates jobs in the formatted view.

        Returns Salt calls the formatted view needs (grains of new minions).
        """
        self.dispatched += 1
        payload = None  # one JSON encode for every kind, and none without subscribers
        for frame, broadcast in self._framed:
            if broadcast:
                if payload is None:
                    payload = event_json(event)
                broadcast.publish(frame(event.tag, payload), event.tag)
        return self.formatted.dispatch(event, now)

    @property
    def dropped(self) -> int:
        """Messages dropped for being too big for an outbox, summed over the
        streams (an event too big on ``/all_events`` and ``/events`` counts twice)."""
        return sum(broadcast.dropped for broadcast in self._every)

    def notify(self, notice: SaltEvent) -> None:
        """A server notice (``saltnado/bus/down``, ``saltnado/bus/up``) to every
        subscriber of every stream, whatever its filter, in the shape of an
        ``/all_events`` message: encoded once, framed once per stream kind. A down
        notice is kept and sent to clients that join until the up notice."""
        payload = event_json(notice)
        # every kind, subscribed or not: a down notice is kept for clients that join
        framed = {kind: kind.frame(notice.tag, payload) for kind in StreamKind}
        self._bus_down = framed if notice.tag == BUS_DOWN_TAG else None
        for broadcast in self._every:
            broadcast.publish(framed[broadcast.kind])

    def tick(self, now: float) -> None:
        """Call about once a second with the binding's monotonic ``now``: every
        ``SSE_KEEPALIVE_INTERVAL`` s, :meth:`keepalive` (timed from the first tick)."""
        if self._next_keepalive is None:
            self._next_keepalive = now + SSE_KEEPALIVE_INTERVAL
        elif now >= self._next_keepalive:
            self._next_keepalive = now + SSE_KEEPALIVE_INTERVAL
            self.keepalive()

    def keepalive(self) -> None:
        """Send ``/events`` clients a comment, so idle streams survive proxies."""
        if self.events:
            self.events.publish(SSE_KEEPALIVE)
