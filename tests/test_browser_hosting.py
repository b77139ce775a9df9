"""A SaltGUI-shaped app hosted by saltnado, in a real Chromium against the session's master.

tests/fixtures/saltgui_like is the project's own small app, laid out as SaltGUI's
``saltgui/`` directory is: ``index.html`` referencing ``static/…`` relative to the page
(a stylesheet, an image, a classic script and ``static/scripts/index.js`` as an ES
module importing its siblings), served with ``app``, ``static`` and ``static_path:
/static`` as README "Hosting SaltGUI" says. Its requests are the ones SaltGUI's pages
make (Api.js's headers, the lowstates of its minions, keys and job pages, ``/stats``,
``/events``, the optional ``/static/salt-motd.txt`` and ``/static/minions.txt``), and
its routes are real paths switched with ``history.pushState``, so a reload asks the
server for ``/minions`` or ``/job?id=…`` and must get the app back (html_override)
while the app's own ``fetch`` of the same path gets the API's JSON.

The same files run under a ``rest_tornado:`` block and under a ``rest_cherrypy:``
block (SaltGUI's documented deployment), one binding each.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from browser import BrowserPage, ConsoleLine, ServerThread, expect
from saltnado_core import Settings
from saltnado_core.blocks import Dialect

pytestmark = pytest.mark.salt

APP = Path(__file__).parent / "fixtures" / "saltgui_like"
PENDING = "hosting-pending"
WAIT_MS = 30_000
# (binding, block): both blocks, and each binding once
SERVED = [("trio", Dialect.TORNADO), ("asyncio", Dialect.CHERRYPY)]
OPTIONAL_FILES = ("/static/salt-motd.txt", "/static/minions.txt")


def hosting_settings(master_opts: dict[str, Any], dialect: Dialect) -> Settings:
    """The lab master's options with only ``dialect``'s block, holding the app's keys
    as an operator would write them, read by the same code ``serve`` uses."""
    opts = {key: value for key, value in master_opts.items() if key not in ("rest_tornado", "rest_cherrypy")}
    block = {"port": 0, "disable_ssl": True, "app": str(APP / "index.html"),
             "static": str(APP / "static"), "static_path": "/static"}
    block["host" if dialect is Dialect.CHERRYPY else "address"] = "127.0.0.1"
    opts[dialect.value] = block
    settings = Settings.from_opts(opts)
    assert settings.dialect is dialect and settings.app and settings.static
    return dataclasses.replace(settings, port=0)


@pytest.fixture(scope="module", params=SERVED, ids=lambda served: f"{served[0]}-{served[1].value}")
def hosted(request: pytest.FixtureRequest, salt_lab: Any, master_opts: dict[str, Any]) -> Iterator[ServerThread]:
    binding, dialect = request.param
    with ServerThread(binding, salt_lab, master_opts, hosting_settings(master_opts, dialect)) as server:
        yield server


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    vary: str


def record_answers(page: Any) -> dict[str, list[Answer]]:
    """Every response the page got, by path (and query), in order."""
    seen: dict[str, list[Answer]] = {}

    def note(response: Any) -> None:
        parts = urlsplit(response.url)
        key = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = response.headers
        seen.setdefault(key, []).append(Answer(response.status, headers.get("content-type", ""), headers.get("vary", "")))

    page.on("response", note)
    return seen


def provoked(line: ConsoleLine) -> bool:
    """Chromium logs every 4xx a fetch got: the optional files' 404s (SaltGUI reads them
    as "none") and the 401 of the login with a bad password are asked for."""
    path = urlsplit(line.url).path
    return (path in OPTIONAL_FILES and "404" in line.text) or (path == "/login" and "401" in line.text)


def shows_the_app(page: Any, section: str) -> None:
    """The app's modules ran (index.js imported Api.js and Router.js) and its stylesheet
    applies: only the current route's section is displayed."""
    expect(page.locator("body")).to_have_attribute("data-modules", "Api Router")
    expect(page.locator(f"#{section}")).to_be_visible()
    for other in {"page-login", "page-minions", "page-keys", "page-job"} - {section}:
        expect(page.locator(f"#{other}")).to_be_hidden()


def log_in(page: Any, password: str, eauth: str) -> None:
    page.get_by_label("Username").fill("saltdev")
    page.get_by_label("Password").fill(password)
    page.get_by_label("eauth").select_option(eauth)
    page.get_by_role("button", name="Login").click()


def fetch_json(page: Any, path: str) -> dict[str, Any]:
    """``path`` fetched from the page as SaltGUI's Api.js asks for the API."""
    return page.evaluate(
        """async (path) => {
            const response = await fetch(path, {headers: {"Accept": "application/json",
                "X-Auth-Token": sessionStorage.getItem("token") || ""}});
            return {status: response.status, type: response.headers.get("content-type"),
                    vary: response.headers.get("vary"), body: await response.text()};
        }""",
        path,
    )


def reload_here(page: Any, answers: dict[str, list[Answer]], section: str) -> None:
    """Reload the current route: the server answers the navigation with the app."""
    parts = urlsplit(page.url)
    key = parts.path + (f"?{parts.query}" if parts.query else "")
    before = len(answers.get(key, []))
    page.reload()
    shows_the_app(page, section)
    navigation = answers[key][before]
    assert navigation.status == 200 and navigation.content_type.startswith("text/html"), (key, navigation)
    assert "Accept" in navigation.vary, navigation


def test_the_app_loads_logs_in_and_makes_saltguis_requests(
    browser_page: BrowserPage, hosted: ServerThread, salt_lab: Any
) -> None:
    page = browser_page.page
    answers = record_answers(page)

    # / loads the app; with no token its router goes to /login
    page.goto(hosted.base + "/")
    shows_the_app(page, "page-login")
    assert urlsplit(page.url).path == "/login"
    assert answers["/"][0].status == 200 and answers["/"][0].content_type.startswith("text/html")
    for module in ("index.js", "Api.js", "Router.js", "config.js"):
        got = answers[f"/static/scripts/{module}"]
        assert got == [Answer(200, "text/javascript; charset=utf-8", got[0].vary)], (module, got)
    assert answers["/static/stylesheets/main.css"][0].content_type == "text/css; charset=utf-8"
    assert answers["/static/images/icon.png"][0].content_type == "image/png"
    assert page.evaluate("() => document.getElementById('logo').naturalWidth") == 16
    assert answers["/static/salt-motd.txt"][0].status == 404
    expect(page.locator("#motd")).to_have_text("")

    # a bad password: the 401 is handled (a notice, no exception), then a good login
    log_in(page, "wrong", "pam")
    expect(page.get_by_role("alert")).to_have_text("Authentication failed")
    assert answers["/login"][-1].status == 401
    log_in(page, "anything", "auto")
    shows_the_app(page, "page-minions")
    assert urlsplit(page.url).path == "/minions"
    expect(page.locator("#notice")).to_have_text("logged in as saltdev")  # hidden with its page

    # the minions page's requests: manage.versions, pillar.items, beacons.list,
    # schedule.list (both with return_yaml false), jobs.active, /stats
    expect(page.locator("#minions tr[data-minion='minion1'] td").nth(1)).not_to_be_empty(timeout=WAIT_MS)
    for pane in ("#pillars", "#beacons", "#schedules"):
        expect(page.locator(pane)).to_contain_text('"minion1"', timeout=WAIT_MS)
    expect(page.locator("#active")).not_to_have_text("", timeout=WAIT_MS)
    expect(page.locator("#active")).not_to_contain_text("error")
    expect(page.locator("#stats")).not_to_have_text("", timeout=WAIT_MS)
    expect(page.locator("#stats")).not_to_contain_text("error")

    # a manual run: local state.apply test=True, then a local_async job opened on its page
    page.get_by_label("Target").fill("minion1")
    page.get_by_label("Command").fill("state.apply test=True")
    page.get_by_role("button", name="Run command").click()
    expect(page.locator("#output")).to_contain_text('"minion1"', timeout=WAIT_MS)
    page.get_by_label("Command").fill("async test.echo hosted")
    page.get_by_role("button", name="Run command").click()
    link = page.locator("#output a")
    expect(link).to_be_visible(timeout=WAIT_MS)
    jid = link.inner_text()
    assert jid.isdigit() and len(jid) == 20, jid
    link.click()
    shows_the_app(page, "page-job")
    expect(page.locator("#job-function")).to_have_text("test.echo on minion1", timeout=WAIT_MS)
    expect(page.locator("#job-result")).to_contain_text('"hosted"', timeout=WAIT_MS)
    assert urlsplit(page.url).query == f"id={jid}"
    reload_here(page, answers, "page-job")  # /job?id=… comes back as the app …
    expect(page.locator("#job-result")).to_contain_text('"hosted"', timeout=WAIT_MS)

    # … and so does /minions after a pushState, while a fetch of /minions gets the API
    page.get_by_role("link", name="minions").click()
    shows_the_app(page, "page-minions")
    reload_here(page, answers, "page-minions")
    api = fetch_json(page, "/minions")
    assert api["status"] == 200 and api["type"].startswith("application/json"), api
    assert "minion1" in json.loads(api["body"])["return"][0], api
    assert "Accept" in (api["vary"] or ""), api  # a cache keeps the two apart
    # the events stream (the session cookie) delivered the jobs' events
    expect(page.locator("#events")).not_to_have_text("0", timeout=WAIT_MS)
    assert answers["/events"][0].status == 200

    # the keys page: wheel key.list_all, GET /keys, minions.txt absent; a pending key
    # accepted, rejected and deleted from the page with SaltGUI's lowstates
    salt_lab.add_pending_key(PENDING)
    try:
        page.get_by_role("link", name="keys").click()
        shows_the_app(page, "page-keys")
        row = page.locator(f"#keys tr[data-minion='{PENDING}']")
        expect(row.locator("td").nth(1)).to_have_text("unaccepted", timeout=WAIT_MS)
        expect(page.locator("#keys")).to_have_attribute("data-minions-txt", "none")
        expect(page.locator("#keys-api")).to_contain_text('"minions_pre"', timeout=WAIT_MS)
        expect(page.locator("#keys-api")).to_contain_text(PENDING)
        for verb, after in (("accept", "accepted"), ("reject", "rejected"), ("delete", None)):
            row.get_by_role("button", name=verb).click()
            if after is None:
                expect(row).to_have_count(0, timeout=WAIT_MS)
            else:
                expect(row.locator("td").nth(1)).to_have_text(after, timeout=WAIT_MS)
        listed = json.loads(salt_lab.salt_key("-L", "--out=json").stdout)
        assert not any(PENDING in names for names in listed.values()), listed
        reload_here(page, answers, "page-keys")  # /keys: the app to a browser …
        keys = fetch_json(page, "/keys")  # … rest_cherrypy's /keys to the API client
        assert keys["status"] == 200 and keys["type"].startswith("application/json"), keys
        assert "minion1" in json.loads(keys["body"])["return"]["minions"], keys
    finally:
        salt_lab.salt_key("-d", PENDING, "-y")

    for path in OPTIONAL_FILES:
        assert {answer.status for answer in answers[path]} == {404}, (path, answers[path])

    page.get_by_role("button", name="logout").click()
    shows_the_app(page, "page-login")
    assert answers["/logout"][-1].status == 200
    assert browser_page.unexpected_errors(provoked) == []
