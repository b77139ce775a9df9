"""The event-bus subscription without its socket: decode, dispatch, when to retry.

A binding connects a Unix stream socket to :attr:`EventBusLink.path` (the
master's ``master_event_pub.ipc``) and reports what happens, with its
wall-clock ``now``:

* ``unavailable(error, now)`` — connecting failed → seconds to wait before
  retrying (capped exponential backoff, :class:`~saltnado_core.pacing.Pacing`);
* ``connected(now)`` — subscribed; a fresh decoder starts;
* ``receive_data(data, now)`` — bytes read → Salt calls the streams need (run
  them in worker threads). Raises :class:`EventBusError` when the framing is
  broken: the decoder cannot resync, so drop the socket and report ``lost``.
  An event whose body alone does not decode is skipped and counted
  (:attr:`EventBusLink.skipped`), and the link stays up;
* ``lost(error, now)`` — the socket ended (``None``: the master closed it).
* ``tick(now)`` — about once a second (see below).

Each decoded event is dispatched once to the websocket/SSE streams and offered
to the in-process subscribers. ``notices()`` returns what to log: one line per
state change, never one per retry, and one per kind of undecodable body
(:class:`~saltnado_core.eventbus.BodyFault`), never one per event: whoever can
fire events can fire those.

The bus is the master's own publisher, so while it is gone the master is taken
to be down (:attr:`EventBusLink.master_available`): calls that need it get 503
at once instead of waiting out Salt's own timeouts. Streaming clients stay
connected and are told, each once: ``saltnado/bus/down`` with
``{"reason", "_stamp"}`` when the link goes down (also to a client that
subscribes while it is down), ``saltnado/bus/up`` with ``{"down_since",
"_stamp"}`` when it is back. Both are shaped like Salt events; events the master
fired in between are not replayed (the bus keeps no history).

"Back" means a new connection that has carried bytes or lasted
``pacing.bus_settle`` seconds (checked by ``tick``): while a killed master's
processes die, its socket can still accept a connection and reset it a moment
later, and that flap must not reach clients as up-and-down-again.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone

from .eventbus import BodyFault, EventBusDecoder, EventBusError, SaltEvent, UndecodableEvent
from .outcomes import Health
from .pacing import Backoff, Pacing
from .salt_calls import SaltCall
from .streams import BUS_DOWN_TAG, BUS_UP_TAG, EventStreams
from .subscriptions import Subscriptions

PUB_SOCKET = "master_event_pub.ipc"


class BusState(str, enum.Enum):
    """Where the link to the event bus is (a ``str`` enum: ``state == "connected"`` works)."""

    STARTING = "starting"  # nothing tried yet
    WAITING = "waiting"  # connecting failed; retrying after a backoff delay
    CONNECTED = "connected"  # subscribed (the master counts as back once it settles)
    LOST = "lost"  # the connection ended; reconnecting

    @property
    def down(self) -> bool:
        return self in (BusState.WAITING, BusState.LOST)


@dataclass(frozen=True, slots=True)
class Notice:
    """A line for the operator's log (``level`` is a :mod:`logging` level)."""

    level: int
    message: str


def salt_stamp(now: float) -> str:
    """``now`` (seconds since the epoch) as Salt stamps events: naive UTC ISO 8601."""
    return datetime.fromtimestamp(now, timezone.utc).replace(tzinfo=None).isoformat()


class EventBusLink:
    def __init__(
        self,
        sock_dir: str,
        streams: EventStreams,
        subscriptions: Subscriptions | None = None,
        max_event_bytes: int = 16 * 1024 * 1024,
        pacing: Pacing = Pacing(),
    ) -> None:
        self.path = os.path.join(sock_dir, PUB_SOCKET)
        self.streams = streams
        self.subscriptions = subscriptions if subscriptions is not None else Subscriptions()
        self.max_event_bytes = max_event_bytes
        self.state = BusState.STARTING
        self.connections = 0  # successful subscriptions so far
        self.bytes_read = 0  # from the event bus, over every connection (for /metrics)
        self.down_since: str | None = None  # the stamp of the down notice, while down
        self.down_reason = ""  # the down notice's reason, while down (no path: clients read it)
        self.skipped: dict[BodyFault, int] = {}  # events whose body did not decode, by why
        self._settle = pacing.bus_settle
        self._connected_at: float | None = None  # the current connection, until it has settled
        self._backoff = Backoff(pacing.reconnect_min, pacing.reconnect_max)
        self._decoder = EventBusDecoder(max_event_bytes)
        self._notices: list[Notice] = []
        # With an event log (saltnado_core.eventlog): ``relay`` False — the bus's
        # events reach the streams through the log, not from here — and
        # ``ingest`` True — decoded events are kept for the runtime to publish
        # (:meth:`take_ingest`). The link of an edge node's log feed is an
        # EventBusLink too, fed decoded events by :meth:`receive_event`.
        self.relay = True
        self.ingest = False
        self.master: str | None = None  # the master's name in the event log, said with each event relayed
        self._ingest: list[SaltEvent] = []

    @property
    def master_available(self) -> bool:
        """False from the bus going down (or a first attempt failing) until a new
        connection has settled."""
        return self.down_since is None

    def health(self) -> Health:
        """For ``GET /health``: ok once subscribed with the master counted as
        available; otherwise why not, in words a client may read."""
        if not self.master_available:
            if self.state is BusState.CONNECTED:
                return Health(False, f"{self.down_reason}; reconnected, waiting for the bus to settle")
            return Health(False, self.down_reason)
        if self.state is BusState.CONNECTED:
            return Health(True, "event bus connected")
        return Health(False, "starting: not yet subscribed to the event bus")

    def unavailable(self, error: OSError, now: float = 0.0) -> float:
        """Connecting failed; returns the seconds to wait before the next try."""
        why = error.strerror or type(error).__name__
        message = f"event bus {self.path} unavailable ({why}); retrying"
        self._enter(BusState.WAITING, logging.WARNING, message, now, f"event bus unavailable ({why})")
        return self._backoff.delay()

    def connected(self, now: float = 0.0) -> None:
        self._backoff.reset()
        self._decoder = EventBusDecoder(self.max_event_bytes)
        self.connections += 1
        self._connected_at = now
        self._enter(BusState.CONNECTED, logging.INFO, f"subscribed to the event bus at {self.path}", now)

    def receive_data(self, data: bytes, now: float) -> list[SaltCall]:
        """Decode ``data`` and dispatch every complete event at wall-clock ``now``."""
        if self._connected_at is not None:
            self._settled(now)
        self.bytes_read += len(data)
        self._decoder.feed(data)
        calls: list[SaltCall] = []
        dispatch, publish = self.streams.dispatch, self.subscriptions.publish
        for event in self._decoder.events():
            if isinstance(event, UndecodableEvent):
                self._skip(event)
                continue
            if self.ingest:
                self._ingest.append(event)
            if not self.relay:
                continue
            calls += dispatch(event, now, None, self.master)
            if self.subscriptions:
                publish(event)
        return calls

    def take_ingest(self) -> list[SaltEvent]:
        """The events decoded since the last call, for the event log (``ingest``)."""
        events, self._ingest = self._ingest, []
        return events

    def receive_event(self, event: SaltEvent, now: float, position: int, master: str) -> list[SaltCall]:
        """One event read from an event log: its stream sequence and master."""
        if self._connected_at is not None:
            self._settled(now)
        self.bytes_read += len(event.raw)
        calls = self.streams.dispatch(event, now, position, master)
        if self.subscriptions:
            self.subscriptions.publish(event)
        return calls

    def lost(self, error: BaseException | None, now: float = 0.0) -> None:
        if error is None:
            reason = "the master closed the event bus"
        elif isinstance(error, EventBusError):
            reason = f"event bus stream unreadable ({error}); reconnecting"
        else:
            reason = f"event bus connection lost ({error})"
        self._enter(BusState.LOST, logging.WARNING, reason, now)

    def tick(self, now: float) -> None:
        """About once a second: a connection that has lasted ``bus_settle`` s is
        taken as the master being back."""
        if self._connected_at is not None and now - self._connected_at >= self._settle:
            self._settled(now)

    def notices(self) -> list[Notice]:
        notices, self._notices = self._notices, []
        return notices

    def _skip(self, event: UndecodableEvent) -> None:
        """Count an event whose body did not decode; log the first of each kind."""
        seen = self.skipped.get(event.fault, 0)
        self.skipped[event.fault] = seen + 1
        if not seen:
            # repr: the tag is the sender's text, so no raw newline or escape reaches the log
            self._notices.append(Notice(logging.WARNING, (
                f"skipped an event-bus event that does not decode: {event.fault.value} "
                f"(tag {event.tag[:200]!r}, {event.size} bytes); the bus stays connected, "
                "and further events like it are counted, not logged"
            )))

    def _enter(self, state: BusState, level: int, message: str, now: float, reason: str | None = None) -> None:
        """``message`` is for the log; ``reason`` (default: the same) for clients,
        so it never holds the socket's path."""
        if state == self.state:
            return
        self.state = state
        self._notices.append(Notice(level, message))
        if state.down:
            self._connected_at = None
            if self.down_since is None:
                self.down_since = salt_stamp(now)
                self.down_reason = message if reason is None else reason
                data = {"reason": self.down_reason, "_stamp": self.down_since}
                self._tell(SaltEvent(BUS_DOWN_TAG, data))

    def _settled(self, now: float) -> None:
        self._connected_at = None
        if self.down_since is not None:
            self._tell(SaltEvent(BUS_UP_TAG, {"down_since": self.down_since, "_stamp": salt_stamp(now)}))
            self.down_since = None
            self.down_reason = ""

    def _tell(self, notice: SaltEvent) -> None:
        self.streams.notify(notice)
        self.subscriptions.notify(notice)
