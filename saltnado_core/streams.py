"""The event streams a server offers, and how one Salt event reaches them.

:meth:`EventStreams.dispatch` encodes an event once per stream that has
subscribers (never per subscriber) and publishes the shared bytes. A
connection joins a stream with :meth:`attach` once its client is ready and
leaves with :meth:`detach`; both are by stream name, as routed. The tokens of
attached connections are counted (:attr:`EventStreams.tokens`), so the periodic
re-check of stream tokens with Salt costs one look per distinct token, not one
per connection. :meth:`EventStreams.notify` sends the server's own notices (the
event bus going down and coming back) to every stream, ``/formatted_events``
included.
"""

from __future__ import annotations

from .broadcast import GAP_TAG, Broadcast, Outbox, gap_payload
from .eventbus import SaltEvent
from .formatted import FormattedStream, FormattedView
from .messages import SSE_KEEPALIVE, event_json, sse_chunk, text_frame
from .salt_calls import SaltCall

STREAM_NAMES = ("all_events", "formatted_events", "events")
# the server's own notices when the event bus goes down and comes back (buslink.py)
BUS_DOWN_TAG = "saltnado/bus/down"
BUS_UP_TAG = "saltnado/bus/up"


def gap_sse(missed: int) -> bytes:
    """A gap notice (slow-client ``gap`` policy) as an ``/events`` SSE event."""
    return sse_chunk(GAP_TAG, gap_payload(missed))


class EventStreams:
    def __init__(self, max_jobs: int = 1000, max_job_age: float | None = None) -> None:
        self.all_events = Broadcast()  # websocket frames
        self.events = Broadcast(gap_sse)  # /events: SSE, as HTTP chunks
        self.formatted = FormattedStream(FormattedView(max_jobs, max_job_age))
        self.dispatched = 0  # events seen, for logs and metrics
        self.tokens: dict[str, int] = {}  # token → attached connections holding it
        self._bus_down: tuple[bytes, bytes] | None = None  # the down notice (frame, SSE) while down

    def attach(self, name: str, outbox: Outbox, token: str, delta: bool = False) -> list[SaltCall]:
        """Subscribe ``outbox`` to stream ``name`` for a client holding ``token``;
        returns Salt calls to run for it. While the event bus is down, the client
        is told so first thing."""
        if name not in STREAM_NAMES:
            raise KeyError(name)
        if token:
            self.tokens[token] = self.tokens.get(token, 0) + 1
        calls: list[SaltCall] = []
        if name == "all_events":
            self.all_events.subscribe(outbox)
        elif name == "events":
            self.events.subscribe(outbox)
        else:
            calls = self.formatted.attach(outbox, token, delta)
        if self._bus_down is not None:
            frame, sse = self._bus_down
            outbox.offer(sse if name == "events" else frame)
        return calls

    def detach(self, name: str, outbox: Outbox, token: str = "") -> None:
        """Unsubscribe ``outbox`` (attached with ``token``) from stream ``name``."""
        if token and token in self.tokens:
            held = self.tokens.pop(token) - 1
            if held:
                self.tokens[token] = held
        if name == "all_events":
            self.all_events.unsubscribe(outbox)
        elif name == "events":
            self.events.unsubscribe(outbox)
        elif name == "formatted_events":
            self.formatted.detach(outbox)

    def dispatch(self, event: SaltEvent, now: float = 0.0) -> list[SaltCall]:
        """Publish ``event`` to every stream; ``now`` dates jobs in the formatted view.

        Returns Salt calls the formatted view needs (grains of new minions).
        """
        self.dispatched += 1
        if self.all_events or self.events:
            payload = event_json(event)  # one JSON encode for both streams
            if self.all_events:
                self.all_events.publish(text_frame(payload))
            if self.events:
                self.events.publish(sse_chunk(event.tag, payload))
        return self.formatted.dispatch(event, now)

    def notify(self, notice: SaltEvent) -> None:
        """A server notice (``saltnado/bus/down``, ``saltnado/bus/up``) to every
        subscriber of every stream, in the shape of an ``/all_events`` message,
        encoded once per stream type. A down notice is kept and sent to clients
        that join until the up notice."""
        payload = event_json(notice)
        frame, sse = text_frame(payload), sse_chunk(notice.tag, payload)
        self._bus_down = (frame, sse) if notice.tag == BUS_DOWN_TAG else None
        self.all_events.publish(frame)
        self.formatted.full.publish(frame)
        self.formatted.delta.publish(frame)
        self.events.publish(sse)

    def keepalive(self) -> None:
        """Send ``/events`` clients a comment, so idle streams survive proxies."""
        if self.events:
            self.events.publish(SSE_KEEPALIVE)
