"""A private 3-node NATS cluster with JetStream, and fake master event buses, for tests.

:class:`NatsCluster` is :mod:`saltnado_salt.private_nats`'s (the demo's too):
three pip-installed ``nats-server`` nodes on loopback ports, ``restart(i)`` to
kill one and start it again on the same ports and store.

:class:`FakeBus` is a master's ``master_event_pub.ipc`` without a master: a Unix
socket that writes the same bytes to every subscriber, as the master's
publisher does — what an ingest node reads, fired at will and fast.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from saltnado_core import encode_pub_message
from saltnado_salt.private_nats import NatsCluster, nats_server_binary  # noqa: F401  (tests import them from here)


class FakeBus:
    """``<directory>/master_event_pub.ipc``: every subscriber gets the same bytes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "master_event_pub.ipc"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen(16)
        self.clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        self.fired = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.clients.append(client)

    def wait_subscribers(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.clients) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.clients)} of {count} subscribers on {self.path}")
            time.sleep(0.02)

    def fire(self, tag: str, data: dict[str, Any]) -> None:
        """One event, stamped as Salt stamps them (so two alike still differ)."""
        self.fire_many([(tag, data)])

    def fire_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        payload = b"".join(
            encode_pub_message(tag, {**data, "_stamp": f"{time.time():.6f}-{self.fired + n}"})
            for n, (tag, data) in enumerate(events)
        )
        self.fired += len(events)
        with self._lock:
            for client in list(self.clients):
                try:
                    client.sendall(payload)
                except OSError:
                    self.clients.remove(client)

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for client in self.clients:
                client.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
