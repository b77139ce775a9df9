"""Tag filters and tokens off the URL on real sockets, both bindings, in front of
the session's real salt-master: websocket-client sends the token in a header, a
cookie or a subprotocol, and asks for ``?tag=`` filters; events are fired on the
master's bus."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pytest
import trio
import websocket

from conftest import RunningServer

WANTED = "saltnado/test/filter/wanted/*"


def _ws(server: RunningServer, path: str, **options: Any) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}{path}", timeout=30, **options)
    ws.send("websocket client ready")
    time.sleep(0.2)  # attached before the first event is fired
    return ws


def _tags_until(ws: websocket.WebSocket, last: str, limit: float = 30) -> list[str]:
    tags: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        tags.append(json.loads(ws.recv())["tag"])
        if tags[-1] == last:
            return tags
    raise AssertionError(f"no {last!r} in {limit}s; saw {tags}")


def _fire_mixed(server: RunningServer, run: str) -> list[str]:
    """Fire wanted and unwanted events alternately; the wanted tags, in order."""
    wanted = []
    for n in range(3):
        assert server.lab.fire_event({"n": n}, f"saltnado/test/filter/other/{run}/{n}")
        tag = f"saltnado/test/filter/wanted/{run}/{n}"
        assert server.lab.fire_event({"n": n}, tag)
        wanted.append(tag)
    return wanted


async def test_filtered_websocket_gets_only_what_it_asked_for(server: RunningServer, token: str) -> None:
    def scenario() -> tuple[list[str], list[str], list[str]]:
        filtered = _ws(server, f"/all_events?tag={WANTED}", header=[f"X-Auth-Token: {token}"])
        every = _ws(server, f"/all_events/{token}")  # the reference's URL, beside it
        try:
            wanted = _fire_mixed(server, "ws")
            return wanted, _tags_until(filtered, wanted[-1]), _tags_until(every, wanted[-1])
        finally:
            filtered.close()
            every.close()

    wanted, filtered, every = await trio.to_thread.run_sync(scenario)
    assert filtered == wanted  # only those, in order
    assert [t for t in every if t.startswith("saltnado/test/filter/other/ws/")]  # the others were on the bus


async def test_token_in_a_subprotocol_is_never_echoed(server: RunningServer, token: str) -> None:
    def scenario() -> tuple[str | None, dict[str, str], list[str]]:
        ws = _ws(server, "/all_events", subprotocols=["saltnado", f"saltnado.token.{token}"])
        try:
            assert server.lab.fire_event({}, "saltnado/test/subprotocol")
            return ws.getsubprotocol(), ws.getheaders(), _tags_until(ws, "saltnado/test/subprotocol")
        finally:
            ws.close()

    chosen, headers, tags = await trio.to_thread.run_sync(scenario)
    assert chosen == "saltnado" and tags[-1] == "saltnado/test/subprotocol"
    assert token not in json.dumps(headers)


async def test_token_in_the_cookie_on_formatted_events(server: RunningServer, token: str) -> None:
    def scenario() -> list[str]:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/formatted_events?delta=1", timeout=30, cookie=f"session_id={token}"
        )
        try:
            ws.send("websocket client ready")
            return [next(iter(json.loads(ws.recv()))) for _ in range(2)]  # the first view's two maps
        finally:
            ws.close()

    first = await trio.to_thread.run_sync(scenario)
    assert first == ["minions", "jobs"]


@pytest.mark.parametrize(
    "options",
    [{}, {"header": ["X-Auth-Token: " + "ab" * 32]}, {"subprotocols": ["saltnado", "saltnado.token." + "ab" * 32]}],
    ids=["none", "unknown-header", "unknown-subprotocol"],
)
async def test_missing_or_unknown_token_is_401_before_the_upgrade(server: RunningServer, options: Any) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        await trio.to_thread.run_sync(lambda: websocket.create_connection(f"ws://127.0.0.1:{server.port}/all_events",
                                                                          timeout=15, **options))
    assert info.value.status_code == 401


async def test_filtered_event_stream(server: RunningServer, token: str) -> None:
    def scenario() -> tuple[list[str], bytes]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                f"GET /events?tag={WANTED} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n".encode()
            )
            received = b""
            while b"retry: 400" not in received:
                received += sock.recv(65536)
            time.sleep(0.2)
            wanted = _fire_mixed(server, "sse")
            while f"tag: {wanted[-1]}\n".encode() not in received:
                received += sock.recv(65536)
            return wanted, received

    wanted, received = await trio.to_thread.run_sync(scenario)
    tags = [line[5:] for line in received.decode().split("\n") if line.startswith("tag: ")]
    assert tags == wanted


async def test_tokens_off_the_url_never_reach_the_log(
    server: RunningServer, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def scenario() -> None:
        for options in ({"header": [f"X-Auth-Token: {token}"]}, {"subprotocols": ["saltnado", f"saltnado.token.{token}"]},
                        {"cookie": f"session_id={token}"}):
            _ws(server, "/all_events?tag=salt/job/*", **options).close()
        time.sleep(0.1)

    await trio.to_thread.run_sync(scenario)
    assert "GET /all_events?tag=salt/job/* 101" in caplog.text
    assert token not in caplog.text


async def test_in_process_subscriber_with_globs(server: RunningServer) -> None:
    if server.binding != "trio":
        pytest.skip("the hub is used from its own loop: the trio server's is this test's")
    events = server.server.hub.subscribe(tags=(WANTED,))
    wanted = await trio.to_thread.run_sync(_fire_mixed, server, "hub")
    got = []
    with trio.fail_after(20):
        async for event in events:
            got.append(event.tag)
            if event.tag == wanted[-1]:
                break
    assert got == wanted


BROWSER_SCRIPT = """async ([url, token, tag]) => {
    const ws = new WebSocket(url, ["saltnado", "saltnado.token." + token]);
    const tags = [];
    const opened = await new Promise((resolve) => {
        ws.onopen = () => { ws.send("websocket client ready"); window.opened = true; resolve(ws.protocol); };
        ws.onclose = (e) => resolve("closed " + e.code);
    });
    if (opened !== "saltnado") return {opened, tags};
    await new Promise((resolve) => {
        ws.onmessage = (m) => { tags.push(JSON.parse(m.data).tag); if (tags.at(-1) === tag) resolve(); };
        setTimeout(resolve, 20000);
    });
    ws.close();
    return {opened, tags};
}"""


async def test_a_browser_sends_its_token_in_a_subprotocol(server: RunningServer, token: str) -> None:
    """Chromium, as the README's example: ``new WebSocket(url, ["saltnado", "saltnado.token." + token])``
    from a page of the server's own origin, with a ?tag= filter."""
    playwright = pytest.importorskip("playwright.sync_api")
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no system Chromium")
    tag = "saltnado/test/filter/wanted/browser"

    def scenario() -> dict[str, Any]:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{server.port}/health")  # the server's own origin
                url = f"ws://127.0.0.1:{server.port}/all_events?tag={WANTED}"
                # started, not awaited: window.done is the promise of its result
                page.evaluate(f"(args) => {{ window.done = ({BROWSER_SCRIPT})(args); }}", [url, token, tag])
                page.wait_for_function("window.opened === true", timeout=20000)
                time.sleep(0.2)  # "websocket client ready" has reached the server
                assert server.lab.fire_event({}, "saltnado/test/filter/other/browser")
                assert server.lab.fire_event({}, tag)
                return dict(page.evaluate("window.done"))
            finally:
                browser.close()

    result = await trio.to_thread.run_sync(scenario)
    assert result == {"opened": "saltnado", "tags": [tag]}


# -- event ids and resume -----------------------------------------------------------------

RESUME = "saltnado/test/resume/*"


def _messages_until(ws: websocket.WebSocket, last_tag: str, limit: float = 30) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        seen.append(json.loads(ws.recv()))
        if seen[-1]["tag"] == last_tag:
            return seen
    raise AssertionError(f"no {last_tag!r} in {limit}s; saw {[m['tag'] for m in seen]}")


async def test_websocket_resumes_after_the_last_id_it_saw(server: RunningServer, token: str) -> None:
    def scenario() -> tuple[str, list[dict[str, Any]]]:
        header = [f"X-Auth-Token: {token}"]
        first = _ws(server, f"/all_events?ids=1&tag={RESUME}", header=header)
        assert server.lab.fire_event({"n": 1}, "saltnado/test/resume/1")
        [seen] = _messages_until(first, "saltnado/test/resume/1")
        first.close()
        for n in (2, 3):  # missed while away
            assert server.lab.fire_event({"n": n}, f"saltnado/test/resume/{n}")
        assert server.lab.fire_event({}, "saltnado/test/other")
        time.sleep(0.3)  # relayed (and kept) before the client comes back
        again = _ws(server, f"/all_events?tag={RESUME}&last_event_id={seen['id']}", header=header)
        try:
            assert server.lab.fire_event({"n": 4}, "saltnado/test/resume/4")
            return seen["id"], _messages_until(again, "saltnado/test/resume/4")
        finally:
            again.close()

    first_id, resumed = await trio.to_thread.run_sync(scenario)
    assert [m["data"]["n"] for m in resumed] == [2, 3, 4]  # the missed ones in order, then live
    epoch, _, position = first_id.rpartition("-")
    ids = [m["id"] for m in resumed]
    assert all(i.startswith(epoch + "-") and int(i.rpartition("-")[2]) > int(position) for i in ids)
    assert len(set(ids)) == 3 and list(resumed[0]) == ["id", "data", "tag"]


async def test_event_stream_resumes_from_last_event_id_and_an_unknown_one_gets_the_notice(
    server: RunningServer, token: str
) -> None:
    def read_until(sock: socket.socket, marker: bytes, received: bytes = b"") -> bytes:
        while marker not in received:
            got = sock.recv(65536)
            assert got, received
            received += got
        return received

    def stream(*headers: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        lines = [f"GET /events?ids=1&tag={RESUME} HTTP/1.1", "Host: t", f"X-Auth-Token: {token}", *headers]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock

    def scenario() -> tuple[bytes, bytes]:
        with stream() as sock:
            read_until(sock, b"retry: 400")
            time.sleep(0.2)
            assert server.lab.fire_event({"n": 1}, "saltnado/test/resume/sse1")
            first = read_until(sock, b"tag: saltnado/test/resume/sse1\n")
        last_id = first.split(b"id: ")[-1].split(b"\n")[0].decode()
        assert server.lab.fire_event({"n": 2}, "saltnado/test/resume/sse2")
        time.sleep(0.3)
        with stream(f"Last-Event-ID: {last_id}") as sock:
            resumed = read_until(sock, b"tag: saltnado/test/resume/sse2\n")
        with stream("Last-Event-ID: 0ther-1") as sock:
            notice = read_until(sock, b"tag: saltnado/resume\n")
            notice = read_until(sock, b"\n\n", notice.split(b"tag: saltnado/resume\n", 1)[1])
        return resumed, notice

    resumed, notice = await trio.to_thread.run_sync(scenario)
    assert b"tag: saltnado/test/resume/sse1\n" not in resumed  # nothing twice
    assert b'"n": 2' in resumed and b"\nid: " in resumed
    data = json.loads(notice.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert data["data"]["resumed"] is False and data["data"]["outcome"] == "unknown"
