"""The embedding API on both bindings, in-process, against the session's master:
start inside the host's loop, subscribe to live events without a socket, hand
over connections accepted by the host's own listener."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from typing import Any

import pytest
import trio

from conftest import LoopThread, http, parse_response
from saltnado_core import SaltEvent, Settings
from saltnado_core.subscriptions import SlowSubscriber

GET_ROOT = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.fixture
def settings(master_opts: dict[str, Any]) -> Settings:
    return dataclasses.replace(Settings.from_opts(master_opts), port=0, address="127.0.0.1")


@pytest.fixture
def loop() -> Any:
    thread = LoopThread()
    yield thread
    thread.close()


def _welcome(port: int) -> dict[str, Any]:
    status, _, body = parse_response(http(port, GET_ROOT))
    assert status == 200
    return json.loads(body)


# -- asyncio -------------------------------------------------------------------------


async def test_asyncio_host_subscribes_and_hands_over_connections(
    salt_lab: Any, master_opts: dict[str, Any], settings: Settings, loop: LoopThread
) -> None:
    from saltnado_asyncio import Server

    async def host() -> tuple[list[SaltEvent], dict[str, Any], bool]:
        async with Server(settings, master_opts) as server:
            assert server.sockets  # its own listener…
            own = await asyncio.start_server(server.handle_connection, "127.0.0.1", 0)  # …and the host's
            port = own.sockets[0].getsockname()[1]
            while server.feed.state != "connected":
                await asyncio.sleep(0.02)
            events = server.hub.subscribe("saltnado/test/embed/")
            await asyncio.to_thread(salt_lab.fire_event, {"n": 1}, "saltnado/test/other")
            await asyncio.to_thread(salt_lab.fire_event, {"n": 2}, "saltnado/test/embed/a")
            got = [await asyncio.wait_for(anext(events), 20)]
            welcome = await asyncio.to_thread(_welcome, port)
            own.close()
        # shutdown ended the subscription: the loop stops instead of hanging
        rest = [event async for event in events]
        return got + rest, welcome, len(server.hub) == 0

    got, welcome, unsubscribed = await trio.to_thread.run_sync(loop.run, host())
    assert [(e.tag, e.data["n"]) for e in got] == [("saltnado/test/embed/a", 2)]
    assert welcome["return"] == "Welcome"
    assert unsubscribed


async def test_asyncio_start_without_listeners_and_slow_subscriber(
    salt_lab: Any, master_opts: dict[str, Any], settings: Settings, loop: LoopThread
) -> None:
    from saltnado_asyncio import Server

    async def host() -> tuple[list[Any], str]:
        server = Server(settings, master_opts)
        await server.start(listen=False)
        try:
            assert server.sockets == []
            while server.feed.state != "connected":
                await asyncio.sleep(0.02)
            slow = server.hub.subscribe("saltnado/test/slow", max_events=1)
            for n in range(3):
                await asyncio.to_thread(salt_lab.fire_event, {"n": n}, "saltnado/test/slow")
            while len(server.hub):  # cut off once its one slot overflowed
                await asyncio.sleep(0.02)
            with pytest.raises(SlowSubscriber) as info:
                await anext(slow)
            return [info.value.code], info.value.reason
        finally:
            await server.shutdown()

    codes, reason = await trio.to_thread.run_sync(loop.run, host())
    assert codes == [1013] and "too slow" in reason


# -- trio -----------------------------------------------------------------------------


async def test_trio_host_subscribes_and_hands_over_connections(
    salt_lab: Any, master_opts: dict[str, Any], settings: Settings
) -> None:
    from saltnado_trio import Server

    server = Server(settings, master_opts)
    async with trio.open_nursery() as nursery:
        assert await nursery.start(functools.partial(server.serve, listen=False)) == []
        own = await nursery.start(functools.partial(trio.serve_tcp, server.handle_connection, 0, host="127.0.0.1"))
        port = own[0].socket.getsockname()[1]
        with trio.fail_after(10):
            while server.feed.state != "connected":
                await trio.sleep(0.02)
        events = server.hub.subscribe("saltnado/test/embed/")
        await trio.to_thread.run_sync(salt_lab.fire_event, {"n": 1}, "saltnado/test/other")
        await trio.to_thread.run_sync(salt_lab.fire_event, {"n": 2}, "saltnado/test/embed/b")
        with trio.fail_after(20):
            got = [await events.__anext__()]
        assert (await trio.to_thread.run_sync(_welcome, port))["return"] == "Welcome"
        await server.shutdown()
        got += [event async for event in events]  # ended by the shutdown
        nursery.cancel_scope.cancel()
    assert [(e.tag, e.data["n"]) for e in got] == [("saltnado/test/embed/b", 2)]
    assert len(server.hub) == 0
