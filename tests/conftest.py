"""Shared fixtures: one real Salt master + minion per session, a fresh server per test."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

from saltnado_core import Settings


@pytest.fixture(scope="session")
def salt_lab() -> Iterator[Any]:
    """A real private salt-master + salt-minion ('minion1'), started once per session."""
    from saltnado_salt.private_salt import PrivateSalt

    lab = PrivateSalt(api_port=0)
    lab.start(timeout=240)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def master_opts(salt_lab: Any) -> dict[str, Any]:
    """The master options as `saltnado serve` reads them (salt-api's api_config)."""
    from saltnado_salt import load_master_opts

    return load_master_opts(str(salt_lab.master_config_path))


@dataclasses.dataclass
class RunningServer:
    server: Any
    port: int
    lab: Any

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, token: str, path: str = "all_events") -> str:
        return f"ws://127.0.0.1:{self.port}/{path}/{token}"


@pytest.fixture
async def server(salt_lab: Any, master_opts: dict[str, Any], nursery: trio.Nursery) -> AsyncIterator[RunningServer]:
    """A saltnado trio server on a free loopback port, for the session's master."""
    from saltnado_trio.server import Server

    settings = dataclasses.replace(Settings.from_opts(master_opts), port=0, address="127.0.0.1")
    srv = Server(settings, master_opts)
    listeners = await nursery.start(srv.serve)
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10):
        await srv.feed.connected.wait()
    yield RunningServer(srv, port, salt_lab)
    nursery.cancel_scope.cancel()


def http(port: int, raw: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes to the server, return everything it sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-cased headers and body of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def login(port: int, username: str = "saltdev") -> dict[str, Any]:
    body = f"username={username}&password=anything&eauth=auto".encode()
    raw = (
        b"POST /login HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    response = http(port, raw)
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    return json.loads(payload)["return"][0]


@pytest.fixture
async def token(server: RunningServer) -> str:
    return (await trio.to_thread.run_sync(login, server.port))["token"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SALTNADO_SKIP_SALT"):
        skip = pytest.mark.skip(reason="SALTNADO_SKIP_SALT is set")
        for item in items:
            if "salt_lab" in getattr(item, "fixturenames", ()):
                item.add_marker(skip)
