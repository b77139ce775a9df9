"""The master's event bus → the core's event streams.

Connects a Unix stream socket to ``<sock_dir>/master_event_pub.ipc``, decodes
with :class:`~saltnado_core.EventBusDecoder` and dispatches each event once.
When the socket is missing, the master restarts or the stream is garbled, it
reconnects with capped exponential backoff; it logs once per state change.
Websocket clients stay connected throughout.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import trio

from saltnado_core import EventBusDecoder, EventBusError, EventStreams, SaltCall

log = logging.getLogger("saltnado.feed")

READ_SIZE = 256 * 1024


class EventFeed:
    def __init__(
        self,
        sock_dir: str,
        streams: EventStreams,
        max_event_bytes: int,
        run_salt_call: Callable[[SaltCall], None] = lambda call: None,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self.path = os.path.join(sock_dir, "master_event_pub.ipc")
        self.streams = streams
        self.max_event_bytes = max_event_bytes
        self.run_salt_call = run_salt_call  # for calls the streams need (new minions' grains)
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.state = "starting"
        self.connected = trio.Event()  # set while subscribed; replaced when lost
        self.connections = 0  # successful subscriptions so far

    def _set_state(self, state: str, message: str, level: int = logging.INFO) -> None:
        if state != self.state:
            self.state = state
            log.log(level, message)

    async def run(self) -> None:
        backoff = self.min_backoff
        while True:
            try:
                stream = await trio.open_unix_socket(self.path)
            except OSError as exc:
                self._set_state(
                    "waiting",
                    f"event bus {self.path} unavailable ({exc.strerror or exc}); retrying",
                    logging.WARNING,
                )
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.min_backoff
            self.connections += 1
            self._set_state("connected", f"subscribed to the event bus at {self.path}")
            self.connected.set()
            try:
                async with stream:
                    await self._pump(stream)
                reason = "the master closed the event bus"
            except (OSError, trio.BrokenResourceError) as exc:
                reason = f"event bus connection lost ({exc})"
            except EventBusError as exc:
                reason = f"event bus stream unreadable ({exc}); reconnecting"
            self.connected = trio.Event()
            self._set_state("lost", reason, logging.WARNING)

    async def _pump(self, stream: trio.SocketStream) -> None:
        decoder = EventBusDecoder(self.max_event_bytes)
        dispatch = self.streams.dispatch
        while True:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                return
            decoder.feed(data)
            now = time.time()
            for event in decoder.events():
                for call in dispatch(event, now):
                    self.run_salt_call(call)
