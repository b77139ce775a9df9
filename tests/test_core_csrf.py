"""Cross-site request forgery and the session cookie, bytes in and bytes out: which
cookie-authenticated requests are served (saltnado_core.csrf), and which cookie wins
when a request carries several."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core_literals import NOW, RECORD, TOKEN
from saltnado_core import App, EventStreams, Limits, ServerConnection, Settings
from saltnado_core.csrf import CROSS_SITE_COOKIE
from saltnado_core.salt_calls import FireEvent, GetToken, RemoveToken, RunLowstate
from saltnado_core.testing import Driver

HOST = "salt.example:8000"
ANSWERS = {GetToken: RECORD, RunLowstate: {"minion1": True}, FireEvent: True, RemoveToken: None}
FORM = "Content-Type: application/x-www-form-urlencoded"
PING_FORM = b"client=local&tgt=*&fun=test.ping"
PING_JSON = b'{"client": "local", "tgt": "*", "fun": "test.ping"}'
COOKIE = f"Cookie: session_id={TOKEN}"
FORBIDDEN_BODY = json.dumps({"status": "403 Forbidden", "return": CROSS_SITE_COOKIE}).encode()
FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(FORBIDDEN_BODY)}\r\n\r\n".encode()
    + FORBIDDEN_BODY
)


def post(path: str, body: bytes, *headers: str, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def serve(request: bytes, **block: Any) -> tuple[bytes, Driver]:
    settings = Settings(disable_ssl=True, netapi_enable_clients=("local", "local_async"), **block)
    driver = Driver(ServerConnection(Limits(), EventStreams()), App(settings), ANSWERS, now=NOW)
    return driver.feed(request), driver


# -- a page of another origin cannot use the cookie ----------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        # the classic: <form method=post action=https://salt.example:8000/> on another site
        post("/", PING_FORM, COOKIE, FORM, "Origin: https://evil.example"),
        post("/", PING_FORM, COOKIE, FORM),  # no Origin: not provably a page of ours
        post("/", PING_FORM, COOKIE, FORM, "Origin: null"),  # a sandboxed frame, a data: URL
        post("/", PING_FORM, COOKIE, FORM, "Origin: https://salt.example:8001"),  # another port
        post("/", PING_JSON, COOKIE, "Content-Type: text/plain", "Origin: https://evil.example"),  # read as JSON
        post("/", PING_FORM, COOKIE, "Content-Type: multipart/form-data; boundary=x", "Origin: https://evil.example"),
        post("/", PING_FORM, COOKIE, "Origin: https://evil.example"),  # fetch() of a Blob: no Content-Type
        post("/run", PING_FORM, COOKIE, FORM, "Origin: https://evil.example"),
        post("/minions", b"tgt=*&fun=test.ping", COOKIE, FORM, "Origin: https://evil.example"),
        post("/hook/deploy", b"go=1", COOKIE, FORM, "Origin: https://evil.example"),
        post("/logout", b"", COOKIE, "Origin: https://evil.example"),
    ],
)
def test_a_cookie_on_a_request_another_origin_could_send_is_403_before_salt(request_bytes: bytes) -> None:
    out, driver = serve(request_bytes)
    assert out == FORBIDDEN
    assert driver.calls == []  # Salt never sees the token


def test_a_wildcard_cors_origin_grants_no_cookie() -> None:
    # '*' answers carry no Access-Control-Allow-Credentials: it never allowed credentials.
    out, driver = serve(post("/", PING_FORM, COOKIE, FORM, "Origin: https://evil.example"), cors_origin="*")
    assert out.startswith(b"HTTP/1.1 403 Forbidden\r\n") and driver.calls == []


# -- what a page of another origin could not have sent is served -------------------------


@pytest.mark.parametrize(
    ("request_bytes", "block"),
    [
        (post("/", PING_FORM, COOKIE, FORM, f"Origin: https://{HOST}"), {}),  # the server's own page
        (post("/", PING_FORM, COOKIE, FORM, "Origin: https://ui.example"), {"cors_origin": ["https://*.example"]}),
        (post("/", PING_JSON, COOKIE, "Content-Type: application/json", "Origin: https://evil.example"), {}),
        (post("/", PING_JSON, COOKIE, "Content-Type: application/json; charset=utf-8"), {}),
        (post("/", b"{client: local, tgt: '*', fun: test.ping}", COOKIE, "Content-Type: application/x-yaml"), {}),
        (post("/", b"{client: local, tgt: '*', fun: test.ping}", COOKIE, "Content-Type: text/yaml"), {}),
        # X-Auth-Token needs a preflight cross-origin (and wins over the cookie)
        (post("/", PING_FORM, COOKIE, FORM, f"X-Auth-Token: {TOKEN}", "Origin: https://evil.example"), {}),
    ],
)
def test_a_request_another_origin_could_not_send_is_served(request_bytes: bytes, block: dict[str, Any]) -> None:
    out, driver = serve(request_bytes, **block)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b'{"return": [{"minion1": true}]}')
    assert driver.calls[0] == GetToken(TOKEN)


def test_a_safe_method_may_use_the_cookie_from_anywhere() -> None:
    # RFC 9110 §9.2.1: GET is safe; its answer is unreadable to another origin without CORS.
    out, driver = serve(post("/minions/minion1", b"", COOKIE, "Origin: https://evil.example", method="GET"))
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and driver.calls[0] == GetToken(TOKEN)


def test_an_unauthenticated_hook_takes_a_form_from_anywhere() -> None:
    # webhook_disable_auth: anyone may fire the hook, so no cookie is looked at.
    request_bytes = post("/hook/deploy", b"go=1", COOKIE, FORM, "Origin: https://evil.example")
    out, driver = serve(request_bytes, webhook_disable_auth=True)
    assert out.endswith(b'{"success": true}') and [type(c) for c in driver.calls] == [FireEvent]


def test_without_a_cookie_there_is_nothing_to_forge() -> None:
    out, driver = serve(post("/", PING_FORM, FORM, "Origin: https://evil.example"))
    assert out.startswith(b"HTTP/1.1 401 Unauthorized\r\n") and driver.calls == []


# -- duplicate cookies: the first one wins -----------------------------------------------

OTHER = "fedcba9876543210" * 4


@pytest.mark.parametrize(
    "cookies",
    [
        [f"Cookie: session_id={TOKEN}; session_id={OTHER}"],
        [f"Cookie: a=1; session_id={TOKEN}; b=2; session_id={OTHER}"],
        [f"Cookie: session_id={TOKEN}", f"Cookie: session_id={OTHER}"],  # two headers, in order
        [f"Cookie: a=1", f"Cookie: session_id={TOKEN}; session_id={OTHER}"],
    ],
)
def test_of_duplicate_session_cookies_the_first_wins(cookies: list[str]) -> None:
    out, driver = serve(post("/minions/minion1", b"", *cookies, method="GET"))
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert driver.calls[0] == GetToken(TOKEN)


def test_the_first_session_cookie_wins_even_when_it_is_no_token() -> None:
    # Not "the first that works": a planted cookie cannot make the server try each one.
    out, driver = serve(post("/minions/minion1", b"", f"Cookie: session_id=x; session_id={TOKEN}", method="GET"))
    assert out.startswith(b"HTTP/1.1 401 Unauthorized\r\n") and driver.calls == []
