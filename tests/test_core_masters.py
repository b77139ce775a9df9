"""Several masters from one node, and a node without one: the config keys, each
request's choice of master, the calls carrying it, and the runtime running each
call on its master's bridge (no sockets, no Salt: the bridges are stand-ins)."""

from __future__ import annotations

import dataclasses
import errno
import json
from typing import Any

import pytest

from saltnado_core import App, ConfigError, Request, Response, Settings
from saltnado_core.config import IMPLICIT_MASTER, KNOWN_KEYS
from saltnado_core.liveness import MasterLiveness
from saltnado_core.masters import NO_MASTER
from saltnado_core.outcomes import AcceptEventStream, Health
from saltnado_core.pacing import Pacing
from saltnado_core.salt_calls import (
    FireEvent, GetAuthList, GetToken, MakeToken, MasterUnavailable, RemoveToken, RunLowstate, classify_salt_error,
)
from saltnado_core.testing import Unanswered, handle, per_master

TOKEN = "ab" * 32
NOW = 1_000.0
RECORD = {"token": TOKEN, "expire": NOW + 100, "name": "saltdev", "eauth": "auto", "start": NOW}
TWO = {"masters": {"site1": "/etc/salt/master", "site2": "/etc/salt/site2/master"}, "default_master": "site1"}
OK = {GetToken: RECORD, RunLowstate: True, GetAuthList: [".*", "@events"]}


def settings(**block: Any) -> Settings:
    return Settings.from_opts(
        {
            "rest_tornado": {"port": 8000, "disable_ssl": True, "websockets": True, **block},
            "external_auth": {"auto": {"saltdev": [".*"]}},
            "netapi_enable_clients": ["local", "local_async", "runner", "wheel"],
        }
    )


def request(method: str, target: str, body: Any = None, **headers: str) -> Request:
    hdrs = tuple((k.replace("_", "-").lower(), v) for k, v in headers.items())
    data = b"" if body is None else json.dumps(body).encode()
    if body is not None:
        hdrs += (("content-type", "application/json"),)
    return Request(method, target, hdrs, data)


def answer(outcome: Any) -> tuple[int, Any]:
    assert isinstance(outcome, Response)
    return outcome.status, json.loads(outcome.body)


# -- configuration -----------------------------------------------------------------
def test_without_masters_the_loaded_master_is_the_one_default() -> None:
    s = settings()
    assert (s.masters, s.command_masters, s.default_command_master) == (None, (IMPLICIT_MASTER,), IMPLICIT_MASTER)


def test_masters_and_their_default() -> None:
    s = settings(**TWO)
    assert s.command_masters == ("site1", "site2") and s.default_command_master == "site1"
    assert settings(masters={"only": "/etc/salt/master"}).default_command_master == "only"  # the one there is
    assert {"masters", "default_master", "commands"} <= KNOWN_KEYS  # check-config knows them


def test_commands_false_is_a_node_without_a_master() -> None:
    for block in ({"commands": False}, {"commands": False, "masters": {}}):
        s = settings(**block)
        assert s.command_masters == () and s.default_command_master is None


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"masters": {}}, r"'rest_tornado: masters' is empty: name at least one master, or set 'commands: false'"),
        ({"commands": False, "masters": {"a": "/m"}}, r"'rest_tornado: commands' is false .*, yet 'masters:' names a"),
        ({"masters": {"a": "/m", "b": "/n"}}, r"'rest_tornado: default_master' is required with several masters"),
        ({**TWO, "default_master": "site3"}, r"'site3' is not one of 'masters:' \(site1, site2\)"),
        ({"default_master": "site1"}, r"the block has no 'masters:'"),
        ({"masters": {"bad name": "/m"}}, r"'bad name' is not a master name"),
        ({"masters": {"a": ""}}, r"masters': a must be the path of a master config file"),
        ({"masters": ["/etc/salt/master"]}, r"'rest_tornado: masters' must map names to master config files"),
    ],
)
def test_bad_masters_config_names_the_key(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(**block)


# -- the choice of master -------------------------------------------------------------
CHUNK = {"client": "local", "tgt": "*", "fun": "test.ping"}
RUN = {**CHUNK, "username": "saltdev", "password": "pw", "eauth": "auto"}  # /run: credentials in each chunk


def test_header_sends_the_whole_request_and_its_token_check_to_that_master() -> None:
    app = App(settings(**TWO))
    outcome, calls = handle(app, request("POST", "/", CHUNK, x_auth_token=TOKEN, x_salt_master="site2"), OK, now=NOW)
    assert answer(outcome) == (200, {"return": [True]})
    assert calls == [GetToken(TOKEN, "site2"), RunLowstate({**CHUNK, "token": TOKEN}, "site2")]


def test_no_choice_is_the_default_master() -> None:
    outcome, calls = handle(App(settings(**TWO)), request("POST", "/", CHUNK, x_auth_token=TOKEN), OK, now=NOW)
    assert answer(outcome)[0] == 200
    assert calls == [GetToken(TOKEN), RunLowstate({**CHUNK, "token": TOKEN})]
    assert calls[1].master is None  # the runtime runs None on the default


def test_a_chunks_master_key_picks_its_master_and_never_reaches_salt() -> None:
    chunks = [RUN, {**RUN, "master": "site2"}]
    outcome, calls = handle(App(settings(**TWO)), request("POST", "/run", chunks, x_salt_master="site1"), OK, now=NOW)
    assert answer(outcome)[0] == 200
    assert calls == [RunLowstate(RUN, "site1"), RunLowstate(RUN, "site2")]
    assert all("master" not in call.low for call in calls if isinstance(call, RunLowstate))


def test_unknown_master_is_400_naming_the_known_ones_before_anything_runs() -> None:
    app = App(settings(**TWO))
    outcome, calls = handle(app, request("POST", "/run", [CHUNK, {**CHUNK, "master": "site9"}]), OK, now=NOW)
    assert answer(outcome) == (
        400, {"status": "400 Bad Request", "return": "unknown Salt master 'site9'; this node knows: site1, site2"}
    )
    assert calls == []  # the valid first chunk did not run either
    outcome, calls = handle(app, request("POST", "/", CHUNK, x_auth_token=TOKEN, x_salt_master="nope"), OK, now=NOW)
    assert answer(outcome)[0] == 400 and calls == []  # no token check on any master


def test_an_unknown_name_is_quoted_escaped_and_cut_short() -> None:
    sent = "<script>\x1b[31m" + "x" * 500 + TOKEN
    outcome, _ = handle(App(settings(**TWO)), request("POST", "/run", {**CHUNK, "master": sent}), OK, now=NOW)
    status, body = answer(outcome)
    assert status == 400
    reason = body["return"]
    assert "\x1b" not in reason and "\\x1b" in reason and TOKEN not in reason
    assert len(reason) < 200 and reason.endswith("; this node knows: site1, site2")
    outcome, _ = handle(App(settings(**TWO)), request("POST", "/run", {**CHUNK, "master": ["site1"]}), OK, now=NOW)
    assert answer(outcome)[1]["return"] == "unknown Salt master \"['site1']\"; this node knows: site1, site2"


def test_without_masters_the_one_master_is_named_default() -> None:
    app = App(settings())
    outcome, calls = handle(app, request("POST", "/run", {**RUN, "master": "default"}), OK, now=NOW)
    assert answer(outcome)[0] == 200 and calls == [RunLowstate(RUN, "default")]
    outcome, _ = handle(app, request("POST", "/run", CHUNK, x_salt_master="site2"), OK, now=NOW)
    assert answer(outcome) == (400, {"status": "400 Bad Request", "return": "unknown Salt master 'site2'; this node knows: default"})


def test_login_makes_the_token_on_the_chosen_master_with_its_external_auth() -> None:
    s = dataclasses.replace(settings(**TWO), master_external_auth={"site2": {"auto": {"saltdev": ["test.*"]}}})
    made = {"token": TOKEN, "expire": NOW + 100, "start": NOW, "name": "saltdev", "eauth": "auto"}
    body = {"username": "saltdev", "password": "pw", "eauth": "auto"}
    outcome, calls = handle(App(s), request("POST", "/login", body, x_salt_master="site2"), {MakeToken: made}, now=NOW)
    status, payload = answer(outcome)
    assert status == 200 and payload["return"][0]["perms"] == ["test.*"]  # site2's config, not the loaded one's
    assert calls == [MakeToken("saltdev", "pw", "auto", "site2")]


def test_logout_hook_keys_and_jobs_carry_the_master() -> None:
    app = App(settings(**TWO))
    two = {"x_auth_token": TOKEN, "x_salt_master": "site2"}
    _, calls = handle(app, request("POST", "/logout", **two), {GetToken: RECORD, RemoveToken: True}, now=NOW)
    assert calls == [GetToken(TOKEN, "site2"), RemoveToken(TOKEN, "site2")]
    _, calls = handle(app, request("POST", "/hook/x", {"a": 1}, **two), {GetToken: RECORD, FireEvent: True}, now=NOW)
    assert [c.master for c in calls] == ["site2", "site2"] and isinstance(calls[1], FireEvent)
    for target in ("/jobs", "/minions"):
        _, calls = handle(app, request("GET", target, **two), OK, now=NOW)
        assert [c.master for c in calls] == ["site2", "site2"]


def test_streams_check_tokens_on_the_default_master() -> None:
    outcome, calls = handle(App(settings(**TWO)), request("GET", "/events", x_auth_token=TOKEN), OK, now=NOW)
    assert isinstance(outcome, AcceptEventStream)
    assert calls == [GetToken(TOKEN), GetAuthList(RECORD)]


def test_get_root_lists_the_masters_only_when_asked() -> None:
    app = App(settings(**TWO))
    _, body = answer(handle(app, request("GET", "/"), OK, now=NOW)[0])
    assert "masters" not in body and body["return"] == "Welcome"  # the reference's shape
    _, body = answer(handle(app, request("GET", "/?masters=1"), OK, now=NOW)[0])
    assert (body["masters"], body["default_master"]) == (["site1", "site2"], "site1")


# -- a node without a master ------------------------------------------------------------
COMMANDS = [
    ("POST", "/", CHUNK), ("POST", "/run", CHUNK), ("POST", "/login", {"username": "u", "password": "p", "eauth": "auto"}),
    ("POST", "/logout", None), ("GET", "/minions", None), ("GET", "/jobs", None), ("GET", "/keys", None),
    ("POST", "/token", {"username": "u", "password": "p", "eauth": "auto"}), ("POST", "/hook", {"a": 1}),
]


@pytest.mark.parametrize(("method", "target", "body"), COMMANDS)
def test_without_a_master_commands_are_503_saying_why(method: str, target: str, body: Any) -> None:
    app = App(settings(commands=False, enable_sessions=True))
    outcome, calls = handle(app, request(method, target, body, x_auth_token=TOKEN), OK, now=NOW)
    assert answer(outcome) == (503, {"status": "503 Service Unavailable", "return": NO_MASTER})
    assert calls == []


def test_without_a_master_streams_and_health_still_answer() -> None:
    app = App(settings(commands=False), health=lambda: Health(True, "event bus connected"))
    outcome, calls = handle(app, request("GET", "/events", x_auth_token=TOKEN), OK, now=NOW)
    assert isinstance(outcome, AcceptEventStream) and calls == [GetToken(TOKEN), GetAuthList(RECORD)]
    status, body = answer(handle(app, request("GET", "/health"), OK, now=NOW)[0])
    assert (status, body["return"]) == (200, f"event bus connected; {NO_MASTER}")
    _, body = answer(handle(app, request("GET", "/?masters=1"), OK, now=NOW)[0])
    assert (body["masters"], body["default_master"]) == ([], None)


def test_a_named_master_that_is_down_is_503_by_name() -> None:
    assert classify_salt_error(MasterUnavailable("site2")) == (
        503, "The Salt master 'site2' is unavailable (its event bus is down); try again later"
    )
    app = App(settings(**TWO))
    answers = per_master({None: OK, "site2": {**OK, RunLowstate: MasterUnavailable("site2")}})
    outcome, _ = handle(app, request("POST", "/run", {**RUN, "master": "site2"}), answers, now=NOW)
    assert answer(outcome)[0] == 503 and "'site2'" in answer(outcome)[1]["return"]


def test_per_master_answers_each_master_from_its_own_table() -> None:
    answers = per_master({None: {RunLowstate: "one"}, "site2": {RunLowstate: "two"}})
    chunks = [RUN, {**RUN, "master": "site2"}]
    outcome, _ = handle(App(settings(**TWO)), request("POST", "/run", chunks), answers, now=NOW)
    assert answer(outcome)[1] == {"return": ["one", "two"]}
    with pytest.raises(Unanswered):
        answers(RunLowstate(CHUNK, "site3"))


# -- the runtime: each call on its master's bridge ---------------------------------------
class RecordingBridge:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[Any] = []

    def execute(self, call: Any) -> str:
        self.calls.append(call)
        return self.name

    def load_auth(self) -> None:
        pass


LOADED = {"sock_dir": "/run/salt/site1", "hash_type": "sha256", "conf_file": "/etc/salt/master",
          "external_auth": {"auto": {"saltdev": [".*"]}}, "cachedir": "/tmp/site1"}


def two_masters_service(**block: Any) -> Any:
    from saltnado_runtime.service import Service

    s = Settings.from_opts({**LOADED, "rest_tornado": {"port": 0, "disable_ssl": True, **TWO, **block}})
    loaded: list[str] = []

    def load(path: str) -> dict[str, Any]:
        loaded.append(path)
        return {**LOADED, "sock_dir": "/run/salt/site2", "conf_file": path, "external_auth": {"auto": {"saltdev": ["@runner"]}}}

    service = Service(s, LOADED, Pacing(bus_settle=1.0), load_master=load)
    assert loaded == ["/etc/salt/site2/master"]  # the loaded config is not read again
    return service


def test_each_call_runs_on_its_masters_bridge() -> None:
    service = two_masters_service()
    masters = service.masters
    assert masters.bridges["site1"] is service.bridge  # the streamed master: same sock_dir
    assert list(masters.watched) == ["site2"]
    assert service.settings.external_auth_of("site2") == {"auto": {"saltdev": ["@runner"]}}
    one, two = RecordingBridge("site1"), RecordingBridge("site2")
    masters.stream_bridge = one
    masters.bridges.update(site1=one, site2=two)
    assert service.execute(RunLowstate(CHUNK, "site2")) == "site2"
    assert service.execute(RunLowstate(CHUNK)) == "site1"  # None: the default
    assert service.execute(GetToken(TOKEN, "site1")) == "site1"
    assert [type(c) for c in two.calls] == [RunLowstate] and len(one.calls) == 2


def test_a_second_master_is_down_until_its_bus_settles_and_its_calls_get_503_by_name() -> None:
    service = two_masters_service()
    site2 = service.masters.watched["site2"]
    call = RunLowstate(CHUNK, "site2")
    with pytest.raises(MasterUnavailable) as raised:
        with service.master_call(call, lambda: None):
            pass
    assert raised.value.master == "site2"
    with service.master_call(RunLowstate(CHUNK), lambda: None):  # site1 follows the streamed bus: up
        pass
    site2.connected(NOW)
    assert not site2.master_available  # a dying master's socket may still accept: not yet
    site2.tick(NOW + 1.0)
    assert site2.master_available
    abandoned: list[str] = []
    with service.master_call(call, lambda: abandoned.append("site2")), \
            service.master_call(RunLowstate(CHUNK), lambda: abandoned.append("site1")):
        site2.lost(ConnectionResetError(errno.ECONNRESET, "reset"), NOW + 2)
        service.masters_changed()
    assert abandoned == ["site2"]  # only the calls waiting for the master that went down
    assert "master(s) down: site2" in service.masters.health().reason


def test_health_is_503_only_when_the_default_master_is_down() -> None:
    service = two_masters_service()
    service.link.connected(NOW)
    service.link.tick(NOW + 5)
    assert service.masters.health() == Health(
        True, "event bus connected; master(s) down: site2 (commands to them get 503)"
    )
    service = two_masters_service(default_master="site2")
    service.link.connected(NOW)
    assert service.masters.health().ok is False


def test_liveness_logs_one_line_per_outage() -> None:
    live = MasterLiveness("site2", "/run/salt/site2", Pacing(bus_settle=1.0))
    for _ in range(3):
        live.unavailable(FileNotFoundError(errno.ENOENT, "No such file or directory"), NOW)
    live.connected(NOW)
    live.received(NOW + 0.1)
    live.lost(None, NOW + 2)
    live.unavailable(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), NOW + 3)
    messages = [notice.message for notice in live.notices()]
    assert messages == [
        "master site2: event bus unavailable (No such file or directory); commands to it get 503",
        "master site2: connected to its event bus at /run/salt/site2/master_event_pub.ipc",
        "master site2: available",
        "master site2: the master closed its event bus; commands to it get 503",
    ]
    assert live.health() == Health(False, "event bus unavailable (Connection refused)")
