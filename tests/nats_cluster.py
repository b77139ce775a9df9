"""A private 3-node NATS cluster with JetStream, and real private salt-masters, for tests.

:class:`NatsCluster` is :mod:`saltnado_salt.private_nats`'s (the demo's too):
three pip-installed ``nats-server`` nodes on loopback ports, ``restart(i)`` to
kill one and start it again on the same ports and store.

:class:`RealMaster` is a private salt-master without a minion: events are fired
into its ``master_event_pull.ipc`` as Salt's ``fire_event`` does, and the master
republishes each to every subscriber of its ``master_event_pub.ipc`` — the path
an ingest node reads in production.
"""

from __future__ import annotations

import atexit
import socket
import time
from pathlib import Path
from typing import Any

from saltnado_core import encode_pull_message
from saltnado_salt.private_nats import NatsCluster, nats_server_binary  # noqa: F401  (tests import them from here)
from saltnado_salt.private_salt import PrivateSalt

_LISTENING = 0x00010000  # __SO_ACCEPTCON in /proc/net/unix's Flags column


def accepted_connections(path: Path) -> int:
    """Connections accepted on the Unix socket listening at ``path`` and still open.

    An accepted socket shows its listener's path in /proc/net/unix; the listener
    itself is the one flagged __SO_ACCEPTCON. The master closes its side as soon as
    it reads a subscriber's end of stream, so a subscriber that went away stops
    counting shortly after."""
    wanted, count = str(path), 0
    with open("/proc/net/unix") as table:
        next(table)  # Num RefCount Protocol Flags Type St Inode Path
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == wanted and not int(fields[3], 16) & _LISTENING:
                count += 1
    return count


class RealMaster:
    """A private salt-master (no minion) under ``root``, started at once.

    One MWorker (``worker_threads: 1``) and no presence events: the tests count
    exactly the events they fire, and the default five MWorkers would spend CPU of
    this small machine on an event bus nobody else here needs. ``directory`` is the
    master's sock_dir (where ``master_event_pub.ipc`` lives): nodes get it as theirs.
    """

    def __init__(self, root: Path, timeout: float = 120) -> None:
        root.mkdir(parents=True, exist_ok=True)
        # a one-letter minion id: PrivateSalt checks its (unused) sock path length too
        self.lab = PrivateSalt(root=root, minion_ids=("m",), api_port=0,
                               extra_master_opts={"worker_threads": 1, "presence_events": False})
        self.fired = 0
        self._pull: socket.socket | None = None
        atexit.register(self.lab.stop)  # never leave a salt-master behind us
        try:
            self.lab._write_configs()
            self.lab._spawn("master", "salt-master", self.lab.config_dir)
            self.lab._wait_event_bus(time.monotonic() + timeout)
            self.directory = self.lab.sock_dir
            self.path = self.directory / "master_event_pub.ipc"
            self.baseline = self._settled_subscribers(timeout)
        except BaseException:
            self.lab.stop()
            raise

    def _settled_subscribers(self, timeout: float, quiet: float = 1.5) -> int:
        """The master's own subscribers (its MWorker and other processes), once
        their count has not changed for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        count, since = accepted_connections(self.path), time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() > deadline:
                raise RuntimeError(f"subscribers of {self.path} never settled")
            time.sleep(0.1)
            now = accepted_connections(self.path)
            if now != count:
                count, since = now, time.monotonic()
        return count

    @property
    def subscribers(self) -> int:
        """Subscribers other than the master's own."""
        return accepted_connections(self.path) - self.baseline

    def wait_subscribers(self, count: int, timeout: float = 20) -> None:
        """Until at least ``count`` connections besides the master's own are open on
        ``master_event_pub.ipc`` (read from /proc/net/unix)."""
        deadline = time.monotonic() + timeout
        while self.subscribers < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.subscribers} of {count} subscribers on {self.path}")
            time.sleep(0.02)

    def fire(self, tag: str, data: dict[str, Any]) -> None:
        """One event, stamped as Salt stamps them (so two alike still differ)."""
        self.fire_many([(tag, data)])

    def fire_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Events into ``master_event_pull.ipc``, length-prefixed as ``fire_event``
        sends them. One connection serves every call: the master reads each
        connection in order, while two connections could be read interleaved."""
        payload = b"".join(
            encode_pull_message(tag, {**data, "_stamp": f"{time.time():.6f}-{self.fired + n}"})
            for n, (tag, data) in enumerate(events)
        )
        if self._pull is None:
            self._pull = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._pull.connect(str(self.directory / "master_event_pull.ipc"))
        self._pull.sendall(payload)
        self.fired += len(events)

    def close(self) -> None:
        if self._pull is not None:
            self._pull.close()
            self._pull = None
        self.lab.stop()
