"""Whether a master that commands go to, but whose events are not streamed, is up.

The master whose config was loaded is watched through its event bus
(:class:`~saltnado_core.buslink.EventBusLink`), whose state already says whether
it is available. Every other master a node sends commands to
(:mod:`saltnado_core.masters`) is watched the same way, without the decoding: a
binding keeps one connection to its ``master_event_pub.ipc`` (Salt's
``LocalClient`` reads returns from that same bus, so a master commands can reach
is one on this host), reads and discards the bytes, and reports here. The rule
is the bus link's: down from a failed connect or a lost connection, up again once a
new connection has carried bytes or lasted ``pacing.bus_settle`` seconds — so a
second master that is stopped answers 503 at once, as the first does, instead
of its calls waiting out Salt's own timeouts.
"""

from __future__ import annotations

import logging
import os

from .buslink import PUB_SOCKET, BusState, Notice
from .outcomes import Health
from .pacing import Backoff, Pacing


class MasterLiveness:
    """One master's event bus, watched for up and down only (no events decoded).

    Verbs, each with the binding's wall-clock ``now``: ``unavailable(error, now)``
    → seconds before retrying; ``connected(now)``; ``received(now)`` after bytes
    were read; ``lost(error, now)``; ``tick(now)`` about once a second.
    ``notices()`` returns the lines to log, one per change of state.
    """

    def __init__(self, name: str, sock_dir: str, pacing: Pacing = Pacing()) -> None:
        self.name = name
        self.path = os.path.join(sock_dir, PUB_SOCKET)
        self.state = BusState.STARTING
        self.down_reason = "starting: not yet connected to its event bus"
        self._down = True  # until a first connection has settled
        self._settle = pacing.bus_settle
        self._connected_at: float | None = None
        self._backoff = Backoff(pacing.reconnect_min, pacing.reconnect_max)
        self._notices: list[Notice] = []

    @property
    def master_available(self) -> bool:
        return not self._down

    def health(self) -> Health:
        """Up, or why not (never the socket's path: a client may read it)."""
        return Health(True, "event bus connected") if not self._down else Health(False, self.down_reason)

    def unavailable(self, error: OSError, now: float) -> float:
        why = error.strerror or type(error).__name__
        self._enter(BusState.WAITING, f"event bus unavailable ({why})")
        return self._backoff.delay()

    def connected(self, now: float) -> None:
        self._backoff.reset()
        self._connected_at = now
        self._enter(BusState.CONNECTED, "")

    def received(self, now: float) -> None:
        if self._connected_at is not None:
            self._settled()

    def lost(self, error: BaseException | None, now: float) -> None:
        why = "the master closed its event bus" if error is None else f"event bus connection lost ({error})"
        self._enter(BusState.LOST, why)

    def tick(self, now: float) -> None:
        if self._connected_at is not None and now - self._connected_at >= self._settle:
            self._settled()

    def notices(self) -> list[Notice]:
        notices, self._notices = self._notices, []
        return notices

    def _enter(self, state: BusState, reason: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state is BusState.CONNECTED:
            self._notices.append(Notice(logging.INFO, f"master {self.name}: connected to its event bus at {self.path}"))
            return
        self._connected_at = None
        if not self._down or self.down_reason.startswith("starting"):
            self._notices.append(Notice(logging.WARNING, f"master {self.name}: {reason}; commands to it get 503"))
        self._down = True
        self.down_reason = reason

    def _settled(self) -> None:
        self._connected_at = None
        if self._down:
            self._down = False
            self.down_reason = ""
            self._notices.append(Notice(logging.INFO, f"master {self.name}: available"))
