"""A browser's own ``EventSource`` resumes a dropped ``/events?ids=1`` stream by itself.

The server drops the stream (every connection closed from its side, as a
restart behind a proxy would look); while Chromium retries, its retries are
refused at the network level (Playwright aborts them, an ``EventSource`` keeps
retrying after a network error) and 500 events are fired. Once its requests go
through again, it sends ``Last-Event-ID`` by itself and gets exactly those 500,
in order, then the live ones.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from browser import BrowserPage, ServerThread
from saltnado_core.kinds import CloseCode
from test_salt_resume import MISSED, fire_batch

pytestmark = pytest.mark.salt

PAGE = """<!doctype html><meta charset="utf-8"><title>resume</title><script>
window.got = []; window.opens = 0; window.errors = 0;
async function listen(glob) {
    const answer = await fetch("/login", {method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({username: "saltdev", password: "x", eauth: "auto"})});
    if (answer.status !== 200) return answer.status;
    window.source = new EventSource("/events?ids=1&tag=" + encodeURIComponent(glob));
    source.onopen = () => { window.opens++; };
    source.onerror = () => { window.errors++; };
    source.onmessage = (m) => { window.got.push({id: m.lastEventId, data: JSON.parse(m.data)}); };
    return answer.status;
}
</script>"""
EVENTS = re.compile(r".*/events\?.*")


@pytest.fixture(scope="module")
def trio_server(salt_lab: Any, master_opts: dict[str, Any]) -> Iterator[ServerThread]:
    with ServerThread("trio", salt_lab, master_opts) as server:
        yield server


def in_server(server: ServerThread, fn: Any) -> Any:
    return trio.from_thread.run_sync(fn, trio_token=server._token)


def test_event_source_resumes_by_itself_with_last_event_id(browser_page: BrowserPage,
                                                           trio_server: ServerThread) -> None:
    running = trio_server.running
    assert running is not None
    tag = "saltnado/test/browser-resume"
    page = browser_page.page
    requests: list[Any] = []
    page.on("request", lambda request: requests.append(request) if "/events?" in request.url else None)
    url = f"{trio_server.base}/__test/resume.html"
    browser_page.serve(url, PAGE)
    page.goto(url)
    assert page.evaluate("(glob) => listen(glob)", f"{tag}/*") == 200
    page.wait_for_function("window.opens === 1")
    time.sleep(0.2)
    fire_batch(running.lab, f"{tag}/first", 1)
    page.wait_for_function("window.got.length === 1")
    first_id = page.evaluate("window.got[0].id")

    page.route(EVENTS, lambda route: route.abort())  # its retries fail until unrouted

    def drop() -> None:
        for conn, wake in list(running.server.service.connections.items()):
            conn.close(CloseCode.GOING_AWAY, "dropped by the test")
            wake()

    in_server(trio_server, drop)
    page.wait_for_function("window.errors >= 1")  # it saw the stream end
    fire_batch(running.lab, tag, MISSED)
    last = f"{tag}/{MISSED - 1}"
    deadline = time.monotonic() + 30
    while not in_server(trio_server, lambda: any(e.tag == last for e in running.server.streams.history._entries)):
        assert time.monotonic() < deadline, "the server did not relay the events"
        time.sleep(0.05)
    page.unroute(EVENTS)
    page.wait_for_function(f"window.got.length >= {MISSED + 1}", timeout=30_000)
    fire_batch(running.lab, f"{tag}/live", 1)
    page.wait_for_function(f"window.got.length >= {MISSED + 2}", timeout=30_000)

    got = page.evaluate("window.got")
    assert [m["data"]["tag"] for m in got] == [f"{tag}/first/0", *(f"{tag}/{n}" for n in range(MISSED)),
                                               f"{tag}/live/0"]
    ids = [m["id"] for m in got]
    assert len(set(ids)) == len(ids)
    assert page.evaluate("window.opens") == 2  # one reconnect that went through, by itself
    # Every request had the same URL, without last_event_id: the replay of the 500 came from
    # the Last-Event-ID header Chromium added by itself (below what Playwright shows of a request).
    assert {request.url for request in requests} == {f"{trio_server.base}/events?ids=1&tag={tag.replace('/', '%2F')}%2F*"}
    assert first_id not in ids[1:]
    assert browser_page.unexpected_errors(lambda line: "ERR_FAILED" in line.text or "/events" in line.url) == []
