"""A websocket client that stops reading is cut off the same way on both bindings:
its bounded outbox overflows, it is closed with the slow-client code, and if its
socket stays full it is dropped ``close_handshake`` seconds later, while a client
that keeps up loses nothing."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import Any

import pytest
import trio
from wsproto.frame_protocol import FrameProtocol

from conftest import BINDINGS, login, parse_response, running_server
from saltnado_core import Limits, Settings, encode_pull_message
from saltnado_core.pacing import Pacing

# 10 MB in all: more than the stuck client's socket takes (the server's send buffer
# grows to tcp_wmem's max, ~4 MB) plus its 1 MB outbox, whatever the timing.
EVENTS = 2500
PAYLOAD = "x" * 4_000


def _open(port: int, token: str, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /all_events/{token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        + bytes(FrameProtocol(True, []).send_data("websocket client ready", True))
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: leave the frames in the socket
    assert parse_response(head)[0] == 101
    return sock


def _fire(sock_dir: str, n: int, rate: float = 1000) -> None:
    """``n`` events at ``rate``/s: paced, so the reader that keeps up (a thread of this
    process) is not left 1 MB behind on a loaded machine."""
    pull = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pull.connect(os.path.join(sock_dir, "master_event_pull.ipc"))
    start = time.monotonic()
    with pull:
        for i in range(n):
            if (delay := start + i / rate - time.monotonic()) > 0:
                time.sleep(delay)
            pull.sendall(encode_pull_message("saltnado/test/flood", {"i": i, "pad": PAYLOAD}))


def _count_until_closed(sock: socket.socket) -> tuple[int, bytes]:
    """Read everything; count flood events; return the close frame's first bytes."""
    data = b""
    while chunk := sock.recv(1 << 20):
        data += chunk
        if data.count(b"saltnado/test/flood") == EVENTS:
            break
    close = data[data.rfind(b"\x88"):][:4] if b"\x88" in data[-200:] else b""
    return data.count(b"saltnado/test/flood"), close


@pytest.mark.parametrize("binding", BINDINGS)
async def test_stuck_client_is_cut_off_and_dropped_fast_client_gets_everything(
    binding: str, salt_lab: Any, master_opts: dict[str, Any]
) -> None:
    settings = dataclasses.replace(
        Settings.from_opts(master_opts), port=0, address="127.0.0.1",
        limits=Limits(outbox_max_bytes=1024 * 1024),
    )
    async with running_server(binding, salt_lab, master_opts, settings, pacing=Pacing(close_handshake=1.0)) as srv:
        token = (await trio.to_thread.run_sync(login, srv.port))["token"]
        stuck = await trio.to_thread.run_sync(_open, srv.port, token, 4096)
        fast = await trio.to_thread.run_sync(_open, srv.port, token)
        with trio.fail_after(10):
            while len(srv.server.streams.all_events) < 2:
                await trio.sleep(0.02)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, _fire, str(salt_lab.sock_dir), EVENTS)
            received, _ = await trio.to_thread.run_sync(_count_until_closed, fast)
        assert received == EVENTS  # the reader that keeps up loses nothing
        with trio.fail_after(15):  # unsubscribed at once, its connection dropped after close_handshake
            while len(srv.server.service.connections) > 1:
                await trio.sleep(0.05)
        assert len(srv.server.streams.all_events) == 1
        fast.close()
        stuck.settimeout(10)
        got, close = await trio.to_thread.run_sync(_count_until_closed, stuck)
        stuck.close()
    assert got < EVENTS
    if close:  # whatever of the close frame made it before the drop says 1013
        assert close[2:4] in (b"", (1013).to_bytes(2, "big")[: len(close) - 2])
