"""Commands to two real masters from one server, and a server with no master for commands.

The session's master (``site1``, its minion ``minion1``: the config the server
loads, whose events it streams) and a second private master of this module's own
(``site2``, its minion ``minion2``): ``test.ping`` to ``*`` shows which master
answered. A token belongs to the master that issued it; a master that is
stopped answers 503 by name while the other goes on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import websocket

from conftest import BINDINGS, RunningServer, private_lab, running_server
from saltnado_core import Settings
from saltnado_core.masters import NO_MASTER
from test_salt_rest import call

pytestmark = pytest.mark.salt

PING = {"client": "local", "tgt": "*", "fun": "test.ping"}
CREDENTIALS = {"username": "saltdev", "password": "anything", "eauth": "auto"}


@pytest.fixture(scope="module")
def site2() -> Iterator[Any]:
    """A second master with its own minion, for this module only."""
    with private_lab(minion_ids=("minion2",)) as lab:
        yield lab


def settings_for(master_opts: dict[str, Any], **block: Any) -> Settings:
    opts = {**master_opts, "rest_tornado": {**master_opts["rest_tornado"], **block}}
    return dataclasses.replace(Settings.from_opts(opts), port=0, address="127.0.0.1")


def two_masters(master_opts: dict[str, Any], salt_lab: Any, site2: Any) -> Settings:
    masters = {"site1": str(salt_lab.master_config_path), "site2": str(site2.master_config_path)}
    return settings_for(master_opts, masters=masters, default_master="site1")


async def until_site2(running: RunningServer, up: bool, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while running.server.service.masters.available("site2") is not up:
            await trio.sleep(0.05)


async def request(port: int, method: str, path: str, body: Any = None, token: str | None = None,
                  master: str | None = None) -> tuple[int, Any]:
    headers = {"X-Salt-Master": master} if master else {}
    status, _, payload = await trio.to_thread.run_sync(lambda: call(port, method, path, body, token, headers=headers))
    return status, payload


@pytest.mark.parametrize("binding", BINDINGS)
async def test_each_request_goes_to_the_master_it_names(
    binding: str, salt_lab: Any, master_opts: dict[str, Any], site2: Any
) -> None:
    async with running_server(binding, salt_lab, master_opts, two_masters(master_opts, salt_lab, site2)) as running:
        port = running.port
        await until_site2(running, up=True)
        status, body = await request(port, "GET", "/?masters=1")
        assert (status, body["masters"], body["default_master"]) == (200, ["site1", "site2"], "site1")

        status, body = await request(port, "POST", "/login", CREDENTIALS)
        assert status == 200
        token1 = body["return"][0]["token"]
        status, body = await request(port, "POST", "/login", CREDENTIALS, master="site2")
        assert status == 200
        token2 = body["return"][0]["token"]

        assert await request(port, "POST", "/", PING, token1) == (200, {"return": [{"minion1": True}]})
        assert await request(port, "POST", "/", PING, token2, "site2") == (200, {"return": [{"minion2": True}]})
        # a token belongs to the master that issued it
        assert (await request(port, "POST", "/", PING, token1, "site2"))[0] == 401
        assert (await request(port, "POST", "/", PING, token2))[0] == 401

        # per chunk, the master key removed before Salt sees it
        chunks = [{**PING, **CREDENTIALS}, {**PING, **CREDENTIALS, "master": "site2"}]
        assert await request(port, "POST", "/run", chunks) == (200, {"return": [{"minion1": True}, {"minion2": True}]})
        keys = {"client": "wheel", "fun": "key.list_all"}
        status, body = await request(port, "POST", "/", keys, token2, "site2")
        accepted = body["return"][0]["data"]["return"]["minions"]
        assert (status, accepted) == (200, ["minion2"])

        status, body = await request(port, "POST", "/", PING, token1, "site3")
        assert (status, body["return"]) == (400, "unknown Salt master 'site3'; this node knows: site1, site2")


async def test_a_stopped_master_is_503_by_name_and_the_other_goes_on(
    salt_lab: Any, master_opts: dict[str, Any], site2: Any
) -> None:
    """Last in the module: site2 is not started again."""
    async with running_server("trio", salt_lab, master_opts, two_masters(master_opts, salt_lab, site2)) as running:
        port = running.port
        await until_site2(running, up=True)
        status, body = await request(port, "POST", "/login", CREDENTIALS)
        token1 = body["return"][0]["token"]
        status, body = await request(port, "POST", "/login", CREDENTIALS, master="site2")
        token2 = body["return"][0]["token"]
        await trio.to_thread.run_sync(site2.stop_master)
        await until_site2(running, up=False)
        with trio.fail_after(10):  # fails at once, not after Salt's own timeouts
            status, body = await request(port, "POST", "/", PING, token2, "site2")
        assert (status, body["return"]) == (
            503, "The Salt master 'site2' is unavailable (its event bus is down); try again later"
        )
        assert await request(port, "POST", "/", PING, token1) == (200, {"return": [{"minion1": True}]})
        status, body = await request(port, "GET", "/health")
        assert status == 200 and "master(s) down: site2" in body["return"]  # the default is up


async def test_a_node_without_a_master_streams_and_answers_commands_503(
    salt_lab: Any, master_opts: dict[str, Any]
) -> None:
    from saltnado_core import MakeToken
    from saltnado_salt import SaltBridge

    settings = settings_for(master_opts, commands=False)
    async with running_server("trio", salt_lab, master_opts, settings) as running:
        port = running.port
        for method, path, body in (("POST", "/login", CREDENTIALS), ("POST", "/run", {**PING, **CREDENTIALS})):
            assert await request(port, method, path, body) == (
                503, {"status": "503 Service Unavailable", "return": NO_MASTER}
            )
        status, body = await request(port, "GET", "/health")
        assert (status, body["return"]) == (200, f"event bus connected; {NO_MASTER}")
        # a token from the token store it shares (here: the same master's), checked for the stream
        record = await trio.to_thread.run_sync(
            lambda: SaltBridge(master_opts).execute(MakeToken("saltdev", "anything", "auto"))
        )

        def stream_one() -> str:
            ws = websocket.create_connection(running.ws_url(record["token"]), timeout=30)
            try:
                ws.send("websocket client ready")
                assert salt_lab.fire_event({"n": 1}, "saltnado/test/masters/edge")
                while True:
                    tag = json.loads(ws.recv())["tag"]
                    if tag == "saltnado/test/masters/edge":
                        return tag
            finally:
                ws.close()

        assert await trio.to_thread.run_sync(stream_one) == "saltnado/test/masters/edge"
