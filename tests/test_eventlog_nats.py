"""Several masters and server nodes on NATS JetStream: a private 3-node cluster
(tests/nats_cluster.py), two private salt-masters of the module's own (m1, m2,
without minions, events fired into them for exact counts), the session's master
with its minion, and `saltnado serve` subprocesses killed with SIGKILL.

Each test uses a stream of its own, so counts in one never see another's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import websocket

from conftest import RunningServer, http, login, parse_response, running_server
from nats_cluster import NatsCluster, RealMaster
from saltnado_core import Settings
from saltnado_core.eventlog import EventLogSettings, Role

pytestmark = pytest.mark.salt


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    nats = NatsCluster()
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


@pytest.fixture(scope="module")
def masters(salt_lab: Any) -> Iterator[dict[str, RealMaster]]:
    """Two private salt-masters, m1 and m2, shared by the module's tests (each test
    has a stream and tags of its own). Under the lab's root_dir (a node's config is
    the lab's, and Salt puts a sock_dir outside root_dir under it) with short paths
    (AF_UNIX's 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="b", dir=salt_lab.root))
    made: dict[str, RealMaster] = {}
    try:
        for name in ("m1", "m2"):
            made[name] = RealMaster(root / name)
        yield made
    finally:
        for master in made.values():
            master.close()


_streams = iter(range(1, 1000))


@pytest.fixture
def stream() -> str:
    """A stream of the test's own (on subjects of its own: two streams may not share any)."""
    return f"T{os.getpid()}_{next(_streams)}"


def node(master_opts: dict[str, Any], cluster: NatsCluster, stream: str, role: str, master: str = "",
         sock_dir: Path | None = None, **log: Any) -> Settings:
    settings = dataclasses.replace(Settings.from_opts(master_opts), port=0, address="127.0.0.1")
    event_log = EventLogSettings(
        servers=tuple(cluster.urls), master=master, role=Role(role), stream=stream, replicas=3,
        subject_prefix=f"t.{stream}", **log
    )
    return dataclasses.replace(settings, sock_dir=str(sock_dir or settings.sock_dir), event_log=event_log)


async def wait_following(edge: RunningServer, timeout: float = 20) -> None:
    """Until the edge node reads the stream (events stored from now on reach it)."""
    with trio.fail_after(timeout):
        while not edge.server.service.event_log.first_sequence:
            await trio.sleep(0.02)


def ws_open(port: int, token: str, query: str) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/all_events?{query}", timeout=20,
                                     header=[f"X-Auth-Token: {token}"])
    ws.send("websocket client ready")
    return ws


def ws_read(ws: websocket.WebSocket, count: int) -> list[dict[str, Any]]:
    return [json.loads(ws.recv()) for _ in range(count)]


def ws_read_until(ws: websocket.WebSocket, tag: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        try:
            message = json.loads(ws.recv())
        except websocket.WebSocketTimeoutException:
            raise AssertionError(f"no {tag} after {[(m.get('id'), m['tag']) for m in seen][-8:]}") from None
        seen.append(message)
        if message["tag"] == tag:
            return seen


def position(message: dict[str, Any]) -> int:
    return int(message["id"].rpartition("-")[2])


async def stream_count(cluster: NatsCluster, stream: str) -> int:
    """The messages the stream holds (0 before it exists; nats-py is asyncio: in a
    thread of its own)."""
    import nats
    from nats.js.errors import NotFoundError

    async def count() -> int:
        nc = await nats.connect(servers=cluster.urls)
        try:
            return (await nc.jetstream().stream_info(stream)).state.messages
        except NotFoundError:
            return 0
        finally:
            await nc.close()

    return await trio.to_thread.run_sync(asyncio.run, count())


async def test_an_edge_client_gets_both_masters_events_in_order_exactly_once(
    salt_lab: Any, master_opts: dict[str, Any], cluster: NatsCluster, masters: dict[str, RealMaster], stream: str
) -> None:
    count = 300
    async with contextlib.AsyncExitStack() as stack:
        edge = await stack.enter_async_context(
            running_server("trio", salt_lab, master_opts, node(master_opts, cluster, stream, "edge")))
        await wait_following(edge)
        for name, binding in (("m1", "trio"), ("m2", "asyncio")):
            await stack.enter_async_context(running_server(
                binding, salt_lab, master_opts,
                node(master_opts, cluster, stream, "ingest", name, masters[name].directory)))
        token = (await trio.to_thread.run_sync(login, edge.port))["token"]
        every = await trio.to_thread.run_sync(ws_open, edge.port, token, "ids=1&tag=test/*")
        only_m2 = await trio.to_thread.run_sync(ws_open, edge.port, token, "ids=1&master=m2&tag=test/*")
        await trio.sleep(0.3)
        for n in range(0, count, 50):  # the two masters' events interleave
            for name in ("m1", "m2"):
                masters[name].fire_many([(f"test/{name}/{i}", {"n": i}) for i in range(n, n + 50)])
            await trio.sleep(0.01)
        got = await trio.to_thread.run_sync(ws_read, every, 2 * count)
        mine = await trio.to_thread.run_sync(ws_read, only_m2, count)
        every.close()
        only_m2.close()
        for name in ("m1", "m2"):
            assert [m["data"]["n"] for m in got if m["master"] == name] == list(range(count))
            assert [m["tag"] for m in got if m["master"] == name] == [f"test/{name}/{i}" for i in range(count)]
        positions = [position(m) for m in got]
        assert positions == sorted(set(positions))  # every id once, in the stream's order
        assert [m["tag"] for m in mine] == [f"test/m2/{i}" for i in range(count)]
        assert await stream_count(cluster, stream) == 2 * count


SERVE_WAIT = 30


def serve_config(lab: Any, directory: Path, sock_dir: Path, event_log: dict[str, Any]) -> tuple[Path, int]:
    """A master config for a `saltnado serve` subprocess: the lab's, on a port of
    its own, reading ``sock_dir``'s bus, on the event log."""
    import yaml

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    master = yaml.safe_load(lab.master_config_path.read_text())
    # relative: Salt puts it under root_dir (an absolute one too, which is then too
    # long for Salt, which would put <cachedir>/.salt-unix in its place)
    master["sock_dir"] = str(sock_dir.relative_to(lab.root))
    master["rest_tornado"] = {**lab.api_block_values("rest_tornado", port), "event_log": event_log}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "master"
    path.write_text(yaml.safe_dump(master, sort_keys=False))
    return path, port


def start_serve(path: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "saltnado_cli.main", "serve", "--master-config", str(path)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )


async def test_two_ingest_nodes_store_each_event_once_and_one_killed_mid_burst_loses_nothing(
    salt_lab: Any, master_opts: dict[str, Any], cluster: NatsCluster, masters: dict[str, RealMaster], stream: str,
    tmp_path: Path,
) -> None:
    bus = masters["m1"]
    section = {"servers": cluster.urls, "master": "m1", "role": "ingest", "stream": stream, "replicas": 3,
               "subject_prefix": f"t.{stream}"}
    procs = []
    try:
        for i in range(2):
            path, _ = serve_config(salt_lab, tmp_path / f"ingest{i}", bus.directory, section)
            procs.append(start_serve(path, tmp_path / f"ingest{i}.log"))
        await trio.to_thread.run_sync(bus.wait_subscribers, 2, SERVE_WAIT)
        bus.fire_many([(f"test/once/{i}", {"n": i}) for i in range(200)])
        with trio.fail_after(SERVE_WAIT):
            while await stream_count(cluster, stream) < 200:
                await trio.sleep(0.1)
        # a burst, and one of the two killed in the middle of it
        for n in range(200, 2200, 100):
            bus.fire_many([(f"test/once/{i}", {"n": i}) for i in range(n, n + 100)])
            if n == 1000:
                procs[0].send_signal(signal.SIGKILL)
            await trio.sleep(0.005)
        with trio.fail_after(SERVE_WAIT):
            while await stream_count(cluster, stream) < 2200:
                await trio.sleep(0.1)
        await trio.sleep(0.5)
        assert await stream_count(cluster, stream) == 2200  # each once: no loss, no duplicate
        assert procs[0].wait(5) == -signal.SIGKILL and procs[1].poll() is None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_a_client_of_a_killed_edge_resumes_on_another_exactly(
    salt_lab: Any, master_opts: dict[str, Any], cluster: NatsCluster, masters: dict[str, RealMaster], stream: str
) -> None:
    """The second edge starts after the first events: its own history lacks them,
    so what the client missed comes from JetStream (through the client's tag
    filter mapped onto subjects), then its history, then live events."""
    bus = masters["m1"]
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            running_server("trio", salt_lab, master_opts, node(master_opts, cluster, stream, "edge")))
        await wait_following(first)
        await stack.enter_async_context(running_server(
            "trio", salt_lab, master_opts, node(master_opts, cluster, stream, "ingest", "m1", bus.directory)))
        token = (await trio.to_thread.run_sync(login, first.port))["token"]
        ws = await trio.to_thread.run_sync(ws_open, first.port, token, "ids=1&tag=test/keep/*")
        await trio.sleep(0.3)
        bus.fire_many([(f"test/{kind}/{i}", {"n": i}) for i in range(100) for kind in ("keep", "skip")])
        seen = await trio.to_thread.run_sync(ws_read, ws, 50)  # the client reads half, and its node dies
        ws.close()
        await first.shutdown()
        bus.fire_many([(f"test/{kind}/{i}", {"n": i}) for i in range(100, 150) for kind in ("keep", "skip")])
        second = await stack.enter_async_context(
            running_server("asyncio", salt_lab, master_opts, node(master_opts, cluster, stream, "edge")))
        await wait_following(second)
        bus.fire_many([(f"test/{kind}/{i}", {"n": i}) for i in range(150, 200) for kind in ("keep", "skip")])
        again = await trio.to_thread.run_sync(
            ws_open, second.port, token, f"tag=test/keep/*&last_event_id={seen[-1]['id']}")
        rest = await trio.to_thread.run_sync(ws_read_until, again, "test/keep/199")
        again.close()
        assert second.server.service.event_log.fetches == 1  # the start of it came from JetStream
        assert [m["data"]["n"] for m in seen + rest] == list(range(200))
        assert all(m["master"] == "m1" and m["tag"].startswith("test/keep/") for m in rest)
        ids = [position(m) for m in seen + rest]
        assert ids == sorted(set(ids))


async def test_a_nats_node_restarted_keeps_clients_connected_and_loses_nothing(
    salt_lab: Any, master_opts: dict[str, Any], cluster: NatsCluster, masters: dict[str, RealMaster], stream: str
) -> None:
    bus = masters["m1"]
    # the edge talks to node 0 only, so restarting node 0 drops its connection for sure
    edge_settings = node(master_opts, cluster, stream, "edge")
    edge_settings = dataclasses.replace(
        edge_settings, event_log=dataclasses.replace(edge_settings.event_log, servers=(cluster.urls[0],)))
    async with contextlib.AsyncExitStack() as stack:
        edge = await stack.enter_async_context(running_server("trio", salt_lab, master_opts, edge_settings))
        await wait_following(edge)
        await stack.enter_async_context(running_server(
            "trio", salt_lab, master_opts, node(master_opts, cluster, stream, "ingest", "m1", bus.directory)))
        token = (await trio.to_thread.run_sync(login, edge.port))["token"]
        ws = await trio.to_thread.run_sync(ws_open, edge.port, token, "ids=1")
        await trio.sleep(0.3)
        bus.fire_many([(f"test/nr/{i}", {"n": i}) for i in range(100)])
        await trio.to_thread.run_sync(cluster.kill_node, 0)
        bus.fire_many([(f"test/nr/{i}", {"n": i}) for i in range(100, 200)])
        await trio.sleep(1)
        await trio.to_thread.run_sync(cluster.restart, 0)
        bus.fire_many([(f"test/nr/{i}", {"n": i}) for i in range(200, 300)])
        got = await trio.to_thread.run_sync(ws_read_until, ws, "test/nr/299")
        ws.close()
        tags = [m["tag"] for m in got]
        assert "saltnado/bus/down" in tags and "saltnado/bus/up" in tags
        events = [m for m in got if m["tag"].startswith("test/nr/")]
        assert await stream_count(cluster, stream) == 300
        # each once, nothing lost; publishes retried across the lost connection may be
        # stored after later ones (see the README), so not the order
        assert sorted(m["data"]["n"] for m in events) == list(range(300))
        positions = [position(m) for m in events]
        assert positions == sorted(set(positions))  # in the stream's order, each id once


async def test_a_real_masters_events_reach_an_edge_node(
    salt_lab: Any, master_opts: dict[str, Any], cluster: NatsCluster, stream: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        edge = await stack.enter_async_context(
            running_server("asyncio", salt_lab, master_opts, node(master_opts, cluster, stream, "edge")))
        await wait_following(edge)
        await stack.enter_async_context(running_server(
            "trio", salt_lab, master_opts, node(master_opts, cluster, stream, "ingest", "lab")))
        token = (await trio.to_thread.run_sync(login, edge.port))["token"]
        ws = await trio.to_thread.run_sync(ws_open, edge.port, token, "ids=1&master=lab&tag=saltnado/test/real/*")
        await trio.sleep(0.3)
        for i in range(5):
            await trio.to_thread.run_sync(salt_lab.fire_event, {"n": i}, f"saltnado/test/real/{i}")
        got = await trio.to_thread.run_sync(ws_read, ws, 5)
        ws.close()
        assert [(m["master"], m["tag"], m["data"]["n"]) for m in got] == [
            ("lab", f"saltnado/test/real/{i}", i) for i in range(5)]


async def test_a_node_with_both_roles_serves_its_masters_events_once_through_the_log(
    salt_lab: Any, master_opts: dict[str, Any], cluster: NatsCluster, masters: dict[str, RealMaster], stream: str
) -> None:
    bus = masters["m1"]
    async with running_server(
        "asyncio", salt_lab, master_opts, node(master_opts, cluster, stream, "both", "m1", bus.directory)
    ) as both:
        await wait_following(both)
        token = (await trio.to_thread.run_sync(login, both.port))["token"]
        ws = await trio.to_thread.run_sync(ws_open, both.port, token, "ids=1&tag=test/*")
        await trio.sleep(0.3)
        bus.fire_many([(f"test/both/{i}", {"n": i}) for i in range(50)])
        got = await trio.to_thread.run_sync(ws_read, ws, 50)
        ws.close()
        assert [(m["master"], m["data"]["n"]) for m in got] == [("m1", i) for i in range(50)]
        assert both.server.service.event_log.published == 50
        # the same counts, as a scraper and SaltGUI read them
        ask = "GET {} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: " + token + "\r\nConnection: close\r\n\r\n"
        status, _, body = parse_response(await trio.to_thread.run_sync(http, both.port, ask.format("/stats").encode()))
        section = json.loads(body)["Event Log"]
        assert status == 200 and (section["Role"], section["Master"], section["Connected"]) == ("both", "m1", True)
        assert (section["Published"], section["Duplicates"], section["Pending Publishes"]) == (50, 0, 0)
        status, _, body = parse_response(await trio.to_thread.run_sync(http, both.port, ask.format("/metrics").encode()))
        assert status == 200 and b"\nsaltnado_event_log_published_total 50.0\n" in body
        assert b"\nsaltnado_event_log_connected 1.0\n" in body
