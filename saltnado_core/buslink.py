"""The event-bus subscription without its socket: decode, dispatch, when to retry.

A binding connects a Unix stream socket to :attr:`EventBusLink.path` (the
master's ``master_event_pub.ipc``) and reports what happens:

* ``unavailable(error)`` — connecting failed → seconds to wait before retrying
  (capped exponential backoff, :class:`~saltnado_core.pacing.Pacing`);
* ``connected()`` — subscribed; a fresh decoder starts;
* ``receive_data(data, now)`` — bytes read → Salt calls the streams need (run
  them in worker threads). Raises :class:`EventBusError` when the stream is
  garbled: the decoder cannot resync, so drop the socket and report ``lost``;
* ``lost(error)`` — the socket ended (``None``: the master closed it).

Each decoded event is dispatched once to the websocket/SSE streams and offered
to the in-process subscribers. ``notices()`` returns what to log: one line per
state change, never one per retry. Websocket clients stay connected throughout.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .eventbus import EventBusDecoder, EventBusError
from .pacing import Backoff, Pacing
from .salt_calls import SaltCall
from .streams import EventStreams
from .subscriptions import Subscriptions

PUB_SOCKET = "master_event_pub.ipc"


@dataclass(frozen=True, slots=True)
class Notice:
    """A line for the operator's log (``level`` is a :mod:`logging` level)."""

    level: int
    message: str


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
        self.state = "starting"  # → waiting | connected | lost
        self.connections = 0  # successful subscriptions so far
        self._backoff = Backoff(pacing.reconnect_min, pacing.reconnect_max)
        self._decoder = EventBusDecoder(max_event_bytes)
        self._notices: list[Notice] = []

    def unavailable(self, error: OSError) -> float:
        """Connecting failed; returns the seconds to wait before the next try."""
        why = error.strerror or str(error)
        self._enter("waiting", logging.WARNING, f"event bus {self.path} unavailable ({why}); retrying")
        return self._backoff.delay()

    def connected(self) -> None:
        self._backoff.reset()
        self._decoder = EventBusDecoder(self.max_event_bytes)
        self.connections += 1
        self._enter("connected", logging.INFO, f"subscribed to the event bus at {self.path}")

    def receive_data(self, data: bytes, now: float) -> list[SaltCall]:
        """Decode ``data`` and dispatch every complete event at wall-clock ``now``."""
        self._decoder.feed(data)
        calls: list[SaltCall] = []
        dispatch, publish = self.streams.dispatch, self.subscriptions.publish
        for event in self._decoder.events():
            calls += dispatch(event, now)
            if self.subscriptions:
                publish(event)
        return calls

    def lost(self, error: BaseException | None) -> None:
        if error is None:
            reason = "the master closed the event bus"
        elif isinstance(error, EventBusError):
            reason = f"event bus stream unreadable ({error}); reconnecting"
        else:
            reason = f"event bus connection lost ({error})"
        self._enter("lost", logging.WARNING, reason)

    def notices(self) -> list[Notice]:
        notices, self._notices = self._notices, []
        return notices

    def _enter(self, state: str, level: int, message: str) -> None:
        if state != self.state:
            self.state = state
            self._notices.append(Notice(level, message))
