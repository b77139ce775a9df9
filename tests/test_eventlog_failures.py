"""The event log when an edge node fails: killed with a client connected, or
stalled while the others go on. Every node is a `saltnado serve` subprocess (so
it can be SIGKILLed or SIGSTOPped) on one stream of the module's own, fed by one
ingest node reading a private salt-master of the module's own; each test keeps to tags of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import websocket

from conftest import login
from nats_cluster import NatsCluster, RealMaster
from test_eventlog_nats import (
    SERVE_WAIT, cluster, position, serve_config, start_serve, stream_count, ws_open, ws_read_until,
)

pytestmark = pytest.mark.salt

__all__ = ["cluster"]  # the module-scoped NATS cluster fixture, used here by name


@dataclass
class Nodes:
    """One ingest node on ``bus`` (a private salt-master) and three edge nodes (``a``, ``b``, ``c``) on ``stream``."""

    stream: str
    bus: RealMaster
    ingest: subprocess.Popen[bytes]
    edges: dict[str, tuple[subprocess.Popen[bytes], int]]
    token: str

    def pid(self, name: str) -> int:
        return self.edges[name][0].pid

    def port(self, name: str) -> int:
        return self.edges[name][1]


def fire(bus: RealMaster, kind: str, numbers: range) -> None:
    bus.fire_many([(f"test/{kind}/{i}", {"n": i}) for i in numbers])


def wait_token(port: int, proc: subprocess.Popen[bytes]) -> str:
    """A token from the node once it answers (it is starting up)."""
    deadline = time.monotonic() + SERVE_WAIT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"saltnado serve exited with {proc.returncode}")
        try:
            return str(login(port)["token"])
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_edges_following(nodes: Nodes) -> None:
    """Until each edge reads the stream: fire probe events until a client of each
    has one (an edge starts at the stream's end, so earlier probes do not reach it)."""
    waiting = {}
    for name in nodes.edges:
        ws = ws_open(nodes.port(name), nodes.token, "tag=test/probe/*")
        ws.settimeout(0.3)
        waiting[name] = ws
    deadline = time.monotonic() + SERVE_WAIT
    n = 0
    while waiting:
        if time.monotonic() > deadline:
            raise RuntimeError(f"edge nodes {sorted(waiting)} do not read the stream")
        nodes.bus.fire(f"test/probe/{n}", {})
        n += 1
        for name, ws in list(waiting.items()):
            try:
                ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            ws.close()
            del waiting[name]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)  # a stopped one would not act on SIGTERM
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def nodes(salt_lab: Any, cluster: NatsCluster) -> Iterator[Nodes]:
    root = Path(tempfile.mkdtemp(prefix="f", dir=salt_lab.root))  # short: AF_UNIX's 107 bytes
    bus = RealMaster(root / "m1")  # a salt-master without a minion
    stream = f"F{os.getpid()}"
    section = {"servers": cluster.urls, "stream": stream, "replicas": 3, "subject_prefix": f"t.{stream}"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        path, _ = serve_config(salt_lab, root / "ingest", bus.directory, {**section, "role": "ingest",
                                                                          "master": "m1"})
        ingest = start_serve(path, root / "ingest.log")
        procs.append(ingest)
        edges = {}
        for name in ("a", "b", "c"):
            path, port = serve_config(salt_lab, root / name, bus.directory, {**section, "role": "edge"})
            edges[name] = (start_serve(path, root / f"{name}.log"), port)
            procs.append(edges[name][0])
        bus.wait_subscribers(1, SERVE_WAIT)
        token = wait_token(edges["a"][1], edges["a"][0])
        for proc, port in edges.values():
            wait_token(port, proc)
        made = Nodes(stream, bus, ingest, edges, token)
        wait_edges_following(made)
        yield made
    finally:
        for proc in procs:
            stop(proc)
        bus.close()


def read_until_closed(ws: websocket.WebSocket) -> list[dict[str, Any]]:
    """Every message the client still gets from a node that died (what the kernel
    had buffered), until the connection ends."""
    import json

    got = []
    while True:
        try:
            got.append(json.loads(ws.recv()))
        except (websocket.WebSocketException, OSError):
            return got


async def test_a_client_of_an_edge_killed_mid_stream_resumes_on_another_exactly(
    nodes: Nodes, cluster: NatsCluster
) -> None:
    """Edge a is SIGKILLed while events keep coming: the client reconnects to edge
    b with the last id it saw and gets what it missed, in the stream's order, each
    once, then live events."""
    before = await stream_count(cluster, nodes.stream)
    ws = await trio.to_thread.run_sync(ws_open, nodes.port("a"), nodes.token, "ids=1&tag=test/kill/*")
    await trio.sleep(0.3)
    fire(nodes.bus, "kill", range(0, 100))
    seen = await trio.to_thread.run_sync(ws_read_until, ws, "test/kill/99")
    for n in range(100, 600, 50):  # a burst, and edge a killed in the middle of it
        fire(nodes.bus, "kill", range(n, n + 50))
        if n == 300:
            os.kill(nodes.pid("a"), signal.SIGKILL)
        await trio.sleep(0.01)
    seen += await trio.to_thread.run_sync(read_until_closed, ws)
    ws.close()
    assert nodes.edges["a"][0].wait(5) == -signal.SIGKILL
    assert [m["data"]["n"] for m in seen] == list(range(len(seen)))
    assert len(seen) < 600  # the client did miss some
    again = await trio.to_thread.run_sync(
        ws_open, nodes.port("b"), nodes.token, f"ids=1&tag=test/kill/*&last_event_id={seen[-1]['id']}")
    await trio.sleep(0.3)
    fire(nodes.bus, "kill", range(600, 700))  # live ones after the resume
    rest = await trio.to_thread.run_sync(ws_read_until, again, "test/kill/699")
    again.close()
    assert [m["data"]["n"] for m in seen + rest] == list(range(700))  # nothing missed, nothing twice
    ids = [position(m) for m in seen + rest]
    assert ids == sorted(set(ids))  # the stream's order: edge b gives the ids edge a gave
    assert all(m["master"] == "m1" for m in rest)
    assert await stream_count(cluster, nodes.stream) == before + 700


async def test_a_stopped_edge_never_slows_ingest_or_the_other_edges(nodes: Nodes, cluster: NatsCluster) -> None:
    """Edge c is SIGSTOPped (its consumer stalls): a burst is still all stored and
    all delivered to edge b's client while c is stopped; once c goes on, its client
    gets everything too."""
    count = 2000
    before = await stream_count(cluster, nodes.stream)
    healthy = await trio.to_thread.run_sync(ws_open, nodes.port("b"), nodes.token, "ids=1&tag=test/slow/*")
    stalled = await trio.to_thread.run_sync(ws_open, nodes.port("c"), nodes.token, "ids=1&tag=test/slow/*")
    await trio.sleep(0.3)
    os.kill(nodes.pid("c"), signal.SIGSTOP)
    try:
        for n in range(0, count, 100):
            fire(nodes.bus, "slow", range(n, n + 100))
            await trio.sleep(0.005)
        with trio.fail_after(SERVE_WAIT):
            while await stream_count(cluster, nodes.stream) < before + count:
                await trio.sleep(0.1)
        got = await trio.to_thread.run_sync(ws_read_until, healthy, f"test/slow/{count - 1}")
        assert nodes.edges["c"][0].poll() is None  # still there, and still stopped: not yet read
        with open(f"/proc/{nodes.pid('c')}/stat") as stat:
            assert stat.read().rpartition(")")[2].split()[0] == "T"
    finally:
        os.kill(nodes.pid("c"), signal.SIGCONT)
    healthy.close()
    assert [m["data"]["n"] for m in got] == list(range(count))
    assert await stream_count(cluster, nodes.stream) == before + count
    caught_up = await trio.to_thread.run_sync(ws_read_until, stalled, f"test/slow/{count - 1}")
    stalled.close()
    assert [m["data"]["n"] for m in caught_up] == list(range(count))
    assert [m["id"] for m in caught_up] == [m["id"] for m in got]  # same ids on both edges
