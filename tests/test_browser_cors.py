"""A page of another origin, in a real Chromium: what ``cors_origin`` lets it do.

The page comes from another loopback server (``http://127.0.0.1:<another port>``):
cross-origin (the port differs) but same-site, so the ``SameSite=Lax`` session cookie goes with
credentialed requests, as for a UI served next to the API on one host. With
``cors_origin`` naming it, SaltGUI's requests (preflighted: ``X-Auth-Token`` and
``Cache-Control`` are not CORS-safelisted headers), a credentialed ``EventSource``
and a websocket all work; without it the browser refuses every one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import login
from browser import BrowserPage, PageServer, ServerThread, same_origin_settings

pytestmark = pytest.mark.salt

WAIT_MS = 30_000


# SaltGUI's fetch, pointed at another origin (its config.API_URL), plus the
# credentialed variants a page needs for the cookie: login and EventSource.
PAGE = """<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>another origin</title>
<script>
let token = "";
async function api(method, path, params, credentials = "same-origin") {
  const headers = {"Accept": "application/json", "Cache-Control": "no-cache", "X-Auth-Token": token};
  const options = {method, headers, credentials};
  if (method === "POST") options.body = JSON.stringify(params);
  try {
    const response = await fetch(API + path, options);
    return {status: response.status, body: await response.json()};
  } catch (error) {
    return {error: String(error)};
  }
}
function firstEvent(url, tag, ms) {
  return new Promise((resolve) => {
    const source = new EventSource(url, {withCredentials: true});
    const timer = setTimeout(() => { source.close(); resolve({timeout: true}); }, ms);
    source.onopen = () => fetch(API + "/hook/cors", {method: "POST", headers: {"X-Auth-Token": token,
      "Content-Type": "application/json"}, body: "{}"});
    source.onerror = () => { clearTimeout(timer); source.close(); resolve({error: source.readyState}); };
    source.onmessage = (m) => {
      const event = JSON.parse(m.data);
      if (event.tag === tag) { clearTimeout(timer); source.close(); resolve({event}); }
    };
  });
}
function websocketMessage(url, ms) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => { ws.close(); resolve({timeout: true}); }, ms);
    ws.onopen = () => ws.send("websocket client ready");
    ws.onmessage = (m) => { clearTimeout(timer); ws.close(); resolve({message: JSON.parse(m.data)}); };
    ws.onclose = (e) => { clearTimeout(timer); resolve({closed: e.code}); };
  });
}
</script>"""


@pytest.fixture(scope="module")
def allowing(salt_lab: Any, master_opts: dict[str, Any]) -> Iterator[tuple[PageServer, ServerThread]]:
    """The page's server, and a saltnado whose cors_origin names the page's origin
    (as http://127.0.0.1:<port>, same-site, and http://localhost:<port>, another site)."""
    with PageServer({}) as pages:
        other_site = pages.origin.replace("127.0.0.1", "localhost")
        settings = same_origin_settings(master_opts, cors_origin=[pages.origin, other_site])
        with ServerThread("trio", salt_lab, master_opts, settings) as server:
            yield pages, server


@pytest.fixture(scope="module")
def closed(salt_lab: Any, master_opts: dict[str, Any]) -> Iterator[tuple[PageServer, ServerThread]]:
    """The page's server, and a saltnado without cors_origin (the default)."""
    with PageServer({}) as pages:
        settings = same_origin_settings(master_opts, cors_origin=None)
        with ServerThread("trio", salt_lab, master_opts, settings) as server:
            yield pages, server


def open_page(browser_page: BrowserPage, servers: tuple[PageServer, ServerThread], host: str = "127.0.0.1") -> Any:
    pages, server = servers
    pages.pages["/ui.html"] = PAGE.replace("<script>", f"<script>\nconst API = {server.base!r};", 1)
    browser_page.page.goto(f"{pages.origin.replace('127.0.0.1', host)}/ui.html")
    return browser_page.page


def test_an_allowed_origin_logs_in_runs_and_streams(browser_page: BrowserPage, allowing: tuple[PageServer, ServerThread]) -> None:
    page = open_page(browser_page, allowing)
    got = page.evaluate(
        """async () => {
            const login = await api("POST", "/login", {eauth: "auto", password: "x", username: "saltdev"}, "include");
            if (!login.body) return {login};
            token = login.body["return"][0].token;
            const ping = await api("POST", "/", {client: "local", fun: "test.ping", tgt: "minion1"});
            const events = await firstEvent(API + "/events", "salt/netapi/hook/cors", %d);
            const ws = await websocketMessage(API.replace("http", "ws") + "/all_events/" + token, %d);
            return {login: login.status, ping, events, ws};
        }"""
        % (WAIT_MS, WAIT_MS)
    )
    assert got["login"] == 200, (got, browser_page.errors)
    assert got["ping"] == {"status": 200, "body": {"return": [{"minion1": True}]}}, got
    # the EventSource carried the cookie /login set across origins (credentials: "include")
    assert got["events"]["event"]["tag"] == "salt/netapi/hook/cors", got
    assert "message" in got["ws"] and "tag" in got["ws"]["message"], got
    assert browser_page.unexpected_errors() == []


def test_another_site_gets_no_cookie_so_no_event_source_but_websockets(
    browser_page: BrowserPage, allowing: tuple[PageServer, ServerThread]
) -> None:
    """localhost is another site than 127.0.0.1: SameSite=Lax keeps the session cookie
    off its requests, and an EventSource cannot send X-Auth-Token; the token in a
    websocket's path needs no cookie."""
    page = open_page(browser_page, allowing, host="localhost")
    got = page.evaluate(
        """async () => {
            const login = await api("POST", "/login", {eauth: "auto", password: "x", username: "saltdev"}, "include");
            if (!login.body) return {login};
            token = login.body["return"][0].token;
            const ping = await api("POST", "/", {client: "local", fun: "test.ping", tgt: "minion1"});
            const events = await firstEvent(API + "/events", "salt/netapi/hook/cors", 5000);
            const ws = await websocketMessage(API.replace("http", "ws") + "/all_events/" + token, %d);
            return {login: login.status, ping, events, ws};
        }"""
        % WAIT_MS
    )
    assert got["login"] == 200, (got, browser_page.errors)
    assert got["ping"] == {"status": 200, "body": {"return": [{"minion1": True}]}}, got
    assert got["events"] == {"error": 2}, got  # 401 without the cookie: CLOSED
    assert "message" in got["ws"], got
    assert [line.text for line in browser_page.errors if "/events" in line.url] == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ], browser_page.errors


def test_without_cors_origin_the_browser_refuses_all_of_it(
    browser_page: BrowserPage, closed: tuple[PageServer, ServerThread]
) -> None:
    running = closed[1].running
    assert running is not None
    token = login(running.port)["token"]
    page = open_page(browser_page, closed)
    got = page.evaluate(
        """async (known) => {
            const login = await api("POST", "/login", {eauth: "auto", password: "x", username: "saltdev"}, "include");
            token = known;  // even with a valid token, the answers are not the page's to read
            const ping = await api("POST", "/", {client: "local", fun: "test.ping", tgt: "minion1"});
            const events = await firstEvent(API + "/events", "salt/netapi/hook/cors", 5000);
            const ws = await websocketMessage(API.replace("http", "ws") + "/all_events/" + known, 5000);
            return {login, ping, events, ws};
        }""",
        token,
    )
    assert "Failed to fetch" in got["login"]["error"], got
    assert "Failed to fetch" in got["ping"]["error"], got
    assert got["events"] == {"error": 2}, got  # CLOSED: a failed CORS check is fatal to an EventSource
    assert got["ws"] == {"closed": 1006}, got  # the 403 to the upgrade, as a browser reports it
    refusals = [line.text for line in browser_page.errors]
    assert any("blocked by CORS policy" in text for text in refusals), refusals
