"""TLS on real sockets, both bindings: https and wss with certificates made at test
time, the key in its own file or in the certificate's, a plain-HTTP client on the
TLS port dropped while others are served, and unusable files refused up front."""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import websocket

from conftest import BINDINGS, running_server
from saltnado_core import ConfigError, Settings
from saltnado_runtime.tls import load_ssl_context
from tls_certs import TLSFiles, make_tls_files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def tls_settings(master_opts: dict[str, Any], crt: Path, key: Path | None) -> Settings:
    return dataclasses.replace(
        Settings.from_opts(master_opts), port=0, address="127.0.0.1",
        disable_ssl=False, ssl_crt=str(crt), ssl_key=str(key) if key else None,
    )


def https(port: int, tls: TLSFiles, method: str, path: str, body: str | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls.client_context())
    try:
        conn.request(method, path, body=body, headers={"Accept": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())
    finally:
        conn.close()


def https_login(port: int, tls: TLSFiles) -> tuple[str, str]:
    status, headers, body = https(
        port, tls, "POST", "/login", "username=saltdev&password=x&eauth=auto",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200
    return body["return"][0]["token"], headers["set-cookie"]


def wss_ready(port: int, token: str, tls: TLSFiles) -> websocket.WebSocket:
    ws = websocket.create_connection(
        f"wss://127.0.0.1:{port}/all_events/{token}", timeout=30, sslopt={"context": tls.client_context()}
    )
    ws.send("websocket client ready")
    return ws


def receive_fired(ws: websocket.WebSocket, lab: Any, tag: str) -> dict[str, Any]:
    time.sleep(0.3)  # the server has read "websocket client ready"
    assert lab.fire_event({"over": "tls"}, tag)
    while (message := json.loads(ws.recv()))["tag"] != tag:
        pass
    return message  # type: ignore[no-any-return]


@pytest.mark.parametrize("binding", BINDINGS)
@pytest.mark.parametrize("key_file", ["separate", "in the certificate file"])
async def test_https_and_wss(
    binding: str, key_file: str, tls: TLSFiles, salt_lab: Any, master_opts: dict[str, Any]
) -> None:
    crt, key = (tls.cert, tls.key) if key_file == "separate" else (tls.combined, None)
    async with running_server(binding, salt_lab, master_opts, tls_settings(master_opts, crt, key)) as server:

        def scenario() -> tuple[str, tuple[int, Any], dict[str, Any]]:
            token, cookie = https_login(server.port, tls)
            status, _, body = https(server.port, tls, "GET", "/")
            ws = wss_ready(server.port, token, tls)
            try:
                message = receive_fired(ws, server.lab, f"saltnado/test/tls/{binding}")
            finally:
                ws.close()
            return cookie, (status, body), message

        cookie, root, message = await trio.to_thread.run_sync(scenario)
    assert cookie.endswith("; Secure")  # the session cookie never travels in clear
    assert root[0] == 200 and root[1]["return"] == "Welcome"
    assert message == {"data": {**message["data"], "over": "tls"}, "tag": f"saltnado/test/tls/{binding}"}


def plain_client(port: int, payload: bytes) -> bytes:
    """Speak ``payload`` in clear to the TLS port and keep the socket open: return
    what the server sent before it dropped the connection. A server that kept it
    would time this out."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(payload)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


@pytest.mark.parametrize("binding", BINDINGS)
async def test_plain_http_on_the_tls_port_is_dropped_and_others_are_served(
    binding: str, tls: TLSFiles, salt_lab: Any, master_opts: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = tls_settings(master_opts, tls.cert, tls.key)
    async with running_server(binding, salt_lab, master_opts, settings) as server:

        def scenario() -> tuple[list[bytes], dict[str, Any], int]:
            token, _ = https_login(server.port, tls)
            ws = wss_ready(server.port, token, tls)  # a TLS client streaming meanwhile
            try:
                answers = [
                    plain_client(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"),
                    plain_client(server.port, f"GET /all_events/{token} HTTP/1.1\r\nHost: t\r\n\r\n".encode()),
                    plain_client(server.port, b"\x00garbage that is neither TLS nor HTTP\r\n\r\n"),
                ]
                message = receive_fired(ws, server.lab, f"saltnado/test/after-plain/{binding}")
            finally:
                ws.close()
            status, _, _ = https(server.port, tls, "GET", "/")
            return answers, message, status

        answers, message, status = await trio.to_thread.run_sync(scenario)
    for answer in answers:
        assert not answer.startswith(b"HTTP/")  # nothing is served in clear …
    assert message["tag"] == f"saltnado/test/after-plain/{binding}"  # … the streaming client went on
    assert status == 200  # … and new TLS clients are served
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# -- unusable certificate files are refused before serving ------------------------------------


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (lambda t: (t.cert, None), "without ssl_key, ssl_crt must hold the private key too"),
        (lambda t: (t.cert, t.other_key), "key values mismatch"),
        (lambda t: (t.ca, t.key), "key values mismatch"),
        (lambda t: (t.cert, t.encrypted_key), "the key is encrypted; saltnado needs an unencrypted key"),
        (lambda t: (t.cert.with_name("missing.pem"), None), "'rest_tornado: ssl_crt'"),
        (lambda t: (t.cert, t.key.with_name("missing-key.pem")), "'rest_tornado: ssl_key'"),
    ],
)
def test_unusable_tls_files_are_config_errors(tls: TLSFiles, files: Any, message: str) -> None:
    crt, key = files(tls)
    settings = Settings(port=0, ssl_crt=str(crt), ssl_key=str(key) if key else None)
    with pytest.raises(ConfigError, match=message):
        load_ssl_context(settings)


def test_serve_refuses_a_missing_certificate_clearly(tmp_path: Path) -> None:
    (tmp_path / "master").write_text(
        f"root_dir: {tmp_path}\nrest_tornado:\n  port: 0\n  ssl_crt: {tmp_path / 'nope.pem'}\n"
    )
    saltnado = str(Path(sys.executable).parent / "saltnado")
    result = subprocess.run([saltnado, "serve", "-c", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"'rest_tornado: ssl_crt' {tmp_path / 'nope.pem'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
