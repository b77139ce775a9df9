"""Routing and request handlers, driven the way a binding drives them.

A handler yields Salt calls; the test plays the binding and sends results (or
exceptions) back in. No Salt, no threads: just the decisions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest

from saltnado_core import (
    AcceptWebSocket,
    App,
    GetToken,
    MakeToken,
    Request,
    Response,
    Route,
    Router,
    Settings,
)
from saltnado_core.rest import sorted_permissions, sum_permissions
from saltnado_core.salt_calls import GetAuthList

NOW = 1_700_000_000.0
TOKEN = "0123456789abcdef" * 4  # sha256-shaped
EXTERNAL_AUTH = {
    "pam": {
        "saltuser": ["@runner", ".*", {"web*": ["test.ping"]}],
        "*": ["@wheel", ".*"],
        "admins%": ["@jobs"],
        "nobody%": ["never"],
    }
}
RECORD = {
    "token": TOKEN,
    "start": NOW,
    "expire": NOW + 43200,
    "name": "saltuser",
    "eauth": "pam",
    "groups": ["admins", "users"],
}
FORM = "application/x-www-form-urlencoded"
# The reference's ``GET /login`` answer, which every 401 here matches.
UNAUTHORIZED = Response(
    401, b'{"status": "401 Unauthorized", "return": "Please log in"}', (("www-authenticate", "Session"),)
)


def make_app(**overrides: Any) -> App:
    fields: dict[str, Any] = {
        "websockets": True,
        "disable_ssl": True,
        "external_auth": EXTERNAL_AUTH,
        "netapi_enable_clients": ("local", "runner"),
    }
    fields.update(overrides)
    return App(Settings(**fields))


def request(
    method: str,
    target: str,
    body: bytes = b"",
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Request:
    pairs = [("host", "salt.example")]
    if content_type is not None:
        pairs.append(("content-type", content_type))
    pairs.extend((headers or {}).items())
    return Request(method, target, tuple(pairs), body)


def response_json(response: Any) -> Any:
    assert isinstance(response, Response)
    assert response.content_type == "application/json"
    return json.loads(response.body)


# -- Router ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/", Route("root")),
        ("/login", Route("login")),
        ("/logout", Route("logout")),
        ("/minions", Route("minions", ("",))),
        ("/minions/web1", Route("minions", ("web1",))),
        ("/jobs", Route("jobs", ("",))),
        ("/jobs/20240101120000123456", Route("jobs", ("20240101120000123456",))),
        ("/run", Route("run")),
        ("/events", Route("events")),
        ("/hook", Route("hook", ("",))),
        ("/hook/github/push", Route("hook", ("/github/push",))),
        (f"/all_events/{TOKEN}", Route("all_events", (TOKEN,))),
        (f"/all_events/{TOKEN.upper()}", Route("all_events", (TOKEN.upper(),))),
        (f"/formatted_events/{TOKEN}", Route("formatted_events", (TOKEN,))),
        ("/all_events", Route("all_events", ("",))),  # the token sent another way
        ("/formatted_events", Route("formatted_events", ("",))),
    ],
)
def test_router_matches(path: str, route: Route) -> None:
    assert Router(64).match(path) == route


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/nope",
        "/login/",  # anchored: no trailing slash, like Tornado's table
        "/loginx",
        "/hookx",
        "/runs",
        "/all_events/",
        f"/all_events/{TOKEN[:-1]}",  # one short
        f"/all_events/{TOKEN}0",  # one long
        f"/all_events/{'g' * 64}",  # not hex
        f"/all_events/{TOKEN}/",
        f"/formatted_events/{TOKEN[:32]}",
    ],
)
def test_router_404_shapes(path: str) -> None:
    assert Router(64).match(path) is None


def test_router_token_length_follows_hash_type() -> None:
    router = Router(token_length=32)
    assert router.match(f"/all_events/{TOKEN[:32]}") == Route("all_events", (TOKEN[:32],))
    assert router.match(f"/all_events/{TOKEN}") is None


def test_router_without_websockets_has_no_stream_routes() -> None:
    router = Router(64, websockets=False)
    assert router.match(f"/all_events/{TOKEN}") is None
    assert router.match(f"/formatted_events/{TOKEN}") is None
    assert router.match("/all_events") is None and router.match("/formatted_events") is None
    assert router.match("/login") == Route("login")


# -- App: simple handlers ---------------------------------------------------------


def test_root() -> None:
    step = make_app().handle(request("GET", "/"), NOW).start()
    assert step == Response(200, b'{"clients": ["local", "runner"], "return": "Welcome"}')


def test_unknown_path_is_404_json() -> None:
    step = make_app().handle(request("GET", "/nope?x=1"), NOW).start()
    assert step == Response(404, b'{"status": "404 Not Found", "return": "no such resource: /nope"}')


def test_websocket_route_without_websockets_setting_is_404() -> None:
    step = make_app(websockets=False).handle(request("GET", f"/all_events/{TOKEN}"), NOW).start()
    assert isinstance(step, Response) and step.status == 404


def test_authenticated_route_without_token_is_401() -> None:
    step = make_app().handle(request("GET", "/minions"), NOW).start()
    assert step == Response(
        401, b'{"status": "401 Unauthorized", "return": "Please log in"}', (("www-authenticate", "Session"),)
    )


def test_wrong_method_is_405_with_allow() -> None:
    step = make_app().handle(request("DELETE", "/login"), NOW).start()
    assert step == Response(
        405,
        b'{"status": "405 Method Not Allowed", "return": "method DELETE not allowed here"}',
        (("allow", "GET, POST"),),
    )


def test_get_login_is_401() -> None:
    assert make_app().handle(request("GET", "/login"), NOW).start() == UNAUTHORIZED


# -- App: login -------------------------------------------------------------------

LOGIN_BODY = (
    '{"return": [{"token": "' + TOKEN + '", "expire": 1700043200.0, "start": 1700000000.0, '
    '"user": "saltuser", "eauth": "pam", '
    '"perms": [".*", "@jobs", "@runner", "@wheel", {"web*": ["test.ping"]}]}]}'
).encode()
COOKIE = ("set-cookie", f"session_id={TOKEN}; Path=/; HttpOnly; SameSite=Lax")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"username=saltuser&password=s3cret&eauth=pam", FORM),
        (b'{"username": "saltuser", "password": "s3cret", "eauth": "pam"}', "application/json"),
        (b'{"username": "saltuser", "password": "s3cret", "eauth": "pam"}', "application/json; charset=utf-8"),
        (b'[{"username": "saltuser", "password": "s3cret", "eauth": "pam"}]', "application/json"),
        (b'{"username": "saltuser", "password": "s3cret", "eauth": "pam"}', "text/plain"),
        (b"username: saltuser\npassword: s3cret\neauth: pam\n", "application/x-yaml"),
    ],
)
def test_login_success(body: bytes, content_type: str) -> None:
    exchange = make_app().handle(request("POST", "/login", body, content_type), NOW)
    call = exchange.start()
    assert call == MakeToken("saltuser", "s3cret", "pam")
    assert "s3cret" not in repr(call)  # secrets stay out of logs
    response = exchange.resume(dict(RECORD))
    assert response == Response(200, LOGIN_BODY, (COOKIE,))
    assert list(json.loads(response.body)["return"][0]) == ["token", "expire", "start", "user", "eauth", "perms"]


def test_login_form_merges_query_string() -> None:
    exchange = make_app().handle(request("POST", "/login?eauth=pam", b"username=saltuser&password=pw", FORM), NOW)
    assert exchange.start() == MakeToken("saltuser", "pw", "pam")


def test_login_cookie_is_secure_with_tls() -> None:
    exchange = make_app(disable_ssl=False, ssl_crt="/c").handle(
        request("POST", "/login", b"username=saltuser&password=pw&eauth=pam", FORM), NOW
    )
    exchange.start()
    response = exchange.resume(dict(RECORD))
    assert isinstance(response, Response)
    assert response.headers == (("set-cookie", f"session_id={TOKEN}; Path=/; HttpOnly; SameSite=Lax; Secure"),)


def test_login_wrong_credentials_is_401() -> None:
    exchange = make_app().handle(request("POST", "/login", b"username=saltuser&password=bad&eauth=pam", FORM), NOW)
    exchange.start()
    assert exchange.resume({}) == Response(
        401,
        b'{"status": "401 Unauthorized", "return": "Could not authenticate using provided credentials"}',
        (("www-authenticate", "Session"),),
    )


def test_login_eauth_not_in_external_auth_is_401() -> None:
    exchange = make_app().handle(request("POST", "/login", b"username=u&password=p&eauth=ldap", FORM), NOW)
    exchange.start()
    response = exchange.resume({**RECORD, "eauth": "ldap"})
    assert isinstance(response, Response) and response.status == 401
    assert response_json(response) == {
        "status": "401 Unauthorized",
        "return": "eauth 'ldap' is not configured in external_auth",
    }


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"username=saltuser&password=pw", FORM, "missing or non-string field(s): eauth"),
        (b"password=pw&eauth=pam", FORM, "missing or non-string field(s): username"),
        (b"username=a&username=b&password=pw&eauth=pam", FORM, "missing or non-string field(s): username"),
        (
            b'{"username": "u", "password": 123, "eauth": "pam"}',
            "application/json",
            "missing or non-string field(s): password",
        ),
        (b"{}", "application/json", "missing or non-string field(s): username, password, eauth"),
        (b'["u", "p", "pam"]', "application/json", "send username, password and eauth"),
        (b"", FORM, "this request needs a body"),
    ],
)
def test_login_missing_field_is_400(body: bytes, content_type: str, reason: str) -> None:
    step = make_app().handle(request("POST", "/login", body, content_type), NOW).start()
    assert isinstance(step, Response)
    assert (step.status, response_json(step)) == (400, {"status": "400 Bad Request", "return": reason})


def test_login_invalid_json_is_400() -> None:
    step = make_app().handle(request("POST", "/login", b"{nope", "application/json"), NOW).start()
    assert isinstance(step, Response) and step.status == 400
    assert response_json(step)["return"].startswith("invalid JSON body")


def test_login_unsupported_content_type_is_415() -> None:
    step = make_app().handle(request("POST", "/login", b"<xml/>", "application/xml"), NOW).start()
    assert isinstance(step, Response) and step.status == 415


def test_login_non_utf8_body_is_400() -> None:
    step = make_app().handle(request("POST", "/login", b"username=\xff", FORM), NOW).start()
    assert isinstance(step, Response)
    assert response_json(step) == {"status": "400 Bad Request", "return": "request body is not UTF-8"}


class SaltDaemonNotRunning(Exception):
    """Named like salt.exceptions.SaltDaemonNotRunning: the core matches by name."""


class EauthAuthenticationError(Exception):
    pass


def test_login_master_down_is_503() -> None:
    exchange = make_app().handle(request("POST", "/login", b"username=u&password=p&eauth=pam", FORM), NOW)
    exchange.start()
    response = exchange.fail(SaltDaemonNotRunning("Salt Master is not available."))
    assert response == Response(
        503, b'{"status": "503 Service Unavailable", "return": "The Salt master could not be reached; try again later"}'
    )
    assert exchange.error is None  # expected failure: nothing for the binding to log as a bug


def test_login_eauth_error_is_401() -> None:
    exchange = make_app().handle(request("POST", "/login", b"username=u&password=p&eauth=pam", FORM), NOW)
    exchange.start()
    response = exchange.fail(EauthAuthenticationError("nope"))
    # with its challenge, like every other 401 (tests/test_fuzz_http.py found it missing)
    assert response == UNAUTHORIZED


def test_unexpected_salt_error_is_500_and_recorded() -> None:
    exchange = make_app().handle(request("POST", "/login", b"username=u&password=p&eauth=pam", FORM), NOW)
    exchange.start()
    boom = RuntimeError("secret internals")
    response = exchange.fail(boom)
    assert response == Response(
        500, b'{"status": "500 Internal Server Error", "return": "Internal error while calling Salt"}'
    )
    assert exchange.error is boom


def test_malformed_token_record_is_500_not_a_traceback() -> None:
    exchange = make_app().handle(request("POST", "/login", b"username=u&password=p&eauth=pam", FORM), NOW)
    exchange.start()
    response = exchange.resume({"token": TOKEN, "eauth": "pam"})  # no expire/start/name
    assert response == Response(500, b'{"status": "500 Internal Server Error", "return": "internal server error"}')
    assert isinstance(exchange.error, KeyError)


def test_login_does_not_mutate_external_auth() -> None:
    external_auth = copy.deepcopy(EXTERNAL_AUTH)
    app = make_app(external_auth=external_auth)
    bodies = []
    for _ in range(3):
        exchange = app.handle(request("POST", "/login", b"username=saltuser&password=pw&eauth=pam", FORM), NOW)
        exchange.start()
        response = exchange.resume(dict(RECORD))
        assert isinstance(response, Response)
        bodies.append(response.body)
    assert external_auth == EXTERNAL_AUTH  # salt.netapi.sum_permissions would grow the user's list
    assert bodies == [LOGIN_BODY] * 3


def test_sum_permissions_does_not_mutate_config() -> None:
    eauth = copy.deepcopy(EXTERNAL_AUTH["pam"])
    perms = sum_permissions(RECORD, eauth)
    assert perms == ["@runner", ".*", {"web*": ["test.ping"]}, "@wheel", ".*", "@jobs"]
    perms.append("extra")
    assert eauth == EXTERNAL_AUTH["pam"]
    assert sum_permissions(RECORD, eauth) == ["@runner", ".*", {"web*": ["test.ping"]}, "@wheel", ".*", "@jobs"]


def test_sum_permissions_unknown_user_and_no_groups() -> None:
    assert sum_permissions({"name": "other"}, EXTERNAL_AUTH["pam"]) == ["@wheel", ".*"]
    assert sum_permissions({"name": "other", "groups": ["nobody"]}, {"nobody%": None}) == []


def test_sorted_permissions() -> None:
    perms = ["b", {"x": [1]}, "a", "b", {"x": [1]}, {"a": []}]
    assert sorted_permissions(perms) == ["a", "b", {"a": []}, {"x": [1]}]


# -- App: websocket handshake decisions -------------------------------------------

UPGRADE_HEADERS = {
    "upgrade": "websocket",
    "connection": "keep-alive, Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
}


def websocket_step(req: Request, record: Any, auth_list: Any = (".*",)) -> Any:
    """Drive a websocket request: Salt knows ``record`` for the token and ``auth_list``
    (None: eauth not configured) are its permissions."""
    exchange = make_app().handle(req, NOW)
    call = exchange.start()
    assert call == GetToken(TOKEN)
    assert TOKEN not in repr(call)
    step = exchange.resume(record)
    if isinstance(step, GetAuthList):
        assert step.record == record and TOKEN not in repr(step)
        step = exchange.resume(list(auth_list) if auth_list is not None else None)
    return step


def test_websocket_accepted_with_valid_token() -> None:
    step = websocket_step(request("GET", f"/all_events/{TOKEN}", headers=UPGRADE_HEADERS), dict(RECORD))
    assert step == AcceptWebSocket("all_events", NOW + 43200, TOKEN)


@pytest.mark.parametrize(("query", "delta"), [("", False), ("?delta=1", True), ("?delta=true", True), ("?delta=0", False)])
def test_formatted_events_accepted_with_delta_option(query: str, delta: bool) -> None:
    req = request("GET", f"/formatted_events/{TOKEN}{query}", headers=UPGRADE_HEADERS)
    assert websocket_step(req, dict(RECORD)) == AcceptWebSocket("formatted_events", NOW + 43200, TOKEN, delta)


@pytest.mark.parametrize("record", [{}, None, {**RECORD, "expire": NOW}, {**RECORD, "expire": NOW - 1}])
def test_websocket_unknown_or_expired_token_is_401(record: Any) -> None:
    step = websocket_step(request("GET", f"/all_events/{TOKEN}", headers=UPGRADE_HEADERS), record)
    assert step == UNAUTHORIZED


def test_websocket_token_checked_before_upgrade_headers() -> None:
    # An unauthenticated client learns nothing about the handshake it should send.
    assert websocket_step(request("GET", f"/all_events/{TOKEN}"), {}) == UNAUTHORIZED


def test_websocket_plain_get_is_400() -> None:
    step = websocket_step(request("GET", f"/all_events/{TOKEN}"), dict(RECORD))
    assert step == Response(
        400, b'{"status": "400 Bad Request", "return": "Can \\"Upgrade\\" only to \\"WebSocket\\"."}'
    )


def test_websocket_wrong_version_is_426() -> None:
    headers = {**UPGRADE_HEADERS, "sec-websocket-version": "8"}
    step = websocket_step(request("GET", f"/all_events/{TOKEN}", headers=headers), dict(RECORD))
    assert isinstance(step, Response)
    assert (step.status, step.headers) == (426, (("sec-websocket-version", "13"),))


@pytest.mark.parametrize("key", ["", "not base64!", "dGhlIHNhbXBsZQ=="])  # last: 11 bytes, not 16
def test_websocket_bad_key_is_400(key: str) -> None:
    headers = {**UPGRADE_HEADERS, "sec-websocket-key": key}
    step = websocket_step(request("GET", f"/all_events/{TOKEN}", headers=headers), dict(RECORD))
    assert isinstance(step, Response)
    assert response_json(step) == {"status": "400 Bad Request", "return": "missing or invalid Sec-WebSocket-Key"}


def test_websocket_without_connection_upgrade_is_400() -> None:
    headers = {**UPGRADE_HEADERS, "connection": "keep-alive"}
    step = websocket_step(request("GET", f"/all_events/{TOKEN}", headers=headers), dict(RECORD))
    assert isinstance(step, Response) and step.status == 400


def test_websocket_token_of_wrong_length_is_404_without_salt_call() -> None:
    step = make_app().handle(request("GET", f"/all_events/{TOKEN[:32]}", headers=UPGRADE_HEADERS), NOW).start()
    assert isinstance(step, Response) and step.status == 404


def test_websocket_post_is_405() -> None:
    step = make_app().handle(request("POST", f"/all_events/{TOKEN}", headers=UPGRADE_HEADERS), NOW).start()
    assert isinstance(step, Response) and step.status == 405
