"""Core tests for the REST layer: negotiation, CORS, lowstate rules, SSE and expiry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from saltnado_core import App, EventStreams, Limits, Request, Response, SaltEvent, ServerConnection, Settings
from saltnado_core.app import AcceptEventStream
from saltnado_core.connection import Phase
from saltnado_core.http import HTTPError
from saltnado_core.lowstate import check_clients, normalize, run
from saltnado_core.negotiation import allowed_origin, choose_media
from saltnado_core.salt_calls import FireEvent, GetAuthList, GetToken, RunLowstate
from saltnado_core.testing import Driver, handle

TOKEN = "ab" * 32
NOW = 1_000.0
RECORD = {"token": TOKEN, "expire": NOW + 100, "name": "saltdev", "eauth": "auto", "start": NOW}


def settings(**block: Any) -> Settings:
    return Settings.from_opts(
        {
            "rest_tornado": {"port": 8000, "disable_ssl": True, "websockets": True, **block},
            "external_auth": {"auto": {"saltdev": [".*"]}},
            "netapi_enable_clients": ["local", "local_async", "runner", "wheel"],
        }
    )


def request(method: str, target: str, body: bytes = b"", **headers: str) -> Request:
    hdrs = tuple((k.replace("_", "-").lower(), v) for k, v in headers.items())
    return Request(method, target, hdrs, body)


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("application/x-yaml", "application/x-yaml"),
        ("text/yaml", "application/x-yaml"),
        ("application/json;q=0.1, application/x-yaml", "application/x-yaml"),
        ("text/html;q=0.9, application/x-yaml;q=0.1", "application/x-yaml"),
        ("application/json;q=0", None),
        ("text/html", None),
    ],
)
def test_choose_media(accept: str | None, media: str | None) -> None:
    assert choose_media(accept) == media


@pytest.mark.parametrize(
    ("origin", "setting", "allowed"),
    [
        ("https://a.example", None, None),
        ("https://a.example", "*", "*"),
        ("https://a.example", "https://a.example", "https://a.example"),
        ("https://b.example", "https://a.example", None),
        ("https://x.corp.example", ["https://*.corp.example"], "https://x.corp.example"),
        ("https://evil.example", ["https://*.corp.example"], None),
        (None, ["https://a.example"], None),
    ],
)
def test_allowed_origin(origin: str | None, setting: Any, allowed: str | None) -> None:
    assert allowed_origin(origin, setting) == allowed


def test_cors_headers_on_responses_and_errors() -> None:
    app = App(settings(cors_origin=["https://*.example"]))
    ok, _ = handle(app, request("GET", "/", origin="https://ui.example"), {}, now=NOW)
    err, _ = handle(app, request("GET", "/nope", origin="https://ui.example"), {}, now=NOW)
    for response in (ok, err):
        assert ("access-control-allow-origin", "https://ui.example") in response.headers
        assert ("vary", "Origin") in response.headers
    denied, _ = handle(app, request("GET", "/", origin="https://other.test"), {}, now=NOW)
    assert not any(k == "access-control-allow-origin" for k, _ in denied.headers)


def test_preflight_without_request_headers_is_204() -> None:
    response, _ = handle(App(settings()), request("OPTIONS", "/minions"), {}, now=NOW)
    assert response.status == 204 and response.body == b""
    assert dict(response.headers)["access-control-allow-methods"] == "OPTIONS, GET, POST"


def test_lowstate_normalize() -> None:
    assert normalize({"client": "local", "arg": "x"}) == [{"client": "local", "arg": ["x"]}]
    assert normalize([{"fun": "a"}, {"fun": "b", "arg": [1]}]) == [{"fun": "a"}, {"fun": "b", "arg": [1]}]
    for bad in (None, [], {}, "text", [1]):
        with pytest.raises(HTTPError) as info:
            normalize(bad)
        assert info.value.status == 400


def test_every_client_is_checked_before_anything_runs() -> None:
    with pytest.raises(HTTPError, match="Invalid client: 'ssh'"):
        check_clients([{"client": "local"}, {"client": "ssh"}], ["local"])
    with pytest.raises(HTTPError, match="Client disabled: 'runner'. Add to 'netapi_enable_clients'"):
        check_clients([{"client": "runner"}], ["local"])


def test_lowstate_run_injects_token_and_stops_on_auth_failure() -> None:
    class EauthAuthenticationError(Exception):
        pass

    class SaltDaemonNotRunning(Exception):
        pass

    gen = run([{"client": "local", "fun": "a"}, {"client": "local", "fun": "b"}, {"client": "local", "fun": "c"}], TOKEN)
    first = next(gen)
    assert first == RunLowstate({"client": "local", "fun": "a", "token": TOKEN})
    assert TOKEN not in repr(first)
    gen.send({"m": True})
    second = gen.throw(ValueError("boom"))
    assert second.low["fun"] == "c"
    with pytest.raises(StopIteration) as done:
        gen.throw(EauthAuthenticationError())
    assert done.value.value == [{"m": True}, "Unexpected exception while handling request: boom", "Failed to authenticate"]

    gen = run([{"client": "local", "fun": "a"}], None)
    with pytest.raises(StopIteration) as done:
        next(gen)
    assert done.value.value == ["Failed to authenticate"]  # no credentials at all

    gen = run([{"client": "local", "fun": "a"}], TOKEN)
    next(gen)
    with pytest.raises(HTTPError) as info:
        gen.throw(SaltDaemonNotRunning("down"))
    assert info.value.status == 503


def test_post_root_answers_yaml_when_asked() -> None:
    req = request(
        "POST", "/", b'{"client": "local", "tgt": "*", "fun": "test.ping"}',
        content_type="application/json", accept="application/x-yaml", x_auth_token=TOKEN,
    )
    response, calls = handle(App(settings()), req, {GetToken: RECORD, RunLowstate: {"m1": True}}, now=NOW)
    assert calls[0] == GetToken(TOKEN)
    assert response == Response(200, b"return:\n- {m1: true}\n", (), "application/x-yaml")


def test_hook_strips_credentials_from_the_event() -> None:
    req = request(
        "POST", "/hook/ci?x=1&x=2", b"a=1", content_type="application/x-www-form-urlencoded",
        x_auth_token=TOKEN, cookie=f"session_id={TOKEN}", authorization="Basic Zm9v", x_custom="v",
    )
    response, calls = handle(App(settings()), req, {GetToken: RECORD, FireEvent: True}, now=NOW)
    fired = calls[-1]
    assert fired.tag == "salt/netapi/hook/ci"
    # Form bodies merge the query string's arguments, as the reference's form loader does.
    assert fired.data["post"] == {"x": ["1", "2"], "a": "1"} and fired.data["get"] == {"x": ["1", "2"]}
    assert fired.data["headers"] == {"Content-Type": "application/x-www-form-urlencoded", "X-Custom": "v"}
    assert json.loads(response.body) == {"success": True}


HOOK_HEADERS = (
    b"POST /hook/ci HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    b"X-Auth-Token: " + TOKEN.encode() + b"\r\nCookie: session_id=" + TOKEN.encode() + b"\r\n"
    b"Cookie2: $Version=1\r\nAuthorization: Basic Zm9v\r\nProxy-Authorization: Basic YmFy\r\n"
    b"X-Forwarded-Authorization: Bearer fwd\r\nX-Api-Key: k3y\r\nX-Gitlab-Token: gl\r\n"
    b"X-Hub-Signature-256: sha256=ab\r\nX-Session-Id: s1\r\nX-Client-Secret: cs\r\nX-Password: pw\r\n"
    b"X-GitHub-Event: push\r\nUser-Agent: GitHub-Hookshot/1\r\n\r\n{}"
)


def hooked_headers(**block: Any) -> dict[str, str]:
    """The headers the hook event fired for :data:`HOOK_HEADERS` carries."""
    driver = Driver(ServerConnection(Limits(), EventStreams()), App(settings(**block)), {GetToken: RECORD, FireEvent: True}, now=NOW)
    assert driver.feed(HOOK_HEADERS).endswith(b'{"success": true}')
    fired = driver.calls[-1]
    assert isinstance(fired, FireEvent) and fired.tag == "salt/netapi/hook/ci"
    return fired.data["headers"]  # type: ignore[no-any-return]


def test_hook_events_carry_no_credential_like_header() -> None:
    assert hooked_headers() == {
        "Host": "t", "Content-Type": "application/json", "Content-Length": "2",
        "X-Github-Event": "push", "User-Agent": "GitHub-Hookshot/1",
    }


def test_hook_events_carry_only_the_webhook_headers_when_set() -> None:
    # e.g. a reactor that checks GitHub's HMAC needs X-Hub-Signature-256: the operator says so.
    headers = hooked_headers(webhook_headers=["X-GitHub-Event", "x-hub-signature-256", "X-Not-Sent"])
    assert headers == {"X-Github-Event": "push", "X-Hub-Signature-256": "sha256=ab"}
    assert hooked_headers(webhook_headers=[]) == {}


def test_hook_without_auth_when_disabled() -> None:
    req = request("POST", "/hook", b"{}", content_type="application/json")
    response, calls = handle(App(settings(webhook_disable_auth=True)), req, {FireEvent: False}, now=NOW)
    assert [type(c) for c in calls] == [FireEvent]
    assert json.loads(response.body) == {"success": False}


def sse_connection() -> tuple[ServerConnection, EventStreams]:
    streams = EventStreams()
    conn = ServerConnection(Limits(), streams)
    conn.receive_data(f"GET /events HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {TOKEN}\r\n\r\n".encode())
    [served] = Driver(conn, App(settings()), {GetToken: RECORD, GetAuthList: [".*"]}, now=NOW).serve()
    assert served.outcome == AcceptEventStream(NOW + 100, token=TOKEN)
    return conn, streams


def test_events_stream_framing_is_literal() -> None:
    conn, streams = sse_connection()
    head = conn.data_to_send()
    assert head == (
        b"HTTP/1.1 200 OK\r\nserver: saltnado\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"x-accel-buffering: no\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nretry: 400\n\r\n"
    )
    streams.dispatch(SaltEvent("salt/test", {"a": 1}))
    payload = b'tag: salt/test\ndata: {"data": {"a": 1}, "tag": "salt/test"}\n\n'
    assert conn.data_to_send() == b"%x\r\n%b\r\n" % (len(payload), payload)
    streams.keepalive()
    assert conn.data_to_send() == b"e\r\n: keep-alive\n\n\r\n"


def test_events_keepalive_is_timed_by_the_streams_tick() -> None:
    from saltnado_core.messages import SSE_KEEPALIVE_INTERVAL

    conn, streams = sse_connection()
    conn.data_to_send()
    streams.tick(1000.0)  # the first tick starts the clock
    streams.tick(1000.0 + SSE_KEEPALIVE_INTERVAL - 0.5)
    assert conn.data_to_send() == b""
    streams.tick(1000.0 + SSE_KEEPALIVE_INTERVAL)
    assert conn.data_to_send() == b"e\r\n: keep-alive\n\n\r\n"
    streams.tick(1000.0 + SSE_KEEPALIVE_INTERVAL + 1)
    assert conn.data_to_send() == b""  # one per interval


def test_events_stream_ends_when_the_token_expires() -> None:
    conn, streams = sse_connection()
    conn.data_to_send()
    assert not conn.expire(NOW + 99)
    assert conn.expire(NOW + 100)
    assert conn.data_to_send() == b"0\r\n\r\n"
    assert conn.phase is Phase.DONE and len(streams.events) == 0


def test_websocket_closes_1008_when_the_token_expires() -> None:
    from wsproto.frame_protocol import FrameProtocol

    streams = EventStreams()
    conn = ServerConnection(Limits(), streams)
    ready = bytes(FrameProtocol(True, []).send_data("websocket client ready", True))
    conn.receive_data(
        f"GET /all_events/{TOKEN} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode() + ready
    )
    assert len(Driver(conn, App(settings()), {GetToken: RECORD, GetAuthList: [".*"]}, now=NOW).serve()) == 1
    conn.data_to_send()
    assert conn.expire(NOW + 100)
    reader = FrameProtocol(True, [])
    reader.receive_bytes(conn.data_to_send())
    [frame] = list(reader.received_frames())
    assert frame.payload == (1008, "token expired")
    assert len(streams.all_events) == 0
