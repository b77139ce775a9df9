"""Fan-out: bounded per-subscriber outboxes sharing one encoded message."""

from __future__ import annotations

import pytest

from saltnado_core import Broadcast, EventStreams, Outbox, Overflow, SaltEvent, TagFilter, all_events_frame, tag_filter
from saltnado_core.broadcast import gap_notice
from saltnado_core.kinds import StreamKind


class WakeCounter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def outbox(max_messages: int = 100, max_bytes: int = 10_000) -> tuple[Outbox, WakeCounter]:
    wake = WakeCounter()
    return Outbox(max_messages, max_bytes, wake), wake


# -- Outbox ----------------------------------------------------------------------


def test_offer_queues_and_counts() -> None:
    box, _ = outbox()
    assert box.offer(b"abc")
    assert box.offer(b"de")
    assert (len(box), box.queued_bytes, box.overflowed) == (2, 5, False)
    assert box.drain(1000) == b"abcde"
    assert (len(box), box.queued_bytes) == (0, 0)
    assert box.drain(1000) == b""


def test_wake_only_on_empty_to_non_empty() -> None:
    box, wake = outbox()
    box.offer(b"a")
    box.offer(b"b")
    box.offer(b"c")
    assert wake.calls == 1
    box.drain(1000)
    box.offer(b"d")
    assert wake.calls == 2
    box.offer(b"e")
    assert wake.calls == 2


def test_wake_again_after_partial_drain_only_when_emptied() -> None:
    box, wake = outbox()
    for part in (b"aa", b"bb", b"cc"):
        box.offer(part)
    assert box.drain(2) == b"aa"
    box.offer(b"dd")  # still non-empty: no new wake
    assert wake.calls == 1


def test_bound_by_message_count() -> None:
    box, wake = outbox(max_messages=3, max_bytes=10_000)
    assert [box.offer(b"m") for _ in range(3)] == [True, True, True]
    assert not box.overflowed
    assert box.offer(b"m") is False
    assert box.overflowed
    assert (len(box), box.queued_bytes) == (0, 0)  # cleared: the subscriber is cut off
    assert wake.calls == 2  # once for the first message, once for the overflow


def test_bound_by_bytes() -> None:
    box, wake = outbox(max_messages=100, max_bytes=10)
    assert box.offer(b"12345")
    assert box.offer(b"12345")  # exactly at the bound fits
    assert box.queued_bytes == 10
    assert box.offer(b"1") is False
    assert box.overflowed
    assert (len(box), box.queued_bytes) == (0, 0)
    assert wake.calls == 2


def test_single_message_larger_than_byte_bound_overflows_empty_outbox() -> None:
    box, wake = outbox(max_messages=100, max_bytes=10)
    assert box.offer(b"x" * 11) is False
    assert box.overflowed
    assert wake.calls == 1  # the binding must learn about the overflow


def test_after_overflow_offers_are_refused_without_more_wakes() -> None:
    box, wake = outbox(max_messages=1, max_bytes=10_000)
    box.offer(b"a")
    box.offer(b"b")
    assert wake.calls == 2
    assert box.offer(b"c") is False
    assert box.offer(b"d") is False
    assert wake.calls == 2  # overflow wakes once
    assert (len(box), box.drain(1000)) == (0, b"")


def test_drain_coalesces_everything_under_max_bytes() -> None:
    box, _ = outbox()
    for part in (b"one", b"two", b"three"):
        box.offer(part)
    assert box.drain(11) == b"onetwothree"
    assert len(box) == 0


def test_drain_respects_max_bytes_on_message_boundaries() -> None:
    box, _ = outbox()
    for part in (b"aaaa", b"bbbb", b"cccc", b"dddd"):
        box.offer(part)
    assert box.drain(9) == b"aaaabbbb"  # a third message would exceed 9
    assert (len(box), box.queued_bytes) == (2, 8)
    assert box.drain(8) == b"ccccdddd"
    assert (len(box), box.queued_bytes) == (0, 0)


def test_drain_returns_at_least_one_message() -> None:
    box, _ = outbox()
    box.offer(b"x" * 50)
    box.offer(b"y")
    assert box.drain(10) == b"x" * 50  # larger than max_bytes, still sent whole
    assert box.drain(10) == b"y"


def test_clear_empties_without_overflow() -> None:
    box, _ = outbox()
    box.offer(b"abc")
    box.clear()
    assert (len(box), box.queued_bytes, box.overflowed) == (0, 0, False)
    assert box.offer(b"d")


# -- Broadcast -------------------------------------------------------------------


def test_publish_reaches_every_subscriber_and_shares_the_bytes_object() -> None:
    broadcast = Broadcast()
    boxes = [outbox()[0] for _ in range(3)]
    for box in boxes:
        broadcast.subscribe(box)
    message = b"\x81\x02hi"
    assert broadcast.publish(message) == 0
    for box in boxes:
        assert box._queue[0] is message  # one object, no per-subscriber copy
        assert box.drain(1000) == message


def test_subscribe_twice_is_one_subscription() -> None:
    broadcast = Broadcast()
    box, _ = outbox()
    broadcast.subscribe(box)
    broadcast.subscribe(box)
    assert len(broadcast) == 1
    broadcast.publish(b"m")
    assert len(box) == 1


def test_unsubscribe() -> None:
    broadcast = Broadcast()
    box, _ = outbox()
    broadcast.subscribe(box)
    broadcast.unsubscribe(box)
    broadcast.unsubscribe(box)  # idempotent
    assert len(broadcast) == 0
    assert broadcast.publish(b"m") == 0
    assert len(box) == 0


def test_publish_removes_overflowed_subscribers_and_returns_the_count() -> None:
    broadcast = Broadcast()
    small_a, wake_a = outbox(max_messages=1)
    small_b, _ = outbox(max_messages=2)
    big, _ = outbox(max_messages=100)
    for box in (small_a, small_b, big):
        broadcast.subscribe(box)
    assert broadcast.publish(b"1") == 0
    assert broadcast.publish(b"2") == 1  # small_a is cut off
    assert len(broadcast) == 2
    assert small_a.overflowed and wake_a.calls == 2
    assert broadcast.publish(b"3") == 1  # small_b
    assert len(broadcast) == 1
    assert broadcast.publish(b"4") == 0
    assert big.drain(1000) == b"1234"
    assert len(small_a) == 0 and small_a.drain(1000) == b""


def test_slow_subscriber_does_not_affect_others() -> None:
    broadcast = Broadcast()
    slow, slow_wake = outbox(max_messages=5, max_bytes=10_000)
    fast = [outbox(max_messages=5, max_bytes=10_000) for _ in range(3)]
    broadcast.subscribe(slow)
    for box, _ in fast:
        broadcast.subscribe(box)
    received: list[list[bytes]] = [[] for _ in fast]
    overflowed = 0
    for n in range(20):
        overflowed += broadcast.publish(b"event-%d;" % n)
        for i, (box, _) in enumerate(fast):  # the fast ones drain after every event
            received[i].append(box.drain(1000))
    expected = [b"event-%d;" % n for n in range(20)]
    assert all(r == expected for r in received)
    assert all(not box.overflowed and wake.calls == 20 for box, wake in fast)
    assert overflowed == 1
    assert slow.overflowed and slow_wake.calls == 2
    assert len(broadcast) == 3


# -- filters -------------------------------------------------------------------


def test_tag_filter_from_prefixes() -> None:
    jobs = tag_filter("salt/job/")
    assert jobs == TagFilter(("salt/job/",))
    assert jobs.matches("salt/job/1/new") and not jobs.matches("salt/auth")
    assert tag_filter(("salt/key", "salt/presence/")) == TagFilter(("salt/key", "salt/presence/"))
    assert tag_filter("") is None and tag_filter(("salt/key", "")) is None  # everything: nothing to check
    assert not TagFilter(()).matches("salt/key")


def test_a_filtered_outbox_is_offered_only_what_it_wants() -> None:
    broadcast = Broadcast()
    jobs, jobs_wake = outbox(max_messages=2)
    every, _ = outbox()
    broadcast.subscribe(jobs, tag_filter("salt/job/"))
    broadcast.subscribe(every)
    for n in range(5):  # none of them counts against the jobs outbox's bound
        assert broadcast.publish(b"auth-%d" % n, "salt/auth") == 0
    assert broadcast.publish(b"job", "salt/job/1/new") == 0
    assert (len(jobs), jobs_wake.calls, jobs.overflowed) == (1, 1, False)
    assert jobs.drain(1000) == b"job"
    assert len(every) == 6


def test_a_message_without_a_tag_passes_every_filter() -> None:
    broadcast = Broadcast()
    box, _ = outbox()
    broadcast.subscribe(box, tag_filter("salt/job/"))
    broadcast.publish(b"notice")  # a server notice, a keep-alive
    assert box.drain(1000) == b"notice"


def test_event_streams_apply_a_subscribers_filter_and_notices_bypass_it() -> None:
    streams = EventStreams()
    box, _ = outbox()
    streams.all_events.subscribe(box, tag_filter("salt/job/"))
    job, notice = SaltEvent("salt/job/1/new", {"jid": "1"}), SaltEvent("saltnado/bus/up", {})
    streams.dispatch(SaltEvent("salt/auth", {}))
    streams.dispatch(job)
    streams.notify(notice)
    assert box.drain(10_000) == all_events_frame(job) + all_events_frame(notice)


def test_overflow_policy_defaults() -> None:
    assert Overflow() == Overflow(1013, "client too slow: outbox full")


# -- EventStreams ----------------------------------------------------------------


def test_event_streams_encode_once_per_event() -> None:
    streams = EventStreams()
    boxes = [outbox()[0] for _ in range(2)]
    for box in boxes:
        streams.all_events.subscribe(box)
    event = SaltEvent("salt/test", {"a": 1})
    streams.dispatch(event)
    assert streams.dispatched == 1
    first, second = (box._queue[0] for box in boxes)
    assert first is second
    assert first == all_events_frame(event)


def test_event_streams_without_subscribers_counts_but_encodes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import saltnado_core.streams as streams_module

    encoded: list[SaltEvent] = []
    monkeypatch.setattr(streams_module, "event_json", lambda e: encoded.append(e) or b"")
    streams = EventStreams()
    assert streams.dispatch(SaltEvent("t", {})) == []
    assert streams.dispatched == 1
    assert encoded == []  # nobody subscribed: nothing encoded


@pytest.mark.parametrize("name", ["event", "", "all"])
def test_event_streams_unknown_name(name: str) -> None:
    with pytest.raises(KeyError):
        EventStreams().attach(name, Outbox(1, 1), "tok")


@pytest.mark.parametrize("kind", list(StreamKind))
def test_event_streams_attach_by_kind_or_by_route_name(kind: StreamKind) -> None:
    streams = EventStreams()
    by_kind, by_name = Outbox(10, 1 << 20), Outbox(10, 1 << 20)
    streams.attach(kind, by_kind, "tok")
    streams.attach(kind.value, by_name, "tok")
    by_kind.drain(1 << 20), by_name.drain(1 << 20)  # /formatted_events: the view first
    streams.notify(SaltEvent("saltnado/bus/up", {}))
    notice = kind.frame("saltnado/bus/up", b'{"data": {}, "tag": "saltnado/bus/up"}')
    assert by_kind.drain(1 << 20) == by_name.drain(1 << 20) == notice
    assert streams.tokens == {"tok": 2}
    streams.detach(kind, by_kind, "tok")
    streams.detach(kind.value, by_name, "tok")
    streams.notify(SaltEvent("saltnado/bus/up", {}))
    assert (len(by_kind), len(by_name), streams.tokens) == (0, 0, {})


@pytest.mark.parametrize("kind", list(StreamKind))
def test_a_broadcast_gives_its_subscribers_the_gap_notice_of_its_kind(kind: StreamKind) -> None:
    framed = kind.frame("saltnado/gap", b'{"data": {"missed": 3}, "tag": "saltnado/gap"}')
    assert gap_notice(kind)(3) == framed
    box = Outbox(2, 10_000, overflow=Overflow(policy="gap"))
    broadcast = Broadcast(kind)
    broadcast.subscribe(box)
    for message in (b"a", b"b", b"c", b"d", b"e"):
        broadcast.publish(message, "t")
    assert box.drain(10_000) + box.drain(10_000) == b"ab" + framed
