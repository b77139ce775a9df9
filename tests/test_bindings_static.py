"""Web apps on real loopback sockets, both bindings (a real Salt master behind them,
as every server test; no file read goes near it): content types, 304, path
traversal as a client sends it, html_override, favicon, and a large file read
slowly, which must arrive whole while the server hands it out in slices.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import BINDINGS, RunningServer, http, parse_response, running_server
from saltnado_core import Settings

WAIT = 30
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
INDEX = b"<!doctype html><title>SaltGUI</title>"
BIG = bytes(range(256)) * (3 * 1024 * 1024 // 256 + 3)  # ~3 MiB: a dozen slices of 256 KiB


@pytest.fixture
def site(tmp_path: Path) -> Path:
    static = tmp_path / "saltgui" / "static"
    (static / "scripts").mkdir(parents=True)
    (static / "scripts" / "main.js").write_bytes(b"import './api.mjs';\n")
    (static / "scripts" / "api.mjs").write_bytes(b"export const api = 1;\n")
    (static / "saltgui.css").write_bytes(b"body {}\n")
    (static / "big.bin").write_bytes(BIG)
    (static / "favicon.ico").write_bytes(b"\x00\x00\x01\x00")
    (tmp_path / "saltgui" / "index.html").write_bytes(INDEX)
    (tmp_path / "secret.txt").write_bytes(b"SECRET")
    (static / "escape.txt").symlink_to(tmp_path / "secret.txt")
    return tmp_path


def _settings(master_opts: dict[str, Any], root: Path) -> Settings:
    base = Settings.from_opts(master_opts)
    return dataclasses.replace(
        base,
        port=0,
        address="127.0.0.1",
        static=str(root / "saltgui" / "static"),
        app=str(root / "saltgui" / "index.html"),
        favicon=str(root / "saltgui" / "static" / "favicon.ico"),
    ).checked_mounts()


def _get(path: str, *headers: str, method: str = "GET", close: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: t", *headers, *(["Connection: close"] if close else []), "", ""]
    return "\r\n".join(lines).encode("latin-1")


@pytest.fixture(params=BINDINGS)
async def static_server(
    request: pytest.FixtureRequest, salt_lab: Any, master_opts: dict[str, Any], site: Path
) -> Any:
    async with running_server(request.param, salt_lab, master_opts, _settings(master_opts, site)) as running:
        yield running


async def _ask(server: RunningServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    return parse_response(await trio.to_thread.run_sync(http, server.port, raw))


async def test_types_validators_and_304(static_server: RunningServer) -> None:
    status, headers, body = await _ask(static_server, _get("/static/scripts/api.mjs"))
    assert (status, headers["content-type"], body) == (200, "text/javascript; charset=utf-8", b"export const api = 1;\n")
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-cache"
    etag, modified = headers["etag"], headers["last-modified"]
    assert (await _ask(static_server, _get("/static/saltgui.css")))[1]["content-type"] == "text/css; charset=utf-8"
    status, headers, body = await _ask(static_server, _get("/static/scripts/api.mjs", f"If-None-Match: {etag}"))
    assert (status, body, headers["etag"]) == (304, b"", etag)
    status, _, _ = await _ask(static_server, _get("/static/scripts/api.mjs", f"If-Modified-Since: {modified}"))
    assert status == 304


@pytest.mark.parametrize(
    "path",
    [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/scripts%2fmain.js",
        "/static/..%5csecret.txt",
        "/static/scripts\\main.js",
        "/static/main.js%00",
        "/static//etc/passwd",
        "//etc/passwd",
        "/static/escape.txt",
        "/static/scripts",
        "/static/scripts/",
    ],
)
async def test_traversal_is_404(static_server: RunningServer, path: str) -> None:
    status, headers, body = await _ask(static_server, _get(path, "Accept: application/json"))
    assert status == 404 and headers["content-type"] == "application/json", body
    assert b"SECRET" not in body and json.loads(body)["status"] == "404 Not Found"


async def test_html_override_and_the_app(static_server: RunningServer) -> None:
    for path in ("/", "/minions", "/login", "/app", "/app/jobs/123"):
        status, headers, body = await _ask(static_server, _get(path, f"Accept: {BROWSER}"))
        assert (status, headers["content-type"], body) == (200, "text/html; charset=utf-8", INDEX), path
    status, headers, body = await _ask(static_server, _get("/", "Accept: application/json"))
    assert status == 200 and json.loads(body)["return"] == "Welcome"
    status, _, body = await _ask(static_server, _get("/events", f"Accept: {BROWSER}"))
    assert status == 401 and INDEX not in body


async def test_favicon(static_server: RunningServer) -> None:
    status, headers, body = await _ask(static_server, _get("/favicon.ico", "Accept: image/*"))
    assert (status, headers["content-type"], body) == (200, "image/x-icon", b"\x00\x00\x01\x00")


def _slow_download(port: int, requests: bytes, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` responses to the pipelined ``requests``, read a little at a time with
    pauses, as a slow client does."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.sendall(requests)
        buf = b""
        for _ in range(count):
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            head, _, buf = buf.partition(b"\r\n\r\n")
            status, headers, _ = parse_response(head + b"\r\n\r\n")
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                got = sock.recv(64 * 1024)
                assert got
                buf += got
                if len(buf) < 512 * 1024:
                    time.sleep(0.01)  # slow at first: the server must wait, not buffer the file
            answers.append((status, headers, buf[:length]))
            buf = buf[length:]
    return answers


async def test_a_large_file_read_slowly_arrives_whole_then_the_next_answer(static_server: RunningServer) -> None:
    requests = _get("/static/big.bin", close=False) + _get("/static/saltgui.css")
    [(status, headers, body), (second, _, css)] = await trio.to_thread.run_sync(
        _slow_download, static_server.port, requests, 2
    )
    assert (status, headers["content-length"], headers["content-type"]) == (200, str(len(BIG)), "application/octet-stream")
    assert body == BIG
    assert (second, css) == (200, b"body {}\n")


async def test_head_of_a_large_file(static_server: RunningServer) -> None:
    status, headers, body = await _ask(static_server, _get("/static/big.bin", method="HEAD"))
    assert (status, headers["content-length"], body) == (200, str(len(BIG)), b"")
