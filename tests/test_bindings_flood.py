"""A websocket client flooding pings, on real loopback sockets, the same on both bindings.

The client sends pings as fast as the server takes them and reads nothing: the
server must stop reading it once a bounded amount of pongs waits (TCP then stops
the client), keep serving everyone else, and forget the connection once the
client leaves. Memory is asserted by the connection's own count of the output it
owes (``reply_backlog``), sampled while the flood runs, never by timing or RSS.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import socket
import time
import weakref
from typing import Any

import pytest
import trio
import websocket  # websocket-client

from conftest import BINDINGS, RunningServer, login, running_server
from test_bindings_limits import _upgrade
from saltnado_core import Settings
from saltnado_core.pacing import Pacing

WRITE_CHUNK = 16 * 1024  # the bound on output a client may owe before it is not read from
PACING = Pacing()
BOUND = WRITE_CHUNK + PACING.read_bytes  # … plus the pongs of the one read that crossed it
PING = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125  # the largest control frame, masked
PONG = b"\x8a\x7d" + b"p" * 125
WAIT = 20  # seconds: the bound on any single wait for the server


@pytest.fixture(params=BINDINGS)
async def flood_server(request: pytest.FixtureRequest, salt_lab: Any, master_opts: dict[str, Any]) -> Any:
    """A server of each binding with a small output bound and no ping budget to speak of
    (the budget is the core's tests'): only the pause stands between a flood and memory."""
    base = Settings.from_opts(master_opts)
    limits = dataclasses.replace(base.limits, write_chunk_bytes=WRITE_CHUNK, max_ws_pings_per_second=10**9)
    settings = dataclasses.replace(base, port=0, address="127.0.0.1", limits=limits)
    async with running_server(request.param, salt_lab, master_opts, settings, pacing=PACING) as srv:
        yield srv


def _ready_websocket(port: int, token: str, rcvbuf: int = 4096) -> socket.socket:
    """A raw ``/all_events`` websocket, ready, with a small receive buffer (set before
    connecting, so the window stays small)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", port))
    return _upgrade(port, token, True, sock)[0]


def _flood_until_stalled(sock: socket.socket, seconds: float = 15) -> int:
    """Send pings, reading nothing, until the server has not taken a byte for a whole
    second (it stopped reading); returns the bytes sent. Fails if it never stops."""
    sock.settimeout(1)
    batch, sent = PING * 64, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sent += sock.send(batch)
        except TimeoutError:
            return sent
    raise AssertionError(f"the server read {sent} bytes of pings in {seconds} s without stopping")


async def test_ping_flood_not_read_holds_bounded_output_and_others_are_served(flood_server: RunningServer) -> None:
    srv = flood_server
    connections = srv.server.service.connections
    token = (await trio.to_thread.run_sync(login, srv.port))["token"]
    other = await trio.to_thread.run_sync(lambda: websocket.create_connection(srv.ws_url(token), timeout=WAIT))
    await trio.to_thread.run_sync(other.send, "websocket client ready")
    flooder = await trio.to_thread.run_sync(_ready_websocket, srv.port, token)
    most = 0
    try:
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def sample() -> None:
                nonlocal most
                while not done.is_set():
                    most = max([most, *(conn.reply_backlog for conn in list(connections))])
                    await trio.sleep(0.005)

            nursery.start_soon(sample)
            sent = await trio.to_thread.run_sync(_flood_until_stalled, flooder)
            done.set()
        assert sent > 0
        assert most <= BOUND, f"{most} bytes of pongs owed, bound {BOUND}"
        assert max(conn.reply_backlog for conn in list(connections)) <= BOUND
        # everyone else is served: a login, and an event on the other websocket
        assert (await trio.to_thread.run_sync(login, srv.port))["token"]
        tag = "saltnado/test/flood-others"
        await trio.to_thread.run_sync(srv.lab.fire_event, {}, tag)

        def other_gets_the_event() -> bool:
            while json.loads(other.recv())["tag"] != tag:
                pass
            return True

        assert await trio.to_thread.run_sync(other_gets_the_event)
    finally:
        flooder.close()
        other.close()


async def test_client_that_reads_its_pongs_is_read_again(flood_server: RunningServer) -> None:
    """A burst past the bound pauses reading; once the pongs are written (by either of
    the binding's writers), the client is read again, and answered."""
    srv = flood_server
    token = (await trio.to_thread.run_sync(login, srv.port))["token"]

    def bursts() -> None:
        with _ready_websocket(srv.port, token, 1 << 20) as sock:
            pings = 2 * WRITE_CHUNK // len(PING)
            for _ in range(3):
                sock.sendall(PING * pings)  # twice the bound in one go
                got = b""
                while len(got) < pings * 127:
                    chunk = sock.recv(1 << 20)
                    assert chunk, got[-200:]
                    got += chunk.replace(b"\x89\x00", b"")  # a keep-alive ping of ours may come
                assert got == PONG * pings

    await trio.to_thread.run_sync(bursts)


async def test_connection_is_released_once_its_client_leaves(flood_server: RunningServer) -> None:
    """Nothing keeps a connection that ended (and its backlog) alive until the next fan-out."""
    srv = flood_server
    service = srv.server.service
    token = (await trio.to_thread.run_sync(login, srv.port))["token"]
    sock = await trio.to_thread.run_sync(_ready_websocket, srv.port, token, 65536)
    with trio.fail_after(WAIT):
        while not any(conn.stream_token for conn in list(service.connections)):
            await trio.sleep(0.01)
    ref = weakref.ref(next(conn for conn in list(service.connections) if conn.stream_token))
    sock.sendall(PING)  # answered by the binding's shared writer

    def read_pong() -> bytes:
        data = b""
        while len(data) < 127:
            data += sock.recv(65536)
        return data

    assert (await trio.to_thread.run_sync(read_pong)).startswith(b"\x8a\x7d")
    sock.close()
    with trio.fail_after(WAIT):
        while service.connections:
            await trio.sleep(0.01)
    await trio.sleep(0.1)  # the binding's tasks for it have ended
    gc.collect()
    assert ref() is None, [type(referrer).__name__ for referrer in gc.get_referrers(ref())]
