"""``GET /metrics`` and ``GET /stats`` of a running server, on both bindings, in
front of the session's real master: the exposition parses as Prometheus reads it
(``prometheus_client.parser``), and its counters move with the traffic — an event
fired into the master reaches a websocket client and is counted as read and
delivered; requests are counted by route name and status; Salt calls by call
and client with their durations. ``/stats`` reports the same figures."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import pytest
import trio
import websocket
from prometheus_client.parser import text_string_to_metric_families

from conftest import BINDINGS, http, login, parse_response, running_server
from saltnado_core import encode_pull_message

pytestmark = pytest.mark.salt

TAG = "saltnado/test/metrics"


def scrape(port: int, token: str, path: str = "/metrics", accept: str = "*/*") -> tuple[int, dict[str, str], bytes]:
    raw = (
        f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAccept: {accept}\r\nX-Auth-Token: {token}\r\n\r\n"
    ).encode()
    return parse_response(http(port, raw))


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def fire(sock_dir: str, count: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as pull:
        pull.connect(os.path.join(sock_dir, "master_event_pull.ipc"))
        for i in range(count):
            pull.sendall(encode_pull_message(TAG, {"i": i}))


def read_tagged(client: Any, count: int) -> int:
    """Messages tagged TAG read from ``client`` until ``count`` came (or 20 s of silence)."""
    seen = 0
    client.settimeout(20)
    while seen < count:
        try:
            if json.loads(client.recv())["tag"] == TAG:
                seen += 1
        except websocket.WebSocketTimeoutException:
            break
    return seen


@pytest.mark.parametrize("binding", BINDINGS)
async def test_counters_move_with_traffic(binding: str, salt_lab: Any, master_opts: dict[str, Any]) -> None:
    async with running_server(binding, salt_lab, master_opts) as srv:
        token = (await trio.to_thread.run_sync(login, srv.port))["token"]
        status, headers, body = await trio.to_thread.run_sync(scrape, srv.port, token)
        assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        before = samples(body)
        assert value(before, "saltnado_bus_state", state="connected") == 1
        assert value(before, "saltnado_http_requests_total", route="login", status="200") == 1
        assert value(before, "saltnado_salt_calls_total", call="make_token", client="", outcome="ok") == 1

        client = await trio.to_thread.run_sync(lambda: websocket.create_connection(srv.ws_url(token), timeout=20))
        await trio.to_thread.run_sync(client.send, "websocket client ready")
        with trio.fail_after(10):
            while len(srv.server.streams.all_events) < 1:
                await trio.sleep(0.02)
        await trio.to_thread.run_sync(fire, str(salt_lab.sock_dir), 5)
        assert await trio.to_thread.run_sync(read_tagged, client, 5) == 5
        status, _, body = await trio.to_thread.run_sync(
            scrape, srv.port, token, "/metrics", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )
        assert status == 200 and body.endswith(b"# EOF\n")
        after = samples(body)
        client.close()

        assert value(after, "saltnado_bus_events_total") >= value(before, "saltnado_bus_events_total") + 5
        assert value(after, "saltnado_bus_read_bytes_total") > value(before, "saltnado_bus_read_bytes_total")
        assert value(after, "saltnado_stream_messages_delivered_total", stream="all_events") >= 5
        assert value(after, "saltnado_connections", kind="all_events") == 1
        assert value(after, "saltnado_stream_subscribers", stream="all_events") == 1
        assert value(after, "saltnado_http_requests_total", route="all_events", status="101") == 1
        assert value(after, "saltnado_http_requests_total", route="metrics", status="200") == 1
        assert value(after, "saltnado_salt_calls_total", call="get_token", client="", outcome="ok") >= 2
        assert value(after, "saltnado_salt_call_duration_seconds_count", call="get_token", client="") >= 2
        assert token not in body.decode()

        status, headers, body = await trio.to_thread.run_sync(scrape, srv.port, token, "/stats", "application/json")
        stats = json.loads(body)
        assert status == 200 and headers["content-type"] == "application/json"
        assert stats["Event Bus"]["State"] == "connected"
        assert stats["Streams"]["all_events"]["Messages Delivered"] >= 5
        assert stats["Requests"]["By Route"]["metrics"]["200"] == 2
        assert stats["saltnado"]["Uptime"] > 0
        assert (await trio.to_thread.run_sync(scrape, srv.port, "0" * 64))[0] == 401
