"""The /formatted_events view, fed real events recorded from a salt-master.

tests/fixtures/real_events.bin holds raw bytes read from a real master's
master_event_pub.ipc (see tests/fixtures/capture_events.py): test.ping, a
failing cmd.run 'exit 3', grains.items, presence events, the minion's key
deleted, the minion restarted and its key accepted again, two more pings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from saltnado_core import EventBusDecoder, EventStreams, Limits, Outbox, SaltEvent
from saltnado_core.formatted import GRAINS_FUN, FormattedStream, FormattedView
from saltnado_core.messages import dumps
from saltnado_core.salt_calls import PublishGrains

FIXTURE = Path(__file__).parent / "fixtures" / "real_events.bin"
TOKEN = "ab" * 32
PING, FAIL, GRAINS_JOB = "20261129092424409885", "20261129092425291286", "20261129092426113145"
PING2, PING3 = "20261129092441618732", "20261129092441739416"


def recorded() -> list[SaltEvent]:
    decoder = EventBusDecoder()
    decoder.feed(FIXTURE.read_bytes())
    return list(decoder.events())


EVENTS = recorded()
GRAINS = next(e.data["return"] for e in EVENTS if e.tag == f"salt/job/{GRAINS_JOB}/ret/minion1")


def messages(outbox: Outbox) -> list[dict[str, Any]]:
    """Decode the unmasked server text frames queued in ``outbox``."""
    raw, out = outbox.drain(1 << 30), []
    while raw:
        n, head = raw[1] & 0x7F, 2
        if n == 126:
            n, head = int.from_bytes(raw[2:4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(raw[2:10], "big"), 10
        out.append(json.loads(raw[head : head + n]))
        raw = raw[head + n :]
    return out


def replay(events: list[SaltEvent], view: FormattedView, delta: bool) -> tuple[list[dict[str, Any]], list[Any]]:
    stream = FormattedStream(view)
    outbox = Outbox(1 << 20, 1 << 30)
    calls = stream.attach(outbox, TOKEN, delta)
    for i, event in enumerate(events):
        calls += stream.dispatch(event, float(i))
    return messages(outbox), calls


def job(jid: str, fun: str, stamp: str, minion: dict[str, Any], state: str, tgt: Any = "minion1", tgt_type: str = "glob") -> dict[str, Any]:
    return {"jid": jid, "start_time": stamp, "minions": {"minion1": minion}, "fun": fun, "tgt": tgt, "tgt_type": tgt_type, "state": state}


PENDING = {"success": False}
PING_RUNNING = job(PING, "test.ping", "2026-11-29T09:24:24.412583+00:00", PENDING, "running")
PING_DONE = job(PING, "test.ping", "2026-11-29T09:24:24.412583+00:00", {"return": True, "retcode": 0, "success": True}, "complete")
FAIL_RUNNING = job(FAIL, "cmd.run", "2026-11-29T09:24:25.293576+00:00", PENDING, "running")
FAIL_DONE = job(FAIL, "cmd.run", "2026-11-29T09:24:25.293576+00:00", {"return": "", "retcode": 3, "success": False}, "complete")
GRAINS_RUNNING = job(GRAINS_JOB, "grains.items", "2026-11-29T09:24:26.115347+00:00", PENDING, "running")
GRAINS_DONE = job(GRAINS_JOB, "grains.items", "2026-11-29T09:24:26.115347+00:00", {"return": GRAINS, "retcode": 0, "success": True}, "complete")
PING2_RUNNING = job(PING2, "test.ping", "2026-11-29T09:24:41.619070+00:00", PENDING, "running", ["minion1"], "list")
PING2_DONE = job(PING2, "test.ping", "2026-11-29T09:24:41.619070+00:00", {"return": True, "retcode": 0, "success": True}, "complete", ["minion1"], "list")
PING3_RUNNING = job(PING3, "test.ping", "2026-11-29T09:24:41.753230+00:00", PENDING, "running", ["minion1"], "list")
PING3_DONE = job(PING3, "test.ping", "2026-11-29T09:24:41.753230+00:00", {"return": True, "retcode": 0, "success": True}, "complete", ["minion1"], "list")
BARE = {"minion1": {"id": "minion1"}}
WITH_GRAINS = {"minion1": {"grains": GRAINS, "id": "minion1"}}


def test_replay_delta_messages_exactly() -> None:
    sent, calls = replay(EVENTS, FormattedView(max_jobs=3), delta=True)
    assert sent == [
        {"minions": {}},  # the view on connect
        {"jobs": {}},
        {"jobs": {PING: PING_RUNNING}},
        {"jobs": {PING: PING_DONE}},
        {"minions": BARE},  # salt/presence/change new=[minion1]
        {"jobs": {FAIL: FAIL_RUNNING}},
        {"jobs": {FAIL: FAIL_DONE}},  # a failed minion completes its job
        {"jobs": {GRAINS_JOB: GRAINS_RUNNING}},
        {"minions": WITH_GRAINS},  # grains.items returned
        {"jobs": {GRAINS_JOB: GRAINS_DONE}},
        {"minions": {"minion1": None}},  # salt/key act=delete
        {"minions": BARE},  # salt/key act=accepted (3008's spelling)
        {"jobs": {PING2: PING2_RUNNING, PING: None}},  # max_jobs=3: the oldest goes
        {"jobs": {PING2: PING2_DONE}},
        {"jobs": {PING3: PING3_RUNNING, FAIL: None}},
        {"jobs": {PING3: PING3_DONE}},
    ]
    # grains for everyone on connect; then for minion1 each time presence shows it without any
    assert calls == [PublishGrains(None, TOKEN), PublishGrains(("minion1",), TOKEN), PublishGrains(("minion1",), TOKEN)]


def test_replay_full_messages_are_the_whole_maps() -> None:
    sent, _ = replay(EVENTS, FormattedView(max_jobs=3), delta=False)
    assert sent[:4] == [{"minions": {}}, {"jobs": {}}, {"jobs": {PING: PING_RUNNING}}, {"jobs": {PING: PING_DONE}}]
    assert sent[5] == {"jobs": {PING: PING_DONE, FAIL: FAIL_RUNNING}}
    assert sent[8] == {"minions": WITH_GRAINS}
    assert sent[-1] == {"jobs": {GRAINS_JOB: GRAINS_DONE, PING2: PING2_DONE, PING3: PING3_DONE}}
    assert all(set(m) in ({"jobs"}, {"minions"}) for m in sent)


def test_late_return_for_a_job_started_before_we_watched() -> None:
    """Replay from just after PING's 'new' event: its return is kept, not crashed on."""
    start = next(i for i, e in enumerate(EVENTS) if e.tag == f"salt/job/{PING}/new") + 1
    sent, _ = replay(EVENTS[start:], FormattedView(), delta=True)
    assert sent[2] == {
        "jobs": {PING: {"jid": PING, "minions": {"minion1": {"return": True, "retcode": 0, "success": True}}, "fun": "test.ping", "state": "complete"}}
    }


def test_a_return_before_its_new_event_is_merged() -> None:
    view = FormattedView()
    ret = next(e for e in EVENTS if e.tag == f"salt/job/{PING}/ret/minion1")
    new = next(e for e in EVENTS if e.tag == f"salt/job/{PING}/new")
    view.feed(ret, 0)
    view.feed(new, 0)
    assert view.jobs[PING] == PING_DONE


def test_job_stays_running_until_every_targeted_minion_returned() -> None:
    view = FormattedView()
    view.feed(SaltEvent("salt/job/1/new", {"jid": "1", "minions": ["a", "b"], "fun": "f", "tgt": "*", "tgt_type": "glob", "_stamp": "s"}), 0)
    view.feed(SaltEvent("salt/job/1/ret/a", {"return": "boom", "retcode": 1, "success": False, "fun": "f"}), 0)
    assert view.jobs["1"]["state"] == "running"
    change = view.feed(SaltEvent("salt/job/1/ret/b", {"return": True, "retcode": 0, "success": True, "fun": "f"}), 0)
    assert view.jobs["1"]["state"] == "complete"
    assert view.jobs["1"]["minions"]["a"] == {"return": "boom", "retcode": 1, "success": False}
    assert change.jobs == {"1": view.jobs["1"]}


@pytest.mark.parametrize(
    "event",
    [
        SaltEvent("salt/job", {}),
        SaltEvent("salt/job/1", {}),
        SaltEvent("salt/job/1/ret/m/extra", {"return": 1, "retcode": 0}),
        SaltEvent("salt/job/1/ret/m", {"return": 1}),  # no retcode
        SaltEvent("salt/job/1/ret/m", ["not", "a", "map"]),
        SaltEvent("salt/job/1/new", {"minions": "m1"}),  # not a list
        SaltEvent("salt/key", {"act": "accept"}),  # no id
        SaltEvent("salt/presence/present", {"present": [1, 2]}),
    ],
)
def test_malformed_events_are_skipped_and_counted(event: SaltEvent) -> None:
    stream = FormattedStream(FormattedView())
    outbox = Outbox(100, 1 << 20)
    stream.attach(outbox, TOKEN, delta=True)
    messages(outbox)
    assert stream.dispatch(event, 0) == []
    assert stream.view.skipped == 1
    assert messages(outbox) == []
    # and the stream goes on
    stream.dispatch(SaltEvent("salt/key", {"act": "accept", "id": "m9"}), 0)
    assert messages(outbox) == [{"minions": {"m9": {"id": "m9"}}}]


def test_other_tags_are_ignored_without_counting() -> None:
    view = FormattedView()
    for tag in ("salt/job/1/publish", "salt/job/1/prog/m/0", "salt/auth", "minion_start", "key", "x"):
        assert not view.feed(SaltEvent(tag, {}), 0)
    assert view.skipped == 0


def test_presence_change_drops_only_the_lost() -> None:
    view = FormattedView()
    view.feed(SaltEvent("salt/presence/present", {"present": ["a", "b"]}), 0)
    change = view.feed(SaltEvent("salt/presence/change", {"new": ["c"], "lost": []}), 0)
    assert sorted(view.minions) == ["a", "b", "c"]  # the reference would drop a and b here
    assert change.minions == {"c": {"id": "c"}} and change.needs_grains == ["c"]
    change = view.feed(SaltEvent("salt/presence/change", {"new": [], "lost": ["a"]}), 0)
    assert sorted(view.minions) == ["b", "c"] and change.minions == {"a": None}


def test_job_age_bound_drops_old_jobs() -> None:
    view = FormattedView(max_jobs=100, max_job_age=60)
    for i in range(3):
        view.feed(SaltEvent(f"salt/job/{i}/new", {"minions": ["m"]}), now=i * 50.0)
    assert list(view.jobs) == ["1", "2"]  # job 0 (t=0) is older than 60 s at t=100
    change = view.feed(SaltEvent("salt/key", {"act": "accept", "id": "m"}), now=200.0)
    assert view.jobs == {} and change.jobs == {"1": None, "2": None}


def test_one_encode_per_change_shared_by_every_subscriber() -> None:
    stream = FormattedStream(FormattedView())
    outboxes = [Outbox(100, 1 << 20) for _ in range(3)]
    for outbox in outboxes:
        stream.attach(outbox, TOKEN, delta=True)
        outbox.drain(1 << 20)
    stream.dispatch(SaltEvent("salt/key", {"act": "accept", "id": "m"}), 0)
    frames = [outbox._queue[0] for outbox in outboxes]
    assert frames[0] is frames[1] is frames[2]


def test_new_minions_grains_use_the_newest_clients_token_and_none_without_clients() -> None:
    stream = FormattedStream(FormattedView())
    present = SaltEvent("salt/presence/present", {"present": ["m1"]})
    assert stream.dispatch(present, 0) == []  # nobody to ask for
    stream.attach(Outbox(10, 1 << 20), "a" * 64, False)
    stream.attach(Outbox(10, 1 << 20), "b" * 64, True)
    assert stream.dispatch(SaltEvent("salt/presence/present", {"present": ["m1", "m2"]}), 0) == [
        PublishGrains(("m2",), "b" * 64)
    ]


# -- the view's bounds (issue 12, item 3) ------------------------------------------------------
MB_OUTPUT = "x" * 1_000_000  # what `cmd.run` returns for a command that prints 1 MB
DEFAULT_OUTBOX = Limits()


def job_events(jid: str, mids: list[str], ret: Any, fun: str = "cmd.run") -> list[SaltEvent]:
    new = {"jid": jid, "minions": mids, "fun": fun, "tgt": mids, "tgt_type": "list", "_stamp": "s"}
    data = {"return": ret, "retcode": 0, "success": True, "fun": fun}
    rets = [SaltEvent(f"salt/job/{jid}/ret/{mid}", data) for mid in mids]
    return [SaltEvent(f"salt/job/{jid}/new", new), *rets]


def encoded(view: FormattedView) -> int:
    """The view's JSON, encoded here from scratch."""
    return sum(len(dumps(m).encode("utf-8")) for m in (view.minions_message(), view.jobs_message()))


@pytest.mark.parametrize("delta", [False, True])
def test_a_new_client_gets_a_view_that_fits_after_20_jobs_of_1_mb(delta: bool) -> None:
    """Before: the view held 20 MB, every new client was cut off (1013) right after ready."""
    streams = EventStreams()
    jids = [f"202612040000000000{i:02d}" for i in range(20)]
    for jid in jids:
        for event in job_events(jid, ["m1"], MB_OUTPUT):
            streams.dispatch(event)
    outbox = Outbox(DEFAULT_OUTBOX.outbox_max_messages, DEFAULT_OUTBOX.outbox_max_bytes)
    streams.attach("formatted_events", outbox, TOKEN, delta)
    assert not outbox.overflowed
    assert outbox.queued_bytes <= 4 * 1024 * 1024  # the default formatted_max_view_bytes
    minions, jobs = messages(outbox)
    assert minions == {"minions": {}}
    assert list(jobs["jobs"]) == jids  # every job kept, each return replaced by its marker
    marker = {"saltnado/truncated": {"bytes": 1_000_002, "full": f"/jobs/{jids[0]}"}}  # the output's JSON
    assert jobs["jobs"][jids[0]]["minions"] == {"m1": {"return": marker, "retcode": 0, "success": True}}
    assert jobs["jobs"][jids[0]]["state"] == "complete"
    streams.dispatch(SaltEvent("salt/key", {"act": "accept", "id": "m2"}))  # and it stays connected
    assert not outbox.overflowed and len(messages(outbox)) == 1


def test_4000_fabricated_returns_for_one_job_are_bounded_and_counted() -> None:
    """Before: all 4,001 minions went into the job."""
    streams = EventStreams()
    for event in job_events("1", ["m1"], True, "test.ping"):
        streams.dispatch(event)
    for i in range(4000):
        streams.dispatch(SaltEvent(f"salt/job/1/ret/fake{i}", {"return": "y" * 1000, "retcode": 0, "success": True}))
    job = streams.formatted.view.jobs["1"]
    assert len(job["minions"]) == 1000  # the default formatted_max_job_minions: m1 and 999 of them
    assert job["minions"]["m1"] == {"return": True, "retcode": 0, "success": True}
    assert job["saltnado/omitted"] == {"minions": 3001, "full": "/jobs/1"}


def test_the_byte_bound_drops_the_oldest_jobs_and_is_kept_exactly() -> None:
    view = FormattedView(max_bytes=20_000, max_return_bytes=3000)
    sizes = []
    for i in range(20):
        for event in job_events(f"{i:02d}", ["m1", "ü2"], "é" * 1000):  # 2 bytes a character
            view.feed(event, 0)
            sizes.append(view.encoded_bytes)
            assert view.encoded_bytes == encoded(view) <= 20_000
    assert list(view.jobs) == [f"{i:02d}" for i in range(16, 20)]  # ~4,100 bytes a job
    assert max(sizes) > 16_000


def test_a_job_too_large_for_the_view_shows_markers_then_counts_minions() -> None:
    view = FormattedView(max_bytes=1500, max_return_bytes=1000)
    events = job_events("7", ["m0", "m1"], "r" * 900)
    events += [SaltEvent(f"salt/job/7/ret/x{i}", {"return": "r" * 900, "retcode": 0}) for i in range(40)]
    for event in events:
        view.feed(event, 0)
        assert view.encoded_bytes == encoded(view) <= 1500
    job = view.jobs["7"]
    assert job["minions"]["m0"] == {"return": "r" * 900, "retcode": 0, "success": True}
    assert job["minions"]["m1"]["return"] == {"saltnado/truncated": {"bytes": 902, "full": "/jobs/7"}}
    assert job["saltnado/omitted"] == {"minions": 42 - len(job["minions"]), "full": "/jobs/7"}
    assert 2 < len(job["minions"]) < 42


def test_grains_too_large_become_a_marker_pointing_at_the_minion() -> None:
    view = FormattedView(max_return_bytes=100)
    for event in job_events("3", ["a b?#"], {"os": "Debian" * 50}, GRAINS_FUN):
        view.feed(event, 0)
    marker = {"saltnado/truncated": {"bytes": 310, "full": "/minions/a%20b%3F%23"}}  # one path segment
    assert view.minions == {"a b?#": {"grains": marker}}
    assert view.jobs["3"]["minions"]["a b?#"]["return"] == {"saltnado/truncated": {"bytes": 310, "full": "/jobs/3"}}


def test_minions_fill_the_view_before_jobs_and_the_rest_are_counted() -> None:
    view = FormattedView(max_bytes=600)
    for event in job_events("1", ["m1"], True, "test.ping"):
        view.feed(event, 0)
    change = view.feed(SaltEvent("salt/presence/present", {"present": [f"minion{i:03d}" for i in range(40)]}), 0)
    assert change.jobs == {"1": None}  # the job made room, then minions were left out
    assert view.unlisted == 40 - len(view.minions) > 0
    assert change.needs_grains == list(view.minions)  # grains asked only for listed minions
    assert view.encoded_bytes == encoded(view) <= 600


def test_the_size_is_exact_through_the_recorded_events() -> None:
    view = FormattedView(max_jobs=3)
    for i, event in enumerate(EVENTS):
        view.feed(event, float(i))
        assert view.encoded_bytes == encoded(view)


def test_data_json_cannot_hold_is_measured_as_it_is_sent() -> None:
    """A bytes key makes dumps rewrite a whole message from its top: 1,000 empty lists
    93 levels down in a return would be cut as 21-byte markers in the jobs message
    (23 KB sent for 4 KB counted) unless the view rewrites the data once, when it arrives."""
    leaves: Any = [[] for _ in range(1000)]
    for _ in range(93):
        leaves = [leaves]
    view = FormattedView()
    view.feed(SaltEvent("salt/job/1/new", {"minions": ["m"], "fun": {b"x": 1}}), 0)
    view.feed(SaltEvent("salt/job/1/ret/m", {"return": {b"k": 1, "d": leaves}, "retcode": 0}), 0)
    assert view.encoded_bytes == encoded(view)
    assert view.jobs["1"]["fun"] == {"x": 1}
