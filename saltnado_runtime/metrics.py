"""``GET /metrics`` and ``GET /stats``: the server's figures, counted where it is
cheapest and read when asked.

Two kinds of figures, one private :class:`~prometheus_client.CollectorRegistry`
per :class:`~saltnado_runtime.service.Service` (never the global ``REGISTRY``:
two servers in one process, or a host's own metrics, stay apart):

* **Read at scrape time** (:class:`_CoreCollector`): what the core already keeps —
  the event-bus link's state, connections, events and bytes read, undecodable
  events skipped; each stream's subscribers, messages delivered, dropped (into
  gaps, or too big for a queue), gaps, slow clients cut off and bytes queued
  (:mod:`saltnado_core.counts`). The fan-out's hot path pays nothing for them:
  no per-subscriber counting, no lock, no call. With an event log
  (``event_log:``), its node's counters too (:meth:`EventLogNode.counts
  <saltnado_runtime.eventlog.EventLogNode.counts>`: written on the NATS thread,
  read here as plain ints, atomic in CPython); without one, no series of it.
* **Counted by the runtime as they happen**, since the runtime owns the clock:
  requests by route name (never the path: tokens are in paths) and status with
  their durations; Salt calls by call and netapi client with their durations (as
  the request path waits for them: the worker-thread queue included); the
  re-checks of stream tokens; bytes read from clients.

``/stats`` (rest_cherrypy's) reports the same figures as a JSON object of
sections of scalars (and objects of scalars), the shape SaltGUI's Stats panel
renders; :meth:`ServiceMetrics.stats` documents it. The process's own figures
(CPU, memory, descriptors) come from prometheus_client's ``ProcessCollector``.

Everything runs on the binding's event-loop thread (the Salt calls' results are
awaited there), so the figures are read consistently without a lock of ours.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from saltnado_core import EventStreams, ServerConnection
from saltnado_core.buslink import BusState, EventBusLink
from saltnado_core.config import SUPPORTED_CLIENTS
from saltnado_core.counts import STREAM_LABELS, StreamCounts, connections_open, stream_counts
from saltnado_core.driving import Served
from saltnado_core.eventbus import BodyFault
from saltnado_core.negotiation import OPENMETRICS
from saltnado_core.outcomes import Exposition
from saltnado_core.salt_calls import PublishGrains, RunLowstate, SaltCall, ScanTokenStore
from saltnado_core.subscriptions import Subscriptions

from .eventlog import EventLogCounts

UNMATCHED = "unmatched"  # the route label of a request no route or mount matched (404, or a preflight)
REFUSED = "refused"  # … of one the connection refused before routing (400, 408, 413, 431, 503)
OTHER_CLIENT = "other"  # a lowstate client not in SUPPORTED_CLIENTS (Salt refuses it)

# Salt calls run from milliseconds (a token lookup) to minutes (a job waiting for
# its minions); requests too, as they wait for Salt.
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# The Accept given to prometheus_client's negotiation for each media type the core
# chose: fixed strings, never the client's header (choose_encoder copies its
# version parameter into the Content-Type, CR/LF included).
_ENCODER_ACCEPT = {OPENMETRICS: "application/openmetrics-text; version=1.0.0"}


def call_name(call: SaltCall) -> str:
    """A Salt call's type as a label: ``GetToken`` → ``get_token``."""
    return _CALL_NAMES.get(type(call)) or _CALL_NAMES.setdefault(
        type(call), re.sub(r"(?<!^)(?=[A-Z])", "_", type(call).__name__).lower()
    )


_CALL_NAMES: dict[type, str] = {}


def call_client(call: SaltCall) -> str:
    """The netapi client a call runs (``local``, ``runner``, ``wheel``, … as the
    lowstate says, ``other`` for a name Salt would refuse), ``""`` for calls that
    are not a client's (tokens, eauth, firing an event)."""
    if isinstance(call, RunLowstate):
        client = call.low.get("client")
        return client if isinstance(client, str) and client in SUPPORTED_CLIENTS else OTHER_CLIENT
    if isinstance(call, PublishGrains):
        return "local_async"
    return ""


def route_label(served: Served) -> str:
    """A request's route label: its route's name, never its path."""
    if served.route is not None:
        return served.route
    return UNMATCHED if served.by_app else REFUSED


class EventLogSource(Protocol):
    """What the metrics read of a node on the event log (:class:`~saltnado_runtime.eventlog.EventLogNode`)."""

    def counts(self) -> EventLogCounts: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The core's figures at one moment: what a scrape and ``/stats`` both read."""

    connections: Mapping[str, int]  # open client connections by what they are for
    streams: Mapping[str, StreamCounts]  # by stream label (saltnado_core.counts)
    stream_tokens: int  # distinct tokens held by open streams
    bus_state: BusState
    master_available: bool
    bus_connections: int  # subscriptions to the event bus made so far
    events_read: int
    bus_bytes_read: int
    undecodable: Mapping[BodyFault, int]
    event_log: EventLogCounts | None  # None: no event log configured


class ServiceMetrics:
    """One server's registry: the runtime's counters, the core's figures read at
    scrape time, and the process's. ``started``: the wall-clock start time."""

    def __init__(
        self,
        streams: EventStreams,
        link: EventBusLink,
        subscriptions: Subscriptions,
        connections: Mapping[ServerConnection, Any],
        started: float,
    ) -> None:
        self._streams = streams
        self._link = link
        self._subscriptions = subscriptions
        self._connections = connections
        self.started = started
        self.client_bytes_read = 0  # bytes read from clients' sockets
        self.event_log: EventLogSource | None = None  # set by the service when event_log: is configured
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "saltnado_http_requests", "HTTP requests answered, by route name (never the path) and status",
            ["route", "status"], registry=registry,
        )
        self.request_seconds = Histogram(
            "saltnado_http_request_duration_seconds",
            "Time from a request being taken to its answer (Salt calls included), by route name",
            ["route"], buckets=SECONDS_BUCKETS, registry=registry,
        )
        self.salt_calls = Counter(
            "saltnado_salt_calls", "Salt calls finished, by call, netapi client and outcome (ok, error)",
            ["call", "client", "outcome"], registry=registry,
        )
        self.salt_seconds = Histogram(
            "saltnado_salt_call_duration_seconds",
            "Time a Salt call took, worker-thread queue included, by call and netapi client",
            ["call", "client"], buckets=SECONDS_BUCKETS, registry=registry,
        )
        self.token_rechecks = Counter(
            "saltnado_token_rechecks", "Re-checks of open streams' tokens with Salt, by call and outcome",
            ["call", "outcome"], registry=registry,
        )
        self.revoked_streams = Counter(
            "saltnado_token_recheck_closed_streams", "Streams closed because Salt no longer honoured their token",
            registry=registry,
        )
        registry.register(_CoreCollector(self))
        self._process = ProcessCollector(registry=registry)

    # -- counting, by the runtime --------------------------------------------------
    def request(self, served: Served, seconds: float) -> None:
        route = route_label(served)
        self.requests.labels(route, str(served.status)).inc()
        if served.by_app:  # a refusal's time is not a request's
            self.request_seconds.labels(route).observe(seconds)

    def salt_call(self, call: SaltCall, seconds: float, ok: bool) -> None:
        name, client = call_name(call), call_client(call)
        self.salt_calls.labels(name, client, "ok" if ok else "error").inc()
        self.salt_seconds.labels(name, client).observe(seconds)

    def token_recheck(self, call: SaltCall, ok: bool, closed: int = 0) -> None:
        self.token_rechecks.labels(call_name(call), "ok" if ok else "error").inc()
        if closed:
            self.revoked_streams.inc(closed)

    # -- reading -------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The core's figures now: one pass over the open connections."""
        link = self._link
        return Snapshot(
            connections=connections_open(self._connections),
            streams=stream_counts(self._streams, self._connections, self._subscriptions),
            stream_tokens=len(self._streams.tokens),
            bus_state=link.state,
            master_available=link.master_available,
            bus_connections=link.connections,
            events_read=self._streams.dispatched,
            bus_bytes_read=link.bytes_read,
            undecodable=dict(link.skipped),
            event_log=self.event_log.counts() if self.event_log is not None else None,
        )

    def exposition(self, media: str) -> Exposition:
        """Every metric, in ``media`` (a type of ``EXPOSITION_OFFERED``, as the core chose)."""
        encoder, content_type = choose_encoder(_ENCODER_ACCEPT.get(media, "text/plain"))
        return Exposition(encoder(self.registry), content_type)

    def stats(self, now: float) -> dict[str, Any]:
        """``GET /stats``: the figures of :meth:`exposition` as sections, each an
        object of numbers, strings, booleans or objects of those (never null)::

            {"saltnado": {"Enabled", "PID", "Start Time", "Current Time", "Uptime"},   # epoch s, s
             "Connections": {"http", "all_events", "formatted_events", "events", "Total"},
             "Event Bus": {"State", "Master Available", "Connections", "Reconnects",
                           "Events Read", "Bytes Read", "Undecodable Events Skipped",
                           "Undecodable Events": {<fault>: n}},
             "Event Log": {"Role", "Stream", "Master", "Connected", "Published", "Duplicates",
                           "Retries", "Publish Waits", "Gaps Read Back", "Fetches",
                           "Pending Publishes"},                     # only with an event log
             "Streams": {<all_events|formatted_events|events|hub>: {"Subscribers",
                         "Messages Delivered", "Messages Dropped (gap)", "Messages Dropped (too big)",
                         "Gaps", "Slow Clients Closed", "Outbox Bytes Queued"}},
             "Requests": {"Total", "Total Time", "Bytes Read", "By Route": {<route>: {<status>: n}}},
             "Salt Calls": {"Total", "Errors", "Total Time",
                            "By Call": {<call[ client]>: {"Count", "Errors", "Total Time", "Average Time"}}},
             "Token Re-checks": {"Stream Tokens", "Listings", "Lookups", "Failed", "Streams Closed"},
             "Process": {"CPU Seconds", "Resident Memory Bytes", "Open File Descriptors", …}}
        """
        snap = self.snapshot()
        undecodable = {fault.name.lower(): snap.undecodable.get(fault, 0) for fault in BodyFault}
        log_section = {"Event Log": _event_log_section(snap.event_log)} if snap.event_log is not None else {}
        return {
            "saltnado": {
                "Enabled": True,
                "PID": os.getpid(),
                "Start Time": self.started,
                "Current Time": now,
                "Uptime": max(0.0, now - self.started),
            },
            "Connections": {**snap.connections, "Total": sum(snap.connections.values())},
            "Event Bus": {
                "State": snap.bus_state.value,
                "Master Available": snap.master_available,
                "Connections": snap.bus_connections,
                "Reconnects": max(0, snap.bus_connections - 1),
                "Events Read": snap.events_read,
                "Bytes Read": snap.bus_bytes_read,
                "Undecodable Events Skipped": sum(undecodable.values()),
                "Undecodable Events": undecodable,
            },
            **log_section,
            "Streams": {label: _stream_section(counts) for label, counts in snap.streams.items()},
            "Requests": self._requests_section(),
            "Salt Calls": self._salt_section(),
            "Token Re-checks": self._recheck_section(snap),
            "Process": self._process_section(),
        }

    def _requests_section(self) -> dict[str, Any]:
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), value in _samples(self.requests, "_total"):
            by_route.setdefault(route, {})[status] = int(value)
        total_time = sum(value for _, value in _samples(self.request_seconds, "_sum"))
        return {
            "Total": sum(sum(statuses.values()) for statuses in by_route.values()),
            "Total Time": total_time,
            "Bytes Read": self.client_bytes_read,
            "By Route": by_route,
        }

    def _salt_section(self) -> dict[str, Any]:
        by_call: dict[str, dict[str, float]] = {}
        for (call, client, outcome), value in _samples(self.salt_calls, "_total"):
            entry = by_call.setdefault(_call_key(call, client), {"Count": 0, "Errors": 0, "Total Time": 0.0})
            entry["Count"] += int(value)
            if outcome != "ok":
                entry["Errors"] += int(value)
        for (call, client), value in _samples(self.salt_seconds, "_sum"):
            entry = by_call.setdefault(_call_key(call, client), {"Count": 0, "Errors": 0, "Total Time": 0.0})
            entry["Total Time"] = value
        for entry in by_call.values():
            entry["Average Time"] = entry["Total Time"] / entry["Count"] if entry["Count"] else 0.0
        return {
            "Total": sum(int(entry["Count"]) for entry in by_call.values()),
            "Errors": sum(int(entry["Errors"]) for entry in by_call.values()),
            "Total Time": sum(entry["Total Time"] for entry in by_call.values()),
            "By Call": by_call,
        }

    def _recheck_section(self, snap: Snapshot) -> dict[str, int]:
        counts = {"Listings": 0, "Lookups": 0, "Failed": 0}
        listing = call_name(ScanTokenStore())
        for (call, outcome), value in _samples(self.token_rechecks, "_total"):
            counts["Listings" if call == listing else "Lookups"] += int(value)
            if outcome != "ok":
                counts["Failed"] += int(value)
        closed = sum(int(value) for _, value in _samples(self.revoked_streams, "_total"))
        return {"Stream Tokens": snap.stream_tokens, **counts, "Streams Closed": closed}

    def _process_section(self) -> dict[str, float]:
        names = {
            "process_cpu_seconds_total": "CPU Seconds",
            "process_resident_memory_bytes": "Resident Memory Bytes",
            "process_virtual_memory_bytes": "Virtual Memory Bytes",
            "process_open_fds": "Open File Descriptors",
            "process_max_fds": "Max File Descriptors",
            "process_start_time_seconds": "Start Time",
        }
        return {
            names[sample.name]: sample.value
            for family in self._process.collect()
            for sample in family.samples
            if sample.name in names
        }


def _event_log_section(counts: EventLogCounts) -> dict[str, Any]:
    return {
        "Role": counts.role.value,
        "Stream": counts.stream,
        "Master": counts.master,
        "Connected": counts.connected,
        "Published": counts.published,
        "Duplicates": counts.duplicates,
        "Retries": counts.retries,
        "Publish Waits": counts.publish_waits,
        "Gaps Read Back": counts.gaps_read_back,
        "Fetches": counts.fetches,
        "Pending Publishes": counts.pending_publishes,
    }


def _stream_section(counts: StreamCounts) -> dict[str, int]:
    return {
        "Subscribers": counts.open,
        "Messages Delivered": counts.delivered,
        "Messages Dropped (gap)": counts.missed,
        "Messages Dropped (too big)": counts.too_big,
        "Gaps": counts.gaps,
        "Slow Clients Closed": counts.cut_off,
        "Outbox Bytes Queued": counts.queued_bytes,
    }


def _call_key(call: str, client: str) -> str:
    return f"{call} {client}" if client else call


def _samples(metric: Collector, suffix: str) -> Iterator[tuple[tuple[str, ...], float]]:
    """``metric``'s samples named ``<name><suffix>``: (label values, value)."""
    for family in metric.collect():
        name = family.name + suffix
        for sample in family.samples:
            if sample.name == name:
                yield tuple(sample.labels.values()), sample.value


class _CoreCollector(Collector):
    """The core's figures (:meth:`ServiceMetrics.snapshot`), read at each scrape."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # nothing to check for clashes: the names below are saltnado's own

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        snap = m.snapshot()
        yield GaugeMetricFamily("saltnado_start_time_seconds", "When the server started (Unix time)", m.started)
        connections = GaugeMetricFamily(
            "saltnado_connections", "Open client connections by what they are for: http, or a stream kind",
            labels=["kind"],
        )
        for kind, count in snap.connections.items():
            connections.add_metric([kind], count)
        yield connections
        yield CounterMetricFamily(
            "saltnado_client_read_bytes", "Bytes read from clients' connections", m.client_bytes_read
        )

        state = GaugeMetricFamily(
            "saltnado_bus_state", "The event-bus link's state: 1 for the current one", labels=["state"]
        )
        for each in BusState:
            state.add_metric([each.value], 1 if each is snap.bus_state else 0)
        yield state
        yield GaugeMetricFamily(
            "saltnado_bus_master_available",
            "1 while the master counts as available (its event bus followed and settled)",
            1 if snap.master_available else 0,
        )
        yield CounterMetricFamily(
            "saltnado_bus_connections", "Subscriptions made to the master's event bus", snap.bus_connections
        )
        yield CounterMetricFamily(
            "saltnado_bus_reconnects", "Subscriptions to the event bus after the first",
            max(0, snap.bus_connections - 1),
        )
        yield CounterMetricFamily("saltnado_bus_events", "Events read from the event bus and dispatched", snap.events_read)
        yield CounterMetricFamily("saltnado_bus_read_bytes", "Bytes read from the event bus", snap.bus_bytes_read)
        undecodable = CounterMetricFamily(
            "saltnado_bus_undecodable_events", "Event-bus events skipped because their body did not decode, by why",
            labels=["fault"],
        )
        for fault in BodyFault:
            undecodable.add_metric([fault.name.lower()], snap.undecodable.get(fault, 0))
        yield undecodable
        if snap.event_log is not None:
            yield from _event_log_families(snap.event_log)

        yield from _stream_families(snap.streams)
        yield GaugeMetricFamily(
            "saltnado_stream_tokens", "Distinct tokens held by open streams (re-checked with Salt)", snap.stream_tokens
        )


def _stream_families(streams: Mapping[str, StreamCounts]) -> Iterator[Metric]:
    label = ["stream"]
    subscribers = GaugeMetricFamily(
        "saltnado_stream_subscribers", "Subscribers attached to each stream (hub: in-process subscribers)",
        labels=label,
    )
    delivered = CounterMetricFamily(
        "saltnado_stream_messages_delivered", "Messages taken from subscribers' queues (handed to their writer)",
        labels=label,
    )
    dropped = CounterMetricFamily(
        "saltnado_stream_messages_dropped",
        "Messages a subscriber did not get: gap (dropped into a gap, slow_client_policy gap), "
        "too_big (bigger than its whole queue; it got a saltnado/dropped notice instead)",
        labels=["stream", "reason"],
    )
    gaps = CounterMetricFamily(
        "saltnado_stream_gaps", "Gaps (slow_client_policy gap), each told with one saltnado/gap notice", labels=label
    )
    cut_off = CounterMetricFamily(
        "saltnado_stream_slow_clients_closed", "Subscribers cut off as too slow (slow_client_policy close)",
        labels=label,
    )
    queued = GaugeMetricFamily(
        "saltnado_stream_outbox_bytes", "Bytes queued for subscribers, not yet taken", labels=label
    )
    for name in STREAM_LABELS:
        counts = streams[name]
        subscribers.add_metric([name], counts.open)
        delivered.add_metric([name], counts.delivered)
        dropped.add_metric([name, "gap"], counts.missed)
        dropped.add_metric([name, "too_big"], counts.too_big)
        gaps.add_metric([name], counts.gaps)
        cut_off.add_metric([name], counts.cut_off)
        queued.add_metric([name], counts.queued_bytes)
    yield from (subscribers, delivered, dropped, gaps, cut_off, queued)


def _event_log_families(counts: EventLogCounts) -> Iterator[Metric]:
    yield InfoMetricFamily(
        "saltnado_event_log", "This node on the event log: its role, stream and master",
        {"role": counts.role.value, "stream": counts.stream, "master": counts.master},
    )
    yield GaugeMetricFamily(
        "saltnado_event_log_connected", "1 while the NATS connection is up and the stream exists",
        1 if counts.connected else 0,
    )
    for name, help_, value in (
        ("published", "Publishes acked by JetStream (duplicates included)", counts.published),
        ("duplicates", "Publishes acked as duplicates: another ingest node stored the event first",
         counts.duplicates),
        ("retries", "Times publishing failed (no ack, NATS away) and resumed from the first unacked event",
         counts.retries),
        ("publish_waits", "Times the bus reader waited for a publish slot (max_in_flight awaiting their ack)",
         counts.publish_waits),
        ("gaps_read_back", "Gaps in the edge consumer's delivery, each read back from the stream", counts.gaps_read_back),
        ("fetches", "Resuming clients' missed ranges read from the stream", counts.fetches),
    ):
        yield CounterMetricFamily(f"saltnado_event_log_{name}", help_, value)
    yield GaugeMetricFamily(
        "saltnado_event_log_pending_publishes", "Events awaiting their publish's ack (or their first send)",
        counts.pending_publishes,
    )
