"""Core security rules, bytes in and bytes out: who may read the event bus, streams
closed when Salt revokes their token, websocket Origin checks, CORS on every
response and stream, and tokens masked for logs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from saltnado_core import App, ConfigError, EventStreams, Limits, Phase, ServerConnection, Settings
from saltnado_core.permissions import EVENTS_FORBIDDEN, may_read_events
from saltnado_core.revocation import TokenRecheck, TokenStore
from saltnado_core.salt_calls import GetAuthList, GetToken, SaltCall
from saltnado_core.testing import Driver, Unanswered
from saltnado_core.tokens import redact_tokens

NOW = 1_700_000_000.0
TOKEN = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4
RECORD = {"token": TOKEN, "start": NOW, "expire": NOW + 100, "name": "alice", "eauth": "pam"}
OTHER_RECORD = {**RECORD, "token": OTHER, "name": "bob"}
SETTINGS = Settings(websockets=True, disable_ssl=True)
FULL = [".*", "@runner"]

HANDSHAKE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
    b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
READY = bytes(FrameProtocol(client=True, extensions=[]).send_data("websocket client ready", True))


def ws_request(path: str, token: str = TOKEN, *headers: str) -> bytes:
    lines = [f"GET /{path}/{token} HTTP/1.1", "Host: salt.example:8000", *headers]
    return ("\r\n".join(lines) + "\r\n" + HANDSHAKE + "\r\n").encode()


def sse_request(token: str = TOKEN, *headers: str) -> bytes:
    lines = ["GET /events HTTP/1.1", "Host: salt.example:8000", f"X-Auth-Token: {token}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Client(Driver):
    """One connection driven like a binding does, Salt answering from ``records``:
    tokens → records, and ``auth_lists``: tokens → Salt's permission list."""

    def __init__(
        self,
        streams: EventStreams,
        settings: Settings = SETTINGS,
        records: dict[str, Any] | None = None,
        auth_lists: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(ServerConnection(Limits(), streams), App(settings), self.salt_answer, now=NOW)
        self.records = records if records is not None else {TOKEN: RECORD, OTHER: OTHER_RECORD}
        self.auth_lists = auth_lists if auth_lists is not None else {TOKEN: FULL, OTHER: FULL}

    def salt_answer(self, call: SaltCall) -> Any:
        if isinstance(call, GetToken):
            return self.records.get(call.token, {})
        if isinstance(call, GetAuthList):
            return self.auth_lists.get(call.record["token"])
        raise Unanswered(call)


def json_error(status: str, reason: str) -> bytes:
    body = json.dumps({"status": status, "return": reason}).encode()
    head = f"HTTP/1.1 {status}\r\nserver: saltnado\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


def frames(data: bytes) -> list[tuple[Opcode, Any]]:
    reader = FrameProtocol(client=True, extensions=[])
    reader.receive_bytes(data)
    return [(frame.opcode, frame.payload) for frame in reader.received_frames()]


# -- who may read the event bus -------------------------------------------------------


@pytest.mark.parametrize(
    ("auth_list", "allowed"),
    [
        ([".*"], True),
        (["@events"], True),
        (["test.ping", "@events"], True),
        ([{"*": [".*"]}], True),
        ([{"*": ".*"}], True),
        (["@runner", "@wheel", "@jobs", ".*"], True),  # the lab's operator: unchanged
        (["test.ping"], False),
        (["test.*", "grains.items"], False),
        ([{"web*": [".*"]}], False),  # all functions, but not on every minion
        ([{"*": ["test.ping"]}], False),
        ([{"*": [".*"], "x": []}], False),  # not a Salt target entry (one key)
        (["@runner", "@wheel", "@jobs"], False),
        (["@event"], False),
        ([], False),  # logged in, but nothing allowed
        (None, False),  # the user's eauth is not in external_auth
        ("@events", False),  # not a list: not Salt's shape
    ],
)
def test_who_may_read_events(auth_list: Any, allowed: bool) -> None:
    assert may_read_events(auth_list) is allowed


FORBIDDEN = json_error("403 Forbidden", EVENTS_FORBIDDEN)


@pytest.mark.parametrize("path", ["all_events", "formatted_events"])
def test_websocket_without_event_permission_is_403_before_the_upgrade(path: str) -> None:
    streams = EventStreams()
    client = Client(streams, auth_lists={TOKEN: ["test.ping"]})
    assert client.feed(ws_request(path)) == FORBIDDEN
    assert client.calls == [GetToken(TOKEN), GetAuthList(RECORD)]
    assert client.conn.phase is Phase.HTTP  # refused; the connection stays HTTP
    assert client.feed(READY) == b""  # not a websocket: nothing is streamed
    assert len(streams.all_events) == 0 and len(streams.formatted) == 0


def test_events_without_event_permission_is_403() -> None:
    streams = EventStreams()
    client = Client(streams, auth_lists={TOKEN: None})
    assert client.feed(sse_request()) == FORBIDDEN
    assert len(streams.events) == 0


def test_unknown_token_is_401_without_asking_for_permissions() -> None:
    client = Client(EventStreams(), records={})
    assert client.feed(ws_request("all_events")).startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert client.calls == [GetToken(TOKEN)]


def test_event_permission_opens_the_stream() -> None:
    client = Client(EventStreams(), auth_lists={TOKEN: ["@events"]})
    assert client.feed(ws_request("all_events") + READY) == SWITCHING
    assert client.conn.phase is Phase.STREAMING


# -- revoked tokens close their streams -------------------------------------------------


def open_streams() -> tuple[EventStreams, dict[str, Client]]:
    streams = EventStreams()
    clients = {name: Client(streams) for name in ("ws1", "ws2", "formatted", "sse", "other", "http")}
    for name in ("ws1", "ws2"):
        assert clients[name].feed(ws_request("all_events") + READY) == SWITCHING
    assert clients["formatted"].feed(ws_request("formatted_events") + READY).startswith(SWITCHING)
    assert clients["sse"].feed(sse_request()).startswith(b"HTTP/1.1 200 OK\r\n")
    assert clients["other"].feed(ws_request("all_events", OTHER) + READY) == SWITCHING
    clients["http"].feed(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    return streams, clients


def test_stream_tokens_are_counted_as_streams_attach_and_detach() -> None:
    streams, clients = open_streams()
    assert streams.tokens == {TOKEN: 4, OTHER: 1}  # the plain HTTP connection holds none
    waiting = Client(streams)
    waiting.feed(ws_request("all_events"))  # upgraded, not ready yet: not streaming
    assert streams.tokens[TOKEN] == 4
    clients["ws1"].conn.close(1000, "bye")
    clients["sse"].conn.close()
    clients["other"].feed(b"")  # EOF
    assert streams.tokens == {TOKEN: 2}


def unlisted(streams: EventStreams) -> TokenRecheck:
    """A re-check for a token store that cannot be listed (not localfs): GetToken in turn."""
    recheck = TokenRecheck()
    [scan] = recheck.calls(streams.tokens)
    assert recheck.done(scan, None, NOW, []) == [] and recheck.store is TokenStore.UNLISTED
    return recheck


def test_one_recheck_per_distinct_stream_token() -> None:
    streams, clients = open_streams()
    recheck = unlisted(streams)
    conns = [client.conn for client in clients.values()]
    assert recheck.calls(streams.tokens) == [GetToken(TOKEN), GetToken(OTHER)]
    assert recheck.calls(streams.tokens) == []  # both still being checked
    assert recheck.done(GetToken(OTHER), OTHER_RECORD, NOW, conns) == []  # still valid
    assert recheck.calls(streams.tokens) == [GetToken(OTHER)]


def test_a_revoked_token_closes_every_stream_holding_it() -> None:
    streams, clients = open_streams()
    recheck = unlisted(streams)
    conns = [client.conn for client in clients.values()]
    [check, _] = recheck.calls(streams.tokens)
    closed = recheck.done(check, {}, NOW, conns)  # Salt's get_tok: {} once the token is removed
    assert closed == [clients[name].conn for name in ("ws1", "ws2", "formatted", "sse")]
    for name in ("ws1", "ws2", "formatted"):
        assert frames(clients[name].conn.data_to_send())[-1] == (Opcode.CLOSE, (1008, "token revoked"))
        assert clients[name].conn.phase is Phase.CLOSING
    assert clients["sse"].conn.data_to_send() == b"0\r\n\r\n"  # the event stream ends
    assert clients["sse"].conn.phase is Phase.DONE
    assert clients["other"].conn.phase is Phase.STREAMING and clients["other"].conn.data_to_send() == b""
    assert len(streams.all_events) == 1 and len(streams.events) == 0 and len(streams.formatted) == 0
    assert streams.tokens == {OTHER: 1}


def test_a_websocket_not_yet_ready_is_closed_with_its_token() -> None:
    streams = EventStreams()
    waiting = Client(streams)
    waiting.feed(ws_request("all_events"))
    assert TokenRecheck().done(GetToken(TOKEN), {}, NOW, [waiting.conn]) == [waiting.conn]
    assert frames(waiting.conn.data_to_send()) == [(Opcode.CLOSE, (1008, "token revoked"))]


def test_a_token_expired_by_salts_record_closes_with_that_reason() -> None:
    _, clients = open_streams()
    conns = [clients["ws1"].conn, clients["other"].conn]
    assert TokenRecheck().done(GetToken(TOKEN), {**RECORD, "expire": NOW - 1}, NOW, conns) == [conns[0]]
    assert frames(clients["ws1"].conn.data_to_send()) == [(Opcode.CLOSE, (1008, "token expired"))]


def test_a_token_gone_at_its_expiry_is_expired_not_revoked() -> None:
    _, clients = open_streams()
    conns = [client.conn for client in clients.values()]
    recheck = TokenRecheck()
    # Asked just before it expired; Salt forgot it meanwhile: its cache rounds the
    # expiry down to a whole second.
    expired = recheck.done(GetToken(TOKEN), {}, NOW + 99.2, conns)
    assert expired == [clients[name].conn for name in ("ws1", "ws2", "formatted", "sse")]
    assert frames(clients["ws1"].conn.data_to_send()) == [(Opcode.CLOSE, (1008, "token expired"))]
    assert recheck.done(GetToken(OTHER), {}, NOW + 98.9, conns) == [clients["other"].conn]  # earlier: revoked
    assert frames(clients["other"].conn.data_to_send()) == [(Opcode.CLOSE, (1008, "token revoked"))]


def test_a_failed_recheck_keeps_the_streams_and_asks_again() -> None:
    streams, clients = open_streams()
    recheck = unlisted(streams)
    [check, _] = recheck.calls(streams.tokens)
    recheck.failed(check)
    assert clients["ws1"].conn.phase is Phase.STREAMING and len(recheck) == 1
    assert recheck.calls(streams.tokens) == [check]


def test_a_stream_closed_while_its_token_is_checked_is_left_alone() -> None:
    streams, clients = open_streams()
    recheck = unlisted(streams)
    conn = clients["ws1"].conn
    [check, _] = recheck.calls(streams.tokens)
    conn.close(1001, "server shutting down")
    close = conn.data_to_send()
    assert conn not in recheck.done(check, {}, NOW, [conn])
    assert frames(close) == [(Opcode.CLOSE, (1001, "server shutting down"))]
    assert conn.data_to_send() == b""


def test_stream_token_is_known_only_while_streaming() -> None:
    client = Client(EventStreams())
    assert client.conn.stream_token is None
    client.feed(ws_request("all_events"))
    assert client.conn.stream_token == TOKEN  # upgraded, waiting for "websocket client ready"
    client.feed(READY)
    assert client.conn.stream_token == TOKEN
    client.conn.close(1000, "bye")
    assert client.conn.stream_token is None


# -- websocket Origin ------------------------------------------------------------------

CROSS_ORIGIN = json_error("403 Forbidden", "Cross origin websockets not allowed")


@pytest.mark.parametrize(
    ("cors_origin", "origin", "accepted"),
    [
        (None, None, True),  # no Origin: not a browser (websocket-client, pepper, curl)
        (None, "http://salt.example:8000", True),  # the page's own origin
        (None, "https://SALT.example:8000", True),  # host names are case-insensitive
        (None, "http://salt.example", False),  # another port is another origin
        (None, "https://evil.example", False),
        (None, "null", False),
        (None, "", False),
        ("https://ui.example", "https://ui.example", True),
        ("https://ui.example", "https://evil.example", False),
        ("https://ui.example", "http://salt.example:8000", True),  # its own origin still
        (["https://a.example", "https://*.corp.example"], "https://x.corp.example", True),
        (["https://a.example", "https://*.corp.example"], "https://corp.example", False),
        (["https://a.example", "https://*.corp.example"], "https://x.corp.example.evil", False),
        ("*", "https://anything.example", True),
        ("*", "null", True),
    ],
)
def test_websocket_origin(cors_origin: Any, origin: str | None, accepted: bool) -> None:
    settings = dataclasses.replace(SETTINGS, cors_origin=cors_origin)
    client = Client(EventStreams(), settings)
    headers = () if origin is None else (f"Origin: {origin}",)
    out = client.feed(ws_request("all_events", TOKEN, *headers))
    if accepted:
        assert out == SWITCHING
    else:
        assert out == CROSS_ORIGIN
        assert client.calls == []  # refused before Salt is asked anything


def test_legacy_sec_websocket_origin_is_checked_too() -> None:
    client = Client(EventStreams())
    out = client.feed(ws_request("all_events", TOKEN, "Sec-WebSocket-Origin: https://evil.example"))
    assert out == CROSS_ORIGIN


# -- CORS on responses, preflight and event streams --------------------------------------


def test_preflight_for_an_allowed_origin_is_literal() -> None:
    settings = dataclasses.replace(SETTINGS, cors_origin=["https://*.corp.example"])
    client = Client(EventStreams(), settings)
    out = client.feed(
        b"OPTIONS /minions HTTP/1.1\r\nHost: salt.example:8000\r\nOrigin: https://ui.corp.example\r\n"
        b"Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: X-Auth-Token, Content-Type\r\n\r\n"
    )
    assert out == (
        b"HTTP/1.1 204 No Content\r\nserver: saltnado\r\n"
        b"access-control-allow-headers: Accept, Cache-Control, Content-Type, X-Auth-Token, X-Requested-With, X-Salt-Master\r\n"
        b"access-control-allow-methods: OPTIONS, GET, POST\r\n"
        b"access-control-expose-headers: X-Auth-Token\r\n"
        b"access-control-max-age: 1400\r\n"
        b"access-control-allow-origin: https://ui.corp.example\r\n"
        b"vary: Origin\r\n"
        b"access-control-allow-credentials: true\r\n\r\n"
    )


@pytest.mark.parametrize(
    "asked",
    [
        b"X-Auth-Token,\tX-Evil\xff\x85 <script>",  # a tab, obs-text, a C1 control (NEL), markup
        b"X-Auth-Token, " + b"X-Pad, " * 2000,  # 14 KB asked for: answered with the same few bytes
        b"",
    ],
)
def test_preflight_names_a_fixed_list_never_what_was_asked(asked: bytes) -> None:
    settings = dataclasses.replace(SETTINGS, cors_origin=["https://*.corp.example"])
    out = Client(EventStreams(), settings).feed(
        b"OPTIONS / HTTP/1.1\r\nHost: salt.example:8000\r\nOrigin: https://ui.corp.example\r\n"
        b"Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: " + asked + b"\r\n\r\n"
    )
    assert out.startswith(
        b"HTTP/1.1 204 No Content\r\nserver: saltnado\r\n"
        b"access-control-allow-headers: Accept, Cache-Control, Content-Type, X-Auth-Token, X-Requested-With, X-Salt-Master\r\n"
        b"access-control-allow-methods: OPTIONS, GET, POST\r\n"
    )
    assert b"Evil" not in out and b"Pad" not in out and len(out) < 400


def test_preflight_for_another_origin_allows_nothing() -> None:
    settings = dataclasses.replace(SETTINGS, cors_origin=["https://*.corp.example"])
    out = Client(EventStreams(), settings).feed(
        b"OPTIONS / HTTP/1.1\r\nHost: salt.example:8000\r\nOrigin: https://evil.example\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"access-control-allow-origin" not in out and b"access-control-allow-credentials" not in out


def test_star_allows_every_origin_without_credentials() -> None:
    settings = dataclasses.replace(SETTINGS, cors_origin="*")
    out = Client(EventStreams(), settings).feed(
        b"GET / HTTP/1.1\r\nHost: salt.example:8000\r\nOrigin: https://anything.example\r\n\r\n"
    )
    assert b"\r\naccess-control-allow-origin: *\r\nvary: Origin\r\n" in out
    assert b"access-control-allow-credentials" not in out


def test_event_stream_carries_cors_headers() -> None:
    settings = dataclasses.replace(SETTINGS, cors_origin="https://ui.example")
    out = Client(EventStreams(), settings).feed(sse_request(TOKEN, "Origin: https://ui.example"))
    assert out == (
        b"HTTP/1.1 200 OK\r\nserver: saltnado\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"x-accel-buffering: no\r\naccess-control-allow-origin: https://ui.example\r\nvary: Origin\r\n"
        b"access-control-allow-credentials: true\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nretry: 400\n\r\n"
    )


# -- tokens masked for logs ------------------------------------------------------------


def test_redact_tokens_masks_every_token_shape() -> None:
    for token in ("a" * 32, "0f" * 20, TOKEN, "F" * 128):  # md5, sha1, sha256, sha512 digests
        assert redact_tokens(f"x {token}, /all_events/{token}?t={token}") == "x <token>, /all_events/<token>?t=<token>"
    kept = "jid 20240101120000123456, id minion1, 31 hex " + "a" * 31
    assert redact_tokens(kept) == kept


# -- TLS settings ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, "true", "Yes", "on", 1])
def test_disable_ssl_true(value: Any) -> None:
    assert Settings.from_opts({"rest_tornado": {"port": 8000, "disable_ssl": value}}).disable_ssl


@pytest.mark.parametrize("value", [False, "false", "no", "off", 0, None])
def test_disable_ssl_false_needs_a_certificate(value: Any) -> None:
    # A quoted "false" is not the truthy string it is to Python: TLS stays on.
    with pytest.raises(ConfigError, match="ssl_crt"):
        Settings.from_opts({"rest_tornado": {"port": 8000, "disable_ssl": value}})
    settings = Settings.from_opts({"rest_tornado": {"port": 8000, "disable_ssl": value, "ssl_crt": "/c.pem"}})
    assert not settings.disable_ssl and (settings.ssl_crt, settings.ssl_key) == ("/c.pem", None)


@pytest.mark.parametrize("value", ["maybe", 2, []])
def test_disable_ssl_of_another_kind_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match="'rest_tornado: disable_ssl' must be True or False"):
        Settings.from_opts({"rest_tornado": {"port": 8000, "disable_ssl": value}})


# -- tokens are never compared with == ------------------------------------------------------


def _token_comparisons(source: str) -> list[int]:
    """Lines comparing something named *token* with ``==``/``!=`` to anything but a literal."""
    import ast

    def names_token(node: ast.expr) -> bool:
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        return "token" in name.lower()

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            operands = [node.left, *node.comparators]
            if any(names_token(o) for o in operands) and not any(isinstance(o, ast.Constant) for o in operands):
                lines.append(node.lineno)
    return lines


def test_the_checker_finds_token_comparisons() -> None:
    assert _token_comparisons("ok = request_token == stored\nok = self.token != other") == [1, 2]
    assert _token_comparisons("ok = token is None or token == ''\nsame = same_token(a, b)") == []


def test_no_token_is_compared_with_equality() -> None:
    # A client-supplied token compared with == would leak, by timing, how much of it
    # matches; saltnado leaves token lookups to Salt and has same_token (hmac.compare_digest)
    # for any local comparison.
    from pathlib import Path

    import saltnado_asyncio
    import saltnado_cli
    import saltnado_core
    import saltnado_runtime
    import saltnado_salt
    import saltnado_trio

    found = {}
    packages = (saltnado_core, saltnado_runtime, saltnado_salt, saltnado_trio, saltnado_asyncio, saltnado_cli)
    for package in packages:
        for path in Path(package.__file__).parent.glob("*.py"):
            if lines := _token_comparisons(path.read_text()):
                found[path.name] = lines
    assert found == {}
