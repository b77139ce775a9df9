"""Issue 13 on real sockets, both bindings, a real Salt master: an ``EventSource``
behind nginx's default proxy (HTTP/1.0, ``Accept: text/event-stream``) gets the
stream close-delimited, and an undefined nodegroup is Salt's 400, not a 503."""

from __future__ import annotations

import http.client
import json
import re
import socket
from typing import Any

import trio

from conftest import RunningServer

WAIT = 30
# One SSE message as written to an HTTP/1.0 client: its lines and nothing else (no chunk sizes).
SSE_MESSAGE = re.compile(rb"(tag: [^\n]*\ndata: \{[^\n]*\}|: keep-alive)")


def _head_and_body(raw: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.lower().split(b"\r\n"), body


async def test_eventsource_over_http_1_0_is_close_delimited(server: RunningServer, token: str) -> None:
    tag = "saltnado/test/browser-http10"

    def scenario() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
            sock.sendall(
                f"GET /events HTTP/1.0\r\nHost: t\r\nAccept: text/event-stream\r\nX-Auth-Token: {token}\r\n\r\n".encode()
            )
            raw = b""
            while b"retry: 400\n" not in raw:
                got = sock.recv(65536)
                assert got, raw
                raw += got
            server.lab.fire_event({"x": 1}, tag)
            while not re.search(rb"tag: " + tag.encode() + rb"\ndata: [^\n]*\n\n", raw):
                got = sock.recv(65536)
                assert got, raw
                raw += got
            return raw

    raw = await trio.to_thread.run_sync(scenario)
    head, body = _head_and_body(raw)
    assert head[0] == b"http/1.1 200 ok"
    assert b"content-type: text/event-stream" in head and b"connection: close" in head
    assert not any(line.startswith((b"transfer-encoding", b"content-length")) for line in head)
    assert body.startswith(b"retry: 400\n")
    *messages, rest = body[len(b"retry: 400\n") :].split(b"\n\n")
    assert rest == b"" and all(SSE_MESSAGE.fullmatch(message) for message in messages), body
    ours = [m for m in messages if m.startswith(b"tag: " + tag.encode() + b"\n")]
    assert json.loads(ours[0].split(b"data: ", 1)[1])["data"]["x"] == 1


def _post(port: int, low: dict[str, Any], token: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Accept": "application/json", "Content-Type": "application/json", "X-Auth-Token": token}
    conn.request("POST", "/", body=json.dumps(low), headers=headers)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


async def test_an_undefined_nodegroup_is_salts_400_not_a_503(server: RunningServer, token: str) -> None:
    """Salt 3008's LocalClient.run_job re-raises pub()'s SaltInvocationError
    ("Node group x unavailable in …") as SaltClientError(exc): not an outage."""
    low = {"client": "local", "tgt": "N@x", "tgt_type": "compound", "fun": "test.version"}
    status, body = await trio.to_thread.run_sync(_post, server.port, low, token)
    assert status == 400, body
    assert body["status"] == "400 Bad Request"
    assert re.fullmatch(r"Node group x unavailable in .*master", body["return"]), body
    # the master was up all along
    ping = {"client": "local", "tgt": "minion1", "fun": "test.ping"}
    assert await trio.to_thread.run_sync(_post, server.port, ping, token) == (200, {"return": [{"minion1": True}]})
