"""/formatted_events against the session's real salt-master and salt-minion."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import trio
import websocket

from conftest import RunningServer
from saltnado_core import encode_pull_message


def _open(server: RunningServer, token: str, query: str = "") -> websocket.WebSocket:
    ws = websocket.create_connection(server.ws_url(token, "formatted_events") + query, timeout=30)
    ws.send("websocket client ready")
    return ws


def _until(ws: websocket.WebSocket, done: Any, limit: float = 60) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        seen.append(json.loads(ws.recv()))
        if done(seen[-1]):
            return seen
    raise AssertionError(f"timed out; last messages {seen[-3:]}")


def _jid(lab: Any, *args: str) -> str:
    result = lab.salt_cmd(*args, "--async")
    jid = result.stdout.strip().split()[-1]
    assert jid.isdigit(), result.stdout + result.stderr
    return jid


def _job_complete(jid: str) -> Any:
    return lambda m: m.get("jobs", {}).get(jid, {}).get("state") == "complete"


async def test_minion_with_grains_then_jobs_complete_including_a_failure(
    server: RunningServer, token: str
) -> None:
    def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], str, str]:
        ws = _open(server, token)
        try:
            first = [json.loads(ws.recv()), json.loads(ws.recv())]  # the view on connect
            _until(ws, lambda m: "grains" in m.get("minions", {}).get("minion1", {}))
            ping = _jid(server.lab, "minion1", "test.ping")
            ping_done = _until(ws, _job_complete(ping))[-1]
            fail = _jid(server.lab, "minion1", "cmd.run", "exit 3")
            fail_done = _until(ws, _job_complete(fail))[-1]
            return first, ping_done, fail_done, ping, fail
        finally:
            ws.close()

    first, ping_done, fail_done, ping, fail = await trio.to_thread.run_sync(scenario)
    assert [list(m) for m in first] == [["minions"], ["jobs"]]
    job = ping_done["jobs"][ping]
    assert job["fun"] == "test.ping" and job["tgt"] == "minion1" and job["tgt_type"] == "glob"
    assert job["minions"] == {"minion1": {"return": True, "retcode": 0, "success": True}}
    failed = fail_done["jobs"][fail]
    assert failed["fun"] == "cmd.run" and failed["state"] == "complete"
    assert failed["minions"]["minion1"]["retcode"] == 3
    assert failed["minions"]["minion1"]["success"] is False


async def test_minion_message_carries_grains(server: RunningServer, token: str) -> None:
    def scenario() -> dict[str, Any]:
        ws = _open(server, token)
        try:
            return _until(ws, lambda m: "grains" in m.get("minions", {}).get("minion1", {}))[-1]
        finally:
            ws.close()

    message = await trio.to_thread.run_sync(scenario)
    entry = message["minions"]["minion1"]
    assert entry["id"] == "minion1"
    assert entry["grains"]["id"] == "minion1" and "os" in entry["grains"]


async def test_key_delete_and_accept_remove_and_restore_the_minion(server: RunningServer, token: str) -> None:
    lab = server.lab

    def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        ws = _open(server, token, "?delta=1")
        try:
            _until(ws, lambda m: "minion1" in m.get("minions", {}))
            assert lab.salt_key("-d", "minion1", "-y").returncode == 0
            gone = _until(ws, lambda m: m.get("minions", {}).get("minion1", "absent") is None)[-1]
            lab.restart_minion("minion1")  # a deleted minion re-submits its key on start
            deadline = time.monotonic() + 60
            while not lab.key_pending("minion1"):
                assert time.monotonic() < deadline, "minion did not re-submit its key"
                time.sleep(0.2)
            assert lab.salt_key("-A", "-y").returncode == 0
            # The accept event (salt/key act=accepted) brings it back, without grains yet.
            back = _until(ws, lambda m: m.get("minions", {}).get("minion1") == {"id": "minion1"})[-1]
            return gone, back
        finally:
            ws.close()
            lab.wait_ping(90)  # leave the lab as we found it

    gone, back = await trio.to_thread.run_sync(scenario)
    assert gone == {"minions": {"minion1": None}}  # delta mode: only the change
    assert back["minions"]["minion1"]["id"] == "minion1"


async def test_client_is_told_when_salt_refuses_the_grains_request(server: RunningServer) -> None:
    from conftest import login

    # 'watcher' may read the event bus ('@events') but run nothing, not even grains.items.
    token = (await trio.to_thread.run_sync(login, server.port, "watcher"))["token"]

    def scenario() -> dict[str, Any]:
        ws = _open(server, token)
        try:
            return _until(ws, lambda m: "error" in m, limit=30)[-1]
        finally:
            ws.close()

    error = (await trio.to_thread.run_sync(scenario))["error"]
    assert error["status"].startswith(("401", "403"))
    assert error["return"]


def _fire_big_jobs(sock_dir: str, jids: list[str]) -> None:
    """Each jid: a 'new' event and a 1 MB return, fired onto the real master's bus."""
    pull = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pull.connect(os.path.join(sock_dir, "master_event_pull.ipc"))
    with pull:
        for jid in jids:
            new = {"jid": jid, "minions": ["minion1"], "fun": "cmd.run", "tgt": "minion1", "tgt_type": "glob"}
            ret = {"return": "x" * 1_000_000, "retcode": 0, "success": True, "fun": "cmd.run"}
            pull.sendall(encode_pull_message(f"salt/job/{jid}/new", new))
            pull.sendall(encode_pull_message(f"salt/job/{jid}/ret/minion1", ret))


async def test_a_new_client_stays_connected_after_20_jobs_of_1_mb(server: RunningServer, token: str) -> None:
    """Before: the view held 20 MB and a new client was closed 1013 right after ready."""
    jids = [f"209912310000000000{i:02d}" for i in range(20)]
    await trio.to_thread.run_sync(_fire_big_jobs, str(server.lab.sock_dir), jids)
    view = server.server.streams.formatted.view
    with trio.fail_after(60):
        while jids[-1] not in view.jobs or view.jobs[jids[-1]]["state"] != "complete":
            await trio.sleep(0.05)

    def scenario(query: str) -> tuple[dict[str, Any], dict[str, Any]]:
        ws = _open(server, token, query)
        try:
            minions, jobs = json.loads(ws.recv()), json.loads(ws.recv())  # the view on connect
            assert "minions" in minions
            # and it stays connected: the grains request's job comes next
            return jobs, _until(ws, lambda m: "jobs" in m, limit=30)[-1]
        finally:
            ws.close()

    for query in ("", "?delta=1"):
        jobs, _ = await trio.to_thread.run_sync(scenario, query)
        assert [jid for jid in jobs["jobs"] if jid in jids] == jids  # (and the grains requests' jobs)
        entry = jobs["jobs"][jids[0]]["minions"]["minion1"]
        assert entry["return"] == {"saltnado/truncated": {"bytes": 1_000_002, "full": f"/jobs/{jids[0]}"}}
