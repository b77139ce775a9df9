"""The Salt master stops and comes back under a running server, on both bindings.

A private master + minion of this module's own (stopping the session's master
would disturb every other test): streaming clients stay connected and are told
once each way (``saltnado/bus/down``, ``saltnado/bus/up``); what needs the master
answers 503 at once meanwhile, and so does ``GET /health`` (200 before and after); the rest (``/``, ``/login``, ``/logout``, new
streams) keeps working; the feed re-subscribes by itself. A request whose Salt
call is running when the master dies is answered 503 at once, and the server
still stops promptly on SIGTERM: that one runs ``saltnado serve`` in its own
process, as the abandoned Salt call goes on in a worker thread (Salt's exit
handlers would wait for it in this process).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import websocket

from conftest import BINDINGS, RunningServer, login, private_lab, running_server
from saltnado_core.salt_calls import MASTER_DOWN
from test_salt_rest import call

pytestmark = pytest.mark.salt

DOWN, UP = "saltnado/bus/down", "saltnado/bus/up"


@pytest.fixture(scope="module")
def outage_lab() -> Iterator[Any]:
    """A master of this module's own: the tests stop and restart it."""
    with private_lab() as lab:
        yield lab


@pytest.fixture(scope="module")
def outage_opts(outage_lab: Any) -> dict[str, Any]:
    from saltnado_salt import load_master_opts

    return load_master_opts(str(outage_lab.master_config_path))


class EventStream:
    """``GET /events`` on a raw socket: one SSE event per HTTP chunk."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(f"GET /events HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n".encode())
        self._buf = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head

    def _until(self, sep: bytes) -> bytes:
        while sep not in self._buf:
            data = self.sock.recv(65536)
            assert data, "the server ended the stream"
            self._buf += data
        part, self._buf = self._buf.split(sep, 1)
        return part

    def recv(self) -> dict[str, Any] | None:
        """The next message ({"data", "tag"}), None for the preamble or a keep-alive."""
        size = int(self._until(b"\r\n"), 16)
        while len(self._buf) < size + 2:
            self._buf += self.sock.recv(65536)
        chunk, self._buf = self._buf[:size], self._buf[size + 2 :]
        if not chunk.startswith(b"tag: "):
            return None
        tag_line, data_line = chunk.split(b"\n")[:2]
        message: dict[str, Any] = json.loads(data_line.removeprefix(b"data: "))
        assert tag_line == b"tag: " + message["tag"].encode()
        return message

    def close(self) -> None:
        self.sock.close()


def open_ws(server: RunningServer, token: str, path: str) -> websocket.WebSocket:
    ws = websocket.create_connection(server.ws_url(token, path), timeout=60)
    ws.send("websocket client ready")
    return ws


def receive(client: Any) -> dict[str, Any] | None:
    if isinstance(client, EventStream):
        return client.recv()
    message: dict[str, Any] = json.loads(client.recv())
    return message


def next_bus_notice(client: Any) -> dict[str, Any]:
    """Read past Salt's events (and formatted-view messages) to the next bus notice."""
    while True:
        message = receive(client)
        if message is not None and str(message.get("tag", "")).startswith("saltnado/bus/"):
            return message


def wait_for_job(ws: websocket.WebSocket, fun: str) -> str:
    """The jid of the next job of ``fun`` published (its Salt call is then running)."""
    while True:
        message = json.loads(ws.recv())
        if message["tag"].endswith("/new") and message["data"].get("fun") == fun:
            return str(message["data"]["jid"])


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


@pytest.mark.parametrize("binding", BINDINGS)
async def test_master_down_and_back(
    binding: str, outage_lab: Any, outage_opts: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    lab = outage_lab
    async with running_server(binding, lab, outage_opts) as server:
        streams = server.server.streams
        port = server.port
        token = (await in_thread(login, port))["token"]
        clients: dict[str, Any] = {
            "all_events": await in_thread(open_ws, server, token, "all_events"),
            "formatted_events": await in_thread(open_ws, server, token, "formatted_events"),
            "events": await in_thread(EventStream, port, token),
        }
        with trio.fail_after(30):
            while not (len(streams.all_events) == len(streams.formatted) == len(streams.events) == 1):
                await trio.sleep(0.02)
        subscribed = server.server.feed.connections
        assert await in_thread(health, port) == (200, "event bus connected")

        await in_thread(lab.stop_master)

        downs = {name: await in_thread(next_bus_notice, client) for name, client in clients.items()}
        stamp = downs["all_events"]["data"]["_stamp"]
        for message in downs.values():
            assert message["tag"] == DOWN and set(message["data"]) == {"reason", "_stamp"}
            assert message["data"]["_stamp"] == stamp and "ipc" not in message["data"]["reason"]

        # Meanwhile: what needs the master is 503 with a reason; the rest works.
        unavailable = {"status": "503 Service Unavailable", "return": MASTER_DOWN}
        creds = {"username": "saltdev", "password": "x", "eauth": "auto"}
        for method, path, body in [
            ("GET", "/minions", None),
            ("GET", "/minions/minion1", None),
            ("POST", "/minions", {"tgt": "*", "fun": "test.ping"}),
            ("GET", "/jobs", None),
            ("GET", "/jobs/20240101010101010101", None),
            ("POST", "/", {"client": "local", "tgt": "*", "fun": "test.ping"}),
            ("POST", "/", {"client": "local_async", "tgt": "*", "fun": "test.ping"}),
            ("POST", "/", {"client": "runner", "fun": "jobs.list_jobs"}),
            ("POST", "/", {"client": "wheel", "fun": "key.list_all"}),
            ("POST", "/run", [{"client": "local", "tgt": "*", "fun": "test.ping", **creds}]),
            ("POST", "/hook/deploy", {"ref": "main"}),
        ]:
            status, _, answer = await in_thread(call, port, method, path, body, token)
            assert (method, path, status, answer) == (method, path, 503, unavailable)
        status, _, answer = await in_thread(call, port, "GET", "/")
        assert status == 200 and answer["return"] == "Welcome"
        # /health says so too, with the reason the streams got (never the socket's path)
        assert await in_thread(health, port) == (503, downs["all_events"]["data"]["reason"])
        second = (await in_thread(login, port))["token"]  # eauth and the token store are local
        # A client that joins while the master is down is told at once.
        late = {
            "all_events": await in_thread(open_ws, server, second, "all_events"),
            "events": await in_thread(EventStream, port, second),
        }
        for client in late.values():
            assert await in_thread(receive_skipping_preamble, client) == downs["all_events"]
        third = (await in_thread(login, port))["token"]
        status, _, answer = await in_thread(call, port, "POST", "/logout", None, third)
        assert status == 200  # revoking is local too
        assert server.server.service.connections and len(streams.all_events) == 2  # nobody was closed
        assert len(streams.formatted) == 1 and len(streams.events) == 2

        await in_thread(lab.start_master, wait_minions=False)
        for name, client in [*clients.items(), *(("late " + k, v) for k, v in late.items())]:
            message = await in_thread(next_bus_notice, client)
            assert message["tag"] == UP, name
            assert set(message["data"]) == {"down_since", "_stamp"} and message["data"]["down_since"] == stamp
        assert server.server.feed.connections > subscribed
        assert await in_thread(health, port) == (200, "event bus connected")  # the up notice came first

        # Events flow again and so do Salt calls, once the master answers requests.
        assert await in_thread(lab.fire_event, {"back": True}, "saltnado/test/back")
        with trio.fail_after(60):
            while (message := await in_thread(receive, clients["all_events"]))["tag"] != "saltnado/test/back":
                pass
        assert message["data"]["back"] is True
        with trio.fail_after(120):
            while (await in_thread(call, port, "GET", "/jobs", None, token))[0] != 200:
                await trio.sleep(0.5)
        for client in [*clients.values(), *late.values()]:
            await in_thread(client.close)

    ours = [r for r in caplog.records if r.name.startswith("saltnado")]
    assert not [r for r in ours if r.levelno >= logging.ERROR or r.exc_info], "nothing failed on our side"


def health(port: int) -> tuple[int, str]:
    """``GET /health`` without a token → (status, reason); the body is an error's shape."""
    status, headers, answer = call(port, "GET", "/health")
    assert answer["status"].startswith(f"{status} ") and headers["cache-control"] == "no-store"
    return status, answer["return"]


def receive_skipping_preamble(client: Any) -> dict[str, Any] | None:
    message = receive(client)
    while message is None:  # the SSE preamble (retry: 400)
        message = receive(client)
    return message


@pytest.mark.parametrize("loop", ["trio", "asyncio"])
def test_a_call_running_when_the_master_dies_is_503_and_sigterm_still_stops(
    loop: str, outage_lab: Any
) -> None:
    lab = outage_lab
    port = lab.api_port
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "saltnado"), "serve", "-c", str(lab.config_dir), "--loop", loop],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                token = login(port)["token"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/all_events/{token}", timeout=60)
        ws.send("websocket client ready")
        answers: list[tuple[int, Any]] = []

        def sleeper() -> None:
            chunk = {"client": "local", "tgt": "minion1", "fun": "test.sleep", "arg": [30], "timeout": 60}
            status, _, body = call(port, "POST", "/", chunk, token)
            answers.append((status, body))

        running = threading.Thread(target=sleeper)
        running.start()
        wait_for_job(ws, "test.sleep")
        lab.stop_master()
        running.join(60)  # not Salt's own retries, minutes for a master killed outright
        assert answers == [(503, {"status": "503 Service Unavailable", "return": MASTER_DOWN})]
        assert next_bus_notice(ws)["tag"] == DOWN

        proc.send_signal(signal.SIGTERM)  # the abandoned call is still running in a worker thread
        assert proc.wait(timeout=40) == 0  # a bound, not a speed check
        stderr = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in stderr and token not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lab.start_master(wait_minions=False)


async def test_python_client_on_trio_and_asyncio_reports_a_master_restart(
    outage_lab: Any, outage_opts: dict[str, Any]
) -> None:
    """``saltnado_client`` on both loops at once stays connected while the master
    restarts, says so (``BusDown`` then ``BusUp``: what was fired between is lost),
    and follows the events fired afterwards."""
    import saltnado_client
    from test_salt_resume import Collector

    lab = outage_lab
    async with running_server("trio", lab, outage_opts) as server:
        clients = [Collector(library, url=server.base, username="saltdev", password="x", eauth="auto",
                             tags=["saltnado/test/master-restart/*"]) for library in ("trio", "asyncio")]
        async with clients[0].running(), clients[1].running():
            for client in clients:
                await client.wait_for(lambda i: isinstance(i, saltnado_client.Connected))
            await trio.sleep(0.2)
            await in_thread(lab.stop_master)
            for client in clients:
                down = await client.wait_for(lambda i: isinstance(i, saltnado_client.BusDown))
                assert down.reason and down.stamp
            await in_thread(lab.start_master, wait_minions=False)
            for client in clients:
                up = await client.wait_for(lambda i: isinstance(i, saltnado_client.BusUp), timeout=60)
                assert up.down_since == down.stamp
            assert await in_thread(lab.fire_event, {"back": True}, "saltnado/test/master-restart/back")
            for client in clients:
                back = await client.wait_for(lambda i: i.tag == "saltnado/test/master-restart/back", timeout=60)
                assert back.data["back"] is True and back.id
    for client in clients:
        kinds = [type(i).__name__ for i in client.items]
        assert kinds == ["Connected", "BusDown", "BusUp", "Event"], (client.library, kinds)
