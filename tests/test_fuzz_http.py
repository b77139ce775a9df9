"""Fuzzing the HTTP side: any bytes through :class:`ServerConnection` and :class:`App`,
driven the way a binding drives them, with Salt's answers (and failures) drawn too.

Inputs: raw random bytes; near-valid requests — every route, method, body type and
framing, pipelined, with a few bytes mutated — cut at random points; upgrade
requests followed by random websocket frames. Whatever arrives:

* no exception, and no handler error (a 500 means a bug: ``exchange.error``);
* the output is well-formed HTTP/1.1 responses, one per request in order, plus at
  most one protocol-error answer (400/413/431, ``Connection: close``) at the end;
  every error is ``{"status", "return"}`` with a reason, in JSON or YAML; a 405
  names the allowed methods; after a 101 only well-formed websocket frames follow;
* nothing buffered grows past its limit (head, body, websocket message, outbox);
* after EOF the connection is finished and stays silent.

Sizes from ``SALTNADO_FUZZ`` (see tests/fuzzing.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import (
    FUZZ,
    WireResponse,
    check_error_body,
    check_one_close_last,
    client_frames,
    count,
    mutated,
    read_responses,
    read_server_frames,
    split,
)
from saltnado_core import (
    App,
    EventStreams,
    Limits,
    Phase,
    Request,
    SaltCall,
    SaltEvent,
    ServerConnection,
    Settings,
)
from saltnado_core.salt_calls import (
    FireEvent,
    GetAuthList,
    GetToken,
    MakeToken,
    PublishGrains,
    RemoveToken,
    RunLowstate,
)
from saltnado_core.driving import Served
from saltnado_core.testing import Driver
from test_fuzz_websocket import check_session_bounded

from core_literals import NOW, RECORD, TOKEN

SETTINGS = Settings(
    websockets=True,
    disable_ssl=True,
    cors_origin=["http://good.example"],
    external_auth={"pam": {"saltuser": [".*"]}},
    netapi_enable_clients=("local", "local_async", "runner", "wheel"),
)
SMALL = Limits(max_header_bytes=512, max_body_bytes=64, max_ws_message_bytes=64, outbox_max_messages=4)
ROOMY = Limits(max_header_bytes=2048, max_body_bytes=8192, max_ws_message_bytes=256)
LIMITS = [SMALL, ROOMY, ROOMY]
Choose = Callable[[Sequence[Any]], Any]  # picks one of the options
# Every final status the server may send; never 500 (an unexpected error is a bug here).
STATUSES = {200, 202, 204, 400, 401, 403, 404, 405, 406, 413, 415, 426, 431, 503, 504}


# -- Salt, as the binding runs it: answers (or failures) drawn by hypothesis ------------------
# Named like Salt's exceptions: the core classifies them by name.
class SaltDaemonNotRunning(Exception):
    pass


class SaltReqTimeoutError(Exception):
    pass


class EauthAuthenticationError(Exception):
    pass


class AuthorizationError(Exception):
    pass


class SaltInvocationError(Exception):
    pass


class SaltClientTimeout(Exception):
    pass


ANSWERS: dict[type, list[Any]] = {
    GetToken: [RECORD, RECORD, {}, {**RECORD, "expire": NOW - 1}, {"expire": "soon"}, SaltDaemonNotRunning()],
    GetAuthList: [[".*"], ["@events"], [{"*": [".*"]}], ["test.ping"], [], None, SaltDaemonNotRunning()],
    MakeToken: [RECORD, {}, {**RECORD, "eauth": "ldap"}, EauthAuthenticationError(), SaltReqTimeoutError()],
    RunLowstate: [
        {"minion1": True},
        {"jid": "20240101120000123456", "minions": ["minion1"]},
        "No minions matched the target.",
        {b"bytes": {1, 2}},
        AuthorizationError(),
        EauthAuthenticationError(),
        SaltInvocationError("Client disabled: 'wheel'"),
        SaltReqTimeoutError(),
        SaltClientTimeout(),
    ],
    FireEvent: [True, False, SaltDaemonNotRunning()],
    RemoveToken: [None, SaltDaemonNotRunning()],
    PublishGrains: [{"jid": "1", "minions": []}, AuthorizationError(), SaltInvocationError("Client disabled")],
}


class Fuzzed(Driver):
    """One connection driven as a binding does: feed, answer requests, run Salt calls, write."""

    def __init__(self, limits: Limits, choose: Choose) -> None:
        self.limits = limits
        self.choose = choose  # picks Salt's answers and when events arrive
        self.streams = EventStreams()
        conn = ServerConnection(limits, self.streams)
        super().__init__(conn, App(SETTINGS), self.salt_answer, now=NOW, stream_calls=True)
        self.out = b""
        self.clock = 0.0  # the binding's monotonic clock, for tick()

    def tick(self) -> None:
        """Time passes (from nothing to past every timeout) and the binding ticks."""
        self.clock += self.choose((0.0, 1.0, 11.0, 21.0, 61.0))
        if self.conn.tick(self.clock):
            self.out += self.conn.data_to_send()

    def salt_answer(self, call: SaltCall) -> Any:
        answer = self.choose(ANSWERS[type(call)])
        if isinstance(answer, Exception):
            raise answer
        return dict(answer) if isinstance(answer, dict) else answer

    def serve(self) -> list[Served]:
        """Answered (a 500 would be a bug), then checked before the output is taken."""
        served = super().serve()
        for answered in served:
            assert answered.error is None, answered.error
        self.check_bounded()
        return served

    def check_bounded(self) -> None:
        limits, conn = self.limits, self.conn
        if conn.phase is Phase.HTTP:
            http = conn._http
            assert len(http._body) <= limits.max_body_bytes
            # what h11 holds unparsed: at most one incomplete head or chunk line
            assert len(http._h11._receive_buffer) <= limits.max_header_bytes
        if conn._ws is not None:
            check_session_bounded(conn._ws, limits.max_ws_message_bytes)
        assert len(conn.outbox) <= limits.outbox_max_messages
        assert conn.outbox.queued_bytes <= limits.outbox_max_bytes

    def finish(self) -> None:
        """EOF: the connection must end by itself and say nothing more."""
        self.out += self.feed(b"")
        assert self.conn.finished, self.conn.phase
        assert self.conn.data_to_send() == b""
        self.conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert self.conn.next_request() is None and self.conn.data_to_send() == b""

    # -- what came out -------------------------------------------------------------------------
    def check_output(self) -> None:
        head = [r.method == "HEAD" for r in self.requests]
        responses, after = read_responses(self.out, lambda i: head[i] if i < len(head) else None)
        finals = [r for r in responses if r.status != 100]
        assert len(self.requests) <= len(finals) <= len(self.requests) + 1, (self.requests, finals)
        for i, response in enumerate(finals):
            request = self.requests[i] if i < len(self.requests) else None
            check_response(response, request)
        if finals and finals[-1].status == 101:
            frames = read_server_frames(after)
            check_one_close_last(frames)
        elif finals and finals[-1].header("content-type") == "text/event-stream":
            check_chunks(after)
        else:
            assert after == b""


def check_response(response: WireResponse, request: Request | None) -> None:
    status = response.status
    if request is None:  # the peer broke HTTP: answered, then the connection closes
        # 408: a request not received in full in time; 501: a transfer coding h11 lacks;
        # 505: a version other than HTTP/1.0 and 1.1
        assert status in (400, 408, 413, 431, 501, 505), response
        assert response.header("connection") == "close"
        check_error_body(response, head=not response.body)  # no body: it answers a HEAD
        return
    if status == 101:
        assert request.path.startswith(("/all_events/", "/formatted_events/"))
        return
    assert status in STATUSES, (status, request)
    head = request.method == "HEAD"
    if status >= 400:
        check_error_body(response, head)
        if status == 405:
            allowed = {m.strip() for m in (response.header("allow") or "").split(",")}
            assert allowed and request.method not in allowed, (request.method, allowed)
        if status == 401:
            assert response.header("www-authenticate") == "Session"
    elif status == 204:
        assert response.body == b""
    elif response.header("content-type") != "text/event-stream" and not head:
        media = response.header("content-type")
        assert media in ("application/json", "application/x-yaml")
        json.loads(response.body) if media == "application/json" else yaml.safe_load(response.body)


def check_chunks(data: bytes) -> None:
    """An event stream's body: HTTP chunks, perhaps ending with the last chunk."""
    rest = data
    while rest:
        size, sep, rest = rest.partition(b"\r\n")
        assert sep, data
        n = int(size, 16)
        if n == 0:
            assert rest == b"\r\n"
            return
        assert rest[n : n + 2] == b"\r\n"
        rest = rest[n + 2 :]


# -- near-valid requests -----------------------------------------------------------------------

# Weighted by repetition: mostly what the endpoints serve, now and then anything.
METHODS = ["GET"] * 4 + ["POST"] * 5 + ["PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "BREW"]
ENDPOINTS = ["/", "/login", "/logout", "/minions", "/minions/minion1", "/jobs", "/jobs/20240101120000123456",
             "/run", "/events", "/hook", "/hook/ci/build?x=1&x=2", f"/all_events/{TOKEN}",
             f"/formatted_events/{TOKEN}?delta=1"]
ODD_PATHS = [
    "/minions/", f"/all_events/{TOKEN[:10]}", "/nope", "*", "/%2e%2e/login", "//", "/login?", "/events?token=x",
    "/minions/%ff%00", f"/all_events/{TOKEN}/extra", "/keys", "/LOGIN", "/hook/%0d%0aX: y",
]
CONTENT_TYPES = ["application/json"] * 3 + ["application/x-www-form-urlencoded", "application/x-yaml"] * 2 + [
    "text/yaml", "text/plain", "application/json; charset=utf-8", "APPLICATION/JSON", "application/xml",
    "multipart/form-data; boundary=x", "",
]
ACCEPTS = [
    "*/*", "application/json", "application/x-yaml", "text/yaml", "text/html", "application/json;q=0",
    "text/html;q=0.9, application/x-yaml;q=0.1", "application/*;q=nan", "", ";;,,", "application/json;q=1e999",
]
BODIES = [
    b'{"client": "local", "tgt": "*", "fun": "test.ping"}',
    b'[{"client": "runner", "fun": "jobs.list_jobs"}, {"client": "wheel", "fun": "key.list_all"}]',
    b'{"client": "local_async", "tgt": "*", "fun": "test.arg", "arg": "x"}',
    b'{"tgt": "minion1", "fun": "test.ping"}',
    b'{"username": "saltuser", "password": "p", "eauth": "pam"}',
    b'[{"username": "saltuser", "password": "p", "eauth": "pam"}]',
    b'{"client": "local", "tgt": "*", "fun": "test.ping", "token": "' + TOKEN.encode() + b'"}',
    b"username=saltuser&password=p&eauth=pam",
    b"client=local&tgt=*&fun=test.ping&arg=1&arg=2",
    b"client: local\ntgt: '*'\nfun: test.ping\n",
    b"- client: runner\n  fun: jobs.list_jobs\n",
    b"{nope", b"- [", b"\xff\xfe\x00", b"null", b"[]", b"{}", b'"str"', b"[1, 2]", b'{"client": "nope"}',
    b'{"client": "ssh"}', b'{"username": 1, "password": [], "eauth": null}', b"2024-01-01", b"{a: !!set {x}}",
    b"1e999999", b"NaN", b"? !!binary aGk=\n: 1\n", b"!!python/object/apply:os.system [id]\n",
]
ODD_BODIES = [  # built when drawn: nesting past the parsers' recursion limits, YAML aliases
    lambda n: b"[" * n + b"]" * n,
    lambda n: b"[" * n,
    lambda n: b'{"a": ' * n + b"1" + b"}" * n,
    lambda n: b"- " * n + b"x",
    lambda n: b"a: &a [x, x]\n" + b"".join(b"%c: &%c [*%c, *%c]\n" % (98 + i, 98 + i, 97 + i, 97 + i) for i in range(min(n, 20))),
]
lowstate_keys = st.sampled_from(["client", "tgt", "fun", "arg", "kwarg", "username", "password", "eauth", "token",
                                 "timeout", "tgt_type", "full_return"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.sampled_from(["local", "runner", "wheel"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(lowstate_keys | st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)
bodies = st.one_of(
    st.sampled_from(BODIES),
    st.sampled_from(BODIES),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: yaml.safe_dump(v).encode()),
    st.builds(lambda make, n: make(n), st.sampled_from(ODD_BODIES), st.sampled_from([10, 500, 1000, 3000])),
    st.binary(max_size=64),
)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=20)


@st.composite
def request_bytes(draw: st.DrawFn) -> bytes:
    """One request, mostly well-formed, on any route, with any of the headers the server reads."""
    method = draw(st.sampled_from(METHODS))
    if draw(st.integers(0, 9)):
        path = draw(st.sampled_from(ENDPOINTS * 4 + ODD_PATHS))
    else:
        path = "/" + draw(st.text("/abcdefgh%?=&.-_~", max_size=30))
    version = draw(st.sampled_from(["1.1"] * 18 + ["1.0", "2.0"]))
    headers: list[tuple[str, str]] = []
    if draw(st.integers(0, 30)):
        headers.append(("Host", "salt.example"))
    body = draw(bodies) if method != "GET" or draw(st.integers(0, 9)) == 0 else b""
    for name, choices, one_in in [
        ("Content-Type", st.sampled_from(CONTENT_TYPES), 1 if body else 4),
        ("X-Auth-Token", st.sampled_from([TOKEN] * 4 + [TOKEN.upper(), "short", "zz" * 32, ""]), 2),
        ("Accept", st.sampled_from(ACCEPTS), 3),
        ("Cookie", st.sampled_from([f"session_id={TOKEN}", "session_id=", f"a=b; session_id={TOKEN}", "x"]), 5),
        ("Origin", st.sampled_from(["http://good.example", "http://evil.example", "null"]), 5),
        ("Connection", st.sampled_from(["close", "keep-alive", "Upgrade", "upgrade, keep-alive"]), 4),
        ("Upgrade", st.sampled_from(["websocket", "WebSocket", "h2c"]), 4),
        ("Sec-WebSocket-Version", st.sampled_from(["13", "13", "8", ""]), 4),
        ("Sec-WebSocket-Key", st.sampled_from(["dGhlIHNhbXBsZSBub25jZQ==", "short", ""]), 4),
        ("Expect", st.just("100-continue"), 8),
        ("Access-Control-Request-Headers", st.sampled_from(["X-Auth-Token", "a, b"]), 8),
        ("X-Custom", header_values, 4),
    ]:
        if draw(st.integers(1, one_in)) == 1:
            headers.append((name, draw(choices)))
    framing = draw(st.sampled_from(["length"] * 15 + ["chunked"] * 2 + ["none", "wrong_length", "both"]))
    if framing in ("length", "both"):  # "none": the body bytes read as the next request
        headers.append(("Content-Length", str(len(body))))
    if framing == "wrong_length":
        headers.append(("Content-Length", str(max(0, len(body) + draw(st.integers(-5, 5))))))
    if framing in ("chunked", "both"):
        headers.append(("Transfer-Encoding", "chunked"))
        pieces = draw(split(body, max_cuts=3)) if body else []
        body = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = f"{method} {path} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body


UPGRADE = (
    f"GET /all_events/{TOKEN} HTTP/1.1\r\nHost: salt.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()
EVENT = SaltEvent("salt/job/20240101120000123456/ret/minion1", {"return": True, "id": "minion1"})


def chooser(draw: st.DataObject) -> Choose:
    return lambda options: draw.draw(st.sampled_from(options))


def run(draw: st.DataObject, stream: bytes, limits: Limits, eof: bool = True) -> Fuzzed:
    return drive(draw.draw(split(stream, max_cuts=12)), limits, chooser(draw), eof)


def drive(chunks: Iterable[bytes], limits: Limits, choose: Choose, eof: bool = True) -> Fuzzed:
    """Feed ``chunks`` (then EOF, or a server close) and check everything that came out."""
    driver = Fuzzed(limits, choose)
    for chunk in chunks:
        driver.out += driver.feed(chunk)
        if choose((False, False, True)):
            driver.tick()
        if driver.conn.phase is Phase.STREAMING and choose((False, True)):
            driver.streams.dispatch(EVENT)
            driver.out += driver.conn.data_to_send()
    if not eof:  # the server shuts down instead
        driver.conn.close()
        driver.out += driver.conn.data_to_send()
        if driver.conn.phase is Phase.CLOSING:
            driver.out += driver.feed(b"")
    else:
        driver.finish()
    assert driver.conn.finished
    driver.check_output()
    return driver


# -- the properties ------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=600), st.sampled_from(LIMITS), st.data())
def test_arbitrary_bytes(data: bytes, limits: Limits, draw: st.DataObject) -> None:
    count("http")
    run(draw, data, limits)


@FUZZ
@given(st.lists(request_bytes(), min_size=1, max_size=4), st.sampled_from(LIMITS), st.booleans(), st.data())
def test_pipelined_near_valid_requests(requests: list[bytes], limits: Limits, eof: bool, draw: st.DataObject) -> None:
    count("http")
    stream = b"".join(requests)
    if draw.draw(st.integers(0, 2)) == 0:
        stream = draw.draw(mutated(stream))
    if draw.draw(st.integers(0, 4)) == 0:
        stream += draw.draw(client_frames)
    run(draw, stream, limits, eof)


@FUZZ
@given(client_frames, st.sampled_from(LIMITS), st.booleans(), st.data())
def test_upgrade_then_any_frames(frames: bytes, limits: Limits, mutate: bool, draw: st.DataObject) -> None:
    count("http")
    upgrade = draw.draw(mutated(UPGRADE, max_edits=1)) if mutate else UPGRADE
    ready = bytes.fromhex("8196") + b"\x00\x00\x00\x00" + b"websocket client ready"
    run(draw, upgrade + (ready if draw.draw(st.booleans()) else b"") + frames, limits)


# Request pieces glued in any order: heads, bodies and framing that do not match.
LOGIN_FORM = b"username=saltuser&password=s3cret&eauth=pam"
FRAGMENTS = [
    b"GET ", b"POST ", b"PUT ", b"/", b"/login", b"/nope", b"/all_events/" + TOKEN.encode(), b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n", b"Host: x\r\n", b"Content-Length: 5\r\n", b"Content-Length: 43\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n", b"Content-Type: application/x-www-form-urlencoded\r\n",
    b"Content-Type: application/json\r\n", b"X-Auth-Token: " + TOKEN.encode() + b"\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    b"\r\n", b"5\r\nhello\r\n", b"0\r\n\r\n", LOGIN_FORM, b'{"username": "u", "password": "p", "eauth": "pam"}',
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: %d\r\n\r\n%b" % (len(LOGIN_FORM), LOGIN_FORM),
]
http_ish = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=8), max_size=20).map(b"".join)


@FUZZ
@given(http_ish, st.sampled_from(LIMITS), st.data())
def test_request_fragments_in_any_order(data: bytes, limits: Limits, draw: st.DataObject) -> None:
    count("http")
    run(draw, data, limits)
