"""Real-browser tests: the system Chromium driven by Playwright, and a saltnado
server running in a thread of its own.

Playwright's sync API blocks the thread that calls it, so a browser test is a
plain (sync) test and the server it talks to runs on its own loop in its own
thread (:class:`ServerThread`), never on the test's thread. The browser is the
system's Chromium, never one Playwright downloads; it runs with an empty profile
and without its own network traffic (this machine, and CI, may have no internet).

Pages are served *at saltnado's origin* by :meth:`BrowserPage.serve`: Playwright
answers that one URL itself, so everything the page then fetches from that origin
is same-origin for the browser (its cookies, ``fetch``, ``EventSource`` and
websockets are the real ones) and goes to the real server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import mimetypes
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import RunningServer, running_server
from saltnado_core import Settings

# Chromium's own connections (updates, safe browsing, sync…) are turned off: there may
# be no network, and a browser test should make only the requests its page makes.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("SALTNADO_ARTIFACTS") or Path(__file__).parent / "artifacts")
TIMEOUT_MS = 60_000  # a Salt call through the browser (grains.items, a runner) can take seconds


def in_ci() -> bool:
    """CI must run the browser tests: there a missing browser fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> None:
    """Skip (on a developer's machine) or fail (under ``CI``) for a missing browser."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: browser tests must run)", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    """``SALTNADO_CHROMIUM``, else ``chromium`` (Debian) or ``chromium-browser`` on PATH."""
    explicit = os.environ.get("SALTNADO_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """The system Chromium under Playwright (a ``playwright.sync_api.Browser``);
    skips or fails (see :func:`missing`) when either is not there."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
    path = chromium_path()
    if path is None:
        explicit = os.environ.get("SALTNADO_CHROMIUM")
        missing(
            f"SALTNADO_CHROMIUM={explicit} is not an executable"
            if explicit
            else "no Chromium on PATH (apt-get install chromium, or set SALTNADO_CHROMIUM)"
        )
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        except Error as exc:
            missing(f"Chromium at {path} did not start: {exc.message.splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


def expect(target: Any) -> Any:
    """Playwright's retrying assertions (imported here, so that a missing playwright
    skips or fails through the ``chromium`` fixture, not at collection)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@dataclasses.dataclass(frozen=True, slots=True)
class ConsoleLine:
    """One console message of type error, or an uncaught exception, and where it came from."""

    text: str
    url: str


class BrowserPage:
    """A fresh browser context and page, and what its console said."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.page = context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[ConsoleLine] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(ConsoleLine(f"uncaught: {exc}", "")))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(ConsoleLine(message.text, message.location.get("url", "")))

    def serve(self, url: str, html: str) -> None:
        """Answer ``url`` (GET) with ``html``: a page at the origin of ``url``."""
        self.page.route(url, lambda route: route.fulfill(status=200, body=html, content_type="text/html"))

    def serve_directory(self, prefix: str, directory: Path) -> None:
        """Answer every GET under ``prefix`` (ending in ``/``) with the file of that
        name in ``directory`` (``index.html`` for the prefix itself), 404 otherwise."""

        def answer(route: Any) -> None:
            name = route.request.url[len(prefix) :].split("?", 1)[0] or "index.html"
            path = (directory / name).resolve()
            if directory.resolve() not in path.parents or not path.is_file():
                route.fulfill(status=404, body="not found", content_type="text/plain")
                return
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if path.suffix == ".js":  # module scripts need a JavaScript type
                kind = "text/javascript"
            route.fulfill(status=200, body=path.read_bytes(), content_type=kind)

        self.page.route(re.compile(re.escape(prefix) + ".*"), answer)

    def unexpected_errors(self, *allowed: Callable[[ConsoleLine], bool]) -> list[ConsoleLine]:
        """Console errors that none of ``allowed`` explains."""
        return [line for line in self.errors if not any(rule(line) for rule in allowed)]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


class ServerThread:
    """A saltnado server of ``binding`` for the session's master, on its own trio loop
    in its own thread (the asyncio binding: on its loop thread, started from there)."""

    def __init__(self, binding: str, salt_lab: Any, master_opts: dict[str, Any], settings: Settings | None = None):
        self._args = (binding, salt_lab, master_opts, settings)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"saltnado-{binding}", daemon=True)
        self.running: RunningServer | None = None

    @property
    def base(self) -> str:
        assert self.running is not None
        return self.running.base

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the test's thread by __enter__
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with running_server(*self._args) as running:
            self.running = running
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(60) or self._failure is not None:
            raise RuntimeError("the server did not start") from self._failure
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


class PageServer:
    """Pages of another origin, from a real HTTP server on loopback (``pages``: path → HTML):
    a UI served next to the API on the same host, as a browser really meets one
    (Chromium's Local Network Access checks see a loopback page, not one Playwright
    answered itself, which has no address: see the ``browser_page`` fixture)."""

    def __init__(self, pages: dict[str, str]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = pages.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                data = (body or "not found").encode()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.pages = pages
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="page-server", daemon=True)

    def __enter__(self) -> PageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def same_origin_settings(master_opts: dict[str, Any], **changes: Any) -> Settings:
    """The session master's ``rest_tornado:`` settings on a free loopback port."""
    return dataclasses.replace(Settings.from_opts(master_opts), port=0, address="127.0.0.1", **changes)
