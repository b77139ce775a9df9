"""Security against the session's real salt-master, on both bindings: who may read
the event bus, streams closed when Salt revokes or expires their token, websocket
Origin checks and CORS on real sockets, and tokens kept out of every log."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
import websocket
import yaml

from conftest import BINDINGS, RunningServer, http, login, parse_response, running_server
from saltnado_core import Settings
from saltnado_core.permissions import EVENTS_FORBIDDEN
from saltnado_core.revocation import TokenStore

WS_HANDSHAKE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def raw_get(port: int, target: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    return parse_response(http(port, f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n".encode()))


def ws_ready(url: str, **options: Any) -> websocket.WebSocket:
    ws = websocket.create_connection(url, timeout=20, **options)
    ws.send("websocket client ready")
    return ws


def close_frame(ws: websocket.WebSocket) -> tuple[int, str]:
    """Read until the server's close frame → (code, reason)."""
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()


def sse_open(port: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n".encode())
    buf = b""
    while b"retry: 400\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, buf
        buf += chunk
    return sock


def sse_until_end(sock: socket.socket) -> bytes:
    """Everything the server sends on an event stream until it closes it."""
    buf = b""
    while chunk := sock.recv(65536):
        buf += chunk
    return buf


def wait_for_tag(ws: websocket.WebSocket, tag: str) -> None:
    while json.loads(ws.recv())["tag"] != tag:
        pass


def fire(lab: Any) -> str:
    tag = f"saltnado/test/{uuid.uuid4().hex[:8]}"
    assert lab.fire_event({"n": 1}, tag)
    return tag


# -- who may read the event bus ----------------------------------------------------------


@pytest.mark.parametrize("user", ["pinger", "nobody"])  # test.ping only; not in external_auth
async def test_users_without_event_permission_get_403_before_the_upgrade(server: RunningServer, user: str) -> None:
    token = (await trio.to_thread.run_sync(login, server.port, user))["token"]
    for target, headers in [
        (f"/all_events/{token}", WS_HANDSHAKE),
        (f"/formatted_events/{token}", WS_HANDSHAKE),
        ("/events", f"X-Auth-Token: {token}\r\n"),
    ]:
        status, head, body = await trio.to_thread.run_sync(raw_get, server.port, target, headers)
        assert (status, head["content-type"]) == (403, "application/json"), target
        assert json.loads(body) == {"status": "403 Forbidden", "return": EVENTS_FORBIDDEN}


async def test_restricted_user_still_runs_what_it_may(server: RunningServer) -> None:
    from test_salt_rest import call

    token = (await trio.to_thread.run_sync(login, server.port, "pinger"))["token"]
    low = {"client": "local", "tgt": "minion1", "fun": "test.ping"}
    status, _, body = await trio.to_thread.run_sync(lambda: call(server.port, "POST", "/", low, token))
    assert (status, body) == (200, {"return": [{"minion1": True}]})


async def test_events_permission_alone_opens_every_stream(server: RunningServer) -> None:
    token = (await trio.to_thread.run_sync(login, server.port, "watcher"))["token"]

    def scenario() -> bytes:
        ws = ws_ready(server.ws_url(token))
        formatted = ws_ready(server.ws_url(token, "formatted_events"))
        sock = sse_open(server.port, token)
        try:
            assert list(json.loads(formatted.recv())) == ["minions"]
            time.sleep(0.3)  # the websocket's "ready" is read
            tag = fire(server.lab)
            wait_for_tag(ws, tag)
            buf = b""
            while tag.encode() not in buf:
                buf += sock.recv(65536)
            return buf
        finally:
            ws.close()
            formatted.close()
            sock.close()

    assert b"data: " in await trio.to_thread.run_sync(scenario)


# -- revoked and expired tokens close their streams ------------------------------------------


async def test_revoked_tokens_close_their_streams_and_only_theirs(server: RunningServer) -> None:
    import salt.auth

    port = server.port
    revoked, logged_out, kept = [(await trio.to_thread.run_sync(login, port))["token"] for _ in range(3)]

    def scenario() -> dict[str, Any]:
        wss = {
            "all_events": ws_ready(server.ws_url(revoked)),
            "formatted_events": ws_ready(server.ws_url(revoked, "formatted_events")),
            "logged_out": ws_ready(server.ws_url(logged_out)),
            "kept": ws_ready(server.ws_url(kept)),
        }
        sock = sse_open(port, revoked)
        try:
            tag = fire(server.lab)  # every stream is attached once it sees an event
            for name in ("all_events", "logged_out", "kept"):
                wait_for_tag(wss[name], tag)
            # Out of band, as `salt-run` or an operator would: Salt's own token store.
            salt.auth.LoadAuth(server.lab.master_opts()).rm_token(revoked)
            status, _, _ = parse_response(
                http(port, f"POST /logout HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {logged_out}\r\n"
                     "Connection: close\r\nContent-Length: 0\r\n\r\n".encode())
            )
            assert status == 200
            closes = {name: close_frame(wss[name]) for name in ("all_events", "formatted_events", "logged_out")}
            ended = sse_until_end(sock)
            tag = fire(server.lab)
            wait_for_tag(wss["kept"], tag)  # the other token's stream goes on
            return {"closes": closes, "sse": ended}
        finally:
            for ws in wss.values():
                ws.close()
            sock.close()

    seen = await trio.to_thread.run_sync(scenario)
    assert seen["closes"] == {name: (1008, "token revoked") for name in ("all_events", "formatted_events", "logged_out")}
    assert seen["sse"].endswith(b"0\r\n\r\n")
    # noticed by listing <cachedir>/tokens once a tick, not by a get_tok per token
    assert server.server.service.recheck.store is TokenStore.LISTED


async def test_expired_token_closes_its_streams(server: RunningServer) -> None:
    import salt.auth

    def short_token() -> dict[str, Any]:  # a token Salt made with a 4 s lifetime
        auth = salt.auth.LoadAuth({**server.lab.master_opts(), "token_expire": 4})
        return auth.mk_token({"username": "saltdev", "password": "x", "eauth": "auto"})  # type: ignore[no-any-return]

    record = await trio.to_thread.run_sync(short_token)

    def scenario() -> tuple[tuple[int, str], bytes]:
        ws = ws_ready(server.ws_url(record["token"]))
        sock = sse_open(server.port, record["token"])
        try:
            return close_frame(ws), sse_until_end(sock)
        finally:
            ws.close()
            sock.close()

    close, ended = await trio.to_thread.run_sync(scenario)
    assert close == (1008, "token expired")
    assert ended.endswith(b"0\r\n\r\n")


# -- websocket Origin and CORS on real sockets ----------------------------------------------


@pytest.mark.parametrize("binding", BINDINGS)
async def test_websocket_origin_and_cors(binding: str, salt_lab: Any, master_opts: dict[str, Any]) -> None:
    settings = dataclasses.replace(
        Settings.from_opts(master_opts), port=0, address="127.0.0.1", cors_origin=["https://*.ui.example"]
    )
    async with running_server(binding, salt_lab, master_opts, settings) as server:
        token = (await trio.to_thread.run_sync(login, server.port))["token"]

        def scenario() -> tuple[int, dict[str, str], dict[str, str]]:
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                websocket.create_connection(server.ws_url(token), timeout=20, origin="https://evil.example")
            for options in (
                {"origin": "https://app.ui.example"},  # allowed by cors_origin
                {"suppress_origin": True},  # no Origin: not a browser
                {},  # websocket-client's default: its own origin (http://127.0.0.1:<port>)
            ):
                ws = ws_ready(server.ws_url(token), **options)
                ws.close()
            _, rest, _ = raw_get(server.port, "/", "Origin: https://app.ui.example\r\n")
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
            sock.sendall(
                f"GET /events HTTP/1.1\r\nHost: t\r\nOrigin: https://app.ui.example\r\nX-Auth-Token: {token}\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            sock.close()
            return refused.value.status_code, rest, parse_response(head)[1]

        status, rest, sse = await trio.to_thread.run_sync(scenario)
    assert status == 403
    for headers in (rest, sse):
        assert headers["access-control-allow-origin"] == "https://app.ui.example"
        assert headers["access-control-allow-credentials"] == "true"


# -- tokens never logged ------------------------------------------------------------------


def every_token_place(port: int, ws_url: Any) -> str:
    """Log in, then use the token everywhere a client can put it; return it."""
    token = login(port)["token"]  # the login response carries it (body and Set-Cookie)
    raw_get(port, "/minions/minion1", f"X-Auth-Token: {token}\r\n")
    raw_get(port, "/jobs", f"Cookie: session_id={token}\r\n")
    raw_get(port, f"/events?token={token}")  # refused (400), and logged
    raw_get(port, f"/formatted_events/{token}?delta=1")  # no upgrade: 400, logged
    raw_get(port, f"/all_events/{token}0")  # wrong shape: 404, logged
    raw_get(port, f"/minions/{token}", f"X-Auth-Token: {token}\r\n")
    for path in ("all_events", "formatted_events"):
        ws = ws_ready(ws_url(token, path))
        time.sleep(0.2)
        ws.close()
    sock = sse_open(port, token)
    sock.close()
    http(port, f"POST /logout HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\nContent-Length: 0\r\n"
               "Connection: close\r\n\r\n".encode())
    raw_get(port, "/minions", f"X-Auth-Token: {token}\r\n")  # 401 after logout
    return token


async def test_tokens_are_never_logged(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="salt")  # Salt's loggers as `saltnado serve` sets them …
    caplog.set_level(logging.DEBUG)  # … and the rest at debug level (this also sets the handler's level)
    token = await trio.to_thread.run_sync(every_token_place, server.port, server.ws_url)
    await trio.sleep(0.5)  # the closes are logged
    access = [r.getMessage() for r in caplog.records if r.name == "saltnado.access"]
    assert "GET /all_events/<token>" in " ".join(access) and "GET /events?token=<token> 400" in " ".join(access)
    assert len(access) >= 12
    for record in caplog.records:
        assert token not in record.getMessage(), record.name
        assert token not in (record.exc_text or ""), record.name
    assert token not in caplog.text


def test_tokens_are_never_logged_in_debug_mode(salt_lab: Any, tmp_path: Path) -> None:
    config = yaml.safe_load(salt_lab.master_config_path.read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config["rest_tornado"] = {**config["rest_tornado"], "port": port, "debug": True}
    (tmp_path / "master").write_text(yaml.safe_dump(config))
    saltnado = str(Path(sys.executable).parent / "saltnado")
    proc = subprocess.Popen([saltnado, "serve", "-c", str(tmp_path)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                raw_get(port, "/")
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.2)
        token = every_token_place(port, lambda token, path: f"ws://127.0.0.1:{port}/{path}/{token}")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert " DEBUG " in stderr  # debug mode indeed
    assert "GET /all_events/<token> 101" in stderr
    assert token not in stderr
