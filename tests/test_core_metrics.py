"""``GET /metrics`` and ``GET /stats``, literal bytes in and out, with no socket.

The handlers are the core's; the figures are the runtime's
:class:`~saltnado_runtime.metrics.ServiceMetrics`, built over the same core
objects a server holds (no I/O, no clock: the time is the test's). Checked here:
a token is needed unless ``metrics_disable_auth`` / ``stats_disable_auth``;
``Accept`` picks the Prometheus text format or OpenMetrics and never reaches a
header; ``/stats`` is an object of sections of numbers, strings and booleans (or
objects of those), never null; requests are labelled by route name, never by a
path holding a token; the stream figures follow what the fan-out did and never
go down when a client leaves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from wsproto.frame_protocol import FrameProtocol

from saltnado_core import App, EventStreams, Limits, SaltEvent, ServerConnection, Settings
from saltnado_core.app import FILES_ROUTE
from saltnado_core.buslink import EventBusLink
from saltnado_core.config import KNOWN_KEYS, ConfigError
from saltnado_core.counts import STREAM_LABELS, stream_counts
from saltnado_core.driving import Served
from saltnado_core.eventbus import encode_pub_message
from saltnado_core.outcomes import Exposition
from saltnado_core.salt_calls import GetAuthList, GetToken, RunLowstate
from saltnado_core.subscriptions import Subscriptions
from saltnado_core.testing import Driver
from saltnado_runtime.metrics import ServiceMetrics

from core_literals import NOW, RECORD, TOKEN

ANSWERS = {GetToken: RECORD, GetAuthList: [".*"], RunLowstate: {"minion1": True}}
HANDSHAKE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
READY = bytes(FrameProtocol(client=True, extensions=[]).send_data("websocket client ready", True))
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def settings(**block: Any) -> Settings:
    return Settings.from_opts(
        {
            "rest_tornado": {"port": 8000, "disable_ssl": True, "websockets": True, **block},
            "netapi_enable_clients": ["local", "runner"],
        }
    )


def get(path: str, *headers: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: t\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


class Server:
    """One server's core objects, its metrics and an App reading them, as the runtime wires them."""

    def __init__(self, **block: Any) -> None:
        self.settings = settings(**block)
        self.streams = EventStreams()
        self.subscriptions = Subscriptions(self.settings.limits)
        self.link = EventBusLink("/run/salt/master", self.streams, self.subscriptions)
        self.connections: dict[ServerConnection, None] = {}
        self.metrics = ServiceMetrics(self.streams, self.link, self.subscriptions, self.connections, NOW - 60)
        self.app = App(self.settings, metrics=self.metrics.exposition, stats=self.metrics.stats)

    def client(self, limits: Limits | None = None, answers: Any = ANSWERS) -> Driver:
        conn = ServerConnection(limits or self.settings.limits, self.streams)
        self.connections[conn] = None
        return Driver(conn, self.app, answers, now=NOW)

    def request(self, raw: bytes, answers: Any = ANSWERS) -> tuple[int, dict[str, str], bytes, Driver]:
        driver = self.client(answers=answers)
        out = driver.feed(raw)
        for served in driver.served:
            self.metrics.request(served, 0.001)
        del self.connections[driver.conn]
        return (*split(out), driver)

    def scrape(self) -> dict[str, float]:
        """Every sample of /metrics (auth disabled or not: read from the provider)."""
        text = self.metrics.exposition("text/plain").body.decode()
        return {
            sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    return samples[name + json.dumps(labels, sort_keys=True)]


# -- auth ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/metrics", "/stats"])
def test_a_token_is_needed(path: str) -> None:
    server = Server()
    status, headers, body, driver = server.request(get(path))
    assert status == 401 and headers["www-authenticate"] == "Session"
    assert json.loads(body) == {"status": "401 Unauthorized", "return": "Please log in"}
    assert driver.calls == []


@pytest.mark.parametrize("path", ["/metrics", "/stats"])
def test_an_expired_token_is_401(path: str) -> None:
    server = Server()
    expired = {**RECORD, "expire": NOW - 1}
    status, _, _, driver = server.request(get(path, f"X-Auth-Token: {TOKEN}"), {GetToken: expired})
    assert status == 401 and driver.calls == [GetToken(TOKEN)]


@pytest.mark.parametrize("credential", [f"X-Auth-Token: {TOKEN}", f"Cookie: session_id={TOKEN}"])
@pytest.mark.parametrize("path", ["/metrics", "/stats"])
def test_a_valid_token_in_the_header_or_the_cookie_is_enough(path: str, credential: str) -> None:
    status, headers, _, driver = Server().request(get(path, credential))
    assert status == 200 and headers["cache-control"] == "no-store"
    assert driver.calls == [GetToken(TOKEN)]  # no permission beyond a valid token, as rest_cherrypy


@pytest.mark.parametrize(("path", "key"), [("/metrics", "metrics_disable_auth"), ("/stats", "stats_disable_auth")])
def test_auth_can_be_disabled_per_endpoint(path: str, key: str) -> None:
    status, _, _, driver = Server(**{key: True}).request(get(path))
    assert status == 200 and driver.calls == []
    other = "/stats" if path == "/metrics" else "/metrics"
    assert Server(**{key: True}).request(get(other))[0] == 401  # the other one still asks


def test_the_disable_auth_keys_are_strict_booleans_and_known_to_check_config() -> None:
    assert {"metrics_disable_auth", "stats_disable_auth", "collect_stats"} <= KNOWN_KEYS
    assert settings(metrics_disable_auth="false").metrics_disable_auth is False
    assert settings(stats_disable_auth="yes").stats_disable_auth is True
    with pytest.raises(ConfigError, match="'rest_tornado: metrics_disable_auth' must be True or False"):
        settings(metrics_disable_auth="nope")
    assert settings(collect_stats=True).collect_stats is True  # accepted; saltnado always counts


@pytest.mark.parametrize("path", ["/metrics", "/stats"])
def test_post_is_405(path: str) -> None:
    raw = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".encode()
    status, headers, _, _ = Server(metrics_disable_auth=True, stats_disable_auth=True).request(raw)
    assert status == 405 and headers["allow"] == "GET, HEAD"


# -- /metrics: negotiation -------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "text/plain; version=0.0.4; charset=utf-8"),
        ("*/*", "text/plain; version=0.0.4; charset=utf-8"),
        ("text/plain", "text/plain; version=0.0.4; charset=utf-8"),
        (PROMETHEUS_ACCEPT, "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"),
        ("application/openmetrics-text;q=0.2, text/plain", "text/plain; version=0.0.4; charset=utf-8"),
    ],
)
def test_accept_picks_the_format(accept: str | None, content_type: str) -> None:
    headers = ["X-Auth-Token: " + TOKEN] + ([f"Accept: {accept}"] if accept else [])
    status, got, body, _ = Server().request(get("/metrics", *headers))
    assert status == 200 and got["content-type"] == content_type
    assert b"saltnado_bus_events_total 0.0" in body
    assert body.endswith(b"# EOF\n") == content_type.startswith("application/openmetrics-text")


def test_the_accept_header_never_reaches_the_content_type() -> None:
    # prometheus_client's choose_encoder copies a version parameter into its
    # Content-Type; the core chooses, and hands it a fixed string.
    accept = "application/openmetrics-text; version=9.9.9-<script>"
    status, headers, _, _ = Server(metrics_disable_auth=True).request(get("/metrics", f"Accept: {accept}"))
    assert status == 200 and headers["content-type"].startswith("application/openmetrics-text; version=1.0.0;")


def test_an_accept_without_a_text_format_is_406_in_json() -> None:
    status, headers, body, _ = Server(metrics_disable_auth=True).request(
        get("/metrics", "Accept: application/json")
    )
    assert status == 406 and headers["content-type"] == "application/json"
    assert "text/plain or application/openmetrics-text" in json.loads(body)["return"]


def test_an_app_without_providers_answers_empty() -> None:
    app = App(settings(metrics_disable_auth=True, stats_disable_auth=True))
    for path, body in (("/metrics", b""), ("/stats", b"{}")):
        driver = Driver(ServerConnection(Limits(), EventStreams()), app, {}, now=NOW)
        assert split(driver.feed(get(path)))[::2] == (200, body)


# -- /stats: the shape ---------------------------------------------------------------
def scalars_only(value: Any, depth: int = 0) -> bool:
    """Numbers, strings, booleans, or objects of those (a few levels): what SaltGUI renders."""
    if isinstance(value, dict):
        return depth < 4 and all(isinstance(k, str) and scalars_only(v, depth + 1) for k, v in value.items())
    return isinstance(value, (int, float, str, bool))


def test_stats_is_an_object_of_sections_never_null() -> None:
    server = Server(stats_disable_auth=True)
    server.request(get("/login"))  # a request to count
    status, headers, body, _ = server.request(get("/stats"))
    assert status == 200 and headers["content-type"] == "application/json"
    stats = json.loads(body)
    assert list(stats) == [
        "saltnado", "Connections", "Event Bus", "Streams", "Requests", "Salt Calls", "Token Re-checks", "Process",
    ]
    assert all(isinstance(section, dict) for section in stats.values())  # SaltGUI reads stats[key]["Worker Threads"]
    assert scalars_only(stats)
    assert stats["saltnado"]["Current Time"] == NOW and stats["saltnado"]["Uptime"] == 60
    assert stats["saltnado"]["Start Time"] == NOW - 60
    assert list(stats["Connections"]) == ["http", "all_events", "formatted_events", "events", "ws", "ws_formatted", "Total"]
    assert list(stats["Streams"]) == list(STREAM_LABELS)
    assert stats["Requests"]["By Route"] == {"login": {"401": 1}}
    assert stats["Event Bus"]["State"] == "starting" and stats["Event Bus"]["Master Available"] is True


def test_stats_as_yaml() -> None:
    status, headers, body, _ = Server(stats_disable_auth=True).request(get("/stats", "Accept: application/x-yaml"))
    assert status == 200 and headers["content-type"] == "application/x-yaml"
    assert yaml.safe_load(body)["saltnado"]["Uptime"] == 60


# -- labels -----------------------------------------------------------------------------
def test_requests_are_labelled_by_route_name_never_by_path() -> None:
    server = Server(metrics_disable_auth=True)
    requests = [
        get(f"/all_events/{TOKEN}", HANDSHAKE.rstrip("\r\n")),
        get(f"/formatted_events/{TOKEN}?delta=1"),  # no upgrade: 400
        get(f"/all_events/{TOKEN}x"),  # no such route: 404
        get(f"/{TOKEN}"),
        get(f"/minions/{TOKEN}", f"X-Auth-Token: {TOKEN}"),
        get(f"/jobs/{TOKEN}", f"X-Auth-Token: {TOKEN}"),
        f"GET /{TOKEN} HTTP/1.1\r\nHost: t\r\n\x00bad\r\n\r\n".encode(),  # refused by the connection: 400
    ]
    served: list[Served] = []
    for raw in requests:
        served += server.request(raw, {**ANSWERS, RunLowstate: {}})[3].served
    assert [(s.route, s.status) for s in served] == [
        ("all_events", 101), ("formatted_events", 400), (None, 404), (None, 404), ("minions", 200), ("jobs", 200),
        (None, 400),
    ]
    body = server.metrics.exposition("text/plain").body.decode()
    assert TOKEN not in body and TOKEN[:16] not in body
    samples = server.scrape()
    assert sample(samples, "saltnado_http_requests_total", route="unmatched", status="404") == 2
    assert sample(samples, "saltnado_http_requests_total", route="refused", status="400") == 1
    assert sample(samples, "saltnado_http_requests_total", route="all_events", status="101") == 1
    routes = {
        s.labels["route"] for family in text_string_to_metric_families(body) for s in family.samples
        if "route" in s.labels
    }
    assert routes <= set(server.app.router.names) | {FILES_ROUTE, "unmatched", "refused"}


def test_a_refused_100_continue_head_is_labelled_with_its_route() -> None:
    server = Server()
    raw = b"POST /logout HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    status, _, _, driver = server.request(raw)
    assert status == 401 and [(s.route, s.status) for s in driver.served] == [("logout", 401)]


def test_salt_calls_are_labelled_by_call_and_client() -> None:
    server = Server()
    server.metrics.salt_call(RunLowstate({"client": "runner", "fun": "jobs.list_jobs", "token": TOKEN}), 0.2, True)
    server.metrics.salt_call(RunLowstate({"client": f"x{TOKEN}", "fun": "test.ping"}), 0.1, False)
    server.metrics.salt_call(GetToken(TOKEN), 0.01, True)
    samples = server.scrape()
    assert sample(samples, "saltnado_salt_calls_total", call="run_lowstate", client="runner", outcome="ok") == 1
    assert sample(samples, "saltnado_salt_calls_total", call="run_lowstate", client="other", outcome="error") == 1
    assert sample(samples, "saltnado_salt_calls_total", call="get_token", client="", outcome="ok") == 1
    assert sample(samples, "saltnado_salt_call_duration_seconds_bucket", call="run_lowstate", client="runner",
                  le="0.25") == 1
    assert TOKEN not in server.metrics.exposition("text/plain").body.decode()
    calls = server.metrics.stats(NOW)["Salt Calls"]
    assert calls["Total"] == 3 and calls["Errors"] == 1
    assert calls["By Call"]["run_lowstate runner"] == {
        "Count": 1, "Errors": 0, "Total Time": 0.2, "Average Time": 0.2,
    }


# -- the stream figures ------------------------------------------------------------------
def open_websocket(server: Server, limits: Limits | None = None, path: str = "all_events") -> Driver:
    driver = server.client(limits)
    out = driver.feed(get(f"/{path}/{TOKEN}", HANDSHAKE.rstrip("\r\n")))
    assert out.startswith(b"HTTP/1.1 101 ")
    driver.feed(READY)
    assert driver.conn.attached
    return driver


def fire(server: Server, *events: SaltEvent) -> None:
    server.link.receive_data(b"".join(encode_pub_message(e.tag, e.data) for e in events), NOW)


def streams_now(server: Server) -> dict[str, Any]:
    return server.metrics.stats(NOW)["Streams"]


def test_delivered_counts_what_a_client_took_and_never_goes_down_when_it_leaves() -> None:
    server = Server()
    a, b = open_websocket(server), open_websocket(server)
    fire(server, SaltEvent("salt/job/1/new", {}), SaltEvent("salt/job/1/ret/m", {}))
    assert streams_now(server)["all_events"]["Outbox Bytes Queued"] > 0
    a.conn.data_to_send()
    stats = server.metrics.stats(NOW)
    assert stats["Streams"]["all_events"]["Messages Delivered"] == 2
    assert stats["Streams"]["all_events"]["Subscribers"] == 2
    assert stats["Connections"]["all_events"] == 2
    assert stats["Event Bus"]["Events Read"] == 2 and stats["Event Bus"]["Bytes Read"] > 0
    b.conn.data_to_send()
    a.conn.close()  # leaves the stream: its figures move to the departed counts
    a.conn.data_to_send()
    after = streams_now(server)["all_events"]
    assert after["Messages Delivered"] == 4 and after["Subscribers"] == 1
    del server.connections[a.conn]
    assert streams_now(server)["all_events"]["Messages Delivered"] == 4
    samples = server.scrape()
    assert sample(samples, "saltnado_stream_messages_delivered_total", stream="all_events") == 4
    assert sample(samples, "saltnado_bus_events_total") == 2


def test_gaps_and_missed_messages_under_the_gap_policy() -> None:
    server = Server(slow_client_policy="gap", outbox_max_messages=4)
    slow = open_websocket(server)
    fire(server, *(SaltEvent(f"t/{i}", {}) for i in range(10)))
    slow.conn.data_to_send()  # drained: the gap notice is queued
    slow.conn.data_to_send()
    figures = streams_now(server)["all_events"]
    assert figures["Gaps"] == 1 and figures["Messages Dropped (gap)"] == 6
    assert figures["Messages Delivered"] == 5  # four events and the gap notice
    assert figures["Slow Clients Closed"] == 0


def test_a_slow_client_cut_off_is_counted_once_across_its_close() -> None:
    server = Server(outbox_max_messages=3)
    slow = open_websocket(server)
    fire(server, *(SaltEvent(f"t/{i}", {}) for i in range(5)))
    assert streams_now(server)["all_events"]["Slow Clients Closed"] == 1  # cut off, still attached
    slow.conn.data_to_send()  # the close frame: it leaves the stream
    assert not slow.conn.attached
    assert streams_now(server)["all_events"]["Slow Clients Closed"] == 1


def test_too_big_per_stream_and_the_hub() -> None:
    server = Server(outbox_max_bytes=5000)
    open_websocket(server)
    hub = server.subscriptions.subscribe("", max_bytes=50)
    fire(server, SaltEvent("big", {"blob": "\x01" * 1000}))  # 6,000 bytes of JSON
    figures = streams_now(server)
    assert figures["all_events"]["Messages Dropped (too big)"] == 1
    assert figures["hub"]["Messages Dropped (too big)"] == 1 and figures["hub"]["Subscribers"] == 1
    assert hub.next_event() is not None  # the dropped notice
    server.subscriptions.unsubscribe(hub)
    server.subscriptions.unsubscribe(hub)  # twice: counted once
    assert streams_now(server)["hub"] == {
        "Subscribers": 0, "Messages Delivered": 1, "Messages Dropped (gap)": 0, "Messages Dropped (too big)": 1,
        "Gaps": 0, "Slow Clients Closed": 0, "Outbox Bytes Queued": 0,
    }


def test_the_formatted_stream_is_counted_under_its_kind() -> None:
    server = Server()
    driver = open_websocket(server, path="formatted_events")
    driver.conn.data_to_send()  # the first view: two messages
    counts = stream_counts(server.streams, server.connections, server.subscriptions)
    assert counts["formatted_events"].delivered == 2 and counts["formatted_events"].open == 1
    assert counts["all_events"].open == 0


@pytest.mark.parametrize("fail", [lambda link: link.lost(None, NOW), lambda link: link.connected(NOW)])
def test_bus_state_is_one_gauge_per_state(fail: Callable[[EventBusLink], object]) -> None:
    server = Server()
    server.link.connected(NOW - 5)
    fail(server.link)
    samples = server.scrape()
    states = {state: sample(samples, "saltnado_bus_state", state=state)
              for state in ("starting", "waiting", "connected", "lost")}
    assert sum(states.values()) == 1 and states[server.link.state.value] == 1
    assert sample(samples, "saltnado_bus_reconnects_total") == server.link.connections - 1


def test_exposition_of_a_provider_is_what_the_handler_sends() -> None:
    seen: list[str] = []

    def provider(media: str) -> Exposition:
        seen.append(media)
        return Exposition(b"x 1\n", "text/plain; version=0.0.4; charset=utf-8")

    app = App(settings(metrics_disable_auth=True), metrics=provider)
    driver = Driver(ServerConnection(Limits(), EventStreams()), app, {}, now=NOW)
    assert split(driver.feed(get("/metrics", f"Accept: {PROMETHEUS_ACCEPT}")))[2] == b"x 1\n"
    assert seen == ["application/openmetrics-text"]


# -- the event log -------------------------------------------------------------------------
def event_log_node(role: str = "both") -> Any:
    """A real node on the event log, never started (no NATS, no thread): its counters
    are what a running one writes on its NATS thread."""
    from saltnado_core.eventlog import EventLogSettings, Role
    from saltnado_runtime.eventlog import EventLogNode

    return EventLogNode(EventLogSettings(servers=("nats://127.0.0.1:1",), master="salt1", role=Role(role)))


def test_without_an_event_log_no_series_and_no_section() -> None:
    server = Server(stats_disable_auth=True)
    assert not [name for name in server.scrape() if name.startswith("saltnado_event_log")]
    assert "saltnado_event_log" not in server.metrics.exposition("text/plain").body.decode()
    assert "Event Log" not in server.metrics.stats(NOW)


def test_the_event_logs_counters_appear_and_move() -> None:
    server = Server()
    node = event_log_node()
    server.metrics.event_log = node
    before = server.scrape()
    assert sample(before, "saltnado_event_log_info", role="both", stream="SALT_EVENTS", master="salt1") == 1
    assert sample(before, "saltnado_event_log_connected") == 0
    names = ("published", "duplicates", "retries", "publish_waits", "gaps_read_back", "fetches")
    assert all(sample(before, f"saltnado_event_log_{name}_total") == 0 for name in names)
    assert sample(before, "saltnado_event_log_pending_publishes") == 0

    # as the NATS thread (and the bus reader, for the waits) count them
    node.connected = True
    node.published, node.duplicates, node.retries = 7, 2, 1
    node.ingest_waits, node.gaps, node.fetches = 3, 4, 5
    node._pending.extend([("s", b"x", "id1"), ("s", b"y", "id2")])
    after = server.scrape()
    assert sample(after, "saltnado_event_log_connected") == 1
    assert [sample(after, f"saltnado_event_log_{name}_total") for name in names] == [7, 2, 1, 3, 4, 5]
    assert sample(after, "saltnado_event_log_pending_publishes") == 2

    stats = server.metrics.stats(NOW)
    assert list(stats)[:4] == ["saltnado", "Connections", "Event Bus", "Event Log"]
    assert stats["Event Log"] == {
        "Role": "both", "Stream": "SALT_EVENTS", "Master": "salt1", "Connected": True,
        "Published": 7, "Duplicates": 2, "Retries": 1, "Publish Waits": 3, "Gaps Read Back": 4,
        "Fetches": 5, "Pending Publishes": 2,
    }
    assert scalars_only(stats)


def test_a_closing_node_counts_as_disconnected() -> None:
    node = event_log_node("edge")
    node.connected = True
    assert node.counts().connected and node.counts().role.value == "edge"
    node.close()  # never started: only marks it closing
    assert not node.counts().connected


def test_a_service_with_an_event_log_exports_its_node() -> None:
    from saltnado_runtime.service import Service

    block = {"event_log": {"servers": ["nats://127.0.0.1:1"], "master": "salt1", "role": "ingest"}}
    service = Service(settings(**block), {"sock_dir": "/nonexistent"})
    assert service.metrics.event_log is service.event_log is not None
    assert "Event Log" in service.metrics.stats(NOW)
    plain = Service(settings(), {"sock_dir": "/nonexistent"})
    assert plain.metrics.event_log is None and "Event Log" not in plain.metrics.stats(NOW)
