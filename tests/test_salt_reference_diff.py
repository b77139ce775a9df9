"""Differential test: the same requests to saltnado and to the reference — salt's own
rest_tornado (`salt-api`, installed with salt) — in front of the same real master.

Successful calls must give the same status codes and JSON shapes (jids, timestamps and other
values aside). Where they differ on purpose, the difference is asserted here and listed in
README.md ("Differences from rest_tornado").
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import RunningServer
from test_salt_rest import call


@pytest.fixture(scope="module")
def reference(salt_lab: Any) -> Iterator[int]:
    """salt-api with rest_tornado on the lab's configured API port."""
    log = Path(salt_lab.root) / "logs" / "salt-api.out"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "salt-api"), "-c", str(salt_lab.config_dir), "-l", "warning"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    port = salt_lab.api_port
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if call(port, "GET", "/")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "salt-api did not start"
            time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def shape(value: Any, depth: int = 3) -> Any:
    """The structure of a JSON value: keys and types, not values."""
    if depth == 0:
        return type(value).__name__
    if isinstance(value, dict):
        return {key: shape(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item, depth - 1) for item in value]
    return type(value).__name__


def login_token(port: int) -> str:
    body = "username=saltdev&password=x&eauth=auto"
    status, headers, answer = call(port, "POST", "/login", body, content_type="application/x-www-form-urlencoded")
    assert status == 200 and headers["set-cookie"].startswith(f"session_id={answer['return'][0]['token']}; Path=/")
    return answer["return"][0]["token"]


SAME = [
    # (method, path, body, authenticated, shape depth)
    ("GET", "/login", None, False, 3),
    ("POST", "/", {"client": "local", "tgt": "minion1", "fun": "test.ping"}, True, 4),
    ("POST", "/", {"client": "local", "tgt": "minion1", "fun": "test.echo", "arg": "x"}, True, 4),
    ("POST", "/", {"client": "local_async", "tgt": "minion1", "fun": "test.ping"}, True, 4),
    ("POST", "/", {"client": "runner_async", "fun": "test.arg", "arg": ["a"]}, True, 4),
    ("POST", "/", {"client": "runner", "fun": "test.arg", "arg": ["a"]}, True, 4),
    ("POST", "/", {"client": "runner", "fun": "jobs.list_jobs"}, True, 2),  # keyed by jid
    ("GET", "/minions/minion1", None, True, 3),
    ("GET", "/jobs", None, True, 2),
    ("POST", "/run", {"client": "local", "tgt": "minion1", "fun": "test.ping", "username": "saltdev", "password": "x", "eauth": "auto"}, False, 4),
    ("POST", "/run", {"client": "local", "tgt": "minion1", "fun": "test.ping"}, False, 4),  # no credentials
    ("POST", "/hook/diff", {"a": 1}, True, 3),
]


async def test_same_status_and_shape_as_the_reference(server: RunningServer, reference: int) -> None:
    def both() -> list[tuple[Any, Any, Any]]:
        tokens = {server.port: login_token(server.port), reference: login_token(reference)}
        # The reference answers a login with the same keys, in the same order.
        answers = [call(port, "POST", "/login", "username=saltdev&password=x&eauth=auto",
                        content_type="application/x-www-form-urlencoded")[2] for port in tokens]
        assert shape(answers[0], 4) == shape(answers[1], 4)
        assert list(answers[0]["return"][0]) == list(answers[1]["return"][0])
        out = []
        for method, path, body, auth, depth in SAME:
            got = []
            for port, token in tokens.items():
                status, _, answer = call(port, method, path, body, token if auth else None)
                got.append((status, shape(answer, depth)))
            out.append(((method, path, body), got[0], got[1]))
        return out

    for request, ours, theirs in await trio.to_thread.run_sync(both):
        assert ours == theirs, request


async def test_documented_differences(server: RunningServer, reference: int) -> None:
    def both() -> dict[str, tuple[Any, Any]]:
        ours_token, ref_token = login_token(server.port), login_token(reference)
        diff = {}
        low = {"client": "local_async", "tgt": "minion1", "fun": "test.ping"}
        ours = call(server.port, "POST", "/minions", low, ours_token)
        ref = call(reference, "POST", "/minions", low, ref_token)
        diff["post_minions"] = ((ours[0], sorted(ours[2])), (ref[0], sorted(ref[2])))
        ours = call(server.port, "POST", "/", {"client": "wheel", "fun": "key.list_all"}, ours_token)
        ref = call(reference, "POST", "/", {"client": "wheel", "fun": "key.list_all"}, ref_token)
        diff["wheel"] = (ours[0], ref[0])
        ours = call(server.port, "GET", "/minions", None, None)
        ref = call(reference, "GET", "/minions", None, None, headers={})
        diff["unauthenticated"] = (ours[0], ref[0])
        diff["clients"] = (call(server.port, "GET", "/")[2]["clients"], call(reference, "GET", "/")[2]["clients"])
        return diff

    diff = await trio.to_thread.run_sync(both)
    # POST /minions: 202 with _links, as the reference documents; its code sends 200 without.
    assert diff["post_minions"] == ((202, ["_links", "return"]), (200, ["return"]))
    # The wheel client: it works here; the reference refuses it.
    assert diff["wheel"] == (200, 400)
    # No session: 401 JSON here; a 302 redirect to /login there (http.client does not follow it).
    assert diff["unauthenticated"] == (401, 302)
    # GET / lists the enabled clients, wheel included.
    assert diff["clients"] == (
        ["local", "local_async", "runner", "runner_async", "wheel", "wheel_async"],
        ["local", "local_async", "runner", "runner_async"],
    )
