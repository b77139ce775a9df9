"""How long a binding waits, how often it retries, how much it reads at a time.

The core keeps no clock, so every timer lives in a binding; the numbers those
timers use live here, so the trio and asyncio bindings wait, retry and read
alike. :class:`Backoff` is the event-bus reconnect schedule.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pacing:
    """Timeouts (seconds), retry delays (seconds) and read sizes (bytes)."""

    # RFC 6455 §7.1.1: after sending a close frame the server waits for the
    # peer's, then drops TCP; a peer that never answers is dropped after this.
    close_handshake: float = 5.0
    # at shutdown, once ``shutdown_timeout`` (config.Timeouts) is over: for the 503s
    # of requests still unanswered to be written before everything is dropped
    shutdown_flush: float = 1.0
    # how often streams are checked for expired tokens and connections for
    # timeouts (a timeout fires up to two intervals late, never early)
    tick_interval: float = 1.0
    reconnect_min: float = 0.05  # first delay before reconnecting to the event bus …
    reconnect_max: float = 2.0  # … doubling up to this while the master is away
    # A new event-bus connection shows the master is back once bytes arrive on it or
    # it has lasted this long: a dying master's socket still accepts for a moment.
    bus_settle: float = 1.0
    # closing a socket (a TLS close_notify, a transport's last flush) is abandoned after this
    socket_close: float = 1.0
    # at shutdown, how often the binding looks whether every connection has ended
    shutdown_poll: float = 0.02
    read_bytes: int = 64 * 1024  # one read from a client socket
    bus_read_bytes: int = 256 * 1024  # one read from the event bus


class Backoff:
    """Capped exponential delays: ``first``, ``2*first``, … up to ``cap``."""

    __slots__ = ("first", "cap", "_next")

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def delay(self) -> float:
        """The delay before the next attempt; each call doubles the following one."""
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits ``first`` again."""
        self._next = self.first
