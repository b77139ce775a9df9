"""HTTP/1.1 through ServerConnection + App: literal request bytes in, literal response bytes out.

Every request is fed whole, one byte at a time, and followed by trailing data
(the next request, or part of it), as h11's own tests do.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import pytest

from saltnado_core import (
    App,
    EventStreams,
    GetToken,
    HTTPConnection,
    Limits,
    MakeToken,
    Phase,
    Response,
    ServerConnection,
    Settings,
    error_response,
    Router,
)
from saltnado_core.testing import Driver

from core_literals import NOW, RECORD, TOKEN

SETTINGS = Settings(
    websockets=True,
    disable_ssl=True,
    external_auth={"pam": {"saltuser": [".*"]}},
    netapi_enable_clients=("local", "runner"),
)
# Python 3.13 renamed 413's phrase ("Content Too Large"); the server sends the running one.
PHRASE_413 = HTTPStatus(413).phrase.encode()

GET_ROOT = b"GET / HTTP/1.1\r\nHost: salt.example\r\n\r\n"
WELCOME = b'{"clients": ["local", "runner"], "return": "Welcome"}'
WELCOME_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"server: saltnado\r\n"
    b"content-type: application/json\r\n"
    b"content-length: 53\r\n"
    b"\r\n" + WELCOME
)
GET_NOPE = b"GET /nope HTTP/1.1\r\nHost: salt.example\r\n\r\n"
NOPE_RESPONSE = (
    b"HTTP/1.1 404 Not Found\r\n"
    b"server: saltnado\r\n"
    b"content-type: application/json\r\n"
    b"content-length: 64\r\n"
    b"\r\n"
    b'{"status": "404 Not Found", "return": "no such resource: /nope"}'
)
LOGIN_FORM = b"username=saltuser&password=s3cret&eauth=pam"
LOGIN_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"server: saltnado\r\n"
    b"content-type: application/json\r\n"
    b"content-length: 191\r\n"
    b"set-cookie: session_id=" + TOKEN.encode() + b"; Path=/; HttpOnly; SameSite=Lax\r\n"
    b"\r\n"
    b'{"return": [{"token": "' + TOKEN.encode() + b'", "expire": 1700000100.0, "start": 1700000000.0, '
    b'"user": "saltuser", "eauth": "pam", "perms": [".*"]}]}'
)


class Binding(Driver):
    """Plays a binding's loop over one ServerConnection; Salt calls are answered from a table."""

    def __init__(self, limits: Limits = Limits(), record: Any = RECORD) -> None:
        answers = {GetToken: record, MakeToken: record}
        super().__init__(ServerConnection(limits, EventStreams()), App(SETTINGS), answers, now=NOW)


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_response(raw: bytes) -> tuple[bytes, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert int(headers["content-length"]) == len(body)
    return status.encode(), headers, json.loads(body)


# -- GET ---------------------------------------------------------------------------


def test_get_whole() -> None:
    binding = Binding()
    assert binding.feed(GET_ROOT) == WELCOME_RESPONSE
    assert binding.conn.phase is Phase.HTTP  # keep-alive
    assert not binding.conn.finished


def test_get_byte_by_byte() -> None:
    binding = Binding()
    chunks = bytewise(GET_ROOT)
    assert binding.feed(*chunks[:-1]) == b""  # nothing until the request is complete
    assert binding.feed(chunks[-1]) == WELCOME_RESPONSE


def test_get_with_trailing_partial_request() -> None:
    binding = Binding()
    assert binding.feed(GET_ROOT + GET_NOPE[:10]) == WELCOME_RESPONSE
    assert binding.feed(GET_NOPE[10:]) == NOPE_RESPONSE
    assert [r.target for r in binding.requests] == ["/", "/nope"]


def test_pipelined_requests_answered_in_order() -> None:
    binding = Binding()
    assert binding.feed(GET_ROOT + GET_NOPE) == WELCOME_RESPONSE + NOPE_RESPONSE
    assert binding.conn.phase is Phase.HTTP


def test_pipelined_requests_byte_by_byte() -> None:
    binding = Binding()
    assert binding.feed(*bytewise(GET_NOPE + GET_ROOT + GET_NOPE)) == NOPE_RESPONSE + WELCOME_RESPONSE + NOPE_RESPONSE


def test_next_request_waits_for_the_response() -> None:
    conn = ServerConnection(Limits(), EventStreams())
    conn.receive_data(GET_ROOT + GET_NOPE)
    first = conn.next_request()
    assert first is not None and first.target == "/"
    assert conn.next_request() is None  # one request in flight at a time
    conn.respond(Response(204, content_type=None))
    second = conn.next_request()
    assert second is not None and second.target == "/nope"
    assert conn.data_to_send() == b"HTTP/1.1 204 No Content\r\nserver: saltnado\r\n\r\n"


def test_connection_close_request() -> None:
    binding = Binding()
    out = binding.feed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + GET_NOPE)
    assert out == (
        b"HTTP/1.1 200 OK\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: 53\r\nConnection: close\r\n\r\n" + WELCOME
    )
    assert binding.conn.finished  # the pipelined request after "close" is never read
    assert [r.target for r in binding.requests] == ["/"]


def test_http_1_0_closes_after_response() -> None:
    binding = Binding()
    out = binding.feed(b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in out
    assert binding.conn.finished


def test_http_1_0_keep_alive_is_not_honoured_and_says_so() -> None:
    """README: HTTP/1.0 keep-alive is refused; the answer says ``Connection: close``."""
    binding = Binding()
    out = binding.feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + GET_ROOT.replace(b"1.1", b"1.0"))
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 1 and b"\r\nConnection: close\r\n" in out
    assert binding.conn.finished and len(binding.requests) == 1


def test_eof_between_requests() -> None:
    binding = Binding()
    assert binding.feed(GET_ROOT, b"") == WELCOME_RESPONSE
    assert binding.conn.finished
    assert binding.feed(GET_ROOT) == b""  # nothing after EOF


def test_request_parsing() -> None:
    binding = Binding()
    binding.feed(
        b"GET /jobs/a%20b?limit=5&x=%2F HTTP/1.1\r\nHost: x\r\nX-Auth-Token: abc\r\n"
        b"Accept: text/html\r\nAccept: application/json, */*\r\n\r\n"
    )
    (request,) = binding.requests
    assert request.method == "GET"
    assert request.target == "/jobs/a%20b?limit=5&x=%2F"
    assert (request.path, request.query) == ("/jobs/a%20b", "limit=5&x=%2F")  # the path as sent: see router.py
    assert request.header("X-AUTH-TOKEN") == "abc"
    assert request.header("accept") == "application/json, */*"  # the last one
    assert request.header("missing", "dflt") == "dflt"
    assert request.header_tokens("accept") == {"text/html", "application/json", "*/*"}
    assert not request.wants_websocket


# -- POST bodies -------------------------------------------------------------------

LOGIN_POST = (
    b"POST /login HTTP/1.1\r\nHost: salt.example\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 43\r\n\r\n" + LOGIN_FORM
)
LOGIN_CHUNKED = (
    b"POST /login HTTP/1.1\r\nHost: salt.example\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"10\r\nusername=saltuse\r\n"
    b"1b\r\nr&password=s3cret&eauth=pam\r\n"
    b"0\r\n\r\n"
)


@pytest.mark.parametrize("raw", [LOGIN_POST, LOGIN_CHUNKED], ids=["content-length", "chunked"])
def test_post_login_whole_bytewise_and_pipelined(raw: bytes) -> None:
    whole = Binding()
    assert whole.feed(raw) == LOGIN_RESPONSE
    assert whole.calls == [MakeToken("saltuser", "s3cret", "pam")]
    assert whole.requests[0].body == LOGIN_FORM

    one_by_one = Binding()
    assert one_by_one.feed(*bytewise(raw)) == LOGIN_RESPONSE

    trailing = Binding()
    assert trailing.feed(raw + GET_ROOT + raw) == LOGIN_RESPONSE + WELCOME_RESPONSE + LOGIN_RESPONSE


def test_post_login_wrong_credentials() -> None:
    binding = Binding(record={})
    assert binding.feed(LOGIN_POST) == (
        b"HTTP/1.1 401 Unauthorized\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: 93\r\nwww-authenticate: Session\r\n\r\n"
        b'{"status": "401 Unauthorized", "return": "Could not authenticate using provided credentials"}'
    )
    assert binding.conn.phase is Phase.HTTP


def test_body_exactly_at_limit_is_accepted() -> None:
    binding = Binding(Limits(max_body_bytes=len(LOGIN_FORM)))
    assert binding.feed(LOGIN_POST) == LOGIN_RESPONSE
    binding = Binding(Limits(max_body_bytes=len(LOGIN_FORM)))
    assert binding.feed(LOGIN_CHUNKED) == LOGIN_RESPONSE


# -- limits and errors -------------------------------------------------------------


def too_large_431() -> bytes:
    body = b'{"status": "431 Request Header Fields Too Large", "return": "request header block too large"}'
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body


BIG_HEADERS = (
    b"GET / HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 60) for i in range(40))
    + b"\r\n"
)


@pytest.mark.parametrize("mode", ["whole", "bytewise", "incomplete"])
def test_header_block_over_limit_is_431(mode: str) -> None:
    binding = Binding(Limits(max_header_bytes=1024))
    assert len(BIG_HEADERS) > 2048
    if mode == "whole":
        out = binding.feed(BIG_HEADERS + GET_ROOT)
    elif mode == "bytewise":
        out = binding.feed(*bytewise(BIG_HEADERS))
    else:  # never terminated: must not buffer forever
        out = binding.feed(BIG_HEADERS[:-2])
    assert out == too_large_431()
    assert binding.conn.finished
    assert binding.requests == []


def test_header_block_under_limit_is_served() -> None:
    binding = Binding(Limits(max_header_bytes=len(BIG_HEADERS) + 100))
    assert binding.feed(BIG_HEADERS) == WELCOME_RESPONSE


MANY_HEADERS = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(4)) + b"\r\n"


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_too_many_header_fields_is_431(mode: str) -> None:
    binding = Binding(Limits(max_header_count=4))  # Host + 4 others: one too many
    out = binding.feed(MANY_HEADERS + GET_ROOT) if mode == "whole" else binding.feed(*bytewise(MANY_HEADERS))
    body = b'{"status": "431 Request Header Fields Too Large", "return": "too many request header fields (more than 4)"}'
    assert out == (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body
    assert binding.conn.finished
    assert binding.requests == []


def test_header_fields_at_the_count_limit_are_served() -> None:
    binding = Binding(Limits(max_header_count=5))
    assert binding.feed(MANY_HEADERS) == WELCOME_RESPONSE


def test_connection_over_the_limit_gets_503_after_its_request() -> None:
    limits = Limits(max_connections=3)
    binding = Binding(limits)
    binding.conn = ServerConnection(limits, EventStreams(), open_connections=3)
    assert binding.feed(GET_ROOT[:10]) == b""  # the request is read first
    body = b'{"status": "503 Service Unavailable", "return": "the server is at its limit of 3 connections; try again later"}'
    assert binding.feed(GET_ROOT[10:] + GET_ROOT) == (
        b"HTTP/1.1 503 Service Unavailable\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body
    assert binding.conn.finished
    assert binding.requests == []  # never reached the app


def test_connection_under_the_limit_is_served() -> None:
    limits = Limits(max_connections=3)
    binding = Binding(limits)
    binding.conn = ServerConnection(limits, EventStreams(), open_connections=2)
    assert binding.feed(GET_ROOT) == WELCOME_RESPONSE


def test_content_length_over_limit_is_413_before_the_body() -> None:
    binding = Binding(Limits(max_body_bytes=42))
    out = binding.feed(LOGIN_POST[: LOGIN_POST.index(b"\r\n\r\n") + 4])  # head only: no body sent yet
    body = b'{"status": "413 ' + PHRASE_413 + b'", "return": "request body of 43 bytes exceeds the 42-byte limit"}'
    assert out == (
        b"HTTP/1.1 413 " + PHRASE_413 + b"\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body
    assert binding.conn.finished
    assert binding.calls == []


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_chunked_body_over_limit_is_413(mode: str) -> None:
    binding = Binding(Limits(max_body_bytes=42))
    out = binding.feed(LOGIN_CHUNKED) if mode == "whole" else binding.feed(*bytewise(LOGIN_CHUNKED))
    status, headers, payload = split_response(out)
    assert status == b"HTTP/1.1 413 " + PHRASE_413
    assert headers["connection"] == "close"
    assert payload == {"status": f"413 {PHRASE_413.decode()}", "return": "request body exceeds the 42-byte limit"}
    assert binding.conn.finished
    assert binding.calls == []


def test_endless_chunked_body_is_cut_off() -> None:
    binding = Binding(Limits(max_body_bytes=1000))
    binding.feed(b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    out = b""
    for _ in range(200):
        out += binding.feed(b"10\r\n" + b"a" * 16 + b"\r\n")
        if binding.conn.finished:
            break
    assert binding.conn.finished
    assert out.startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize(
    "raw",
    [
        b"BLAH\r\n\r\n",
        b"GET /\r\n\r\n",  # HTTP/0.9
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS ClientHello to a plain port
    ],
)
def test_malformed_request_is_400_json(raw: bytes) -> None:
    binding = Binding()
    out = binding.feed(raw)
    status, headers, payload = split_response(out)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers["server"] == "saltnado"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert payload["status"] == "400 Bad Request"
    assert payload["return"].startswith("malformed request")
    assert binding.conn.finished
    assert binding.feed(GET_ROOT) == b""


def test_malformed_request_line_exact() -> None:
    binding = Binding()
    out = binding.feed(b"BLAH\r\n\r\n")
    assert out.startswith(
        b"HTTP/1.1 400 Bad Request\r\nserver: saltnado\r\ncontent-type: application/json\r\ncontent-length: "
    )
    assert split_response(out)[2]["status"] == "400 Bad Request"


def test_malformed_second_request_after_good_one() -> None:
    binding = Binding()
    out = binding.feed(GET_ROOT + b"BLAH\r\n\r\n")
    assert out.startswith(WELCOME_RESPONSE + b"HTTP/1.1 400 Bad Request\r\n")
    assert binding.conn.finished


def test_eof_mid_body() -> None:
    binding = Binding()
    out = binding.feed(LOGIN_POST[:-5], b"")
    assert binding.conn.finished
    assert binding.calls == []
    assert out == b"" or out.startswith(b"HTTP/1.1 400 Bad Request\r\n")


# -- HTTPConnection directly -------------------------------------------------------


def test_http_connection_response_with_extra_headers_and_no_content_type() -> None:
    http = HTTPConnection()
    http.receive_data(GET_ROOT)
    assert http.next_request() is not None
    http.send_response(Response(302, b"", (("location", "/login"),), content_type=None))
    assert http.data_to_send() == (
        b"HTTP/1.1 302 Found\r\nserver: saltnado\r\ncontent-length: 0\r\nlocation: /login\r\n\r\n"
    )
    assert not http.closed


def test_error_response_shape() -> None:
    assert error_response(418, "short and stout", [("x-a", "b")]) == Response(
        418, b'{"status": "418 I\'m a Teapot", "return": "short and stout"}', (("x-a", "b"),)
    )
    assert error_response(599, "odd").body == b'{"status": "599", "return": "odd"}'


def test_expect_100_continue_is_answered_before_the_body() -> None:
    from saltnado_core import HTTPConnection

    conn = HTTPConnection()
    conn.receive_data(
        b"POST /login HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    )
    assert conn.next_request() is None
    assert conn.data_to_send() == b""  # not before the app has judged the head
    assert conn.continue_wanted is not None and conn.continue_wanted.body == b""
    conn.send_continue()
    assert conn.continue_wanted is None
    assert conn.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.receive_data(b"{}")
    request = conn.next_request()
    assert request is not None and request.body == b"{}"
    assert conn.data_to_send() == b""  # 100 is sent once


# -- 100 Continue only for a request the app does not refuse from its head ----------


def expecting(path: str, token: bytes = b"") -> bytes:
    auth = b"X-Auth-Token: " + token + b"\r\n" if token else b""
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + auth +
        b"Expect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    )


UNAUTHORIZED_CLOSE = (
    b"HTTP/1.1 401 Unauthorized\r\nserver: saltnado\r\ncontent-type: application/json\r\ncontent-length: 57\r\n"
    b"www-authenticate: Session\r\nconnection: close\r\n\r\n"
    b'{"status": "401 Unauthorized", "return": "Please log in"}'
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize("feed", ["whole", "bytewise"])
def test_no_100_continue_without_a_token_the_401_comes_at_once(feed: str) -> None:
    binding = Binding()
    raw = expecting("/minions")
    out = binding.feed(raw) if feed == "whole" else binding.feed(*bytewise(raw))
    assert out == UNAUTHORIZED_CLOSE  # no 100: the body is never asked for, nor read
    assert binding.conn.finished and binding.calls == []
    assert [(s.request.target, s.status) for s in binding.served] == [("/minions", 401)]


def test_no_100_continue_for_an_unknown_token() -> None:
    binding = Binding(record={})
    assert binding.feed(expecting("/", TOKEN.encode())) == UNAUTHORIZED_CLOSE
    assert binding.calls == [GetToken(TOKEN)] and binding.conn.finished


@pytest.mark.parametrize(("path", "status"), [("/nope", 404), ("/jobs", 405), ("/events", 405)])
def test_no_100_continue_for_a_head_refused_by_route_or_method(path: str, status: int) -> None:
    binding = Binding()
    out = binding.feed(expecting(path, TOKEN.encode()))
    assert out.startswith(b"HTTP/1.1 %d " % status) and b"connection: close\r\n" in out
    assert CONTINUE not in out and binding.conn.finished


def test_100_continue_for_a_valid_token_then_the_answer_after_the_body() -> None:
    binding = Binding()
    assert binding.feed(expecting("/", TOKEN.encode())) == CONTINUE
    assert binding.requests == [] and not binding.conn.finished
    out = binding.feed(b"{}")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")  # the lowstate is checked once it is here
    assert binding.calls == [GetToken(TOKEN), GetToken(TOKEN)]  # judged on the head, then run


def test_100_continue_when_the_body_holds_the_credentials() -> None:
    binding = Binding()
    assert binding.feed(expecting("/login")) == CONTINUE  # /login cannot judge without its body
    assert binding.feed(b"{}").startswith(b"HTTP/1.1 400 Bad Request\r\n")


# -- routing on the path as sent; parameters decoded after matching -------------------


@pytest.mark.parametrize(
    ("path", "route", "params"),
    [
        ("/minions/minion%31", "minions", ("minion1",)),
        ("/minions/a%2fb", "minions", ("a%2fb",)),  # %2F never becomes a separator
        ("/minions/a%2Fb%20c", "minions", ("a%2Fb c",)),
        ("/hook/ci/%62uild", "hook", ("/ci/build",)),
        ("/jobs/a%20b", "jobs", ("a b",)),
        ("/%6cogin", None, None),
        ("/minions%2fminion1", None, None),
        (f"/all%5fevents/{TOKEN}", None, None),
    ],
)
def test_routes_match_the_path_as_sent(path: str, route: str | None, params: tuple[str, ...] | None) -> None:
    found = Router().match(path)
    assert (found.name, found.params) == (route, params) if found else (route is None)


@pytest.mark.parametrize(("sent", "target"), [("minion%31", "minion1"), ("a%2fb", "a%2fb"), ("a%2Fb", "a%2Fb")])
def test_a_percent_encoded_minion_id_reaches_salt_decoded_but_for_slashes(sent: str, target: str) -> None:
    from saltnado_core.salt_calls import RunLowstate

    binding = Binding()
    binding.salt.answers = {GetToken: RECORD, RunLowstate: {"minion1": {}}}
    auth = b"X-Auth-Token: " + TOKEN.encode()
    binding.feed(b"GET /minions/" + sent.encode() + b" HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n\r\n")
    assert binding.calls[-1].low["tgt"] == target


# -- what the connection answers on its own is reported for the access log ------------


@pytest.mark.parametrize(
    ("raw", "method", "target", "status"),
    [
        (b"GET /x?token=" + TOKEN.encode() + b" HTTP/1.1 x\r\nHost: t\r\n\r\n", "-", "-", 400),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", "GET", "/", 505),
        (b"POST /login HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "POST", "/login", 400),
        (b"POST /login HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n", "POST", "/login", 413),
    ],
)
def test_refused_requests_are_served_for_the_log(raw: bytes, method: str, target: str, status: int) -> None:
    binding = Binding()
    binding.feed(raw)
    assert binding.requests == []  # the app never saw it
    [served] = binding.served
    assert (served.request.method, served.request.target, served.status) == (method, target, status)
    assert not served.by_app


def test_a_408_is_reported_after_the_tick_that_sent_it() -> None:
    conn = ServerConnection(Limits(), EventStreams())
    conn.receive_data(b"GET /all_events/" + TOKEN.encode() + b" HTTP/1.1\r\n")
    conn.tick(0.0)
    assert conn.tick(100.0)  # header_timeout: 408
    [rejection] = conn.take_rejections()
    assert rejection.response.status == 408 and rejection.request.method == "-"
    assert conn.take_rejections() == []
