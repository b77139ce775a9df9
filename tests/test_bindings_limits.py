"""Limits and timeouts on real loopback sockets, the same on both bindings.

Servers here get tiny timeouts and a fast ticker, so each test waits a second or
two at most; nothing asserts how long anything took, only what the client got
(a generous socket timeout bounds every wait).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import select
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import websocket  # websocket-client
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

from conftest import BINDINGS, RunningServer, http, login, parse_response, running_server
from saltnado_core import Limits, Settings, Timeouts
from saltnado_core.pacing import Pacing
from tls_certs import make_tls_files

FAST_TICKS = Pacing(tick_interval=0.05)
TINY = Timeouts(handshake_timeout=1, header_timeout=0.5, keepalive_timeout=0.5, ws_ping_interval=0.3, ws_pong_timeout=0.5)
WAIT = 20  # seconds: the bound on any single wait for the server


def _settings(master_opts: dict[str, Any], **changes: Any) -> Settings:
    base = Settings.from_opts(master_opts)
    limits = dataclasses.replace(base.limits, **changes.pop("limits", {}))
    return dataclasses.replace(base, port=0, address="127.0.0.1", limits=limits, **changes)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return sock


def _read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset counts as closed); fails on the socket timeout."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a content-length, leaving the connection open."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, buf
        buf += chunk
    status, headers, body = parse_response(buf)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def _upgrade(port: int, token: str, ready: bool, sock: socket.socket | None = None) -> tuple[socket.socket, bytes]:
    """An ``/all_events`` websocket (on ``sock`` if given, connected) and what came after the 101."""
    sock = sock or _connect(port)
    sock.sendall(
        f"GET /all_events/{token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        + (bytes(FrameProtocol(True, []).send_data("websocket client ready", True)) if ready else b"")
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert parse_response(head + b"\r\n\r\n")[0] == 101
    return sock, rest


def _frames_until_close(sock: socket.socket, first: bytes) -> list[tuple[Opcode, Any]]:
    """Server frames (never answering a ping) up to and including the close."""
    reader = FrameProtocol(True, [])
    reader.receive_bytes(first)
    frames: list[tuple[Opcode, Any]] = []
    while True:
        for frame in reader.received_frames():
            frames.append((frame.opcode, frame.payload))
            if frame.opcode is Opcode.CLOSE:
                return frames
        chunk = sock.recv(65536)
        assert chunk, f"closed without a close frame after {frames}"
        reader.receive_bytes(chunk)


@pytest.fixture(params=BINDINGS)
async def tiny(request: pytest.FixtureRequest, salt_lab: Any, master_opts: dict[str, Any]) -> Any:
    """A server of each binding with second-or-less timeouts and a fast ticker."""
    settings = _settings(master_opts, limits={"timeouts": TINY})
    async with running_server(request.param, salt_lab, master_opts, settings, pacing=FAST_TICKS) as srv:
        yield srv


# -- timeouts ------------------------------------------------------------------------------


async def test_silent_connection_is_closed_without_a_word(tiny: RunningServer) -> None:
    def scenario() -> bytes:
        with _connect(tiny.port) as sock:
            return _read_to_eof(sock)

    assert await trio.to_thread.run_sync(scenario) == b""


async def test_slowloris_gets_408_and_is_closed(tiny: RunningServer) -> None:
    # 130 bytes a tenth of a second apart: if each byte extended the wait, the
    # request would complete (and be answered 200) after 13 s.
    request = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"

    def scenario() -> bytes:
        with _connect(tiny.port) as sock:
            for byte in request:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                if select.select([sock], [], [], 0.1)[0]:
                    break  # the server has spoken
            return _read_to_eof(sock)

    status, headers, body = parse_response(await trio.to_thread.run_sync(scenario))
    assert status == 408
    assert headers["connection"] == "close"
    assert json.loads(body) == {"status": "408 Request Timeout", "return": "request not received in full within 0.5 s"}


async def test_idle_keepalive_connection_is_closed_quietly(tiny: RunningServer) -> None:
    def scenario() -> tuple[int, bytes]:
        with _connect(tiny.port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            status, _, _ = _read_response(sock)
            return status, _read_to_eof(sock)

    assert await trio.to_thread.run_sync(scenario) == (200, b"")


async def test_websocket_that_never_says_ready_is_closed_1008(tiny: RunningServer) -> None:
    token = (await trio.to_thread.run_sync(login, tiny.port))["token"]

    def scenario() -> list[tuple[Opcode, Any]]:
        sock, rest = _upgrade(tiny.port, token, ready=False)
        with sock:
            return _frames_until_close(sock, rest)

    frames = await trio.to_thread.run_sync(scenario)
    assert frames[-1] == (Opcode.CLOSE, (CloseReason.POLICY_VIOLATION, "no 'websocket client ready' within 1 s"))


async def test_websocket_that_never_answers_pings_is_closed_1011(tiny: RunningServer) -> None:
    token = (await trio.to_thread.run_sync(login, tiny.port))["token"]

    def scenario() -> list[tuple[Opcode, Any]]:
        sock, rest = _upgrade(tiny.port, token, ready=True)
        with sock:
            return _frames_until_close(sock, rest)

    frames = await trio.to_thread.run_sync(scenario)
    assert (Opcode.PING, b"") in frames
    assert frames[-1] == (Opcode.CLOSE, (CloseReason.INTERNAL_ERROR, "no pong within 0.5 s"))
    with trio.fail_after(WAIT):  # unsubscribed, and dropped once the close handshake is over
        while tiny.server.service.connections:
            await trio.sleep(0.05)


async def test_streams_outlive_every_http_timeout(tiny: RunningServer) -> None:
    """A websocket that answers pings (websocket-client does while it reads) and an
    /events stream both still deliver after many times every HTTP timeout."""
    token = (await trio.to_thread.run_sync(login, tiny.port))["token"]
    tag = "saltnado/test/limits-alive"
    ws = await trio.to_thread.run_sync(lambda: websocket.create_connection(tiny.ws_url(token), timeout=WAIT))
    await trio.to_thread.run_sync(ws.send, "websocket client ready")
    sse = await trio.to_thread.run_sync(_connect, tiny.port)
    sse.sendall(f"GET /events HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n".encode())

    def ws_until_tag() -> bool:
        while True:
            if json.loads(ws.recv())["tag"] == tag:
                return True

    def sse_until_tag() -> bytes:
        data = b""
        while f"tag: {tag}".encode() not in data:
            chunk = sse.recv(65536)
            assert chunk, data
            data += chunk
        return data

    try:
        got: dict[str, Any] = {}

        async def run(name: str, fn: Any) -> None:
            got[name] = await trio.to_thread.run_sync(fn)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "ws", ws_until_tag)
            nursery.start_soon(run, "sse", sse_until_tag)
            await trio.sleep(3)  # six pong deadlines, six keep-alive timeouts, three handshake timeouts
            await trio.to_thread.run_sync(tiny.lab.fire_event, {}, tag)
        assert got["ws"] is True
        assert got["sse"].startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        ws.close()
        sse.close()


# -- connection count ------------------------------------------------------------------------


@pytest.mark.parametrize("binding", BINDINGS)
async def test_connection_over_the_limit_gets_503_while_the_others_keep_working(
    binding: str, salt_lab: Any, master_opts: dict[str, Any]
) -> None:
    settings = _settings(master_opts, limits={"max_connections": 3})
    async with running_server(binding, salt_lab, master_opts, settings, pacing=FAST_TICKS) as srv:
        connections = srv.server.service.connections

        async def until_open(n: int) -> None:
            with trio.fail_after(WAIT):
                while len(connections) != n:
                    await trio.sleep(0.02)

        token = (await trio.to_thread.run_sync(login, srv.port))["token"]
        await until_open(0)
        # Three clients: a websocket, an /events stream and an idle keep-alive connection.
        ws, _ = await trio.to_thread.run_sync(_upgrade, srv.port, token, True)
        sse = await trio.to_thread.run_sync(_connect, srv.port)
        sse.sendall(f"GET /events HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n".encode())
        kept = await trio.to_thread.run_sync(_connect, srv.port)
        kept.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await trio.to_thread.run_sync(_read_response, kept))[0] == 200
        await until_open(3)

        raw = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        status, headers, body = parse_response(await trio.to_thread.run_sync(http, srv.port, raw))
        assert status == 503 and headers["connection"] == "close"
        assert json.loads(body) == {
            "status": "503 Service Unavailable",
            "return": "the server is at its limit of 3 connections; try again later",
        }

        # The three are still served.
        kept.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await trio.to_thread.run_sync(_read_response, kept))[0] == 200
        await trio.to_thread.run_sync(srv.lab.fire_event, {}, "saltnado/test/limits-full")
        for sock in (ws, sse):
            data = b""
            while b"saltnado/test/limits-full" not in data:
                chunk = await trio.to_thread.run_sync(sock.recv, 65536)
                assert chunk, data
                data += chunk

        # One leaves: the next newcomer is served.
        kept.close()
        await until_open(2)
        status, _, _ = parse_response(await trio.to_thread.run_sync(http, srv.port, raw))
        assert status == 200
        ws.close()
        sse.close()


# -- size limits on real sockets ------------------------------------------------------------------


async def test_too_many_header_fields_is_431(server: RunningServer) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n"
    status, headers, body = parse_response(await trio.to_thread.run_sync(http, server.port, raw))
    assert status == 431 and headers["connection"] == "close"
    assert json.loads(body) == {
        "status": "431 Request Header Fields Too Large",
        "return": "too many request header fields (more than 100)",
    }


async def test_a_request_smuggled_in_a_body_is_never_answered(server: RunningServer) -> None:
    """RFC 9112 §6.3: Content-Length beside Transfer-Encoding is an error that closes
    the connection, so what follows the chunked body's end is never read as a request.
    The client keeps its side open: only the server can end the exchange."""
    smuggled = b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    raw = (
        b"POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)
    ) + body

    def exchange() -> bytes:
        with _connect(server.port) as sock:
            sock.sendall(raw)
            return _read_to_eof(sock)  # times out (fails) if the server keeps the connection

    answer = await trio.to_thread.run_sync(exchange)
    status, headers, reply = parse_response(answer)
    assert status == 400 and headers["connection"] == "close"
    assert json.loads(reply)["return"] == "malformed request: Content-Length together with Transfer-Encoding"
    assert answer.count(b"HTTP/1.1 ") == 1 and b"404" not in answer


async def test_100_continue_only_for_an_accepted_head(server: RunningServer, token: str) -> None:
    """No token: the 401 at once, no 100, the body never asked for. A valid token: the
    100 after Salt has checked it, then the answer once the body has come."""
    def head(auth: bytes) -> bytes:
        return (
            b"POST /minions HTTP/1.1\r\nHost: t\r\n" + auth + b"Expect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        )

    def exchange() -> tuple[bytes, bytes, bytes]:
        with _connect(server.port) as sock:
            sock.sendall(head(b""))
            refused = _read_to_eof(sock)  # the server closes: the body is not wanted
        with _connect(server.port) as sock:
            sock.sendall(head(b"X-Auth-Token: " + token.encode() + b"\r\n"))
            continued = sock.recv(65536)
            sock.sendall(b"[]")
            sock.shutdown(socket.SHUT_WR)
            return refused, continued, _read_to_eof(sock)

    refused, continued, answer = await trio.to_thread.run_sync(exchange)
    status, headers, _ = parse_response(refused)
    assert status == 401 and headers["connection"] == "close" and b"100 Continue" not in refused
    assert continued == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert parse_response(answer)[0] == 400  # an empty lowstate: the body was read and judged


async def test_refused_requests_are_in_the_access_log(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    """Requests the connection answers on its own are logged with their status,
    tokens masked, and the client's address, as the app's are."""
    secret = "0123456789abcdef" * 4
    requests = [
        b"GET /x?token=" + secret.encode() + b" HTTP/1.1 x\r\nHost: t\r\n\r\n",  # no request line to show
        b"GET /all_events/" + secret.encode() + b" HTTP/2.0\r\nHost: t\r\n\r\n",
        b"POST /login HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.6.6.6\r\nRemote-Addr: 10.6.6.6\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.6.6.6\r\nConnection: close\r\n\r\n",  # answered by the app
    ]
    caplog.set_level(logging.INFO, logger="saltnado.access")
    for raw in requests:
        await trio.to_thread.run_sync(http, server.port, raw)
    with trio.fail_after(WAIT):
        while len([r for r in caplog.records if r.name == "saltnado.access"]) < len(requests):
            await trio.sleep(0.02)
    lines = [r.getMessage() for r in caplog.records if r.name == "saltnado.access"]
    # "<client address> <method> <target> <status> <milliseconds>ms": the address is the
    # socket's peer, a spoofed X-Forwarded-For or Remote-Addr is not believed
    parsed = [re.fullmatch(r"(\S+) (\S+) (\S+) (\d{3}) \d+\.\dms", line) for line in lines]
    assert all(parsed), lines
    assert [match.groups() for match in parsed if match] == [
        ("127.0.0.1", "-", "-", "400"), ("127.0.0.1", "GET", "/all_events/<token>", "505"),
        ("127.0.0.1", "POST", "/login", "400"), ("127.0.0.1", "GET", "/", "200"),
    ]


async def test_oversized_websocket_message_is_closed_1009(server: RunningServer, token: str) -> None:
    def scenario() -> bytes:
        ws = websocket.create_connection(server.ws_url(token), timeout=WAIT)
        try:
            ws.send("websocket client ready")
            ws.send("x" * (64 * 1024 + 1))
            while True:
                opcode, frame = ws.recv_data_frame(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return bytes(frame.data)
        finally:
            ws.close()

    close = await trio.to_thread.run_sync(scenario)
    assert close == (1009).to_bytes(2, "big") + b"message exceeds 65536 bytes"


# -- TLS: the handshake is part of the handshake timeout -----------------------------------------


def _client_hello(cafile: str) -> bytes:
    context = ssl.create_default_context(cafile=cafile)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("binding", BINDINGS)
async def test_stalled_tls_handshakes_are_closed(
    binding: str, salt_lab: Any, master_opts: dict[str, Any], tmp_path: Path
) -> None:
    files = make_tls_files(tmp_path)
    settings = _settings(
        master_opts, limits={"timeouts": TINY}, disable_ssl=False, ssl_crt=str(files.cert), ssl_key=str(files.key)
    )
    hello = _client_hello(str(files.ca))
    async with running_server(binding, salt_lab, master_opts, settings, pacing=FAST_TICKS) as srv:

        def stalled(first: bytes) -> bytes:
            with _connect(srv.port) as sock:
                sock.sendall(first)
                return _read_to_eof(sock)

        def served_then_idle() -> tuple[int, bytes]:
            context = files.client_context()
            with context.wrap_socket(_connect(srv.port), server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                status, _, _ = _read_response(tls)
                try:
                    rest = tls.recv(65536)  # the keep-alive timeout ends it
                except (ssl.SSLError, ConnectionResetError):
                    rest = b""
                return status, rest

        def handshake_then_silence() -> bytes:
            context = files.client_context()
            with context.wrap_socket(_connect(srv.port), server_hostname="127.0.0.1") as tls:
                try:
                    return tls.recv(65536)
                except (ssl.SSLError, ConnectionResetError):
                    return b""

        assert await trio.to_thread.run_sync(stalled, b"") == b""  # no ClientHello at all
        assert await trio.to_thread.run_sync(stalled, hello[: len(hello) // 2]) == b""  # half of one
        assert await trio.to_thread.run_sync(handshake_then_silence) == b""
        assert await trio.to_thread.run_sync(served_then_idle) == (200, b"")
        with trio.fail_after(WAIT):
            while srv.server.service.connections:
                await trio.sleep(0.05)
