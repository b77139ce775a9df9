"""SaltGUI's requests, made by a real Chromium against a real master, both bindings.

The page is served at saltnado's own origin (tests/browser.py) and makes the
requests SaltGUI's ``Api.js`` makes, with its headers: ``fetch`` with
``Accept: application/json``, ``Cache-Control: no-cache``, ``X-Auth-Token``
(empty before login) and the JSON lowstate as a string body with no
``Content-Type`` (so the browser sends ``text/plain;charset=UTF-8``); an
``EventSource`` on ``/events`` authenticated by the ``session_id`` cookie that
``/login`` set; the optional ``/static/salt-motd.txt`` asked for with
``Accept: text/plain``, which must be 404 for SaltGUI to carry on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from browser import BrowserPage, ConsoleLine, ServerThread
from conftest import BINDINGS

pytestmark = pytest.mark.salt

# The test page: SaltGUI's request shape as a small helper, and an EventSource
# collector. Everything it fetches goes to saltnado (same origin).
PAGE = """<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>SaltGUI's requests</title>
<script>
let token = "";
async function api(method, path, params) {
  const headers = {"Accept": "application/json", "Cache-Control": "no-cache", "X-Auth-Token": token};
  if (path.endsWith(".txt")) headers["Accept"] = "text/plain";
  const options = {method, headers};
  if (method === "POST") options.body = JSON.stringify(params);
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const body = type.startsWith("application/json") ? await response.json() : await response.text();
  return {status: response.status, type, body};
}
const events = [];
let source = null;
function listen() {
  return new Promise((resolve, reject) => {
    source = new EventSource("/events");
    source.onopen = () => resolve(true);
    source.onerror = () => reject(new Error("EventSource error, readyState " + source.readyState));
    source.onmessage = (message) => events.push(JSON.parse(message.data));
  });
}
async function waitForEvent(test, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const found = events.find(test);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
  return null;
}
</script>"""

WAIT_MS = 30_000


@pytest.fixture(scope="module", params=BINDINGS)
def gui_server(request: pytest.FixtureRequest, salt_lab: Any, master_opts: dict[str, Any]) -> Iterator[ServerThread]:
    with ServerThread(request.param, salt_lab, master_opts) as server:
        yield server


def open_page(browser_page: BrowserPage, server: ServerThread) -> Any:
    url = f"{server.base}/__test/saltgui.html"
    browser_page.serve(url, PAGE)
    browser_page.page.goto(url)
    return browser_page.page


def motd_404(line: ConsoleLine) -> bool:
    """Chromium logs every 4xx answer to a fetch; SaltGUI's optional file is meant to be one."""
    return line.url.endswith("/static/salt-motd.txt") and "404" in line.text


def login(page: Any) -> dict[str, Any]:
    answer = page.evaluate(
        """async () => {
            const answer = await api("POST", "/login", {eauth: "auto", password: "anything", username: "saltdev"});
            token = answer.body["return"][0].token;
            return answer;
        }"""
    )
    assert answer["status"] == 200, answer
    return answer


def test_saltgui_login_commands_and_logout(browser_page: BrowserPage, gui_server: ServerThread) -> None:
    page = open_page(browser_page, gui_server)
    posted: dict[str, str | None] = {}
    page.on("request", lambda r: posted.setdefault(r.url.rpartition("/")[2], r.headers.get("content-type")))

    motd = page.evaluate('() => api("GET", "/static/salt-motd.txt")')
    assert motd["status"] == 404, motd

    answer = login(page)
    # fetch's own type for a string body: saltnado reads text/plain as JSON, as the reference
    assert posted["login"] == "text/plain;charset=UTF-8"
    record = answer["body"]["return"][0]
    assert record["user"] == "saltdev" and record["eauth"] == "auto" and record["perms"], record
    assert record["expire"] > record["start"] and len(record["token"]) == 64
    # the session cookie is HttpOnly: the page's script cannot read it
    assert "session_id" not in page.evaluate("() => document.cookie")

    calls = page.evaluate(
        """async () => ({
            grains: await api("POST", "/", {client: "local", fun: "grains.items", tgt: "*", tgt_type: "glob"}),
            ping: await api("POST", "/", {client: "local", fun: "test.ping", tgt: "minion1", tgt_type: "list"}),
            jobs: await api("POST", "/", {client: "runner", fun: "jobs.list_jobs"}),
            versions: await api("POST", "/", {client: "runner", fun: "manage.versions"}),
            keys: await api("POST", "/", {client: "wheel", fun: "key.list_all"}),
            config: await api("POST", "/", {client: "wheel", fun: "config.values"}),
        })"""
    )
    for name, got in calls.items():
        assert got["status"] == 200 and got["type"] == "application/json", (name, got)
        assert isinstance(got["body"]["return"], list) and len(got["body"]["return"]) == 1, (name, got)
    grains = calls["grains"]["body"]["return"][0]["minion1"]
    assert grains["id"] == "minion1" and {"os", "osrelease", "ipv4", "saltversion"} <= set(grains)
    assert calls["ping"]["body"]["return"] == [{"minion1": True}]
    assert isinstance(calls["jobs"]["body"]["return"][0], dict)
    versions = calls["versions"]["body"]["return"][0]  # {"Up to date": {"minion1": "3008.4"}, …}
    assert any("minion1" in minions for minions in versions.values()), versions
    keys = calls["keys"]["body"]["return"][0]["data"]
    assert keys["success"] is True and "minion1" in keys["return"]["minions"], keys
    config = calls["config"]["body"]["return"][0]["data"]
    assert config["success"] is True and isinstance(config["return"], dict), config

    out = page.evaluate('async () => { const a = await api("POST", "/logout", {}); token = ""; return a; }')
    assert out["status"] == 200 and out["body"] == {"return": "Your token has been cleared"}, out
    # the token is gone, and so is the cookie: both ways in are now 401
    after = page.evaluate(
        """async () => {
            const chunk = {client: "local", fun: "test.ping", tgt: "minion1"};
            const byCookie = await fetch("/", {method: "POST", body: JSON.stringify(chunk),
                                               headers: {"Accept": "application/json", "Content-Type": "application/json"}});
            return byCookie.status;
        }"""
    )
    assert after == 401
    # Chromium logs each 4xx a fetch got: the motd's 404 (asked for) and the 401 just provoked
    assert browser_page.unexpected_errors(motd_404, lambda line: line.url.endswith("/") and "401" in line.text) == []


def test_saltgui_event_source_gets_events_with_the_session_cookie(
    browser_page: BrowserPage, gui_server: ServerThread
) -> None:
    page = open_page(browser_page, gui_server)
    login(page)
    assert page.evaluate("() => listen()") is True

    # a hook event, then a job's return (SaltGUI's CommandBox waits for salt/job/<jid>/ret/<mid>)
    hook = page.evaluate(
        """async () => {
            const sent = await api("POST", "/hook/saltgui/test", {hello: "browser"});
            const event = await waitForEvent((e) => e.tag === "salt/netapi/hook/saltgui/test", %d);
            return {sent, event};
        }"""
        % WAIT_MS
    )
    assert hook["sent"]["status"] == 200 and hook["sent"]["body"] == {"success": True}, hook
    assert hook["event"]["data"]["post"] == {"hello": "browser"}, hook
    assert "X-Auth-Token" not in hook["event"]["data"]["headers"]  # no credential goes onto the bus

    ret = page.evaluate(
        """async () => {
            const started = await api("POST", "/", {client: "local_async", fun: "test.ping", tgt: "minion1"});
            const jid = started.body["return"][0].jid;
            return await waitForEvent((e) => e.tag === `salt/job/${jid}/ret/minion1`, %d);
        }"""
        % WAIT_MS
    )
    assert ret is not None and ret["data"]["return"] is True and ret["data"]["id"] == "minion1", ret
    assert page.evaluate("() => source.readyState") == 1  # OPEN: never reconnected
    assert browser_page.unexpected_errors() == []


def test_saltgui_stats(browser_page: BrowserPage, gui_server: ServerThread) -> None:
    page = open_page(browser_page, gui_server)
    login(page)
    stats = page.evaluate('() => api("GET", "/stats")')
    assert stats["status"] == 200 and stats["type"] == "application/json", stats
    assert isinstance(stats["body"], dict) and stats["body"], stats
