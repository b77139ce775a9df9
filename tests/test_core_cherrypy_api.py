"""rest_cherrypy's /keys, /token and /ws through the core, Salt scripted.

Statuses and shapes of each answer, the Salt calls asked (always the caller's
token or credentials, never a privileged call), the tar file of ``POST /keys``
and the safety of its ``Content-Disposition``, and ``/ws``'s framing on the wire.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pytest
from wsproto.frame_protocol import FrameProtocol

from saltnado_core import App, EventStreams, Limits, Request, SaltEvent, ServerConnection, Settings
from saltnado_core.config import Dialect
from saltnado_core.keys import attachment, gen_accept_options, key_tarball, minion_id_problem
from saltnado_core.kinds import StreamKind
from saltnado_core.messages import text_frame
from saltnado_core.outcomes import AcceptWebSocket
from saltnado_core.salt_calls import GetAuthList, GetToken, PublishGrains, RunLowstate
from saltnado_core.testing import Driver, handle

from core_literals import NOW, RECORD, TOKEN

WHEEL_KEYS = {
    "tag": "salt/wheel/20240101120000123456",
    "data": {
        "fun": "wheel.key.list_all", "jid": "20240101120000123456", "user": "saltdev", "success": True,
        "_stamp": "2024-01-01T12:00:00.000000",
        "return": {"local": ["master.pem", "master.pub"], "minions": ["minion1"], "minions_pre": [],
                   "minions_rejected": [], "minions_denied": []},
    },
}
PAIR = {"pub": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "priv": "-----BEGIN RSA PRIVATE KEY-----\nBBBB\n-----END RSA PRIVATE KEY-----\n"}
CREDENTIALS = {"username": "saltdev", "password": "secret", "eauth": "auto"}


def settings(clients: tuple[str, ...] = ("local", "local_async", "runner", "wheel"), **fields: Any) -> Settings:
    return Settings(disable_ssl=True, websockets=True, netapi_enable_clients=clients, **fields)


def get(target: str, **headers: str) -> Request:
    return Request("GET", target, tuple((k.replace("_", "-"), v) for k, v in headers.items()))


def post(target: str, payload: Any, content_type: str = "application/json") -> Request:
    body = json.dumps(payload).encode() if content_type == "application/json" else payload
    return Request("POST", target, (("content-type", content_type),), body)


def wheel(ret: Any, success: bool = True) -> dict[str, Any]:
    return {"tag": "salt/wheel/1", "data": {"return": ret, "success": success}}


# -- GET /keys[/<mid>] ---------------------------------------------------------------------
def test_get_keys_answers_the_wheels_return_with_the_sessions_token() -> None:
    answers = {GetToken: RECORD, RunLowstate: WHEEL_KEYS}
    response, calls = handle(App(settings()), get("/keys", x_auth_token=TOKEN), answers, now=NOW)
    assert response.status == 200
    assert json.loads(response.body) == {"return": WHEEL_KEYS["data"]["return"]}  # type: ignore[index]
    [_, run] = calls
    assert isinstance(run, RunLowstate)
    assert dict(run.low) == {"client": "wheel", "fun": "key.list_all", "token": TOKEN}


def test_get_keys_of_one_minion_is_key_finger_match() -> None:
    finger = wheel({"minions": {"minion1": "ab:cd"}})
    response, calls = handle(App(settings()), get("/keys/minion1", x_auth_token=TOKEN),
                             {GetToken: RECORD, RunLowstate: finger}, now=NOW)
    assert json.loads(response.body) == {"return": {"minions": {"minion1": "ab:cd"}}}
    assert dict(calls[-1].low) == {"client": "wheel", "fun": "key.finger", "match": "minion1", "token": TOKEN}  # type: ignore[union-attr]


@pytest.mark.parametrize("headers", [{}, {"x_auth_token": "nope"}])
def test_get_keys_needs_a_session(headers: dict[str, str]) -> None:
    response, calls = handle(App(settings()), get("/keys", **headers), {GetToken: {}}, now=NOW)
    assert response.status == 401 and calls == []


def test_get_keys_with_wheel_disabled_is_400_before_salt_runs_anything() -> None:
    response, calls = handle(App(settings(("local",))), get("/keys", x_auth_token=TOKEN), {GetToken: RECORD}, now=NOW)
    assert response.status == 400
    assert json.loads(response.body)["return"].startswith("Client disabled: 'wheel'")
    assert [type(c) for c in calls] == [GetToken]


class AuthorizationError(Exception):
    """Named as Salt's (the core matches exception classes by name)."""


def test_get_keys_refused_by_salts_acl_is_403() -> None:
    response, _ = handle(App(settings()), get("/keys", x_auth_token=TOKEN),
                         {GetToken: RECORD, RunLowstate: AuthorizationError("no")}, now=NOW)
    assert response.status == 403


# -- POST /keys --------------------------------------------------------------------------
def test_post_keys_answers_a_tar_of_the_pair_made_with_the_callers_credentials() -> None:
    payload = {"mid": "web1", **CREDENTIALS, "keysize": "4096", "force": "true"}
    response, calls = handle(App(settings()), post("/keys", payload), {RunLowstate: wheel(PAIR)}, now=NOW)
    assert response.status == 200
    assert response.content_type == "application/x-tar"
    assert ("content-disposition", 'attachment; filename="saltkeys-web1.tar"') in response.headers
    assert ("cache-control", "no-store") in response.headers
    [run] = calls  # no token check: the credentials are Salt's to check
    assert dict(run.low) == {"client": "wheel", "fun": "key.gen_accept", "id_": "web1", "keysize": 4096,  # type: ignore[union-attr]
                             "force": True, **CREDENTIALS}
    with tarfile.open(fileobj=io.BytesIO(response.body)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == ["minion.pub", "minion.pem"]
        assert members["minion.pem"].mode == 0o400 and members["minion.pub"].mode == 0o644
        assert tar.extractfile("minion.pem").read().decode() == PAIR["priv"]  # type: ignore[union-attr]
        assert tar.extractfile("minion.pub").read().decode() == PAIR["pub"]  # type: ignore[union-attr]


def test_post_keys_from_a_form_as_rest_cherrypys_documentation_shows() -> None:
    form = b"mid=web1&username=saltdev&password=secret&eauth=auto"
    response, calls = handle(App(settings()), post("/keys", form, "application/x-www-form-urlencoded"),
                             {RunLowstate: wheel(PAIR)}, now=NOW)
    assert response.status == 200 and len(calls) == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({**CREDENTIALS}, "missing or non-string field(s): mid"),
        ({"mid": "web1", "username": "saltdev"}, "missing or non-string field(s): password, eauth"),
        ({"mid": 'a"b', **CREDENTIALS}, "mid may not hold"),
        ({"mid": "a\r\nSet-Cookie: x=1", **CREDENTIALS}, "mid may not hold"),
        ({"mid": "../etc", **CREDENTIALS}, "mid may not hold"),
        ({"mid": "..", **CREDENTIALS}, "mid may not be"),
        ({"mid": "a\\b", **CREDENTIALS}, "mid may not hold"),
        ({"mid": "", **CREDENTIALS}, "mid is empty"),
        ({"mid": "x" * 256, **CREDENTIALS}, "mid is longer than 255"),
        ({"mid": "web1", "keysize": "big", **CREDENTIALS}, "keysize must be"),
        ({"mid": "web1", "force": "maybe", **CREDENTIALS}, "force must be"),
        (["a", "b"], "send mid, username, password and eauth"),
    ],
)
def test_post_keys_refuses_bad_fields_with_400_before_asking_salt(payload: Any, reason: str) -> None:
    response, calls = handle(App(settings()), post("/keys", payload), {}, now=NOW)
    assert response.status == 400 and calls == []
    assert json.loads(response.body)["return"].startswith(reason)
    assert b"Set-Cookie" not in response.body  # the mid is not quoted back
    assert all("\n" not in value and "\r" not in value for _, value in response.headers)


class EauthAuthenticationError(Exception):
    pass


def test_post_keys_with_bad_credentials_is_401() -> None:
    response, _ = handle(App(settings()), post("/keys", {"mid": "web1", **CREDENTIALS}),
                         {RunLowstate: EauthAuthenticationError("bad")}, now=NOW)
    assert response.status == 401


def test_post_keys_for_an_id_with_an_accepted_key_is_409_unless_forced() -> None:
    response, _ = handle(App(settings()), post("/keys", {"mid": "web1", **CREDENTIALS}),
                         {RunLowstate: wheel({})}, now=NOW)
    assert response.status == 409
    assert "force" in json.loads(response.body)["return"]


def test_post_keys_whose_wheel_function_raised_is_500_with_its_message() -> None:
    response, _ = handle(App(settings()), post("/keys", {"mid": "web1", **CREDENTIALS}),
                         {RunLowstate: wheel("Exception occurred in wheel key.gen_accept: disk full", False)},
                         now=NOW)
    assert response.status == 500
    assert json.loads(response.body)["return"].endswith("disk full")


def test_post_keys_to_one_minion_is_405() -> None:
    response, _ = handle(App(settings()), post("/keys/web1", {"mid": "web1", **CREDENTIALS}), {}, now=NOW)
    assert response.status == 405 and ("allow", "GET") in response.headers


@pytest.mark.parametrize(
    ("mid", "header"),
    [
        ("web1.example.com", 'attachment; filename="saltkeys-web1.example.com.tar"'),
        ("wéb", "attachment; filename=\"saltkeys-w?b.tar\"; filename*=UTF-8''saltkeys-w%C3%A9b.tar"),
    ],
)
def test_the_attachment_header_is_ascii_and_quotes_only_a_checked_id(mid: str, header: str) -> None:
    assert minion_id_problem(mid) is None
    assert attachment(mid) == header
    assert attachment(mid).isascii()


@pytest.mark.parametrize("mid", ['"', "\\", "/", "\x00", "\x1f", "\x7f", "\n", "a\rb", ".", ".."])
def test_ids_that_could_break_the_header_or_a_path_are_refused(mid: str) -> None:
    assert minion_id_problem(mid) is not None


def test_gen_accept_options_take_json_and_form_values() -> None:
    assert gen_accept_options({"keysize": 4096, "force": False}) == {"keysize": 4096, "force": False}
    assert gen_accept_options({"keysize": " 2048 ", "force": "Yes"}) == {"keysize": 2048, "force": True}
    assert gen_accept_options({}) == {}
    for bad in ({"keysize": True}, {"keysize": 0}, {"keysize": 1 << 20}, {"force": 1}):
        with pytest.raises(ValueError):
            gen_accept_options(bad)


def test_key_tarball_is_deterministic_with_no_clock() -> None:
    assert key_tarball("a", "b") == key_tarball("a", "b")
    with tarfile.open(fileobj=io.BytesIO(key_tarball("a", "b"))) as tar:
        assert {m.mtime for m in tar.getmembers()} == {0}


# -- POST /token -------------------------------------------------------------------------
TOKEN_RECORD = {"start": NOW, "token": TOKEN, "expire": NOW + 100, "name": "saltdev", "eauth": "auto"}


@pytest.mark.parametrize("payload", [CREDENTIALS, [CREDENTIALS], [CREDENTIALS, CREDENTIALS]])
def test_post_token_makes_one_raw_token_per_chunk_through_the_runner(payload: Any) -> None:
    response, calls = handle(App(settings()), post("/token", payload), {RunLowstate: TOKEN_RECORD}, now=NOW)
    assert response.status == 200
    chunks = payload if isinstance(payload, list) else [payload]
    assert json.loads(response.body) == [TOKEN_RECORD] * len(chunks)  # no "return" wrapper, as rest_cherrypy
    for call in calls:
        assert dict(call.low) == {"client": "runner", "fun": "auth.mk_token", **CREDENTIALS,  # type: ignore[union-attr]
                                  "kwarg": CREDENTIALS}


@pytest.mark.parametrize(
    "payload", [{"username": "saltdev"}, [CREDENTIALS, {"password": "x"}], [], ["x"], {**CREDENTIALS, "eauth": 1}]
)
def test_post_token_without_credentials_is_rest_cherrypys_400(payload: Any) -> None:
    response, calls = handle(App(settings()), post("/token", payload), {}, now=NOW)
    assert response.status == 400 and calls == []
    assert json.loads(response.body)["return"] == 'Require "username", "password", and "eauth" params'


def test_post_token_with_bad_credentials_is_401() -> None:
    response, _ = handle(App(settings()), post("/token", CREDENTIALS),
                         {RunLowstate: EauthAuthenticationError("bad")}, now=NOW)
    assert response.status == 401


def test_post_token_with_runner_disabled_is_400() -> None:
    response, calls = handle(App(settings(("local", "wheel"))), post("/token", CREDENTIALS), {}, now=NOW)
    assert response.status == 400 and calls == []


def test_get_token_is_405() -> None:
    response, _ = handle(App(settings()), get("/token"), {}, now=NOW)
    assert response.status == 405


# -- /ws: routes, token places, framing ------------------------------------------------------------
def test_ws_is_routed_under_websockets_or_always_for_a_rest_cherrypy_block() -> None:
    assert App(settings()).router.match("/ws") is not None
    assert App(Settings(disable_ssl=True)).router.match("/ws") is None
    assert App(Settings(disable_ssl=True, dialect=Dialect.CHERRYPY)).router.match(f"/ws/{TOKEN}") is not None
    assert App(Settings(disable_ssl=True, dialect=Dialect.CHERRYPY)).router.match("/all_events/" + TOKEN) is None


UPGRADE = {"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
           "sec-websocket-version": "13", "host": "salt.example"}


def ws_request(target: str, *extra: tuple[str, str]) -> Request:
    return Request("GET", target, tuple(UPGRADE.items()) + extra)


@pytest.mark.parametrize(
    ("target", "headers", "kind"),
    [
        (f"/ws/{TOKEN}", (), StreamKind.WS),
        ("/ws", (("x-auth-token", TOKEN),), StreamKind.WS),
        ("/ws?format_events", (("cookie", f"session_id={TOKEN}"),), StreamKind.WS_FORMATTED),
        (f"/ws/{TOKEN}?format_events=1&delta=1", (), StreamKind.WS_FORMATTED),
    ],
)
def test_ws_takes_the_token_from_the_path_the_header_or_the_cookie(
    target: str, headers: tuple[tuple[str, str], ...], kind: StreamKind
) -> None:
    outcome, calls = handle(App(settings()), ws_request(target, *headers), {GetToken: RECORD, GetAuthList: [".*"]},
                            now=NOW)
    assert outcome == AcceptWebSocket(kind, RECORD["expire"], TOKEN, False)  # type: ignore[arg-type]
    assert calls == [GetToken(TOKEN), GetAuthList(RECORD)]


@pytest.mark.parametrize("target", ["/ws", "/ws/not-a-token", f"/ws/{TOKEN[:-1]}"])
def test_ws_without_a_valid_token_is_401_before_salt(target: str) -> None:
    outcome, calls = handle(App(settings()), ws_request(target), {}, now=NOW)
    assert outcome.status == 401 and calls == []  # type: ignore[union-attr]


def test_ws_needs_event_bus_permission_as_the_other_streams() -> None:
    outcome, _ = handle(App(settings()), ws_request(f"/ws/{TOKEN}"), {GetToken: RECORD, GetAuthList: ["test.ping"]},
                        now=NOW)
    assert outcome.status == 403  # type: ignore[union-attr]


def client_text(text: str) -> bytes:
    return FrameProtocol(client=True, extensions=[]).send_data(text, fin=True)


RECEIVED = text_frame(b"server received message")
EVENT = SaltEvent("salt/job/20240101120000123456/ret/minion1", {"return": True, "id": "minion1", "fun": "test.ping",
                                                                 "retcode": 0, "success": True})


def open_ws(target: str) -> tuple[Driver, EventStreams]:
    streams = EventStreams()
    driver = Driver(ServerConnection(Limits(), streams), App(settings()),
                    {GetToken: RECORD, GetAuthList: [".*"], PublishGrains: {}}, now=NOW, stream_calls=True)
    head = ws_request(target)
    raw = f"GET {head.target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.headers) + "\r\n"
    assert driver.feed(raw.encode()).startswith(b"HTTP/1.1 101 ")
    return driver, streams


def test_ws_raw_frames_events_as_rest_cherrypy_and_acknowledges_every_message() -> None:
    driver, streams = open_ws(f"/ws/{TOKEN}")
    assert driver.feed(client_text("hello")) == RECEIVED  # acknowledged, not yet streaming
    streams.dispatch(EVENT)
    assert driver.feed(client_text("websocket client ready")) == RECEIVED
    streams.dispatch(EVENT)
    expected = b'data: {"data": {"return": true, "id": "minion1", "fun": "test.ping", "retcode": 0, ' \
               b'"success": true}, "tag": "salt/job/20240101120000123456/ret/minion1"}\n\n'
    assert driver.conn.data_to_send() == text_frame(expected)
    assert driver.feed(client_text("anything")) == RECEIVED


def test_all_events_does_not_acknowledge() -> None:
    driver, _ = open_ws(f"/all_events/{TOKEN}")
    assert driver.feed(client_text("websocket client ready")) == b""


def test_ws_format_events_sends_the_view_with_minions_as_a_list() -> None:
    driver, streams = open_ws(f"/ws/{TOKEN}?format_events")
    grains = SaltEvent("salt/job/20240101120000000001/ret/minion1",
                       {"fun": "grains.items", "return": {"os": "Debian"}, "retcode": 0, "success": True})
    streams.dispatch(grains, NOW)  # the view is shared and kept from start-up
    out = driver.feed(client_text("websocket client ready"))
    assert out.startswith(RECEIVED)
    first = text_frame(b'{"minions": [{"grains": {"os": "Debian"}, "id": "minion1"}]}')
    assert out[len(RECEIVED):].startswith(first)
    assert driver.calls[-1] == PublishGrains(None, TOKEN)  # the client's own token asks for grains
    streams.dispatch(SaltEvent("salt/key", {"id": "minion2", "act": "accept"}), NOW)
    assert driver.conn.data_to_send() == text_frame(
        b'{"minions": [{"grains": {"os": "Debian"}, "id": "minion1"}, {"id": "minion2"}]}'
    )


def test_a_client_flooding_messages_without_reading_is_not_read_from() -> None:
    driver, _ = open_ws(f"/ws/{TOKEN}")
    message = client_text("x" * 100)
    driver.conn.receive_data(message * (Limits().write_chunk_bytes // len(RECEIVED) + 10))
    assert driver.conn.input_paused  # the acknowledgements it leaves unread are bounded


def test_a_ws_path_token_is_masked_in_logs_whatever_its_shape() -> None:
    from saltnado_core.tokens import redact_path

    assert redact_path(f"/ws/{TOKEN}?format_events", 64) == "/ws/<token>?format_events"
    assert redact_path("/ws/short-session-id", 64) == "/ws/<token>"
