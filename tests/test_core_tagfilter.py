"""Tag filters: globs compiled once, checked once per distinct filter, before queueing.

From the filter itself (what a glob matches, what is refused and why), through
the fan-out (a filtered subscriber's queue is never touched by what it does not
want), to a client asking ``/events?tag=…``, ``/all_events?tag=…`` and
``/formatted_events?tag=…`` through the connection, and an in-process subscriber.
"""

from __future__ import annotations

import fnmatch
import json

import pytest
from hypothesis import given, settings, strategies as st

from saltnado_core import (
    App, Broadcast, EventStreams, Limits, Outbox, SaltEvent, ServerConnection, Settings, TagFilter,
    all_events_frame, glob_filter, tag_filter,
)
from saltnado_core.broadcast import Fanout
from saltnado_core.messages import event_json, sse_chunk
from saltnado_core.salt_calls import GetAuthList, GetToken, PublishGrains
from saltnado_core.subscriptions import Subscriptions
from saltnado_core.tagfilter import (
    MAX_FILTER_CHARS, MAX_PATTERN_CHARS, MAX_PATTERNS, MAX_WILDCARDS, BadTagPattern, check_pattern,
)
from saltnado_core.testing import Driver

from core_literals import NOW, RECORD, TOKEN
from test_core_websocket import READY, RFC_KEY, decode_server

RET = "salt/job/20240101120000123456/ret/minion1"
EVENTS = [
    SaltEvent("salt/job/20240101120000123456/new", {"jid": "20240101120000123456", "minions": ["minion1"]}),
    SaltEvent("salt/auth", {"id": "minion1"}),
    SaltEvent(RET, {"jid": "20240101120000123456", "id": "minion1", "return": True, "retcode": 0}),
    SaltEvent("salt/key", {"id": "minion2", "act": "accept"}),
    SaltEvent("salt/job/20240101120000123457/ret/minion2", {"id": "minion2", "return": 1, "retcode": 0}),
    SaltEvent("salt/minion/minion1/start", {}),
]


# -- the filter ----------------------------------------------------------------------


def test_globs_are_sorted_by_how_cheaply_they_match() -> None:
    wanted = glob_filter(["salt/job/*/ret/*", "salt/key", "salt/auth*", "salt/?inion/*"])
    assert wanted is not None
    assert wanted.exact == frozenset({"salt/key"})  # no wildcard: the whole tag, a set lookup
    assert wanted.prefixes == ("salt/auth",)  # a trailing * alone: a prefix
    assert wanted.globs is not None and wanted.globs.match(RET)  # the rest: one regex
    assert [wanted.matches(e.tag) for e in EVENTS] == [False, True, True, True, True, True]


def test_a_glob_without_wildcards_is_the_whole_tag() -> None:
    key = glob_filter(["salt/key"])
    assert key is not None and key.matches("salt/key")
    assert not key.matches("salt/keys") and not key.matches("salt/key/x")


def test_everything_is_no_filter_at_all() -> None:
    assert glob_filter(["*"]) is None and glob_filter(["salt/key", "*"]) is None
    assert glob_filter(["salt/key"], prefixes=("",)) is None


def test_equal_pattern_sets_give_the_same_filter_object() -> None:
    a = glob_filter(["salt/job/*/ret/*", "salt/key"])
    b = glob_filter(["salt/key", "salt/job/*/ret/*", "salt/key"])  # order and repeats do not matter
    assert a is b
    assert glob_filter(["salt/key"]) is not a


def test_prefixes_and_globs_together() -> None:
    wanted = glob_filter(["salt/key"], prefixes=("salt/job/",))
    assert wanted == TagFilter(("salt/job/",), frozenset({"salt/key"}))
    assert tag_filter("salt/job/") == TagFilter(("salt/job/",))  # prefixes alone, as before


@pytest.mark.parametrize(
    ("patterns", "reason"),
    [
        ([""], "tag pattern 1 of 1 is empty"),
        (["salt/key", "x" * (MAX_PATTERN_CHARS + 1)], f"tag pattern 2 of 2 is longer than {MAX_PATTERN_CHARS}"),
        (["salt/\x00key"], "tag pattern 1 of 1 holds a control character"),
        (["salt/key\n<script>"], "tag pattern 1 of 1 holds a control character"),
        (["salt/job/[0-9"], "tag pattern 1 of 1 has a '[' without its ']'"),
        (["salt/[]"], "has a '[' without its ']'"),  # "]" right after "[" is in the set, as in fnmatch
        (["salt/[!]"], "has a '[' without its ']'"),
        ([f"t{n}" for n in range(MAX_PATTERNS + 1)], f"at most {MAX_PATTERNS} tag patterns, got {MAX_PATTERNS + 1}"),
        (["y" * 200 + str(n) for n in range(6)], f"tag patterns longer than {MAX_FILTER_CHARS} characters together"),
        (["salt/" + "*x" * (MAX_WILDCARDS + 1)],
         f"more than {MAX_WILDCARDS} wildcards ('*', '?', '[') in the tag patterns together"),
        (["*a?"] * (MAX_WILDCARDS // 2 + 1), f"more than {MAX_WILDCARDS} wildcards"),
    ],
)
def test_bad_patterns_are_refused_without_quoting_them(patterns: list[str], reason: str) -> None:
    with pytest.raises(BadTagPattern) as info:
        glob_filter(patterns)
    assert str(info.value).startswith(reason) or reason in str(info.value)
    assert not any(p and p in str(info.value) for p in patterns if len(p) > 2)


def test_the_limits_themselves_are_allowed() -> None:
    assert glob_filter(["x" * MAX_PATTERN_CHARS]) is not None
    assert glob_filter([f"t{n}" for n in range(MAX_PATTERNS)]) is not None
    assert glob_filter(["y" * 255 + str(n) for n in range(4)]) is not None  # MAX_FILTER_CHARS together
    assert glob_filter(["salt/" + "*x" * MAX_WILDCARDS, "salt/key"]) is not None  # MAX_WILDCARDS
    check_pattern("salt/[]]")  # a set holding "]"
    check_pattern("salt/[!]x]")


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.text(alphabet="ab/*?[]!-^\\.", min_size=1, max_size=8), min_size=1, max_size=4),
    st.lists(st.text(alphabet="ab/[]!-^\\.", max_size=8), min_size=1, max_size=6),
)
def test_globs_match_as_fnmatchcase(patterns: list[str], tags: list[str]) -> None:
    """Any pattern is refused with BadTagPattern or matches exactly what Salt's
    ``fnmatch`` match type (case-sensitive) would."""
    try:
        wanted = glob_filter(patterns)
    except BadTagPattern:
        return
    for tag in tags:
        expected = any(fnmatch.fnmatchcase(tag, p) for p in patterns)
        assert (wanted is None or wanted.matches(tag)) == expected, (patterns, tag)


# -- the fan-out -----------------------------------------------------------------------


class CountingFilter(TagFilter):
    """A TagFilter that counts its checks."""

    checks: list[str] = []

    def matches(self, tag: str, master: str | None = None) -> bool:
        CountingFilter.checks.append(tag)
        return TagFilter.matches(self, tag, master)


def test_a_filter_is_checked_once_per_event_however_many_subscribers_share_it() -> None:
    CountingFilter.checks = []
    shared = CountingFilter(("salt/job/",))
    broadcast = Broadcast()
    boxes = [Outbox(100, 1 << 20) for _ in range(50)]
    for box in boxes:
        broadcast.subscribe(box, shared)
    every = Outbox(100, 1 << 20)
    broadcast.subscribe(every)
    for event in EVENTS:
        broadcast.publish(event.tag.encode(), event.tag)
    assert CountingFilter.checks == [e.tag for e in EVENTS]  # once each, not fifty times
    wanted = b"".join(e.tag.encode() for e in EVENTS if e.tag.startswith("salt/job/"))
    assert all(box.drain(1 << 20) == wanted for box in boxes)
    assert len(every) == len(EVENTS)


def test_unsubscribing_and_resubscribing_keeps_the_groups_right() -> None:
    fanout: Fanout[bytes] = Broadcast()
    jobs, keys, every = Outbox(10, 1000), Outbox(10, 1000), Outbox(10, 1000)
    fanout.subscribe(jobs, glob_filter(["salt/job/*"]))
    fanout.subscribe(keys, glob_filter(["salt/key"]))
    fanout.subscribe(every)
    assert len(fanout) == 3 and set(fanout) == {jobs, keys, every}
    fanout.subscribe(keys, glob_filter(["salt/job/*"]))  # again: its filter is replaced
    assert len(fanout) == 3
    fanout.publish(b"k", "salt/key")
    fanout.publish(b"j", "salt/job/1/new")
    assert (jobs.drain(100), keys.drain(100), every.drain(100)) == (b"j", b"j", b"kj")
    fanout.unsubscribe(jobs)
    fanout.unsubscribe(jobs)  # twice: nothing
    fanout.unsubscribe(keys)
    assert len(fanout) == 1 and list(fanout) == [every]
    fanout.publish(b"j", "salt/job/2/new")
    assert (len(jobs), len(keys), every.drain(100)) == (0, 0, b"j")


def test_a_cut_off_filtered_subscriber_leaves_its_group() -> None:
    broadcast = Broadcast()
    slow = Outbox(1, 1000)
    broadcast.subscribe(slow, glob_filter(["salt/job/*"]))
    assert broadcast.publish(b"1", "salt/job/1/new") == 0
    assert broadcast.publish(b"2", "salt/job/2/new") == 1
    assert slow.overflowed and len(broadcast) == 0


# -- through the connection -------------------------------------------------------------

SETTINGS = Settings(websockets=True, disable_ssl=True)
ANSWERS = {GetToken: RECORD, GetAuthList: [".*"]}


def sse_client(query: str) -> tuple[ServerConnection, EventStreams, bytes]:
    streams = EventStreams()
    conn = ServerConnection(Limits(), streams)
    raw = f"GET /events{query} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {TOKEN}\r\n\r\n".encode()
    out = Driver(conn, App(SETTINGS), ANSWERS, now=NOW).feed(raw)
    return conn, streams, out


def test_events_client_filtered_to_job_returns_gets_only_those_in_order() -> None:
    conn, streams, head = sse_client("?tag=salt/job/*/ret/*")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    other, _, _ = sse_client("")  # an unfiltered client beside it
    other.data_to_send()
    queued = []
    for event in EVENTS:
        streams.dispatch(event)
        queued.append(len(conn.outbox))
    assert queued == [0, 0, 1, 1, 2, 2]  # nothing else was ever queued for it
    returns = [e for e in EVENTS if "/ret/" in e.tag]
    payload = b"".join(sse_chunk(e.tag, event_json(e)) for e in returns)
    assert conn.data_to_send() == payload  # as HTTP chunks, in order


def test_events_filters_or_together_and_notices_pass_them() -> None:
    conn, streams, _ = sse_client("?tag=salt/key&tag=salt/minion/*/start")
    for event in EVENTS:
        streams.dispatch(event)
    notice = SaltEvent("saltnado/bus/up", {})
    streams.notify(notice)
    wanted = [EVENTS[3], EVENTS[5], notice]
    assert conn.data_to_send() == b"".join(sse_chunk(e.tag, event_json(e)) for e in wanted)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("?tag=", "bad tag filter: tag pattern 1 of 1 is empty"),
        ("?tag=salt/job/%5B0-9", "bad tag filter: tag pattern 1 of 1 has a '[' without its ']'"),
        ("?tag=a%0d%0aSet-Cookie:x", "bad tag filter: tag pattern 1 of 1 holds a control character"),
        ("?tag=" + "x" * 300, f"bad tag filter: tag pattern 1 of 1 is longer than {MAX_PATTERN_CHARS} characters"),
        ("?" + "&".join(["tag=a"] * 33), f"bad tag filter: at most {MAX_PATTERNS} tag patterns, got 33"),
        ("?tags=salt/key", "/events takes only tag=<glob>, ids=1, last_event_id=<id> and master=<name> in the query string"),
        ("?tag=salt/key&<script>=1", "/events takes only tag=<glob>, ids=1, last_event_id=<id> and master=<name> in the query string"),
        ("?master=m1", "master=<name> is for a server on an event log (event_log:), which this is not"),
    ],
)
def test_events_bad_filter_is_400_with_the_reason(query: str, reason: str) -> None:
    conn, streams, out = sse_client(query)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert json.loads(out.partition(b"\r\n\r\n")[2])["return"] == reason
    assert b"<script>" not in out and b"Set-Cookie" not in out and len(streams.events) == 0


def upgrade(target: str) -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {TOKEN}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def test_all_events_websocket_with_a_filter() -> None:
    streams = EventStreams()
    conn = ServerConnection(Limits(), streams)
    driver = Driver(conn, App(SETTINGS), ANSWERS, now=NOW)
    assert driver.feed(upgrade("/all_events?tag=salt/job/*/ret/*") + READY).startswith(b"HTTP/1.1 101 ")
    for event in EVENTS:
        streams.dispatch(event)
    assert len(conn.outbox) == 2
    assert conn.data_to_send() == b"".join(all_events_frame(e) for e in EVENTS if "/ret/" in e.tag)


def test_the_reference_url_takes_a_filter_too() -> None:
    streams = EventStreams()
    conn = ServerConnection(Limits(), streams)
    driver = Driver(conn, App(SETTINGS), ANSWERS, now=NOW)
    driver.feed(upgrade(f"/all_events/{TOKEN}?tag=salt/key") + READY)
    for event in EVENTS:
        streams.dispatch(event)
    assert conn.data_to_send() == all_events_frame(EVENTS[3])


def test_formatted_events_filter_picks_the_changes_sent() -> None:
    """The view is shared and fed every event; a client filtered to salt/key is
    sent the whole view first, then only what key events changed."""
    streams = EventStreams()
    conn = ServerConnection(Limits(), streams)
    driver = Driver(conn, App(SETTINGS), {**ANSWERS, PublishGrains: None}, now=NOW, stream_calls=True)
    out = driver.feed(upgrade("/formatted_events?delta=1&tag=salt/key") + READY)
    first = [json.loads(payload) for _, payload in decode_server(out.partition(b"\r\n\r\n")[2])]
    assert first == [{"minions": {}}, {"jobs": {}}]
    for event in EVENTS:
        streams.dispatch(event, NOW)
    assert "20240101120000123456" in streams.formatted.view.jobs  # the view saw the jobs
    sent = [json.loads(payload) for _, payload in decode_server(conn.data_to_send())]
    assert sent == [{"minions": {"minion2": {"id": "minion2"}}}]


def test_formatted_events_bad_filter_is_400() -> None:
    conn = ServerConnection(Limits(), EventStreams())
    out = Driver(conn, App(SETTINGS), ANSWERS, now=NOW).feed(upgrade("/formatted_events?tag=[x"))
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"'[' without its ']'" in out


# -- in-process subscribers ----------------------------------------------------------------


def test_in_process_subscriber_with_globs() -> None:
    subscriptions = Subscriptions()
    returns = subscriptions.subscribe(tags=("salt/job/*/ret/*",))
    both = subscriptions.subscribe("salt/minion/", tags=("salt/key",))
    for event in EVENTS:
        subscriptions.publish(event)
    assert len(returns) == 2 and len(both) == 2
    assert [returns.next_event(), returns.next_event()] == [EVENTS[2], EVENTS[4]]
    assert [both.next_event(), both.next_event()] == [EVENTS[3], EVENTS[5]]


def test_in_process_bad_glob_raises() -> None:
    with pytest.raises(BadTagPattern, match="has a '\\[' without its '\\]'"):
        Subscriptions().subscribe(tags=("salt/[job",))
