"""The event log's pure parts (saltnado_core.eventlog) and what the streams do with them:
subjects and their escaping, the dedup id, epochs, globs mapped onto subject filters,
the settings' validation, log positions in the history, ``?master=``, the ids
envelope's ``master``, and the resume that asks the runtime for a range of the log."""

from __future__ import annotations

import fnmatch
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saltnado_core import ConfigError, Settings
from saltnado_core.broadcast import Outbox
from saltnado_core.eventbus import SaltEvent, encode_body
from saltnado_core.eventlog import (
    EventLogSettings,
    FetchEvents,
    LoggedEvent,
    Role,
    escape_token,
    message_id,
    parse_subject,
    stream_epoch,
    subject,
    subject_filters,
    unescape_token,
)
from saltnado_core.history import EventHistory, EventId, ResumeOutcome
from saltnado_core.streams import EventStreams
from saltnado_core.tagfilter import glob_filter, master_filter

PREFIX = "salt.events"


# -- subjects ---------------------------------------------------------------------
@pytest.mark.parametrize(("master", "tag", "expected"), [
    ("m1", "salt/job/1/ret/web1", "salt.events.m1.salt.job.1.ret.web1"),
    ("m1", "salt/minion/web.1/start", "salt.events.m1.salt.minion.web%2E1.start"),
    ("m1", "salt//x", "salt.events.m1.salt.%.x"),
    ("m1", "/lead/trail/", "salt.events.m1.%.lead.trail.%"),
    ("m.a", "a b/*/>/100%", "salt.events.m%2Ea.a%20b.%2A.%3E.100%25"),
    ("m1", "", "salt.events.m1.%"),
    ("m1", "é\tx", "salt.events.m1.%C3%A9%09x"),
])
def test_subject_per_master_and_tag(master: str, tag: str, expected: str) -> None:
    assert subject(PREFIX, master, tag) == expected
    assert parse_subject(PREFIX, expected) == (master, tag)


def _valid_token(token: str) -> bool:
    return bool(token) and not any(c in token for c in ".*>") and not any(c.isspace() for c in token)


@given(st.text())
def test_escaping_is_reversible_and_gives_a_valid_token(segment: str) -> None:
    token = escape_token(segment)
    assert _valid_token(token) and token.isascii()
    assert unescape_token(token) == segment


@pytest.mark.parametrize("bad", ["%2", "%zz", "a%"])
def test_unescape_refuses_what_escaping_never_writes(bad: str) -> None:
    with pytest.raises(ValueError):
        unescape_token(bad)


def test_the_dedup_id_is_the_master_and_the_bytes() -> None:
    raw = encode_body("salt/job/1/new", {"_stamp": "2026-01-01T00:00:00.000001"})
    again = encode_body("salt/job/1/new", {"_stamp": "2026-01-01T00:00:00.000002"})
    assert message_id("m1", raw) == message_id("m1", bytes(raw))  # two ingest nodes, the same bytes
    assert message_id("m1", raw) != message_id("m2", raw)  # two masters never collide
    assert message_id("m1", raw) != message_id("m1", again)  # a repeated event differs by its _stamp
    assert len(message_id("m1", raw)) == 64


def test_an_epoch_names_one_stream_created_once() -> None:
    epoch = stream_epoch("SALT_EVENTS", "2026-12-04T18:00:00.123456+00:00")
    assert epoch == stream_epoch("SALT_EVENTS", "2026-12-04T18:00:00.123456+00:00")
    assert epoch != stream_epoch("SALT_EVENTS", "2026-12-04T18:00:01+00:00")  # recreated: another epoch
    assert epoch != stream_epoch("OTHER", "2026-12-04T18:00:00.123456+00:00")
    assert EventHistory(epoch).epoch == epoch  # a valid epoch for the ids


# -- globs onto subject filters ---------------------------------------------------
@pytest.mark.parametrize(("patterns", "masters", "expected"), [
    (None, None, ("salt.events.*.>",)),
    (["salt/job/*"], None, ("salt.events.*.salt.job.>",)),  # a trailing /* is exactly .>
    (["salt/key"], ["m1"], ("salt.events.m1.salt.key",)),  # a literal tag is a literal subject
    (["salt/job/*/ret/*"], None, ("salt.events.*.salt.job.>",)),  # wider: filtered locally
    (["salt/job*"], None, ("salt.events.*.salt.>",)),
    (["*"], ["m2"], ("salt.events.m2.>",)),
    (["salt/job/*", "salt/job/1/new"], None, ("salt.events.*.salt.job.>",)),  # one holds the other
    (["a/b", "c/*"], ["m1", "m2"], (
        "salt.events.m1.a.b", "salt.events.m1.c.>", "salt.events.m2.a.b", "salt.events.m2.c.>")),
    (["web.1/x"], ["m.1"], ("salt.events.m%2E1.web%2E1.x",)),
])
def test_globs_map_onto_subject_filters(patterns: list[str] | None, masters: list[str] | None,
                                        expected: tuple[str, ...]) -> None:
    assert subject_filters(PREFIX, masters, patterns) == expected


def _subject_matches(filter_: str, subject_: str) -> bool:
    f, s = filter_.split("."), subject_.split(".")
    for i, part in enumerate(f):
        if part == ">":
            return len(s) > i
        if i >= len(s) or (part != "*" and part != s[i]):
            return False
    return len(f) == len(s)


_SEGMENT = st.sampled_from(["salt", "job", "1", "ret", "web.1", "", "a b", "*", "x*", "?", "[ab]"])


@given(st.lists(st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join), min_size=1, max_size=3),
       st.lists(st.lists(_SEGMENT.filter(lambda s: not set(s) & set("*?[")), min_size=1, max_size=5).map("/".join),
                min_size=1, max_size=5))
def test_a_subject_filter_never_misses_an_event_its_globs_match(patterns: list[str], tags: list[str]) -> None:
    filters = subject_filters(PREFIX, ["m1"], patterns)
    for tag in tags:
        if any(fnmatch.fnmatchcase(tag, p) for p in patterns):
            assert any(_subject_matches(f, subject(PREFIX, "m1", tag)) for f in filters), (patterns, tag, filters)


# -- settings -------------------------------------------------------------------------
BASE = {"port": 8000, "disable_ssl": True}


def _settings(event_log: object, **opts: object) -> Settings:
    return Settings.from_opts({"rest_tornado": {**BASE, "event_log": event_log}, **opts})


def test_without_event_log_nothing_changes() -> None:
    assert Settings.from_opts({"rest_tornado": BASE}).event_log is None


def test_the_master_defaults_to_the_masters_id() -> None:
    settings = _settings({"servers": ["nats://10.0.0.1:4222"]}, id="salt1_master")
    assert settings.event_log == EventLogSettings(servers=("nats://10.0.0.1:4222",), master="salt1_master")
    edge = _settings({"servers": "nats://10.0.0.1:4222", "role": "edge"})
    assert edge.event_log is not None and edge.event_log.role is Role.EDGE and edge.event_log.master == ""


@pytest.mark.parametrize(("section", "message"), [
    ("nats://x:1", "'rest_tornado: event_log' must be a mapping"),
    ({"servers": []}, "servers must be a list of nats://"),
    ({"servers": ["http://x:1"], "master": "m"}, "servers holds 'http://x:1', not a nats://host:port URL"),
    ({"servers": ["nats://x:1"]}, "master is required for role both"),
    ({"servers": ["nats://x:1"], "role": "ingest", "master": ""}, "master is required for role ingest"),
    ({"servers": ["nats://x:1"], "role": "hub", "master": "m"}, "role must be ingest, edge or both, got 'hub'"),
    ({"servers": ["nats://x:1"], "master": "m", "replicas": 2}, "replicas must be 1 or 3, got 2"),
    ({"servers": ["nats://x:1"], "master": "m", "stream": "a.b"}, "stream must be 1-64 letters"),
    ({"servers": ["nats://x:1"], "master": "m", "subject_prefix": "a.*"}, "subject_prefix must be dot-separated"),
    ({"servers": ["nats://x:1"], "master": "m", "max_age": 0}, "max_age must be more than 0, got 0"),
    ({"servers": ["nats://x:1"], "master": "m", "max_msgs": 0}, "max_msgs must be -1 .unlimited. or at least 1"),
    ({"servers": ["nats://x:1"], "master": "m", "duplicate_window": "soon"}, "duplicate_window must be a number"),
    ({"servers": ["nats://x:1"], "master": "m", "user": "u"}, "user and password go together"),
    ({"servers": ["nats://x:1"], "master": "m", "token": "t", "creds": "/c"}, "takes one of user/password, token or creds"),
    ({"servers": ["nats://x:1"], "master": "m", "tls_cert": "/c"}, "tls_cert and tls_key go together"),
    ({"servers": ["nats://x:1"], "master": "m", "replica": 3}, "unknown key.s. replica"),
])
def test_bad_sections_say_which_key_and_what_it_takes(section: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(section)


def test_secrets_never_show() -> None:
    settings = _settings({"servers": ["nats://x:1"], "master": "m", "user": "u", "password": "hunter2"})
    token = _settings({"servers": ["nats://x:1"], "master": "m", "token": "s3cret"})
    assert settings.event_log is not None and token.event_log is not None
    assert "hunter2" not in repr(settings.event_log) + json.dumps(settings.event_log.as_config())
    assert "s3cret" not in repr(token.event_log) + json.dumps(token.event_log.as_config())
    with pytest.raises(ConfigError, match="holds a URL with credentials; put them in user/password"):
        _settings({"servers": ["nats://u:hunter2@x:1"], "master": "m"})


# -- the history, the streams ------------------------------------------------------------
def test_the_history_takes_a_logs_sequences_and_a_skip_forgets_what_it_kept() -> None:
    history = EventHistory("local1", max_events=10)
    history.append("a", b"{}")
    history.rebase("ep1", 40)
    assert history.current == EventId("ep1", 40) and len(history) == 0
    history.append("t/41", b'{"n": 41}', 41, "m1")
    history.append("t/42", b'{"n": 42}', 42, "m2")
    resumed = history.since(EventId("ep1", 41))
    assert resumed.outcome is ResumeOutcome.RESUMED and [e.master for e in resumed.entries] == ["m2"]
    history.append("t/45", b'{"n": 45}', 45, "m1")  # 43 and 44 never came: what is kept stays consecutive
    assert history.since(EventId("ep1", 42)).outcome is ResumeOutcome.TOO_OLD
    assert [e.id.position for e in history.since(EventId("ep1", 44)).entries] == [45]


def _edge_streams(keep: int = 10, start: int = 100) -> EventStreams:
    """An edge node's streams that began reading the log after ``start``."""
    streams = EventStreams(history=EventHistory("ep1", max_events=keep))
    streams.log_prefix = PREFIX
    streams.history.rebase("ep1", start)
    return streams


def _messages(outbox: Outbox) -> list[dict[str, object]]:
    """The JSON of each websocket text frame queued (all short: 2-byte headers)."""
    data, found = outbox.drain(1 << 20), []
    while data:
        size, start = data[1] & 0x7F, 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        found.append(json.loads(data[start:start + size]))
        data = data[start + size:]
    return found


def test_ids_carry_the_master_and_master_filters_apply() -> None:
    streams = _edge_streams()
    every, only_m2 = Outbox(100, 1 << 20), Outbox(100, 1 << 20)
    streams.attach("all_events", every, "t", ids=True)
    streams.attach("all_events", only_m2, "t", ids=True, tags=master_filter(glob_filter(["s/*"]), ["m2"]))
    streams.dispatch(SaltEvent("s/1", {"n": 1}), position=101, master="m1")
    streams.dispatch(SaltEvent("s/2", {"n": 2}), position=102, master="m2")
    streams.dispatch(SaltEvent("x/3", {"n": 3}), position=103, master="m2")
    assert _messages(every) == [
        {"id": "ep1-101", "master": "m1", "data": {"n": 1}, "tag": "s/1"},
        {"id": "ep1-102", "master": "m2", "data": {"n": 2}, "tag": "s/2"},
        {"id": "ep1-103", "master": "m2", "data": {"n": 3}, "tag": "x/3"},
    ]
    assert _messages(only_m2) == [{"id": "ep1-102", "master": "m2", "data": {"n": 2}, "tag": "s/2"}]


def _logged(sequence: int, tag: str, master: str = "m1") -> LoggedEvent:
    return LoggedEvent(sequence, master, encode_body(tag, {"n": sequence}))


def test_a_resume_older_than_the_history_asks_for_the_logs_range_then_goes_on() -> None:
    streams = _edge_streams(keep=10, start=102)  # this node began after 102
    for position in range(103, 106):
        streams.dispatch(SaltEvent(f"s/{position}", {"n": position}), position=position, master="m1")
    client = Outbox(100, 1 << 20)
    [fetch] = streams.attach("all_events", client, "t", tags=glob_filter(["s/*"]), last_event_id=EventId("ep1", 100))
    assert isinstance(fetch, FetchEvents)
    assert (fetch.first, fetch.last, fetch.subjects) == (101, 105, ("salt.events.*.s.>",))
    # a live event while the range is read: it must come after the range, not before
    streams.dispatch(SaltEvent("s/106", {"n": 106}), position=106, master="m2")
    assert len(client) == 0
    streams.fetched(fetch, (_logged(101, "s/101"), _logged(102, "x/102"), _logged(103, "s/103"),
                            _logged(104, "s/104"), _logged(105, "s/105")))
    streams.dispatch(SaltEvent("s/107", {"n": 107}), position=107, master="m1")
    got = _messages(client)
    assert [m["id"] for m in got] == ["ep1-101", "ep1-103", "ep1-104", "ep1-105", "ep1-106", "ep1-107"]
    assert got[0] == {"id": "ep1-101", "master": "m1", "data": {"n": 101}, "tag": "s/101"}


def test_a_failed_or_cut_short_fetch_is_the_too_old_notice_then_live_events() -> None:
    streams = _edge_streams(start=102)
    for position in range(103, 105):
        streams.dispatch(SaltEvent(f"s/{position}", {}), position=position, master="m1")
    client = Outbox(100, 1 << 20)
    [fetch] = streams.attach("all_events", client, "t", last_event_id=EventId("ep1", 100))
    streams.fetched(fetch, None)
    streams.dispatch(SaltEvent("s/105", {}), position=105, master="m1")
    got = _messages(client)
    assert got[0]["tag"] == "saltnado/resume" and got[0]["data"]["outcome"] == "too_old"  # type: ignore[index]
    assert [m["id"] for m in got[1:]] == ["ep1-105"]


def test_no_fetch_beyond_the_historys_bounds_nor_without_a_log() -> None:
    streams = _edge_streams(keep=3, start=105)
    for position in range(106, 110):
        streams.dispatch(SaltEvent("s", {}), position=position, master="m1")
    client = Outbox(100, 1 << 20)
    assert streams.attach("all_events", client, "t", last_event_id=EventId("ep1", 100)) == []  # 9 events > 3
    assert _messages(client)[0]["data"]["outcome"] == "too_old"  # type: ignore[index]
    plain = EventStreams(history=EventHistory("ep1", max_events=3))
    assert plain.attach("all_events", Outbox(10, 1000), "t", last_event_id=EventId("ep1", 0)) == []


def test_a_client_gone_while_its_range_is_read_is_forgotten() -> None:
    streams = _edge_streams(start=102)
    for position in range(103, 104):
        streams.dispatch(SaltEvent("s", {}), position=position, master="m1")
    client = Outbox(100, 1 << 20)
    [fetch] = streams.attach("all_events", client, "t", last_event_id=EventId("ep1", 100))
    streams.detach("all_events", client, "t")
    streams.fetched(fetch, (_logged(101, "s"),))
    assert len(client) == 0 and streams.subscribers == 0


def test_an_ingest_only_node_names_its_master_to_its_own_clients() -> None:
    from saltnado_core.buslink import EventBusLink
    from saltnado_core.eventbus import encode_pub_message

    streams = EventStreams(history=EventHistory("local1"))
    link = EventBusLink("/run/salt", streams)
    link.master, link.ingest = "m1", True
    client, other = Outbox(10, 1 << 20), Outbox(10, 1 << 20)
    streams.attach("all_events", client, "t", ids=True)
    streams.attach("all_events", other, "t", ids=True, tags=master_filter(None, ["m2"]))
    link.connected()
    link.receive_data(encode_pub_message("s/1", {"n": 1}), 0.0)
    assert _messages(client) == [{"id": "local1-1", "master": "m1", "data": {"n": 1}, "tag": "s/1"}]
    assert len(other) == 0
    assert [event.tag for event in link.take_ingest()] == ["s/1"]
