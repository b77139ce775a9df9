"""A master configured for rest_cherrypy, served by saltnado, against salt-api's own
rest_cherrypy on the same real master (a second config dir holding a
``rest_cherrypy:`` block: ``salt-api -c`` that dir).

The same requests must give the same statuses and JSON shapes (jids, timestamps
and other values aside). Where they differ on purpose, the difference is asserted
in ``test_documented_differences`` and listed in README.md ("Moving from rest_cherrypy").
pepper, unchanged, runs its common commands against the rest_cherrypy-block saltnado.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from cherrypy_reference import cherrypy_api
from conftest import BINDINGS, RunningServer, running_server
from saltnado_core import Settings
from saltnado_core.blocks import Dialect
from test_salt_pepper import _documents, pepper
from test_salt_reference_diff import shape
from test_salt_rest import call

pytest.importorskip("cherrypy")
pytestmark = pytest.mark.salt

CREDS = "username=saltdev&password=x&eauth=auto"
FORM = "application/x-www-form-urlencoded"


def cherrypy_opts(master_opts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The lab master's options with a rest_cherrypy: block instead of rest_tornado:."""
    opts = {key: value for key, value in master_opts.items() if key != "rest_tornado"}
    opts["rest_cherrypy"] = {"port": 0, "host": "127.0.0.1", "disable_ssl": True, **extra}
    return opts


@pytest.fixture(params=BINDINGS)
async def cherry(
    request: pytest.FixtureRequest, salt_lab: Any, master_opts: dict[str, Any]
) -> AsyncIterator[RunningServer]:
    """saltnado serving the lab's master from a rest_cherrypy: block."""
    settings = Settings.from_opts(cherrypy_opts(master_opts))
    assert settings.dialect is Dialect.CHERRYPY and settings.salt_threads == 100
    async with running_server(request.param, salt_lab, master_opts, dataclasses.replace(settings, port=0)) as running:
        yield running


@pytest.fixture(scope="module")
def reference(salt_lab: Any) -> Iterator[int]:
    """salt-api serving rest_cherrypy for the lab's master, on a port of its own."""
    with cherrypy_api(salt_lab) as port:
        yield port


def login(port: int) -> tuple[str, dict[str, str], Any]:
    status, headers, answer = call(port, "POST", "/login", CREDS, content_type=FORM)
    assert status == 200, answer
    return answer["return"][0]["token"], headers, answer


BAD_TOKEN = "0" * 64
LOCAL = {"client": "local", "tgt": "minion1", "fun": "test.ping"}
CREDENTIALS = {"username": "saltdev", "password": "x", "eauth": "auto"}

SAME = [
    # (name, method, path, body, token: "session" | "bad" | None, shape depth; 0: status only)
    ("local", "POST", "/", [LOCAL], "session", 4),
    ("local echo", "POST", "/", [{"client": "local", "tgt": "minion1", "fun": "test.echo", "arg": ["x"]}], "session", 4),
    ("local_async", "POST", "/", [{"client": "local_async", "tgt": "minion1", "fun": "test.ping"}], "session", 4),
    ("runner", "POST", "/", [{"client": "runner", "fun": "test.arg", "arg": ["a"]}], "session", 4),
    ("runner list_jobs", "POST", "/", [{"client": "runner", "fun": "jobs.list_jobs"}], "session", 2),
    ("wheel", "POST", "/", [{"client": "wheel", "fun": "key.list_all"}], "session", 3),
    ("minions", "GET", "/minions/minion1", None, "session", 3),
    ("post minions", "POST", "/minions", [{"tgt": "minion1", "fun": "test.ping"}], "session", 4),
    ("jobs", "GET", "/jobs", None, "session", 2),
    ("run", "POST", "/run", [{**LOCAL, **CREDENTIALS}], None, 4),
    ("hook", "POST", "/hook/diff", {"a": 1}, "session", 3),
    # errors: the status alone (rest_cherrypy's error bodies are CherryPy's HTML pages)
    ("no token", "GET", "/minions", None, None, 0),
    ("bad token", "POST", "/", [LOCAL], "bad", 0),
    ("not a list", "POST", "/", '"nonsense"', "session", 0),
    ("no such path", "GET", "/nowhere", None, None, 0),
]


def ask(port: int, token: str, method: str, path: str, body: Any, who: str | None, depth: int) -> tuple[int, Any]:
    status, _, answer = call(port, method, path, body, {"session": token, "bad": BAD_TOKEN, None: None}[who])
    return status, (shape(answer, depth) if depth else None)


async def test_same_status_and_shape_as_rest_cherrypy(cherry: RunningServer, reference: int) -> None:
    def both() -> list[tuple[str, Any, Any]]:
        ours, ours_headers, ours_login = login(cherry.port)
        theirs, their_headers, their_login = login(reference)
        out = [("login", (shape(ours_login, 4), list(ours_login["return"][0])),
                (shape(their_login, 4), list(their_login["return"][0])))]
        out.append(("login headers", ("x-auth-token" in ours_headers, ours_headers["set-cookie"][:11]),
                    ("x-auth-token" in their_headers, their_headers["set-cookie"][:11])))
        for name, method, path, body, who, depth in SAME:
            out.append((name, ask(cherry.port, ours, method, path, body, who, depth),
                        ask(reference, theirs, method, path, body, who, depth)))
        jid = call(reference, "POST", "/minions", [{"tgt": "minion1", "fun": "test.ping"}], theirs)[2]["return"][0]["jid"]
        time.sleep(3)  # the minion answers, and the job cache has its return
        out.append(("job", ask(cherry.port, ours, "GET", f"/jobs/{jid}", None, "session", 2),
                    ask(reference, theirs, "GET", f"/jobs/{jid}", None, "session", 2)))
        out.append(("logout", ask(cherry.port, ours, "POST", "/logout", None, "session", 3),
                    ask(reference, theirs, "POST", "/logout", None, "session", 3)))
        return out

    differing = [(name, ours, theirs) for name, ours, theirs in await trio.to_thread.run_sync(both) if ours != theirs]
    assert differing == []


async def test_documented_differences(cherry: RunningServer, reference: int) -> None:
    def both() -> dict[str, tuple[Any, Any]]:
        ours, _, _ = login(cherry.port)
        theirs, _, _ = login(reference)
        diff: dict[str, tuple[Any, Any]] = {}
        diff["clients"] = (call(cherry.port, "GET", "/")[2]["clients"], call(reference, "GET", "/")[2]["clients"])
        # saltnado's token is Salt's own: the same token opens the event stream websocket
        # and is accepted by the other server; rest_cherrypy's is a CherryPy session id.
        diff["token"] = (len(ours), len(theirs))
        # … so neither server takes the other's /login token on its session endpoints
        diff["swapped tokens"] = (call(cherry.port, "POST", "/", [LOCAL], theirs)[0],
                                  call(reference, "POST", "/", [LOCAL], ours)[0])
        diff["error body"] = (
            call(cherry.port, "GET", "/minions")[1]["content-type"], call(reference, "GET", "/minions")[1]["content-type"]
        )
        diff["login page"] = (call(cherry.port, "GET", "/login")[:3:2], call(reference, "GET", "/login")[:3:2])
        diff["get logout"] = (call(cherry.port, "GET", "/logout", None, ours)[0],
                              call(reference, "GET", "/logout", None, theirs)[0])
        diff["cors"] = (
            call(cherry.port, "GET", "/", headers={"Origin": "https://evil.example"})[1].get("access-control-allow-origin"),
            call(reference, "GET", "/", headers={"Origin": "https://evil.example"})[1].get("access-control-allow-origin"),
        )
        return diff

    diff = await trio.to_thread.run_sync(both)
    # GET / lists what saltnado can run and the master enables; rest_cherrypy lists salt.netapi.CLIENTS whatever.
    assert diff["clients"][0] == ["local", "local_async", "runner", "runner_async", "wheel", "wheel_async"]
    assert "ssh" in diff["clients"][1] and "destroy" in diff["clients"][1]
    # the /login token: Salt's token (sha256: 64 hex digits) here, a CherryPy session id (40) there
    assert diff["token"] == (64, 40)
    assert diff["swapped tokens"] == (401, 401)
    # errors: JSON {"status", "return"} here, CherryPy's HTML error page there
    assert diff["error body"][0] == "application/json" and diff["error body"][1].startswith("text/html")
    # GET /login: the same page, but rest_cherrypy's "status" is null (read before CherryPy sets it)
    assert diff["login page"] == (
        (200, {"status": "200 OK", "return": "Please log in"}), (200, {"status": None, "return": "Please log in"})
    )
    # GET /logout: 405 naming POST here; rest_cherrypy fails with 500
    assert diff["get logout"] == (405, 500)
    # CORS: no origin is allowed unless cors_origin lists it; rest_cherrypy reflects any Origin, with credentials
    assert diff["cors"] == (None, "https://evil.example")


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (("*", "test.ping"), lambda docs: docs == [{"minion1": True}]),
        (("--client", "local_async", "*", "test.ping"), lambda docs: docs[0]["jid"].isdigit()),
        (("--client", "runner", "jobs.list_jobs"), lambda docs: isinstance(docs[0], dict)),
        (("--client", "wheel", "key.list_all"), lambda docs: docs[0]["minions"] == ["minion1"]),
    ],
)
async def test_pepper_against_a_rest_cherrypy_block(
    cherry: RunningServer, tmp_path: Path, args: tuple[str, ...], check: Any
) -> None:
    code, out, err = await trio.to_thread.run_sync(lambda: pepper(cherry, tmp_path, "--out", "json", *args))
    assert code == 0, err
    assert check(_documents(out)), out


async def test_root_prefix_and_authorized_ips_on_a_real_socket(salt_lab: Any, master_opts: dict[str, Any]) -> None:
    """The peer address comes from the socket (both bindings): loopback is let in,
    and the API answers only under root_prefix."""
    for binding in BINDINGS:
        for allowed, status in ((["127.0.0.1"], 200), (["192.0.2.1"], 403)):
            settings = Settings.from_opts(cherrypy_opts(master_opts, root_prefix="/api", authorized_ips=allowed))
            async with running_server(binding, salt_lab, master_opts, dataclasses.replace(settings, port=0)) as srv:
                got = await trio.to_thread.run_sync(lambda: call(srv.port, "GET", "/api/")[0])
                assert got == status, (binding, allowed)
                if status == 200:
                    outside = await trio.to_thread.run_sync(lambda: call(srv.port, "GET", "/")[0])
                    assert outside == 404


async def test_hook_events_have_rest_cherrypys_shape(cherry: RunningServer, reference: int, master_opts: dict[str, Any]) -> None:
    """The same POST /hook to both servers, each event read off the master's bus: the
    same fields and values, except the headers saltnado keeps off the bus (credentials)."""
    import salt.utils.event

    body = "revision=aa22&result=ok&result=again"

    def both() -> dict[str, dict[str, Any]]:
        bus = salt.utils.event.get_master_event(master_opts, master_opts["sock_dir"], listen=True)
        try:
            got: dict[str, dict[str, Any]] = {}
            for name, port in (("ours", cherry.port), ("theirs", reference)):
                token = login(port)[0]
                status, _, answer = call(port, "POST", f"/hook/diff/{name}?q=1", body, token, content_type=FORM,
                                         headers={"X-Build": "42", "X-Hub-Signature-256": "sha256=ab"})
                assert (status, answer) == (200, {"success": True}), (name, answer)
                event = bus.get_event(wait=30, tag=f"salt/netapi/hook/diff/{name}", full=True)
                assert event is not None, name
                got[name] = {key: value for key, value in event["data"].items() if key != "_stamp"}
            return got
        finally:
            bus.destroy()

    got = await trio.to_thread.run_sync(both)
    ours, theirs = got["ours"], got["theirs"]
    assert set(ours) == set(theirs) == {"body", "post", "headers"}
    assert ours["body"] == theirs["body"] == body
    assert ours["post"] == theirs["post"] == {"revision": "aa22", "result": ["ok", "again"]}  # the query stays out
    assert ours["headers"]["Remote-Addr"] == theirs["headers"]["Remote-Addr"] == "127.0.0.1"
    assert ours["headers"]["X-Build"] == theirs["headers"]["X-Build"] == "42"
    # the one difference: rest_cherrypy broadcasts the caller's credentials to every reader of the bus
    assert {"X-Auth-Token", "X-Hub-Signature-256"} <= set(theirs["headers"])
    assert set(theirs["headers"]) - set(ours["headers"]) == {"X-Auth-Token", "X-Hub-Signature-256"}
