"""Shared fixtures: one real Salt master + minion per session, a fresh server per test."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

from saltnado_core import Settings


# Users besides 'saltdev' (full access) for permission tests; eauth 'auto' accepts any
# password for them. A user not listed at all (e.g. 'nobody') logs in with no permissions.
EAUTH_USERS = {
    "watcher": ["@events"],  # may read the event bus, and run nothing
    "pinger": ["test.ping"],  # may run test.ping, and not read the event bus
}


@contextlib.contextmanager
def private_lab(**kwargs: Any) -> Iterator[Any]:
    """A real private salt-master + salt-minion ('minion1'), stopped on exit."""
    from saltnado_salt.private_salt import PrivateSalt

    lab = PrivateSalt(api_port=0, **kwargs)
    lab.start(timeout=240)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def salt_lab() -> Iterator[Any]:
    """The session's master and minion, shared by every test that needs Salt."""
    with private_lab(eauth_users=EAUTH_USERS) as lab:
        yield lab


@pytest.fixture(scope="session")
def master_opts(salt_lab: Any) -> dict[str, Any]:
    """The master options as `saltnado serve` reads them (salt-api's api_config)."""
    from saltnado_salt import load_master_opts

    return load_master_opts(str(salt_lab.master_config_path))


@dataclasses.dataclass
class RunningServer:
    """A server of either binding, driven from a trio test.

    ``server`` is the binding's ``Server``; both expose the same ``streams``,
    ``feed`` (``.state``, ``.connections``) and ``hub``. The asyncio server runs
    on its own loop in its own thread (:class:`LoopThread`).
    """

    server: Any
    port: int
    lab: Any
    binding: str = "trio"
    loop: LoopThread | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, token: str, path: str = "all_events") -> str:
        return f"ws://127.0.0.1:{self.port}/{path}/{token}"

    async def wait_feed_connected(self, timeout: float = 30) -> None:
        with trio.fail_after(timeout):
            while self.server.feed.state != "connected":
                await trio.sleep(0.02)

    async def shutdown(self) -> None:
        """The binding's graceful shutdown (close websockets with 1001, …)."""
        if self.loop is None:
            await self.server.shutdown()
        else:
            await trio.to_thread.run_sync(self.loop.run, self.server.shutdown())


class LoopThread:
    """An asyncio event loop running in its own thread; ``run(coro)`` waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="asyncio-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float | None = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


BINDINGS = ["trio", "asyncio"]


@contextlib.asynccontextmanager
async def running_server(
    binding: str, salt_lab: Any, master_opts: dict[str, Any], settings: Settings | None = None, **kwargs: Any
) -> AsyncIterator[RunningServer]:
    """A saltnado server of ``binding`` on a free loopback port (``kwargs`` go to its
    ``Server``, e.g. ``pacing``), subscribed to the event bus; stopped on exit
    without grace, as a cancelled trio nursery would."""
    if settings is None:
        settings = dataclasses.replace(Settings.from_opts(master_opts), port=0, address="127.0.0.1")
    if binding == "trio":
        from saltnado_trio.server import Server

        srv = Server(settings, master_opts, **kwargs)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(srv.serve)
            sock = getattr(listeners[0], "socket", None) or listeners[0].transport_listener.socket  # TLS
            running = RunningServer(srv, sock.getsockname()[1], salt_lab)
            await running.wait_feed_connected(10)
            yield running
            nursery.cancel_scope.cancel()
        return
    from saltnado_asyncio import Server as AsyncioServer

    loop = LoopThread()
    asrv = AsyncioServer(settings, master_opts, **kwargs)
    try:
        await trio.to_thread.run_sync(loop.run, asrv.start())
        running = RunningServer(asrv, asrv.sockets[0].getsockname()[1], salt_lab, "asyncio", loop)
        await running.wait_feed_connected(10)
        yield running
    finally:
        await trio.to_thread.run_sync(loop.run, asrv.shutdown(0))
        loop.close()


@pytest.fixture(params=BINDINGS)
async def server(
    request: pytest.FixtureRequest, salt_lab: Any, master_opts: dict[str, Any]
) -> AsyncIterator[RunningServer]:
    """A saltnado server of each binding on a free loopback port, for the session's master."""
    async with running_server(request.param, salt_lab, master_opts) as running:
        yield running


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


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """The system Chromium under Playwright, for the whole session (tests/browser.py:
    skipped when missing, a failure when ``CI`` is set)."""
    from browser import launch_chromium

    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def browser_page(chromium: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh context (no cookies, no storage) and page; its screenshot is saved to
    tests/artifacts/<test>.png when the test ends, passed or failed."""
    from browser import BrowserPage

    # A page the browser fixture answers itself (BrowserPage.serve) has no address, so
    # Chromium's Local Network Access checks take it for a public site and block its
    # websockets to loopback (ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS); a page that
    # saltnado sent from loopback would not be. The grant gives it that standing.
    context = chromium.new_context(permissions=["local-network-access"])
    page = BrowserPage(context)
    try:
        yield page
    finally:
        with contextlib.suppress(Exception):  # a page that crashed has nothing to show
            page.screenshot(request.node.nodeid.rpartition("/")[2])
        context.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SALTNADO_SKIP_SALT"):
        skip = pytest.mark.skip(reason="SALTNADO_SKIP_SALT is set")
        for item in items:
            if "salt_lab" in getattr(item, "fixturenames", ()) or item.get_closest_marker("salt"):
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many inputs the fuzz tests ran (see tests/fuzzing.py), when any ran."""
    fuzzing = sys.modules.get("fuzzing")
    line = fuzzing.report() if fuzzing is not None else None
    if line:
        terminalreporter.write_line(line)
