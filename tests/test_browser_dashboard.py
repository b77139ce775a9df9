"""The built-in live page (saltnado_dashboard/static) in a real Chromium, against the
session's real master: log in, minion1 with its grains, a command run from the page
and its job completing, live events (filtered, paused), a pending key accepted,
log out — and the same page on a phone's screen, driven from the keyboard.
The server serves the page itself (``dashboard: True``), from the package.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from browser import BrowserPage, ServerThread, expect, same_origin_settings
from conftest import login
from saltnado_dashboard import DIRECTORY

pytestmark = pytest.mark.salt

PATH = "/dashboard/"
WAIT_MS = 30_000
PENDING = "dashboard-pending"
# SALTNADO_DASHBOARD_PNG=docs/dashboard.png: also write the README's picture of the page
README_PNG = os.environ.get("SALTNADO_DASHBOARD_PNG")


@pytest.fixture(scope="module")
def dash_server(salt_lab: Any, master_opts: dict[str, Any]) -> Iterator[ServerThread]:
    with ServerThread("trio", salt_lab, master_opts, same_origin_settings(master_opts, dashboard=True)) as server:
        yield server


def open_dashboard(browser_page: BrowserPage, server: ServerThread) -> Any:
    url = server.base + PATH
    # the package's own files, as the server sends them (not a copy the test serves)
    with urllib.request.urlopen(url + "app.js", timeout=10) as answer:
        assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
        assert answer.read() == (DIRECTORY / "app.js").read_bytes()
    browser_page.page.goto(url)
    return browser_page.page


def log_in(page: Any) -> None:
    page.get_by_label("User").fill("saltdev")
    page.get_by_label("Password").fill("anything")
    expect(page.get_by_label("eauth")).to_have_value("auto")  # the demo's and the tests' eauth
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("status")).to_have_text("logged in as saltdev")


def test_dashboard_end_to_end(browser_page: BrowserPage, dash_server: ServerThread, salt_lab: Any) -> None:
    page = open_dashboard(browser_page, dash_server)
    page.set_viewport_size({"width": 1100, "height": 900})
    log_in(page)
    token = page.evaluate("() => sessionStorage.getItem('saltnado.token')")
    assert isinstance(token, str) and len(token) == 64

    # minion1, up, with its grains (from /formatted_events: the grains.items it asks for)
    row = page.locator("#minions tr[data-minion='minion1']")
    expect(row.locator("td").nth(0)).to_have_text("up", timeout=WAIT_MS)
    grains = salt_lab.salt_cmd("--static", "minion1", "grains.item", "os", "osrelease", "saltversion")
    expected = json.loads(grains.stdout)["minion1"]
    expect(row.locator("td").nth(1)).to_have_text(f"{expected['os']} {expected['osrelease']}", timeout=WAIT_MS)
    expect(row.locator("td").nth(3)).to_have_text(expected["saltversion"])

    # a command run from the page: its answer, and its job completing in the live view
    page.get_by_label("Target").fill("minion1")
    page.get_by_label("Function").fill("test.echo")
    page.get_by_label("Arguments").fill("from-the-dashboard")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#run-result")).to_have_text('{\n  "minion1": "from-the-dashboard"\n}', timeout=WAIT_MS)
    job = page.locator("#jobs > li").filter(has_text="test.echo").first
    expect(job.locator(".state")).to_have_text("complete", timeout=WAIT_MS)
    expect(job.locator("summary")).to_contain_text("1/1 returned")
    job.locator("summary").click()
    expect(job.locator("pre")).to_have_text('"from-the-dashboard"')
    expect(page.locator("#events li[data-tag^='salt/job/']").first).to_be_visible(timeout=WAIT_MS)

    # the raw event log: server data shown as text, never markup; the tag filter; pause
    markup = "<img src=x onerror=window.pwned=1>"
    salt_lab.fire_event({"html": markup}, "saltnado/test/dashboard")
    line = page.locator("#events li[data-tag='saltnado/test/dashboard']")
    expect(line.locator(".data")).to_contain_text(markup, timeout=WAIT_MS)
    assert page.evaluate("() => document.querySelector('#events img') === null && window.pwned === undefined")
    page.get_by_label("Tag filter").fill("saltnado/test/")
    expect(page.locator("#events li[data-tag^='salt/job/']").first).to_be_hidden()
    expect(line).to_be_visible()
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_have_attribute("aria-pressed", "true")
    salt_lab.fire_event({"n": 2}, "saltnado/test/paused")
    expect(page.locator("#held")).to_have_text("1 held", timeout=WAIT_MS)
    assert page.locator("#events li[data-tag='saltnado/test/paused']").count() == 0
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#events li[data-tag='saltnado/test/paused']")).to_be_visible()
    page.get_by_label("Tag filter").fill("")

    # a pending key, accepted from the page
    salt_lab.add_pending_key(PENDING)
    try:
        page.get_by_role("button", name="Refresh").click()
        accept = page.get_by_role("button", name=f"Accept key {PENDING}")
        expect(accept).to_be_visible(timeout=WAIT_MS)
        browser_page.screenshot("dashboard-with-pending-key")
        accept.click()
        expect(accept).to_have_count(0, timeout=WAIT_MS)
        expect(page.locator(f"#minions tr[data-minion='{PENDING}']")).to_be_visible(timeout=WAIT_MS)
        assert not salt_lab.key_pending(PENDING)
        assert PENDING in salt_lab.salt_key("-l", "acc").stdout
    finally:
        salt_lab.salt_key("-d", PENDING, "-y")

    if README_PNG:
        page.locator("#event-filter").blur()
        page.screenshot(path=README_PNG)

    # log out: the form again, the token gone from the tab and from Salt
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('saltnado.token')") is None
    assert browser_page.unexpected_errors() == []
    status = page.evaluate(
        """async (token) => (await fetch("/", {method: "POST", headers: {"X-Auth-Token": token,
            "Accept": "application/json", "Content-Type": "application/json"},
            body: JSON.stringify({client: "local", tgt: "minion1", fun: "test.ping"})})).status""",
        token,
    )
    assert status == 401


def test_dashboard_on_a_phone_with_the_keyboard(browser_page: BrowserPage, dash_server: ServerThread) -> None:
    page = browser_page.page
    page.set_viewport_size({"width": 390, "height": 844})
    open_dashboard(browser_page, dash_server)
    # the user field has the focus; every control is reached with Tab, the form sent with Enter
    expect(page.get_by_label("User")).to_be_focused()
    page.keyboard.type("saltdev")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type("anything")
    page.keyboard.press("Tab")
    expect(page.get_by_label("eauth")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Log in")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("logged in as saltdev")
    expect(page.locator("#minions tr[data-minion='minion1'] td").nth(0)).to_have_text("up", timeout=WAIT_MS)
    # one column, nothing wider than the screen (the minions table scrolls inside its card)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    boxes = [page.locator(f"#{name}").bounding_box() for name in ("minions", "run", "keys", "jobs", "events")]
    lefts = {round(box["x"]) for box in boxes if box}
    assert len(lefts) == 1, boxes
    browser_page.screenshot("dashboard-phone")
    page.get_by_role("button", name="Log out").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("User")).to_be_focused()
    assert browser_page.unexpected_errors() == []


def test_a_stale_token_in_the_tab_goes_back_to_the_login_form(
    browser_page: BrowserPage, dash_server: ServerThread
) -> None:
    running = dash_server.running
    assert running is not None
    token = login(running.port)["token"]
    page = browser_page.page
    # a session kept in the tab whose token Salt no longer knows (logged out elsewhere)
    page.add_init_script(f"sessionStorage.setItem('saltnado.token', {json.dumps(token)})")
    urllib.request.urlopen(
        urllib.request.Request(
            dash_server.base + "/logout", data=b"{}", method="POST",
            headers={"X-Auth-Token": token, "Content-Type": "application/json"},
        ),
        timeout=10,
    ).close()
    open_dashboard(browser_page, dash_server)
    expect(page.get_by_role("status")).to_have_text("the session has ended: log in again", timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    # the 401s Chromium logs, and the websockets' refused upgrades
    assert all("401" in line.text or "WebSocket" in line.text for line in browser_page.errors), browser_page.errors
