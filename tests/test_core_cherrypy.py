"""A master configured for rest_cherrypy: its block read as saltnado's, the keys
saltnado gained from it (in either block), and rest_cherrypy's answers where the
two servers differ. No Salt: calls are answered by the test."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from saltnado_core import App, ConfigError, EventStreams, GetToken, Limits, MakeToken, Request, Response, Settings
from saltnado_core.access import Addresses, ApiAcl
from saltnado_core.blocks import CHERRYPY_KEYS, Dialect, Treatment
from saltnado_core.config import KNOWN_KEYS, block_values, unknown_key_warnings
from saltnado_core.connection import ServerConnection
from saltnado_core.rest import SHAPES
from saltnado_core.salt_calls import FireEvent, RunLowstate
from saltnado_core.static import Site

from test_core_app import EXTERNAL_AUTH, NOW, RECORD, TOKEN, request, response_json

CHERRY = {"port": 8000, "disable_ssl": True}
CREDS = b'{"username": "saltuser", "password": "s3cret", "eauth": "pam"}'


def cherry(**keys: Any) -> Settings:
    return Settings.from_opts({"rest_cherrypy": {**CHERRY, **keys}, "external_auth": EXTERNAL_AUTH,
                               "netapi_enable_clients": ["local", "local_async", "runner"]})


def app(**keys: Any) -> App:
    return App(cherry(**keys))


def tornado_app(**keys: Any) -> App:
    return App(Settings.from_opts({"rest_tornado": {**CHERRY, **keys}, "external_auth": EXTERNAL_AUTH,
                                   "netapi_enable_clients": ["local", "runner"]}))


def from_client(method: str, target: str, client: str | None, body: bytes = b"", **headers: str) -> Request:
    base = request(method, target, body, "application/json" if body else None, headers)
    return Request(base.method, base.target, base.headers, base.body, client=client)


# -- which block --------------------------------------------------------------------


def test_a_rest_cherrypy_block_alone_is_served_with_its_own_defaults() -> None:
    settings = cherry()
    assert settings.dialect is Dialect.CHERRYPY
    assert settings.address == "0.0.0.0"  # rest_cherrypy's host default
    assert settings.salt_threads == 100  # rest_cherrypy's thread_pool default
    assert settings.limits.max_body_bytes == 1048576


def test_rest_cherrypy_keys_become_saltnado_settings() -> None:
    settings = cherry(host="127.0.0.1", thread_pool=12, queue_size=30, max_request_body_size=4096,
                      webhook_url="/ci/", root_prefix="/api", enable_sessions=False)
    assert (settings.address, settings.salt_threads, settings.backlog) == ("127.0.0.1", 12, 30)
    assert settings.limits.max_body_bytes == 4096
    assert (settings.webhook_url, settings.root_prefix, settings.enable_sessions) == ("/ci", "/api", False)
    assert cherry(socket_queue_size=64).backlog == 64  # the name rest_cherrypy's docs use


def test_saltnado_keys_are_extensions_of_a_rest_cherrypy_block() -> None:
    settings = cherry(websockets=True, cors_origin="https://ui.example", max_header_count=7)
    assert settings.websockets and settings.cors_origin == "https://ui.example"
    assert settings.limits.max_header_count == 7


def test_every_rest_cherrypy_key_is_honoured_refused_or_obsolete() -> None:
    """The table covers rest_cherrypy's keys, and each honoured one lands on a key
    from_opts reads (or one a later build adds: /stats)."""
    assert set(CHERRYPY_KEYS) >= {
        "port", "host", "ssl_crt", "ssl_key", "ssl_chain", "disable_ssl", "debug", "webhook_disable_auth",
        "webhook_url", "thread_pool", "socket_queue_size", "queue_size", "max_request_body_size", "collect_stats",
        "stats_disable_auth", "static", "static_path", "app", "app_path", "root_prefix", "enable_sessions",
        "favicon", "api_acl", "authorized_ips", "log_access_file", "log_error_file", "expire_responses",
    }
    for name, key in CHERRYPY_KEYS.items():
        if key.treatment in (Treatment.SAME, Treatment.RENAMED) and name not in ("collect_stats", "stats_disable_auth"):
            assert (key.target or name) in KNOWN_KEYS, name


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"max_request_body_size": 0}, "'rest_cherrypy: max_request_body_size' must be at least 1, got 0"),
        ({"thread_pool": "many"}, "'rest_cherrypy: thread_pool' must be an integer, got 'many'"),
        ({"port": 70000}, "'rest_cherrypy: port' must be 0-65535"),
        ({"disable_ssl": False}, "TLS is enabled but 'rest_cherrypy: ssl_crt' is not set"),
        ({"ssl_chain": "/etc/pki/chain.pem"}, "'rest_cherrypy: ssl_chain' is not supported: .*cat cert.pem chain.pem"),
        ({"host": "127.0.0.1", "address": "::1"}, "'rest_cherrypy: host' and 'address' both set address"),
        ({"queue_size": 1, "socket_queue_size": 2}, "'rest_cherrypy: queue_size' and 'socket_queue_size' both set"),
        ({"webhook_url": "/login"}, "'rest_cherrypy: webhook_url' /login is the API's login route"),
        ({"root_prefix": "/a b"}, "'rest_cherrypy: root_prefix' must be a URL path"),
        ({"authorized_ips": "10.0.0.1"}, "'rest_cherrypy: authorized_ips' must be a list"),
        ({"authorized_ips": ["10.0.0.300"]}, "'rest_cherrypy: authorized_ips' holds '10.0.0.300'"),
        ({"api_acl": {"user": {}}}, "'rest_cherrypy: api_acl' must be {users:"),
        ({"api_acl": {"users": {"bob": ["nowhere"]}}}, "'rest_cherrypy: api_acl' users: bob holds 'nowhere'"),
        ({"static": "/srv/ui", "static_path": "/login"}, "'rest_cherrypy: static_path' /login would hide"),
    ],
)
def test_errors_name_the_key_as_the_rest_cherrypy_block_spells_it(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cherry(**keys)


def test_the_block_asked_for_is_served_and_rest_tornado_wins_a_tie_saying_so() -> None:
    opts = {"rest_tornado": dict(CHERRY, port=8001), "rest_cherrypy": dict(CHERRY, port=8002)}
    assert Settings.from_opts(opts).dialect is Dialect.TORNADO
    assert unknown_key_warnings(opts)[0].startswith("the master config has both 'rest_tornado:' and 'rest_cherrypy:'")
    chosen = Settings.from_opts(opts, "rest_cherrypy")
    assert (chosen.dialect, chosen.port) == (Dialect.CHERRYPY, 8002)
    assert unknown_key_warnings(opts, "rest_cherrypy") == []
    with pytest.raises(ConfigError, match="the master config has no 'rest_tornado:' block"):
        Settings.from_opts({"rest_cherrypy": CHERRY}, "rest_tornado")


def test_rest_cherrypy_warnings_name_its_block() -> None:
    opts = {"rest_cherrypy": {**CHERRY, "expire_responses": True, "thread_pol": 4}}
    warnings = unknown_key_warnings(opts)
    assert warnings[0].startswith("'rest_cherrypy: expire_responses' is obsolete and ignored: ")
    assert warnings[1] == "unknown key 'rest_cherrypy: thread_pol' is ignored; did you mean 'thread_pool'?"
    assert len(warnings) == 2


def test_stats_keys_pass_through_and_are_never_silently_ignored() -> None:
    """/stats is another build's: its keys reach from_opts under their own names,
    and until it reads them the operator is told they do nothing."""
    opts = {"rest_cherrypy": {**CHERRY, "collect_stats": True, "stats_disable_auth": True}}
    Settings.from_opts(opts)
    warnings = unknown_key_warnings(opts)
    for key in ("collect_stats", "stats_disable_auth"):
        said = f"'rest_cherrypy: {key}' is not served by this saltnado and is ignored"
        assert (said in warnings) == (key not in KNOWN_KEYS)


def test_the_new_keys_read_back_the_same_from_block_values() -> None:
    settings = cherry(api_acl={"users": {"*": ["10.0.0.0/8", "::1"]}}, authorized_ips=["127.0.0.1"],
                      log_access_file="/tmp/a.log", root_prefix="/api/", webhook_url="ci")
    again = Settings.from_opts({"rest_cherrypy": block_values(settings), "external_auth": EXTERNAL_AUTH,
                                "netapi_enable_clients": ["local", "local_async", "runner"]})
    assert again == settings


# -- the client address ---------------------------------------------------------------


def test_the_connection_stamps_its_peer_on_every_request() -> None:
    conn = ServerConnection(Limits(), EventStreams(), peer="192.0.2.7")
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET /login HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 10.0.0.1\r\n\r\n")
    first = conn.next_request()
    assert first is not None and first.client == "192.0.2.7"
    conn.respond(Response(200))
    second = conn.next_request()
    assert second is not None and second.client == "192.0.2.7"  # no header is believed


def test_the_runtime_takes_the_ip_from_getpeername() -> None:
    from saltnado_runtime.service import peer_address

    assert peer_address(("10.1.2.3", 5555)) == "10.1.2.3"
    assert peer_address(("::1", 5555, 0, 0)) == "::1"
    assert peer_address("/run/saltnado.sock") is None and peer_address(None) is None


# -- authorized_ips -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "status"),
    [("127.0.0.1", 200), ("10.9.8.7", 200), ("::ffff:10.9.8.7", 200), ("192.0.2.1", 403), ("::1", 403), (None, 403)],
)
def test_authorized_ips_refuse_any_other_client_with_bad_ip(client: str | None, status: int) -> None:
    exchange = app(authorized_ips=["127.0.0.1", "10.0.0.0/8"]).handle(from_client("GET", "/", client), NOW)
    response = exchange.start()
    assert isinstance(response, Response) and response.status == status
    if status == 403:
        assert response_json(response) == {"status": "403 Forbidden", "return": "Bad IP"}


def test_authorized_ips_apply_under_rest_tornado_too() -> None:
    response = tornado_app(authorized_ips=["127.0.0.1"]).handle(from_client("GET", "/", "192.0.2.1"), NOW).start()
    assert isinstance(response, Response) and response.status == 403


def test_addresses_any() -> None:
    assert Addresses.parse(["*"], "x").allows("2001:db8::1")
    assert not Addresses.parse(["10.0.0.1"], "x").allows("not an address")


# -- api_acl ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "client", "allowed"),
    [
        ({"saltuser": ["10.0.0.1"]}, "10.0.0.1", True),
        ({"saltuser": ["10.0.0.1"]}, "10.0.0.2", False),
        ({"saltuser": ["*"]}, "192.0.2.1", True),
        ({"*": ["10.0.0.1"]}, "10.0.0.1", True),  # not listed: '*' decides
        ({"*": ["10.0.0.1"]}, "10.0.0.2", False),
        ({"saltuser": ["10.0.0.1"], "*": ["*"]}, "10.0.0.2", False),  # listed: only their addresses
        ({"other": ["*"]}, "10.0.0.1", False),  # neither listed nor '*'
        ({}, "10.0.0.9", True),  # no users: no check
    ],
)
def test_api_acl_is_checked_at_login_before_the_credentials(users: dict, client: str, allowed: bool) -> None:
    exchange = app(api_acl={"users": users}).handle(from_client("POST", "/login", client, CREDS), NOW)
    step = exchange.start()
    if allowed:
        assert step == MakeToken("saltuser", "s3cret", "pam")
    else:
        assert isinstance(step, Response) and step.status == 401
        assert ("www-authenticate", "Session") in step.headers


def test_api_acl_as_rest_cherrypy_reads_it() -> None:
    acl = ApiAcl.parse({"users": {"bob": ["10.0.0.1"], "*": ["*"]}}, "x")
    assert acl is not None and acl.allows("alice", "192.0.2.1") and not acl.allows("bob", "10.0.0.2")


# -- root_prefix, webhook_url, enable_sessions ---------------------------------------


def test_root_prefix_puts_the_whole_api_under_it() -> None:
    api = app(root_prefix="/api")
    assert response_json(api.handle(request("GET", "/api/"), NOW).start())["return"] == "Welcome"
    assert response_json(api.handle(request("GET", "/api"), NOW).start())["return"] == "Welcome"
    assert api.handle(request("POST", "/api/login", CREDS, "application/json"), NOW).start() == MakeToken(
        "saltuser", "s3cret", "pam"
    )
    outside = api.handle(request("GET", "/login?x=1"), NOW).start()
    assert isinstance(outside, Response) and outside.status == 404
    assert response_json(outside)["return"] == "no such resource: /login (the API is under /api)"
    assert api.handle(request("GET", "/"), NOW).start().status == 404  # type: ignore[union-attr]
    assert api.handle(request("GET", "/apix"), NOW).start().status == 404  # type: ignore[union-attr]


def test_root_prefix_covers_the_web_app_mounts(tmp_path: Path) -> None:
    from saltnado_core.files import ReadFile

    settings = cherry(root_prefix="/api", static=str(tmp_path), static_path="/ui", dashboard=True)
    api = App(settings, site=Site.from_settings(settings, str(tmp_path)))
    redirect = api.handle(request("GET", "/api/dashboard"), NOW).start()
    assert isinstance(redirect, Response) and redirect.status == 301
    assert ("location", "/api/dashboard/") in redirect.headers
    read = api.handle(request("GET", "/api/ui/app.js"), NOW).start()
    assert isinstance(read, ReadFile) and read.name == "app.js"
    assert api.handle(request("GET", "/ui/app.js"), NOW).start().status == 404  # type: ignore[union-attr]


def test_minions_post_links_to_jobs_under_root_prefix() -> None:
    exchange = app(root_prefix="/api").handle(
        request("POST", "/api/minions", b'{"tgt": "*", "fun": "test.ping"}', "application/json",
                {"x-auth-token": TOKEN}), NOW)
    assert isinstance(exchange.start(), GetToken)
    assert isinstance(exchange.resume(dict(RECORD)), RunLowstate)
    reply = response_json(exchange.resume({"jid": "20260101", "minions": ["m1"]}))
    assert reply["_links"] == {"jobs": [{"href": "/api/jobs/20260101"}]}


def test_webhook_url_moves_the_hook() -> None:
    api = app(webhook_url="/ci", webhook_disable_auth=True)
    exchange = api.handle(request("POST", "/ci/build/done", b'{"ok": true}', "application/json"), NOW)
    call = exchange.start()
    assert isinstance(call, FireEvent) and call.tag == "salt/netapi/hook/build/done"
    assert api.handle(request("POST", "/hook", b"{}", "application/json"), NOW).start().status == 404  # type: ignore[union-attr]


def fired(api: App, req: Request) -> dict[str, Any]:
    """The data of the event ``req`` to the hook fires (no auth asked)."""
    call = api.handle(req, NOW).start()
    assert isinstance(call, FireEvent), call
    return call.data


@pytest.mark.parametrize(
    ("body", "content_type", "post"),
    [
        (b'{"revision": "aa22", "result": true}', "application/json", {"revision": "aa22", "result": True}),
        (b"a=1&a=2&b=", "application/x-www-form-urlencoded", {"a": ["1", "2"], "b": ""}),  # the query stays out
        (b"result: true\n", "application/x-yaml", {"result": True}),
        (b"[]", "application/json", {}),  # rest_cherrypy: "if not data: data = {}"
        (b"", None, {}),
    ],
)
def test_hook_events_have_rest_cherrypys_shape_under_its_block(body: bytes, content_type: str | None,
                                                                post: Any) -> None:
    headers = {"x-auth-token": TOKEN, "cookie": f"session_id={TOKEN}", "x-build": "42",
               "remote-addr": "10.9.9.9"}  # a client's own Remote-Addr is not believed
    req = dataclasses.replace(request("POST", "/hook/ci/done?x=1", body, content_type, headers), client="192.0.2.7")
    data = fired(app(webhook_disable_auth=True), req)
    assert data == {"body": body.decode(), "post": post, "headers": {
        "Host": "salt.example", **({"Content-Type": content_type} if content_type else {}),
        "X-Build": "42", "Remote-Addr": "192.0.2.7"}}  # no credential goes onto the bus
    # the same request under rest_tornado: its own shape, the query in "get"
    tornado = fired(tornado_app(webhook_disable_auth=True), req)
    assert set(tornado) == {"post", "get", "headers"} and tornado["get"] == {"x": "1"}
    # rest_tornado passes the headers as sent (its own Remote-Addr too), credentials aside
    assert tornado["headers"]["Remote-Addr"] == "10.9.9.9" and "X-Auth-Token" not in tornado["headers"]


def test_hook_event_headers_follow_webhook_headers_under_rest_cherrypy() -> None:
    req = dataclasses.replace(request("POST", "/hook", b"{}", "application/json", {"x-build": "1"}),
                              client="192.0.2.7")
    assert fired(app(webhook_disable_auth=True, webhook_headers=["X-Build"]), req)["headers"] == {"X-Build": "1"}


def test_a_hook_body_that_is_not_utf8_is_400_under_rest_cherrypy() -> None:
    req = request("POST", "/hook", b"\xff\xfe", "text/plain")
    response = app(webhook_disable_auth=True).handle(req, NOW).start()
    assert isinstance(response, Response) and response.status == 400
    assert response_json(response)["return"] == "request body is not UTF-8"


@pytest.mark.parametrize("path", ["/login", "/logout", "/minions", "/jobs/1"])
def test_enable_sessions_false_removes_the_session_endpoints(path: str) -> None:
    response = app(enable_sessions=False).handle(request("GET", path), NOW).start()
    assert isinstance(response, Response) and response.status == 404


def test_enable_sessions_false_keeps_run_and_the_rest() -> None:
    api = app(enable_sessions=False)
    assert api.handle(request("GET", "/"), NOW).start().status == 200  # type: ignore[union-attr]
    run = api.handle(request("POST", "/run", b'[{"client": "local", "tgt": "*", "fun": "test.ping", '
                                                b'"username": "u", "password": "p", "eauth": "pam"}]',
                             "application/json"), NOW)
    assert isinstance(run.start(), RunLowstate)


# -- rest_cherrypy's answers -----------------------------------------------------------


def test_the_differences_are_one_table() -> None:
    assert set(SHAPES) == set(Dialect)


def test_get_login_is_rest_cherrypys_page_under_its_block() -> None:
    response = app().handle(request("GET", "/login"), NOW).start()
    assert response == Response(
        200, b'{"status": "200 OK", "return": "Please log in"}', (("www-authenticate", "Session"),)
    )
    assert tornado_app().handle(request("GET", "/login"), NOW).start().status == 401  # type: ignore[union-attr]


def test_post_login_sends_the_token_header_too_under_rest_cherrypy() -> None:
    exchange = app().handle(request("POST", "/login", CREDS, "application/json"), NOW)
    exchange.start()
    response = exchange.resume(dict(RECORD))
    assert isinstance(response, Response)
    assert ("x-auth-token", TOKEN) in response.headers
    assert response_json(response)["return"][0]["token"] == TOKEN
    exchange = tornado_app().handle(request("POST", "/login", CREDS, "application/json"), NOW)
    exchange.start()
    assert all(name != "x-auth-token" for name, _ in exchange.resume(dict(RECORD)).headers)  # type: ignore[union-attr]


def test_login_without_permissions_shows_an_empty_mapping_as_rest_cherrypy() -> None:
    settings = Settings.from_opts({"rest_cherrypy": CHERRY, "external_auth": {"auto": {"other": [".*"]}}})
    exchange = App(settings).handle(
        request("POST", "/login", b'{"username": "u", "password": "p", "eauth": "auto"}', "application/json"), NOW
    )
    exchange.start()
    record = dict(RECORD, name="u", eauth="auto", groups=[])
    assert response_json(exchange.resume(record))["return"][0]["perms"] == {}


JOB = {"jid": "20260101", "Function": "test.ping", "Result": {"m1": {"return": True}, "m2": {"return": False}}}


def test_a_job_under_rest_cherrypy_is_info_and_return() -> None:
    exchange = app().handle(request("GET", "/jobs/20260101", headers={"x-auth-token": TOKEN}), NOW)
    exchange.start()
    call = exchange.resume(dict(RECORD))
    assert isinstance(call, RunLowstate) and call.low["fun"] == "jobs.list_job"
    assert response_json(exchange.resume(JOB)) == {"info": [JOB], "return": [{"m1": True, "m2": False}]}


def test_a_job_under_rest_tornado_is_unchanged() -> None:
    exchange = tornado_app().handle(request("GET", "/jobs/20260101", headers={"x-auth-token": TOKEN}), NOW)
    exchange.start()
    exchange.resume(dict(RECORD))
    assert response_json(exchange.resume(JOB)) == {"return": [JOB]}


def test_an_unknown_job_under_rest_cherrypy_has_no_returns() -> None:
    exchange = app().handle(request("GET", "/jobs/1", headers={"x-auth-token": TOKEN}), NOW)
    exchange.start()
    exchange.resume(dict(RECORD))
    assert response_json(exchange.resume({}))["return"] == [{}]


# -- log files -------------------------------------------------------------------------


def test_log_files_get_the_access_log_and_the_errors_tokens_masked(tmp_path: Path) -> None:
    from saltnado_runtime.logs import attach_log_files

    settings = cherry(log_access_file=str(tmp_path / "access.log"), log_error_file=str(tmp_path / "error.log"))
    handlers = attach_log_files(settings)
    try:
        logging.getLogger("saltnado.access").setLevel(logging.INFO)
        logging.getLogger("saltnado.access").info("GET /all_events/%s 200", TOKEN)
        logging.getLogger("saltnado.server").warning("trouble with %s", TOKEN)
        logging.getLogger("saltnado.server").info("nothing to see")
    finally:
        for handler in handlers:
            handler.close()
            for name in ("saltnado", "saltnado.access"):
                logging.getLogger(name).removeHandler(handler)
    access = (tmp_path / "access.log").read_text()
    errors = (tmp_path / "error.log").read_text()
    assert "GET /all_events/" in access and TOKEN not in access
    assert "trouble with" in errors and TOKEN not in errors and "nothing to see" not in errors
    assert "GET /all_events" not in errors


def test_a_log_file_that_cannot_be_written_stops_the_start(tmp_path: Path) -> None:
    from saltnado_runtime.logs import attach_log_files

    with pytest.raises(ConfigError, match="'rest_cherrypy: log_error_file' .*no such directory"):
        attach_log_files(cherry(log_error_file=str(tmp_path / "nowhere" / "error.log")))


def test_yaml_of_the_docs_example_is_served(tmp_path: Path) -> None:
    """rest_cherrypy's documented example block, as YAML, read whole."""
    import yaml

    block = yaml.safe_load(
        "rest_cherrypy:\n  port: 8000\n  disable_ssl: True\n  webhook_disable_auth: True\n"
        "  webhook_url: /hook\n  thread_pool: 100\n  socket_queue_size: 30\n  expire_responses: True\n"
        "  static: /srv/ui\n  app: /srv/ui/index.html\n"
    )
    settings = Settings.from_opts(block)
    assert settings.salt_threads == 100 and settings.backlog == 30 and settings.static == "/srv/ui"
    assert json.dumps(unknown_key_warnings(block)).count("obsolete") == 1
