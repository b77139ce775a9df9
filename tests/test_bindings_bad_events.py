"""An event whose body does not decode, fired through a real master, on both
bindings: saltnado skips that one event and stays subscribed, so a websocket
client gets every good event fired right after it and no ``saltnado/bus/down``."""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

import msgpack
import pytest
import trio
import websocket

from conftest import BINDINGS, login, running_server
from saltnado_core import encode_pull_message
from saltnado_core.eventbus import BodyFault

GOOD = 400
GOOD_TAG = "saltnado/test/good"


def pull_body(body: bytes) -> bytes:
    """A pull-socket message carrying ``body`` as it is (Salt's frame_msg_ipc)."""
    payload = msgpack.packb({"head": {}, "body": body}, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


BAD = [
    # what `event.fire_master` with this tag sends: Salt's own pack, the tag holding "\n\n"
    encode_pull_message("saltnado/test/bad\n\ntag", {"x": 1}),
    # a minion's str that is not UTF-8
    pull_body(b"saltnado/test/bad\n\n\x81\xa1s\xa2\xc3\x28"),
]


def fire(sock_dir: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as pull:
        pull.connect(os.path.join(sock_dir, "master_event_pull.ipc"))
        pull.sendall(b"".join(BAD))
        for i in range(GOOD):
            pull.sendall(encode_pull_message(GOOD_TAG, {"i": i}))


def read_good(client: Any) -> tuple[list[int], list[str]]:
    """Read until every good event has come (or 30 s of silence): their numbers, and every other tag."""
    good: list[int] = []
    other: list[str] = []
    client.settimeout(30)
    while len(good) < GOOD:
        try:
            message = json.loads(client.recv())
        except websocket.WebSocketTimeoutException:
            break
        if message["tag"] == GOOD_TAG:
            good.append(message["data"]["i"])
        else:
            other.append(message["tag"])
    return good, other


@pytest.mark.parametrize("binding", BINDINGS)
async def test_an_undecodable_event_loses_nothing_after_it(
    binding: str, salt_lab: Any, master_opts: dict[str, Any]
) -> None:
    async with running_server(binding, salt_lab, master_opts) as srv:
        token = (await trio.to_thread.run_sync(login, srv.port))["token"]
        client = await trio.to_thread.run_sync(
            lambda: websocket.create_connection(srv.ws_url(token), timeout=30)
        )
        await trio.to_thread.run_sync(client.send, "websocket client ready")
        with trio.fail_after(10):
            while len(srv.server.streams.all_events) < 1:
                await trio.sleep(0.02)
        await trio.to_thread.run_sync(fire, str(salt_lab.sock_dir))
        good, other = await trio.to_thread.run_sync(read_good, client)
        client.close()
        link = srv.server.feed
        assert good == list(range(GOOD))  # every one, in order
        assert "saltnado/bus/down" not in other and "saltnado/bus/up" not in other
        assert link.connections == 1 and link.state == "connected"
        assert link.skipped == {BodyFault.TRAILING: 1, BodyFault.NOT_UTF8: 1}
