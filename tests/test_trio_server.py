"""The trio server on a loopback port, driven by raw sockets and websocket-client,
in front of the session's real salt-master."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pytest
import trio
import websocket  # websocket-client, as Salt's docs use it
from wsproto.frame_protocol import FrameProtocol

from conftest import RunningServer, http, parse_response


def _ws_connect(url: str) -> websocket.WebSocket:
    ws = websocket.create_connection(url, timeout=15)
    ws.send("websocket client ready")
    return ws


def _recv_until(ws: websocket.WebSocket, predicate: Any, limit: float = 30) -> list[dict[str, Any]]:
    """Receive JSON messages until one satisfies ``predicate``; return all seen."""
    seen = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        message = json.loads(ws.recv())
        seen.append(message)
        if predicate(message):
            return seen
    raise AssertionError(f"no matching message in {limit}s; saw tags {[m['tag'] for m in seen]}")


async def test_root_lists_enabled_clients(server: RunningServer) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    response = await trio.to_thread.run_sync(http, server.port, raw)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(body) == {
        "clients": ["local", "local_async", "runner", "runner_async", "wheel", "wheel_async"],
        "return": "Welcome",
    }


async def test_login_returns_reference_shape_and_cookie(server: RunningServer) -> None:
    body = json.dumps({"username": "saltdev", "password": "x", "eauth": "auto"}).encode()
    raw = (
        b"POST /login HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    status, headers, payload = parse_response(await trio.to_thread.run_sync(http, server.port, raw))
    assert status == 200 and headers["content-type"] == "application/json"
    [record] = json.loads(payload)["return"]
    assert list(record) == ["token", "expire", "start", "user", "eauth", "perms"]
    assert record["user"] == "saltdev" and record["eauth"] == "auto"
    assert record["perms"] == [".*", "@jobs", "@runner", "@wheel"]
    assert len(record["token"]) == 64 and record["expire"] > time.time()
    assert headers["set-cookie"] == f"session_id={record['token']}; Path=/; HttpOnly; SameSite=Lax"


async def test_login_with_unconfigured_eauth_is_401(server: RunningServer) -> None:
    body = b"username=saltdev&password=x&eauth=nosuch"
    raw = (
        b"POST /login HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    response = await trio.to_thread.run_sync(http, server.port, raw)
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 Unauthorized")
    assert json.loads(payload)["status"] == "401 Unauthorized"


async def test_unknown_token_is_401_before_upgrade(server: RunningServer) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        await trio.to_thread.run_sync(websocket.create_connection, server.ws_url("ab" * 32))
    assert info.value.status_code == 401
    assert json.loads(info.value.resp_body) == {"status": "401 Unauthorized", "return": "Please log in"}


async def test_token_of_wrong_shape_is_404(server: RunningServer) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        await trio.to_thread.run_sync(websocket.create_connection, server.ws_url("ab" * 10))
    assert info.value.status_code == 404


async def test_first_request_websocket_streams_fired_events(server: RunningServer, token: str) -> None:
    """The reference closes the first websocket after a restart; we stream it."""

    def scenario() -> list[dict[str, Any]]:
        ws = _ws_connect(server.ws_url(token))
        try:
            time.sleep(0.2)  # let the subscription land before firing
            assert server.lab.fire_event({"hello": "wörld", "n": 1}, "saltnado/test/first")
            return _recv_until(ws, lambda m: m["tag"] == "saltnado/test/first")
        finally:
            ws.close()

    seen = await trio.to_thread.run_sync(scenario)
    message = seen[-1]
    assert list(message) == ["data", "tag"]
    assert message["data"]["hello"] == "wörld" and message["data"]["n"] == 1
    assert "_stamp" in message["data"]


async def test_bytes_right_after_upgrade_are_not_lost(server: RunningServer, token: str) -> None:
    ready = FrameProtocol(True, []).send_data("websocket client ready", True)
    request = (
        f"GET /all_events/{token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()

    def scenario() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            sock.sendall(request + bytes(ready))  # one write: the ready frame trails the request
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(4096)
            status, headers, rest = parse_response(buf)
            assert status == 101
            assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
            time.sleep(0.2)
            server.lab.fire_event({"k": "trailing"}, "saltnado/test/trailing")
            deadline = time.monotonic() + 20
            while b"saltnado/test/trailing" not in rest and time.monotonic() < deadline:
                rest += sock.recv(65536)
            return rest

    rest = await trio.to_thread.run_sync(scenario)
    assert b'"tag": "saltnado/test/trailing"' in rest


async def test_ping_answered_and_close_honoured_while_streaming(server: RunningServer, token: str) -> None:
    def scenario() -> tuple[Any, Any]:
        ws = _ws_connect(server.ws_url(token))
        time.sleep(0.2)
        ws.ping(b"are-you-there")
        # Events may arrive before the pong; skip them.
        while True:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_PONG:
                pong = frame.data
                break
        ws.send_close(websocket.STATUS_NORMAL, b"bye")
        while True:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return pong, frame.data
    pong, close = await trio.to_thread.run_sync(scenario)
    assert pong == b"are-you-there"
    assert close[:2] == (1000).to_bytes(2, "big")
    with trio.fail_after(5):
        while len(server.server.streams.all_events):
            await trio.sleep(0.01)


async def test_other_text_is_ignored_until_ready(server: RunningServer, token: str) -> None:
    def scenario() -> dict[str, Any]:
        ws = websocket.create_connection(server.ws_url(token), timeout=15)
        try:
            ws.send("hello")
            time.sleep(0.3)
            assert len(server.server.streams.all_events) == 0
            ws.send("websocket client ready")
            time.sleep(0.2)
            assert len(server.server.streams.all_events) == 1
            server.lab.fire_event({}, "saltnado/test/after-ready")
            return _recv_until(ws, lambda m: m["tag"] == "saltnado/test/after-ready")[-1]
        finally:
            ws.close()

    assert (await trio.to_thread.run_sync(scenario))["tag"] == "saltnado/test/after-ready"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
        (b"POST /login HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n", b"413"),
        (b"GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", b"404"),
    ],
)
async def test_bad_requests_get_json_errors(server: RunningServer, raw: bytes, status: bytes) -> None:
    response = await trio.to_thread.run_sync(http, server.port, raw)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == status
    assert json.loads(body)["status"].startswith(status.decode())


async def test_keep_alive_serves_several_requests(server: RunningServer) -> None:
    raw = b"GET /login HTTP/1.1\r\nHost: t\r\n\r\n" * 2 + b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    response = await trio.to_thread.run_sync(http, server.port, raw)
    assert response.count(b"HTTP/1.1 401 Unauthorized") == 2
    assert response.count(b"HTTP/1.1 200 OK") == 1


async def test_shutdown_closes_websockets_with_1001(server: RunningServer, token: str) -> None:
    ws = await trio.to_thread.run_sync(_ws_connect, server.ws_url(token))
    await trio.sleep(0.2)

    def read_close() -> bytes:
        while True:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return frame.data

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.shutdown)
        close = await trio.to_thread.run_sync(read_close)
    assert close[:2] == (1001).to_bytes(2, "big")


async def test_token_never_logged(server: RunningServer, token: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ws = await trio.to_thread.run_sync(_ws_connect, server.ws_url(token))
    await trio.to_thread.run_sync(ws.close)
    await trio.sleep(0.1)
    assert "/all_events/<token>" in caplog.text
    assert token not in caplog.text
