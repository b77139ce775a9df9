"""Web apps served as rest_cherrypy serves them (``static``, ``app``, ``favicon``,
``dashboard``, ``html_override``): requests through the core's own loop, with
files read by the runtime's real reader over files each test writes.

Covers content types, validators and 304, HEAD, path traversal in every spelling
(and symlinks out of a mount), html_override against API clients, the size bound,
CORS, and a large body handed out one ``write_chunk_bytes`` slice at a time.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import parse_response
from core_literals import NOW, RECORD, TOKEN
from saltnado_core import App, ConfigError, EventStreams, Limits, ServerConnection, Settings
from saltnado_core.files import FileContent, FileRefusal, ReadFile
from saltnado_core.negotiation import prefers_html
from saltnado_core.salt_calls import GetAuthList, GetToken, needs_master
from saltnado_core.static import Site, content_type, decode_name
from saltnado_core.testing import Driver
from saltnado_runtime.files import StaticFiles, static_warnings

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
INDEX = b"<!doctype html><title>SaltGUI</title><script type=module src=/static/app.js></script>"
FILES = {
    "app.js": b"export const x = 1;\n",
    "mod.mjs": b"export default 2;\n",
    "style.css": b"body { color: red }\n",
    "img.png": b"\x89PNG\r\n\x1a\n",
    "icon.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    "favicon.ico": b"\x00\x00\x01\x00",
    "font.woff2": b"wOF2",
    "font.woff": b"wOFF",
    "data.json": b'{"a": 1}',
    "salt-motd.txt": b"hello\n",
    "app.js.map": b'{"version": 3}',
    "pic.webp": b"RIFF",
    "pic.jpg": b"\xff\xd8\xff",
    "anim.gif": b"GIF89a",
    "blob.bin": b"\x00\x01",
    "sub/deep.js": b"// deep\n",
    ".hidden": b"secret dot-file",
    "dir/keep.txt": b"k",
}
SECRET = b"the contents of a file outside every mount"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """``site/index.html``, ``site/static/…`` (FILES, a symlink inside, one leading
    out), ``site/dash/index.html``, and ``secret.txt`` beside ``site/``."""
    static = tmp_path / "site" / "static"
    for name, data in FILES.items():
        (static / name).parent.mkdir(parents=True, exist_ok=True)
        (static / name).write_bytes(data)
    (tmp_path / "site" / "index.html").write_bytes(INDEX)
    (tmp_path / "site" / "dash").mkdir()
    (tmp_path / "site" / "dash" / "index.html").write_bytes(b"<title>saltnado</title>")
    (tmp_path / "site" / "dash" / "live.js").write_bytes(b"// live\n")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (static / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (static / "escape-dir").symlink_to(tmp_path)
    (static / "inside.js").symlink_to(static / "app.js")
    return tmp_path


def block(root: Path, **changes: Any) -> dict[str, Any]:
    return {
        "port": 8000,
        "disable_ssl": True,
        "websockets": True,
        "static": str(root / "site" / "static"),
        "app": str(root / "site" / "index.html"),
        "favicon": str(root / "site" / "static" / "favicon.ico"),
        "dashboard": True,
        **changes,
    }


def new_driver(root: Path, limits: Limits = Limits(), files: StaticFiles | None = None, **changes: Any) -> Driver:
    settings = Settings.from_opts(
        {"rest_tornado": block(root, **changes), "external_auth": {"pam": {"saltuser": [".*"]}},
         "netapi_enable_clients": ["local"]}
    )
    app = App(settings, site=Site.from_settings(settings, str(root / "site" / "dash")))
    reader = files if files is not None else StaticFiles()
    return Driver(ServerConnection(limits, EventStreams()), app, {GetToken: {}}, now=NOW, files=reader.read)


def get(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: salt.example", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def answer(root: Path, path: str, *headers: str, method: str = "GET", **changes: Any) -> tuple[int, dict[str, str], bytes]:
    return parse_response(new_driver(root, **changes).feed(get(path, *headers, method=method)))


# -- files and their types -------------------------------------------------------------
TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "mod.mjs": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "img.png": "image/png",
    "icon.svg": "image/svg+xml",
    "favicon.ico": "image/x-icon",
    "font.woff2": "font/woff2",
    "font.woff": "font/woff",
    "data.json": "application/json",
    "salt-motd.txt": "text/plain; charset=utf-8",
    "app.js.map": "application/json",
    "pic.webp": "image/webp",
    "pic.jpg": "image/jpeg",
    "anim.gif": "image/gif",
    "blob.bin": "application/octet-stream",
    "sub/deep.js": "text/javascript; charset=utf-8",
}


@pytest.mark.parametrize(("name", "media"), TYPES.items())
def test_each_file_has_its_type_and_its_bytes(site: Path, name: str, media: str) -> None:
    status, headers, body = answer(site, f"/static/{name}", "Accept: */*")
    assert (status, headers["content-type"], body) == (200, media, FILES[name])
    assert headers["content-length"] == str(len(FILES[name]))


def test_content_type_table_ignores_case_and_knows_html() -> None:
    assert content_type("INDEX.HTML") == "text/html; charset=utf-8"
    assert content_type("no-extension") == "application/octet-stream"


def test_a_file_answer_carries_validators_and_cache_rules(site: Path) -> None:
    status, headers, _ = answer(site, "/static/app.js")
    info = os.stat(site / "site" / "static" / "app.js")
    assert status == 200
    assert headers["etag"] == f'"{info.st_ino:x}-{info.st_mtime_ns:x}-{info.st_size:x}"'
    assert headers["last-modified"] == email.utils.formatdate(int(info.st_mtime), usegmt=True)
    assert headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"


def test_literal_answer(site: Path, tmp_path: Path) -> None:
    """One whole answer, byte for byte."""
    path = site / "site" / "static" / "salt-motd.txt"
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    etag = f'"{os.stat(path).st_ino:x}-{1_700_000_000_000_000_000:x}-6"'.encode()
    assert new_driver(site).feed(get("/static/salt-motd.txt")) == (
        b"HTTP/1.1 200 OK\r\nserver: saltnado\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 6\r\n"
        b"etag: " + etag + b"\r\nlast-modified: Tue, 14 Nov 2023 22:13:20 GMT\r\ncache-control: no-cache\r\n"
        b"x-content-type-options: nosniff\r\n\r\nhello\n"
    )


def test_head_is_the_head_alone_and_keeps_the_connection(site: Path) -> None:
    driver = new_driver(site)
    status, headers, body = parse_response(driver.feed(get("/static/style.css", method="HEAD")))
    assert (status, headers["content-length"], body) == (200, str(len(FILES["style.css"])), b"")
    assert parse_response(driver.feed(get("/static/app.js")))[2] == FILES["app.js"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_are_405(site: Path, method: str) -> None:
    status, headers, body = answer(site, "/static/app.js", "Content-Length: 0", method=method)
    assert (status, headers["allow"]) == (405, "GET, HEAD")
    assert json.loads(body)["status"] == "405 Method Not Allowed"


def test_cors_headers_apply_to_files(site: Path) -> None:
    status, headers, _ = answer(site, "/static/app.js", "Origin: https://ui.example", cors_origin="https://ui.example")
    assert (status, headers["access-control-allow-origin"]) == (200, "https://ui.example")


# -- revalidation ------------------------------------------------------------------
def etag_of(root: Path, name: str = "app.js") -> str:
    info = os.stat(root / "site" / "static" / name)
    return f'"{info.st_ino:x}-{info.st_mtime_ns:x}-{info.st_size:x}"'


def http_date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("If-None-Match: {etag}", 304),
        ("If-None-Match: W/{etag}", 304),  # weak comparison (RFC 9110 §13.1.2)
        ('If-None-Match: "other", {etag}', 304),
        ("If-None-Match: *", 304),
        ('If-None-Match: "other"', 200),
        ("If-Modified-Since: {mtime}", 304),
        ("If-Modified-Since: {later}", 304),
        ("If-Modified-Since: {earlier}", 200),
        ("If-Modified-Since: yesterday", 200),  # not a date: ignored
        # If-None-Match decides alone when present, even against a matching date
        ('If-None-Match: "other"\r\nIf-Modified-Since: {later}', 200),
    ],
)
def test_revalidation(site: Path, header: str, status: int) -> None:
    mtime = os.stat(site / "site" / "static" / "app.js").st_mtime
    filled = header.format(
        etag=etag_of(site), mtime=http_date(int(mtime)), later=http_date(mtime + 3600), earlier=http_date(mtime - 3600)
    )
    got, headers, body = answer(site, "/static/app.js", filled)
    assert got == status
    if status == 304:
        assert body == b"" and "content-length" not in headers and "content-type" not in headers
        assert headers["etag"] == etag_of(site) and headers["cache-control"] == "no-cache"


def test_an_edited_file_gets_a_new_etag_and_its_new_bytes(site: Path) -> None:
    files = StaticFiles()
    old = etag_of(site)
    path = site / "site" / "static" / "app.js"
    path.write_bytes(b"export const x = 2; // longer\n")
    status, headers, body = parse_response(new_driver(site, files=files).feed(get("/static/app.js", f"If-None-Match: {old}")))
    assert (status, body) == (200, b"export const x = 2; // longer\n") and headers["etag"] != old


# -- path traversal and names that are no file ------------------------------------------
TRAVERSALS = [
    "/static/../secret.txt",
    "/static/sub/../app.js",  # harmless here, but a dot-segment is never followed
    "/static/./app.js",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/sub%2fdeep.js",
    "/static/sub%2Fdeep.js",
    "/static/..%2fsecret.txt",
    "/static/..%5csecret.txt",
    "/static/..%5Csecret.txt",
    "/static/sub\\deep.js",
    "/static/app.js%00.png",
    "/static/%252e%252e/secret.txt",  # encoded twice: decoded once, a literal '%' is refused
    "/static/%c0%ae%c0%ae/secret.txt",  # overlong UTF-8 for '.': not UTF-8
    "/static//etc/passwd",
    "/static///etc/passwd",
    "/static/.hidden",
    "/static/%2ehidden",
    "/static/escape.txt",  # a symlink to a file outside the directory
    "/static/escape-dir/secret.txt",  # through a symlink to a directory outside
    "/static/dir",  # a directory: never listed
    "/static/dir/",
    "/static",
    "/static/",
    "/static/nosuch.js",
    "/favicon.ico/x",
    "/favicon.ico/",
    "//etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_and_non_files_are_404(site: Path, path: str) -> None:
    status, headers, body = answer(site, path, "Accept: application/json")
    assert status == 404, body
    assert headers["content-type"] == "application/json"
    assert SECRET not in body and b"root:" not in body
    assert json.loads(body)["status"] == "404 Not Found"


# Refused by the runtime's reader (it alone sees the filesystem); every other path of
# TRAVERSALS under /static is refused by the core before any read is asked for.
REFUSED_BY_READER = {"/static/escape.txt", "/static/escape-dir/secret.txt", "/static/dir", "/static/nosuch.js"}


@pytest.mark.parametrize("path", [p for p in TRAVERSALS if p.startswith("/static") and p not in REFUSED_BY_READER])
def test_the_core_refuses_bad_names_without_reading(site: Path, path: str) -> None:
    settings = Settings.from_opts({"rest_tornado": block(site)})
    mount = Site.from_settings(settings).mount_for(path)
    assert mount is not None and mount.read_for(path, 100) is None


def test_the_reader_refuses_what_leaves_the_directory_even_if_asked(site: Path) -> None:
    """A second lock: ``..`` or a symlink out of the directory, asked for directly."""
    files, directory = StaticFiles(), str(site / "site" / "static")
    for name in ("../secret.txt", "escape.txt", "escape-dir/secret.txt", "/etc/passwd", "dir"):
        assert files.read(ReadFile(directory, name, 10**6)) is FileRefusal.MISSING, name
    # The operator's own file (app, favicon) may be a symlink to anywhere
    assert isinstance(files.read(ReadFile(directory, "escape.txt", 10**6, confined=False)), FileContent)


def test_a_symlink_inside_the_directory_is_served(site: Path) -> None:
    assert answer(site, "/static/inside.js")[2] == FILES["app.js"]


def test_a_file_over_the_limit_is_404_saying_why(site: Path) -> None:
    status, _, body = answer(site, "/static/app.js", static_max_file_bytes=4)
    assert (status, json.loads(body)["return"]) == (404, FileRefusal.TOO_LARGE.value)


@pytest.mark.parametrize(
    ("encoded", "name"),
    [("app.js", "app.js"), ("sub/deep.js", "sub/deep.js"), ("caf%C3%A9.js", "café.js"), ("a%20b.css", "a b.css")],
)
def test_decode_name_decodes_once(encoded: str, name: str) -> None:
    assert decode_name(encoded) == name


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("./\\%2eEfFcC05aA_x\x00é")), max_size=24))
def test_decode_name_never_gives_a_name_that_climbs(encoded: str) -> None:
    name = decode_name(encoded)
    if name is not None:
        parts = name.split("/")
        assert all(part and not part.startswith(".") for part in parts)
        assert "\\" not in name and "\x00" not in name and not name.startswith("/")


# -- the app and html_override ------------------------------------------------------------
@pytest.mark.parametrize("path", ["/app", "/app/", "/app/minions", "/app/jobs/2023/x?y=1", "/app/../../etc/passwd"])
def test_the_app_answers_its_whole_prefix_with_its_html(site: Path, path: str) -> None:
    status, headers, body = answer(site, path, "Accept: */*")
    assert (status, headers["content-type"], body) == (200, "text/html; charset=utf-8", INDEX)


@pytest.mark.parametrize("path", ["/", "/minions", "/jobs", "/keys", "/login", "/nowhere/at/all", "/health"])
def test_a_browser_navigation_gets_the_app(site: Path, path: str) -> None:
    status, headers, body = answer(site, path, f"Accept: {BROWSER}")
    assert (status, body) == (200, INDEX)
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["vary"] == "Accept"  # the same URL answers JSON to an API client


@pytest.mark.parametrize(
    "accept", [None, "application/json", "*/*", "application/x-yaml", "text/html;q=0.5, application/json",
               "application/json, text/html"],
)
def test_api_clients_get_what_they_always_got(site: Path, accept: str | None) -> None:
    headers = [f"Accept: {accept}"] if accept is not None else []
    with_app = new_driver(site).feed(get("/", *headers))
    without = new_driver(site, app=None).feed(get("/", *headers))
    # … but say that the URL answers by Accept: a cache must not hand this JSON to a
    # browser's navigation (nor the app's HTML to the next API client)
    assert parse_response(with_app)[1]["vary"] == "Accept" and "vary" not in parse_response(without)[1]
    assert with_app.replace(b"vary: Accept\r\n", b"", 1) == without
    assert parse_response(with_app)[0] == 200 and INDEX not in with_app


def test_only_answers_html_override_could_replace_vary_by_accept(site: Path) -> None:
    login = get("/login", "Accept: application/json", "Content-Length: 0", method="POST")
    assert "vary" not in parse_response(new_driver(site).feed(login))[1]  # a POST is never overridden
    events = get("/events", "Accept: text/event-stream")
    assert "vary" not in parse_response(new_driver(site).feed(events))[1]  # nor a stream
    missing = get("/nowhere", "Accept: application/json")
    assert parse_response(new_driver(site).feed(missing))[1]["vary"] == "Accept"  # a 404 here: the app to a browser


def test_streams_and_posts_are_never_overridden(site: Path) -> None:
    driver = new_driver(site)
    for path in ("/events", f"/all_events/{TOKEN}", f"/formatted_events/{TOKEN}"):
        status, _, body = parse_response(new_driver(site).feed(get(path, f"Accept: {BROWSER}")))
        assert status == 401 and INDEX not in body, path
    status, _, body = parse_response(driver.feed(get("/login", f"Accept: {BROWSER}", "Content-Length: 0", method="POST")))
    assert status == 400 and INDEX not in body


def test_without_app_a_browser_navigation_to_nowhere_is_404(site: Path) -> None:
    assert answer(site, "/nowhere", f"Accept: {BROWSER}", app=None)[0] == 404


def test_websocket_upgrade_with_a_browser_accept_is_still_a_websocket(site: Path) -> None:
    driver = Driver(
        ServerConnection(Limits(), EventStreams()),
        App(Settings.from_opts({"rest_tornado": block(site)})),
        {GetToken: RECORD, GetAuthList: [".*"]},
        now=NOW,
    )
    out = driver.feed(get(f"/all_events/{TOKEN}", f"Accept: {BROWSER}", "Upgrade: websocket", "Connection: Upgrade",
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"))
    assert out.startswith(b"HTTP/1.1 101 ")


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER, True),
        ("text/html", True),
        ("text/html, application/json", True),  # the same q: the one listed first
        ("application/json, text/html", False),
        ("text/*, application/json;q=0.9", True),
        ("text/html;q=0.5, */*", False),  # */* gives JSON q=1
        ("*/*", False),
        ("text/*", True),
        ("", False),
        (None, False),
        ("application/json", False),
        ("application/json, text/javascript, */*; q=0.01", False),  # jQuery's (rest_cherrypy: HTML)
        ("text/html;q=0", False),
        ("text/html;q=nan", False),
        ("text/plain", False),
    ],
)
def test_prefers_html(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


# -- favicon and dashboard ----------------------------------------------------------------
def test_favicon(site: Path) -> None:
    status, headers, body = answer(site, "/favicon.ico", f"Accept: {BROWSER}")
    assert (status, headers["content-type"], body) == (200, "image/x-icon", FILES["favicon.ico"])


def test_dashboard_index(site: Path) -> None:
    status, headers, body = answer(site, "/dashboard/")
    assert (status, headers["content-type"], body) == (200, "text/html; charset=utf-8", b"<title>saltnado</title>")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_dashboard_without_its_slash_is_sent_to_it(site: Path, method: str) -> None:
    """The page's relative links (style.css) need the slash; the query is not sent back."""
    status, headers, body = answer(site, "/dashboard?<x>", method=method)
    assert (status, headers["location"], body) == (301, "/dashboard/", b"")
    assert answer(site, "/live", dashboard_path="/live")[1]["location"] == "/live/"


def test_dashboard_files_and_its_path(site: Path) -> None:
    assert answer(site, "/live/live.js", dashboard_path="/live")[2] == b"// live\n"
    assert answer(site, "/dashboard", "Accept: application/json", dashboard=False)[0] == 404


def test_dashboard_directory_comes_from_outside_the_core(site: Path) -> None:
    """Without a directory (the core alone) ``dashboard: True`` mounts nothing."""
    settings = Settings.from_opts({"rest_tornado": block(site)})
    assert {mount.prefix for mount in Site.from_settings(settings).mounts} == {"/static", "/app", "/favicon.ico"}


# -- a large body: one slice per write ---------------------------------------------------------
CHUNK = 1000


def big_file(root: Path, size: int = 10 * CHUNK + 7) -> bytes:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    (root / "site" / "static" / "big.bin").write_bytes(data)
    return data


def test_a_large_body_is_handed_out_one_slice_per_write(site: Path) -> None:
    data = big_file(site)
    files = StaticFiles()
    driver = new_driver(site, limits=Limits(write_chunk_bytes=CHUNK), files=files)
    conn = driver.conn
    first = driver.feed(get("/static/big.bin") + get("/static/app.js"))  # a second request, pipelined
    head, _, body = first.partition(b"\r\n\r\n")
    assert b"content-length: %d" % len(data) in head and len(body) == CHUNK
    assert conn.input_paused  # the pipelined request waits for the body
    writes = [body]
    while len(b"".join(writes)) < len(data):
        assert driver.serve() == []  # nothing answered while the body is out
        piece = conn.data_to_send()
        assert 0 < len(piece) <= CHUNK
        writes.append(piece)
    assert b"".join(writes) == data
    assert not conn.input_paused
    driver.serve()  # the pipelined request now
    assert parse_response(conn.data_to_send())[2] == FILES["app.js"]
    assert files.reads == 2


def test_every_client_of_a_file_shares_one_bytes_object(site: Path) -> None:
    big_file(site)
    files = StaticFiles()
    call = ReadFile(str(site / "site" / "static"), "big.bin", 10**6)
    first, second = files.read(call), files.read(call)
    assert isinstance(first, FileContent) and isinstance(second, FileContent)
    assert first.data is second.data and files.reads == 1


def test_the_cache_is_bounded(site: Path) -> None:
    files = StaticFiles(cache_bytes=30)
    directory = str(site / "site" / "static")
    for name in ("app.js", "mod.mjs", "style.css"):  # 20 + 18 + 21 bytes
        files.read(ReadFile(directory, name, 10**6))
    assert files.cached_bytes <= 30
    files.read(ReadFile(directory, "style.css", 10**6))
    assert files.reads == 3  # the most recent stayed


def test_head_of_a_large_file_sends_no_slices(site: Path) -> None:
    data = big_file(site)
    driver = new_driver(site, limits=Limits(write_chunk_bytes=CHUNK))
    status, headers, body = parse_response(driver.feed(get("/static/big.bin", method="HEAD")))
    assert (status, headers["content-length"], body) == (200, str(len(data)), b"")
    assert not driver.conn.input_paused and driver.conn.data_to_send() == b""


def test_a_client_that_stops_reading_a_large_body_is_dropped(site: Path) -> None:
    big_file(site)
    limits = Limits(write_chunk_bytes=CHUNK)
    driver = new_driver(site, limits=limits)
    driver.feed(get("/static/big.bin"))
    conn, wait = driver.conn, limits.timeouts.keepalive_timeout
    conn.tick(0.0)
    for now in (wait / 2, wait - 1):  # slices keep being taken: the wait restarts each time
        conn.data_to_send()
        assert not conn.tick(now)
    assert not conn.tick(2 * wait - 2)  # the last slice taken at wait - 1
    assert conn.tick(2 * wait) and conn.finished and conn.cut_off
    assert conn.data_to_send() == b""  # the rest is never handed out


def test_shutdown_lets_a_large_body_finish_then_closes(site: Path) -> None:
    data = big_file(site)
    driver = new_driver(site, limits=Limits(write_chunk_bytes=CHUNK))
    out = driver.feed(get("/static/big.bin"))
    driver.conn.close()
    assert not driver.conn.finished
    while not driver.conn.finished:
        piece = driver.conn.data_to_send()
        assert piece
        out += piece
    assert out.partition(b"\r\n\r\n")[2] == data


# -- the effect, the config ----------------------------------------------------------------------
def test_a_file_read_needs_no_master() -> None:
    assert not needs_master(ReadFile("/srv", "x", 1))


def test_reading_files_goes_through_the_service_not_salt(site: Path) -> None:
    from saltnado_runtime.service import Service

    settings = Settings.from_opts({"rest_tornado": block(site)})
    service = Service(settings, {"sock_dir": str(site)})
    found = service.execute(ReadFile(str(site / "site" / "static"), "app.js", 100))
    assert isinstance(found, FileContent) and found.data == FILES["app.js"]
    assert service.bridge._auth is None  # Salt was never loaded


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"static_path": "/minions"}, "'rest_tornado: static_path' /minions would hide the API's /minions"),
        ({"static_path": "/hook/ui"}, "would hide the API's /hook/ui"),
        ({"app_path": "/events"}, "'rest_tornado: app_path' /events would hide the API's /events"),
        ({"dashboard_path": "/all_events"}, "would hide the API's /all_events (all_events)"),
        ({"dashboard_path": "/static"}, "'rest_tornado: dashboard_path' and 'static_path' both serve /static"),
        ({"static_path": "/"}, "'rest_tornado: static_path' must be a URL path"),
        ({"app_path": "/a/../b"}, "'rest_tornado: app_path' must be a URL path"),
        ({"app_path": "/a b"}, "'rest_tornado: app_path' must be a URL path"),
        ({"app_path": "/%61pp"}, "'rest_tornado: app_path' must be a URL path"),
        ({"static": ""}, "'rest_tornado: static' must be a filesystem path"),
        ({"static_max_file_bytes": 0}, "'rest_tornado: static_max_file_bytes' must be at least 1"),
        ({"dashboard": "maybe"}, "'rest_tornado: dashboard' must be True or False"),
    ],
)
def test_config_errors(site: Path, changes: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_opts({"rest_tornado": block(site, **changes)})


def test_prefixes_are_read_as_rest_cherrypy_reads_them(site: Path) -> None:
    settings = Settings.from_opts({"rest_tornado": block(site, app_path="ui", static_path="/assets/")})
    assert (settings.app_path, settings.static_path) == ("/ui", "/assets")
    assert answer(site, "/assets/app.js", app_path="ui", static_path="/assets/")[2] == FILES["app.js"]


def test_unused_mount_paths_may_collide(site: Path) -> None:
    """Only mounts in use are checked: rest_cherrypy's defaults stay valid."""
    Settings.from_opts({"rest_tornado": {"port": 1, "disable_ssl": True, "app_path": "/static"}})


def test_warnings_for_what_cannot_be_served(site: Path) -> None:
    good = Settings.from_opts({"rest_tornado": block(site)})
    assert static_warnings(good) == []
    bad = dataclasses.replace(good, static=str(site / "nope"), app=str(site / "site"))
    assert static_warnings(bad) == [
        f"'rest_tornado: static' {site / 'nope'} is not a directory: /static serves nothing",
        f"'rest_tornado: app' {site / 'site'} is not a readable file: /app answers 404",
    ]
