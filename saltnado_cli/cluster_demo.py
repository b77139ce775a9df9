"""``saltnado demo --cluster``: two private Salt masters on one event log, three server nodes.

Started, in one temporary directory on loopback ports:

* a 3-node NATS cluster with JetStream (:class:`saltnado_salt.private_nats.NatsCluster`);
* two Salt masters, ``m1`` with minion ``minion1`` and ``m2`` with ``minion2``
  (:class:`saltnado_salt.private_salt.PrivateSalt`, started side by side);
* three ``saltnado serve`` processes, each with its own master config: node
  ``m1`` and node ``m2`` ingest their master's bus into the stream and serve it
  (role ``both``), node ``edge`` serves the stream only (role ``edge``) — so its
  clients see every master's events.

The nodes are separate processes, as they would be on separate hosts; the demo
waits until each answers ``/health`` and has joined the stream, prints how to
connect, then a ``ready`` line. Ctrl-C (or SIGTERM) stops the nodes (SIGTERM:
their graceful shutdown), the masters, minions and NATS, and removes the
directory.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from saltnado_core.eventlog import DEFAULT_STREAM, Role
from saltnado_salt.private_nats import NatsCluster
from saltnado_salt.private_salt import PrivateSalt, _free_ports

from .demo import DASHBOARD_PATH, _ping_forever, _say

MASTERS = {"m1": "minion1", "m2": "minion2"}  # master name → its minion
READY_MARK = "saltnado demo: ready"
NODE_WAIT = 60.0  # seconds for a node to answer /health and join the stream
STOP_WAIT = 15.0  # seconds for a node's graceful shutdown before it is killed
SERVE = "import sys; from saltnado_cli.main import main; sys.exit(main(sys.argv[1:]))"  # `saltnado` itself
JOINED = "connected to the event log"  # a node's log line once it reads/writes the stream


@dataclass(frozen=True, slots=True)
class Node:
    """One ``saltnado serve`` of the demo: its name, the master whose config it reads
    (and whose bus it ingests unless its role is edge), its role and port."""

    name: str
    master: str
    role: Role
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def plan_nodes(base_port: int) -> tuple[Node, ...]:
    """Node per master (ingest + edge) on ``base_port``, ``base_port`` + 1, …, then the
    edge-only node; ``base_port`` 0 picks free ports. The edge node reads ``m1``'s
    config (logins and commands there go to ``m1``) but no bus."""
    names = list(MASTERS)
    ports = _free_ports(len(names) + 1) if base_port == 0 else [base_port + i for i in range(len(names) + 1)]
    nodes = [Node(name, name, Role.BOTH, port) for name, port in zip(names, ports)]
    return (*nodes, Node("edge", names[0], Role.EDGE, ports[-1]))


def node_block(node: Node, servers: list[str]) -> dict[str, Any]:
    """The node's ``rest_tornado:`` keys beyond a loopback plain-HTTP block: the live
    page, any browser origin and unauthenticated webhooks (a private loopback demo),
    and its ``event_log:`` section."""
    event_log: dict[str, Any] = {"servers": servers, "role": node.role.value, "stream": DEFAULT_STREAM, "replicas": 3}
    if node.role.ingests:
        event_log["master"] = node.master
    return {"dashboard": True, "cors_origin": "*", "webhook_disable_auth": True, "event_log": event_log}


def cluster_instructions(nodes: tuple[Node, ...], servers: list[str], username: str) -> str:
    """What the demo prints once every node is ready."""
    edge = next(node for node in nodes if node.role is Role.EDGE)
    ingest = [node for node in nodes if node.role.ingests]
    rows = "\n".join(
        f"  master {node.master} ({MASTERS[node.master]}) -> node {node.name:<4} {node.url}   ingest + edge"
        for node in ingest
    )
    hooks = "\n".join(f"   curl -s {node.url}/hook/demo -d from={node.master}" for node in ingest)
    ws = f"ws://127.0.0.1:{edge.port}/all_events?ids=1"
    return f"""
Dashboard (edge node, every master's events): {edge.url}{DASHBOARD_PATH}   (user '{username}', any password, eauth 'auto')

saltnado cluster demo: two Salt masters on one event log (NATS JetStream, 3 nodes, stream {DEFAULT_STREAM}, 3 replicas)

{rows}
                                  node {edge.name} {edge.url}   edge only: every master's events
  JetStream: {', '.join(servers)}

1. Log in on the edge node (its logins and commands go to master {edge.master}; node {ingest[-1].name} has its own):

   TOKEN=$(curl -s {edge.url}/login -d username={username} -d password=demo -d eauth=auto \\
           | python3 -c 'import json,sys; print(json.load(sys.stdin)["return"][0]["token"])')

2. Every master's events on the edge node; with ?ids=1 each names its master (&master=m2: only m2's):

   {ws}    (header X-Auth-Token: $TOKEN; send "websocket client ready" first)

   Python: .venv/bin/python -c "import websocket,sys; ws=websocket.create_connection('{ws}', header=['X-Auth-Token: '+sys.argv[1]]); ws.send('websocket client ready'); [print(ws.recv()) for _ in iter(int, 1)]" $TOKEN
   curl:   curl -sN '{edge.url}/events?ids=1' -H "X-Auth-Token: $TOKEN"

3. Fire an event into each master through its node's webhook (no token needed in this demo):

{hooks}

   The edge node's clients get salt/netapi/hook/demo from both masters.

A test.ping is fired to each master every few seconds (--no-ping turns it off). Node logs are in the
directory below. Press Ctrl-C to stop the nodes, the masters, the minions and NATS, and remove it.
"""


def ready_line(nodes: tuple[Node, ...], root: Path) -> str:
    """The last line printed once everything is up (what a script waits for)."""
    return f"{READY_MARK}: " + " ".join(f"{node.name}={node.url}" for node in nodes) + f" root={root}"


class ClusterDemo:
    """Everything the demo runs, under one root; :meth:`stop` undoes :meth:`start`
    whatever got started."""

    def __init__(self, base_port: int = 8000) -> None:
        # short: the masters' Unix sockets live under it (AF_UNIX paths are limited)
        self.root = Path(tempfile.mkdtemp(prefix="sdc-"))
        self.nodes = plan_nodes(base_port)
        self.nats = NatsCluster(root=self.root / "nats")
        self.labs = {name: PrivateSalt(root=self.root / name, minion_ids=(mid,)) for name, mid in MASTERS.items()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        _say(f"starting a 3-node NATS JetStream cluster (files in {self.root})…")
        self.nats.start()
        _say(f"NATS is up: {', '.join(self.nats.urls)}")
        _say("starting two private Salt masters, each with a minion (this takes tens of seconds)…")
        self._start_labs()
        for node in self.nodes:
            self._start_node(node)
        for node in self.nodes:
            self._wait_node(node)
            _say(f"node {node.name} ({node.role.value}) is up at {node.url}")

    def _start_labs(self) -> None:
        failures: list[str] = []

        def start(name: str, lab: PrivateSalt) -> None:
            try:
                lab.start(progress=lambda message: _say(f"{name}: {message}"))
            except RuntimeError as exc:
                failures.append(f"master {name}: {exc}")

        threads = [threading.Thread(target=start, args=item, name=f"demo-{item[0]}") for item in self.labs.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise RuntimeError("\n".join(failures))

    def _start_node(self, node: Node) -> None:
        directory = self.root / "nodes" / node.name
        config = self.labs[node.master].write_api_config(
            directory, "rest_tornado", node.port, node_block(node, self.nats.urls))
        with open(directory / "saltnado.log", "ab") as out:
            # its own session: a terminal's Ctrl-C reaches the demo, which stops the nodes in order
            self.procs[node.name] = subprocess.Popen(
                [sys.executable, "-c", SERVE, "serve", "--master-config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def node_log(self, node: Node) -> str:
        return (self.root / "nodes" / node.name / "saltnado.log").read_text(errors="replace")

    def _wait_node(self, node: Node) -> None:
        """Until the node answers ``/health`` 200 and has joined the stream."""
        deadline = time.monotonic() + NODE_WAIT
        while True:
            proc = self.procs[node.name]
            if proc.poll() is not None:
                raise RuntimeError(f"node {node.name} exited with {proc.returncode}:\n{self.node_log(node)[-3000:]}")
            if _healthy(node) and JOINED in self.node_log(node):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {node.name} not ready within {NODE_WAIT:.0f} s:\n{self.node_log(node)[-3000:]}")
            time.sleep(0.2)

    def exited(self) -> str | None:
        """The name of a node that has exited, if one has."""
        return next((name for name, proc in self.procs.items() if proc.poll() is not None), None)

    def stop(self) -> None:
        """Nodes first (SIGTERM: their graceful shutdown, then SIGKILL), then masters and
        minions, then NATS; remove the root. Idempotent."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for lab in self.labs.values():
            lab.stop()
        self.nats.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _healthy(node: Node) -> bool:
    try:
        with urllib.request.urlopen(f"{node.url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_cluster_demo(port: int = 8000, ping_interval: float | None = 5.0) -> int:
    """Run the demo until Ctrl-C / SIGTERM (0), or until a node exits or something
    fails to start (1)."""
    signal.signal(signal.SIGTERM, _interrupt)
    demo = ClusterDemo(port)
    stop = threading.Event()
    try:
        started = time.monotonic()
        demo.start()
        if ping_interval:
            for lab in demo.labs.values():
                threading.Thread(
                    target=_ping_forever, args=(lab, ping_interval, stop), daemon=True, name="demo-ping"
                ).start()
        print(cluster_instructions(demo.nodes, demo.nats.urls, demo.labs["m1"].username), flush=True)
        print(ready_line(demo.nodes, demo.root), flush=True)
        _say(f"everything is up after {time.monotonic() - started:.1f} s")
        while (gone := demo.exited()) is None:
            time.sleep(0.5)
        _say(f"node {gone} exited; stopping")
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        _say(f"failed: {exc}")
        return 1
    finally:
        stop.set()
        _say("stopping the nodes, Salt and NATS, and removing the temporary directory…")
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the clean-up short
        demo.stop()
        _say("stopped")
