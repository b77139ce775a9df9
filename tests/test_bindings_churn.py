"""Clients that vanish, on both bindings: resets (SO_LINGER 0) at every stage of a
connection, mid-write with data queued, and half-open clients that stop reading
and shut down their side. Afterwards the server holds no connection, no stream
subscription and no task more than before.

The server's timeouts are off (one scenario needs ``header_timeout``) and, but
for the half-open clients, the close-handshake time that bounds a connection's
last writes is a minute, so only the handling of the disconnect itself can clean
up within the wait below (a hang guard, not a speed check).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
import trio
from wsproto.frame_protocol import FrameProtocol

from conftest import BINDINGS, RunningServer, login, parse_response, running_server
from saltnado_core import Settings, Timeouts, encode_pull_message
from saltnado_core.pacing import Pacing

NO_TIMEOUTS = Timeouts(
    handshake_timeout=0, header_timeout=0, keepalive_timeout=0, ws_ping_interval=0, ws_pong_timeout=0
)
PAD = "x" * 4_000


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:  # a small window: the server's writes block soon
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    return sock


def read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)  # byte by byte: what follows stays in the socket
        assert byte, head
        head += byte
    return head


def upgrade(token: str) -> bytes:
    return (
        f"GET /all_events/{token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


READY = bytes(FrameProtocol(True, []).send_data("websocket client ready", True))


def fire(sock_dir: str, n: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as pull:
        pull.connect(os.path.join(sock_dir, "master_event_pull.ipc"))
        for i in range(n):
            pull.sendall(encode_pull_message("saltnado/test/churn", {"i": i, "pad": PAD}))


# Each scenario: open(port, token) -> the client socket, set up (in a thread);
# then, once ``ready(server)`` holds, cut(sock) (in a thread) makes the client vanish.
@dataclasses.dataclass
class Scenario:
    open: Callable[[int, str], socket.socket]
    ready: Callable[[Any], bool] = lambda server: bool(server.service.connections)
    cut: Callable[[socket.socket], None] = reset
    events: int = 0  # fired into the master's bus after open
    timeouts: Timeouts = NO_TIMEOUTS
    close_handshake: float = 60.0  # half-open clients: what ends them, so short


def idle_keep_alive(port: int, token: str) -> socket.socket:
    sock = connect(port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    head = read_head(sock)
    body = int(parse_response(head)[1]["content-length"])
    while body:
        body -= len(sock.recv(body))
    return sock


def half_request(port: int, token: str) -> socket.socket:
    sock = connect(port)
    sock.sendall(b'POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n{"us')
    return sock


def whole_request(port: int, token: str) -> socket.socket:
    sock = connect(port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    return sock


def many_resets(port: int, token: str) -> socket.socket:
    """Fifty clients reset right after their request, most before the server reads it."""
    for _ in range(49):
        reset(whole_request(port, token))
    return whole_request(port, token)


def now(server: Any) -> bool:
    return True  # reset at once: perhaps before the server has read (or accepted) anything


def during_salt_call(port: int, token: str) -> socket.socket:
    sock = connect(port)
    body = b'{"username": "saltdev", "password": "x", "eauth": "auto"}'
    sock.sendall(
        b"POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    return sock


def pipelined_unread(port: int, token: str) -> socket.socket:
    sock = connect(port, rcvbuf=4096)
    sock.settimeout(0.5)
    try:  # until the server stops reading: it has more answers queued than the client took
        while True:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 1000)
    except TimeoutError:
        pass
    return sock


def upgrade_unread(port: int, token: str) -> socket.socket:
    sock = connect(port)
    sock.sendall(upgrade(token))
    return sock


def awaiting_ready(port: int, token: str) -> socket.socket:
    sock = connect(port)
    sock.sendall(upgrade(token))
    assert parse_response(read_head(sock))[0] == 101
    return sock


def streaming_unread(port: int, token: str) -> socket.socket:
    sock = connect(port, rcvbuf=4096)
    sock.sendall(upgrade(token) + READY)
    assert parse_response(read_head(sock))[0] == 101
    return sock


def sse_unread(port: int, token: str) -> socket.socket:
    sock = connect(port, rcvbuf=4096)
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n".encode())
    assert parse_response(read_head(sock))[0] == 200
    return sock


def half_close(sock: socket.socket) -> None:
    """Stop reading and shut down the write side; the socket stays open."""
    sock.shutdown(socket.SHUT_WR)


def queued(server: Any) -> bool:
    """A streaming connection has events queued that its socket cannot take."""
    return any(len(conn.outbox) for conn in server.service.connections)


def paused(server: Any) -> bool:
    return any(conn.input_paused for conn in server.service.connections)


SCENARIOS = {
    "reset idle keep-alive": Scenario(idle_keep_alive),
    "reset mid-request": Scenario(half_request),
    "reset mid-request before it is read": Scenario(half_request, now),
    "reset after a request before it is read, fifty times": Scenario(many_resets, now),
    "reset during a Salt call": Scenario(during_salt_call),
    "reset mid-response, answers unread": Scenario(pipelined_unread),
    "reset before reading the 101": Scenario(upgrade_unread),
    "reset before websocket client ready": Scenario(awaiting_ready),
    "reset mid-stream with events queued": Scenario(streaming_unread, queued, events=1500),
    "reset mid-SSE with events queued": Scenario(sse_unread, queued, events=1500),
    "half-open websocket with events queued": Scenario(streaming_unread, queued, half_close, 1500, close_handshake=1),
    "half-open SSE with events queued": Scenario(sse_unread, queued, half_close, 1500, close_handshake=1),
    # Pipelined requests, then the write side shut, answers never read: the server
    # stops reading (so it never sees the EOF); header_timeout cuts it off.
    "half-open pipelining, answers unread": Scenario(
        pipelined_unread, cut=half_close, timeouts=dataclasses.replace(NO_TIMEOUTS, header_timeout=1),
        close_handshake=1,
    ),
}


async def task_count(running: RunningServer) -> int:
    """Tasks of the server: under its nursery (trio), or on its loop (asyncio)."""
    if running.loop is not None:

        async def count() -> int:
            return len(asyncio.all_tasks()) - 1  # not this one

        return int(await trio.to_thread.run_sync(running.loop.run, count()))

    def under(nursery: trio.Nursery) -> int:
        return sum(1 + sum(under(child) for child in task.child_nurseries) for task in nursery.child_tasks)

    return under(running.server._nursery)


def leftovers(server: Any) -> dict[str, int]:
    streams = server.streams
    return {
        "connections": len(server.service.connections),
        "all_events": len(streams.all_events),
        "events": len(streams.events),
        "formatted_events": len(streams.formatted),
    }


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("binding", BINDINGS)
async def test_vanished_client_leaves_nothing_behind(
    binding: str, name: str, salt_lab: Any, master_opts: dict[str, Any]
) -> None:
    scenario = SCENARIOS[name]
    base = Settings.from_opts(master_opts)
    settings = dataclasses.replace(
        base, port=0, address="127.0.0.1", limits=dataclasses.replace(base.limits, timeouts=scenario.timeouts)
    )
    pacing = Pacing(close_handshake=scenario.close_handshake)
    async with running_server(binding, salt_lab, master_opts, settings, pacing=pacing) as running:
        server = running.server
        token = (await trio.to_thread.run_sync(login, running.port))["token"]
        with trio.fail_after(30):
            while server.service.connections:  # the login's connection
                await trio.sleep(0.02)
            tasks = await task_count(running)
            while True:  # until its task and the eauth warm-up are gone
                await trio.sleep(0.1)
                if (now := await task_count(running)) == tasks:
                    break
                tasks = now

        sock = await trio.to_thread.run_sync(scenario.open, running.port, token)
        if scenario.events:
            await trio.to_thread.run_sync(fire, str(salt_lab.sock_dir), scenario.events)
        with trio.fail_after(30):
            while not scenario.ready(server):
                await trio.sleep(0.01)
        await trio.to_thread.run_sync(scenario.cut, sock)

        clean = {"connections": 0, "all_events": 0, "events": 0, "formatted_events": 0}
        with trio.move_on_after(20):
            while (left := leftovers(server)) != clean or (more := await task_count(running) - tasks) > 0:
                await trio.sleep(0.05)
        sock.close()
        assert left == clean and more <= 0, f"left behind: {left} and {more} more tasks than before"
