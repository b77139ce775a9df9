"""Streams that survive a reconnect, against the session's real salt-master.

Raw clients first (websocket-client, a raw SSE socket: what any client does),
both bindings: a client away while 500 events are fired gets exactly those 500
on its return, in order, nothing twice. Then ``saltnado_client`` on trio and on
asyncio: a server-side drop with events missed meanwhile (resumed), an id older
than the history (the ``too_old`` notice), a server restart on the same port (a
new epoch: the ``unknown`` notice, then live events). The master restart is in
``test_master_outage.py`` (it stops a master of that module's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import websocket

import saltnado_client
from conftest import RunningServer, login, running_server
from saltnado_core import Settings, encode_pull_message
from saltnado_core.kinds import CloseCode

pytestmark = pytest.mark.salt

MISSED = 500


def fire_batch(lab: Any, tag: str, count: int, batch: int = 100) -> None:
    """Fire ``count`` events ``<tag>/<seq>`` (data ``{"seq": n}``) into the master's
    pull socket, ``batch`` to a write (the master relays them in order)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as pull:
        pull.connect(str(lab.sock_dir / "master_event_pull.ipc"))
        for start in range(0, count, batch):
            pull.sendall(b"".join(encode_pull_message(f"{tag}/{n}", {"seq": n})
                                  for n in range(start, min(count, start + batch))))
            time.sleep(0.01)


async def relayed(server: RunningServer, tag: str, timeout: float = 30) -> None:
    """Wait until the server has relayed (and kept) the event ``tag``."""
    history = server.server.streams.history
    with trio.fail_after(timeout):
        while not any(entry.tag == tag for entry in list(history._entries)[-5:]):
            await trio.sleep(0.02)


def ws_open(server: RunningServer, token: str, query: str) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/all_events?{query}", timeout=30,
                                     header=[f"X-Auth-Token: {token}"])
    ws.send("websocket client ready")
    return ws


def ws_read(ws: websocket.WebSocket, count: int) -> list[dict[str, Any]]:
    return [json.loads(ws.recv()) for _ in range(count)]


async def test_a_websocket_away_while_500_events_are_fired_gets_exactly_those(server: RunningServer,
                                                                             token: str) -> None:
    tag = f"saltnado/test/r500/ws/{server.binding}"
    ws = await trio.to_thread.run_sync(ws_open, server, token, f"ids=1&tag={tag}/*")
    await trio.sleep(0.2)  # attached
    await trio.to_thread.run_sync(fire_batch, server.lab, tag, 1)
    [seen] = await trio.to_thread.run_sync(ws_read, ws, 1)
    ws.close()
    await trio.to_thread.run_sync(fire_batch, server.lab, tag, MISSED)
    await relayed(server, f"{tag}/{MISSED - 1}")
    assert len(server.server.streams.history) >= MISSED  # the 500 fit the default history (1000 events, 4 MiB)
    again = await trio.to_thread.run_sync(ws_open, server, token, f"tag={tag}/*&last_event_id={seen['id']}")
    try:
        got = await trio.to_thread.run_sync(ws_read, again, MISSED)
    finally:
        again.close()
    assert [m["data"]["seq"] for m in got] == list(range(MISSED))  # those, in order
    positions = [int(m["id"].rpartition("-")[2]) for m in got]
    assert positions == sorted(set(positions)) and positions[0] > int(seen["id"].rpartition("-")[2])


SSE_EVENT = re.compile(rb"id: (\S+)\ntag: (\S+)\ndata: (.*)\n")


def sse_until(port: int, token: str, query: str, last_tag: str, *headers: str) -> list[tuple[str, str, Any]]:
    """Open ``/events?<query>``, read until ``last_tag``: (id, tag, data) of each event."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        lines = [f"GET /events?{query} HTTP/1.1", "Host: t", f"X-Auth-Token: {token}", *headers]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while f"tag: {last_tag}\n".encode() not in received:
            data = sock.recv(65536)
            assert data, received[-500:]
            received += data
    return [(i.decode(), t.decode(), json.loads(d)["data"]) for i, t, d in SSE_EVENT.findall(received)]


async def test_an_event_stream_resumed_by_last_event_id_gets_exactly_the_500(server: RunningServer,
                                                                            token: str) -> None:
    tag = f"saltnado/test/r500/sse/{server.binding}"
    query = f"ids=1&tag={tag}/*"

    def first() -> list[tuple[str, str, Any]]:
        threading.Timer(0.5, fire_batch, (server.lab, f"{tag}/first", 1)).start()
        return sse_until(server.port, token, query, f"{tag}/first/0")

    [(first_id, _, _)] = await trio.to_thread.run_sync(first)
    await trio.to_thread.run_sync(fire_batch, server.lab, tag, MISSED)
    await relayed(server, f"{tag}/{MISSED - 1}")
    got = await trio.to_thread.run_sync(sse_until, server.port, token, query, f"{tag}/{MISSED - 1}",
                                        f"Last-Event-ID: {first_id}")
    assert [data["seq"] for _, _, data in got] == list(range(MISSED))
    assert [t for _, t, _ in got] == [f"{tag}/{n}" for n in range(MISSED)]
    assert len({i for i, _, _ in got}) == MISSED and first_id not in {i for i, _, _ in got}


# -- the Python client, on trio and on asyncio ---------------------------------------------


class Collector:
    """Runs ``saltnado_client.connect(**options)`` on trio (in the test's nursery) or
    asyncio (its own loop in a thread) and collects every item it yields."""

    def __init__(self, library: str, **options: Any) -> None:
        self.library = library
        self.options = options
        self.items: list[Any] = []
        self._stop = threading.Event()
        self.error: BaseException | None = None

    async def _follow(self) -> None:
        async with saltnado_client.connect(**self.options) as events:
            async for item in events:
                self.items.append(item)
                if self._stop.is_set():
                    return

    async def _asyncio_main(self) -> None:
        task = asyncio.ensure_future(self._follow())
        while not task.done() and not self._stop.is_set():
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _asyncio_thread(self) -> None:
        try:
            asyncio.run(self._asyncio_main())
        except BaseException as exc:  # reported by the test
            self.error = exc

    async def _trio_task(self) -> None:
        try:
            with trio.CancelScope() as self._scope:
                await self._follow()
        except BaseException as exc:
            self.error = exc

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Collector]:
        async with trio.open_nursery() as nursery:
            thread = None
            if self.library == "trio":
                nursery.start_soon(self._trio_task)
            else:
                thread = threading.Thread(target=self._asyncio_thread, daemon=True)
                thread.start()
            try:
                yield self
            finally:
                self._stop.set()
                if thread is not None:
                    await trio.to_thread.run_sync(thread.join, 10)
                else:
                    self._scope.cancel()
        assert self.error is None, repr(self.error)

    async def wait_for(self, check: Any, timeout: float = 30) -> Any:
        with trio.fail_after(timeout):
            while True:
                for item in list(self.items):
                    if check(item):
                        return item
                assert self.error is None, repr(self.error)
                await trio.sleep(0.02)

    def events(self, prefix: str) -> list[saltnado_client.Event]:
        return [i for i in self.items if isinstance(i, saltnado_client.Event) and i.tag.startswith(prefix)]


@contextlib.asynccontextmanager
async def trio_server(salt_lab: Any, master_opts: dict[str, Any], **changes: Any) -> AsyncIterator[RunningServer]:
    settings = dataclasses.replace(Settings.from_opts(master_opts), address="127.0.0.1", **{"port": 0, **changes})
    async with running_server("trio", salt_lab, master_opts, settings) as running:
        yield running


def drop_every_connection(server: RunningServer) -> None:
    """Close every client connection from the server's side (the trio server: this loop)."""
    for conn, wake in list(server.server.service.connections.items()):
        conn.close(CloseCode.TRY_AGAIN_LATER, "dropped by the test")
        wake()


@pytest.mark.parametrize("library", ["trio", "asyncio"])
async def test_client_resumes_after_a_drop_and_reports_a_too_old_id(library: str, salt_lab: Any,
                                                                    master_opts: dict[str, Any]) -> None:
    tag = f"saltnado/test/client/{library}"
    async with trio_server(salt_lab, master_opts, event_history_max_events=100) as server:
        client = Collector(library, url=server.base, username="saltdev", password="x", eauth="auto",
                           tags=[f"{tag}/*"], backoff=saltnado_client.Backoff(3.0, 3.0))
        async with client.running():
            await client.wait_for(lambda i: isinstance(i, saltnado_client.Connected))
            await trio.sleep(0.2)
            await trio.to_thread.run_sync(fire_batch, salt_lab, f"{tag}/a", 3)
            await client.wait_for(lambda i: getattr(i, "tag", "") == f"{tag}/a/2")

            drop_every_connection(server)  # the client waits 1.5-3 s before coming back
            gone = await client.wait_for(lambda i: isinstance(i, saltnado_client.Disconnected))
            assert gone.code == 1013 and gone.last_event_id == client.events(tag)[-1].id
            await trio.to_thread.run_sync(fire_batch, salt_lab, f"{tag}/b", 50)
            await relayed(server, f"{tag}/b/49")
            back = await client.wait_for(lambda i: isinstance(i, saltnado_client.Connected) and i.attempt == 2)
            assert back.resuming_from == gone.last_event_id
            await client.wait_for(lambda i: getattr(i, "tag", "") == f"{tag}/b/49")
            assert [e.data["seq"] for e in client.events(f"{tag}/b/")] == list(range(50))  # resumed: all, once

            drop_every_connection(server)
            await client.wait_for(lambda i: isinstance(i, saltnado_client.Disconnected) and i.last_event_id
                                  == client.events(tag)[-1].id and i is not gone)
            await trio.to_thread.run_sync(fire_batch, salt_lab, f"{tag}/c", 150)  # more than the history keeps
            await relayed(server, f"{tag}/c/149")
            failed = await client.wait_for(lambda i: isinstance(i, saltnado_client.ResumeFailed))
            await trio.to_thread.run_sync(fire_batch, salt_lab, f"{tag}/live", 1)
            await client.wait_for(lambda i: getattr(i, "tag", "") == f"{tag}/live/0")
    assert failed.outcome == "too_old"
    assert [e.tag for e in client.events(f"{tag}/c/")] == []  # the notice said they were lost
    kinds = [type(i).__name__ for i in client.items if not isinstance(i, saltnado_client.Event)]
    assert kinds == ["Connected", "Disconnected", "Connected", "Disconnected", "Connected", "ResumeFailed"]


@pytest.mark.parametrize("library", ["trio", "asyncio"])
async def test_client_survives_a_server_restart_on_the_same_port(library: str, salt_lab: Any,
                                                                 master_opts: dict[str, Any]) -> None:
    tag = f"saltnado/test/restart/{library}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Collector(library, url=f"http://127.0.0.1:{port}", username="saltdev", password="x", eauth="auto",
                       tags=[f"{tag}/*"], backoff=saltnado_client.Backoff(0.2, 1.0))
    async with client.running():  # it may start before the server: refused, then retried
        async with trio_server(salt_lab, master_opts, port=port) as server:
            await client.wait_for(lambda i: isinstance(i, saltnado_client.Connected))
            await trio.sleep(0.2)
            await trio.to_thread.run_sync(fire_batch, salt_lab, f"{tag}/before", 1)
            before = await client.wait_for(lambda i: getattr(i, "tag", "") == f"{tag}/before/0")
            await server.shutdown()  # as SIGTERM: websockets are closed with 1001
        gone = await client.wait_for(lambda i: isinstance(i, saltnado_client.Disconnected) and i.code == 1001)
        assert gone.last_event_id == before.id
        async with trio_server(salt_lab, master_opts, port=port):
            notice = await client.wait_for(lambda i: isinstance(i, saltnado_client.ResumeFailed))
            await trio.sleep(0.2)
            await trio.to_thread.run_sync(fire_batch, salt_lab, f"{tag}/after", 1)
            after = await client.wait_for(lambda i: getattr(i, "tag", "") == f"{tag}/after/0")
    assert notice.outcome == "unknown"  # a new epoch: nothing can be replayed, and the client is told
    back = [i for i in client.items if isinstance(i, saltnado_client.Connected)][-1]
    assert back.resuming_from == before.id
    assert after.id is not None and before.id is not None
    assert after.id.split("-")[0] != before.id.split("-")[0]  # the new epoch
    assert [e.tag for e in client.events(tag)] == [f"{tag}/before/0", f"{tag}/after/0"]
