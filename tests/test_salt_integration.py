"""End to end with the session's real salt-master and salt-minion."""

from __future__ import annotations

import json
import time
from typing import Any

import trio
import websocket

from conftest import RunningServer


def _connect(server: RunningServer, token: str) -> websocket.WebSocket:
    ws = websocket.create_connection(server.ws_url(token), timeout=30)
    ws.send("websocket client ready")
    time.sleep(0.2)
    return ws


def _collect(ws: websocket.WebSocket, done: Any, limit: float = 60) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        seen.append(json.loads(ws.recv()))
        if done(seen):
            return seen
    raise AssertionError(f"timed out; saw {[m['tag'] for m in seen]}")


async def test_test_ping_job_events_reach_the_websocket(server: RunningServer, token: str) -> None:
    def scenario() -> tuple[str, list[dict[str, Any]]]:
        ws = _connect(server, token)
        try:
            result = server.lab.salt_cmd("minion1", "test.ping", "--async")
            jid = result.stdout.strip().split()[-1]
            assert jid.isdigit(), result.stdout
            tags = {f"salt/job/{jid}/new", f"salt/job/{jid}/ret/minion1"}
            return jid, _collect(ws, lambda seen: tags <= {m["tag"] for m in seen})
        finally:
            ws.close()

    jid, seen = await trio.to_thread.run_sync(scenario)
    by_tag = {m["tag"]: m["data"] for m in seen}
    new = by_tag[f"salt/job/{jid}/new"]
    assert new["jid"] == jid and new["fun"] == "test.ping" and new["minions"] == ["minion1"]
    assert new["tgt"] == "minion1" and new["tgt_type"] == "glob"
    ret = by_tag[f"salt/job/{jid}/ret/minion1"]
    assert ret["id"] == "minion1" and ret["return"] is True and ret["success"] is True
    assert ret["retcode"] == 0 and ret["fun"] == "test.ping" and ret["jid"] == jid


async def test_master_restart_keeps_websocket_clients(server: RunningServer, token: str) -> None:
    lab = server.lab
    ws = await trio.to_thread.run_sync(_connect, server, token)
    subscriptions = server.server.feed.connections
    await trio.to_thread.run_sync(lab.stop_master)
    with trio.fail_after(15):
        while server.server.feed.state == "connected":
            await trio.sleep(0.05)
    assert len(server.server.streams.all_events) == 1  # the client is still there
    await trio.to_thread.run_sync(lab.start_master)
    with trio.fail_after(30):
        await server.wait_feed_connected()
    assert server.server.feed.connections > subscriptions  # it re-subscribed by itself

    def after_restart() -> dict[str, Any]:
        try:
            assert lab.fire_event({"after": "restart"}, "saltnado/test/after-restart")
            return _collect(ws, lambda seen: seen[-1]["tag"] == "saltnado/test/after-restart")[-1]
        finally:
            ws.close()

    message = await trio.to_thread.run_sync(after_restart)
    assert message["data"]["after"] == "restart"
