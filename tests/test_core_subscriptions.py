"""In-process subscribers, the event-bus link and the pacing numbers: no sockets, no loop."""

from __future__ import annotations

import contextlib
import errno
import logging

import pytest

from saltnado_core import EventBusError, EventStreams, Limits, Outbox, Overflow, SaltEvent, encode_pub_message
from saltnado_core.buslink import EventBusLink, Notice
from saltnado_core.pacing import Backoff, Pacing
from saltnado_core.bounded import SlowClientPolicy
from saltnado_core.subscriptions import SlowSubscriber, Subscription, Subscriptions


def event(tag: str, size: int = 10) -> SaltEvent:
    return SaltEvent(tag, {}, b"x" * size)


class Wakes:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


# -- Subscriptions ----------------------------------------------------------------


def test_prefix_filter_and_fifo_order() -> None:
    subs = Subscriptions()
    jobs = subs.subscribe("salt/job/")
    every = subs.subscribe()
    for tag in ("salt/job/1/new", "salt/auth", "salt/job/1/ret/m"):
        subs.publish(event(tag))
    assert [jobs.next_event(), jobs.next_event(), jobs.next_event()] == [
        event("salt/job/1/new"), event("salt/job/1/ret/m"), None
    ]
    assert len(every) == 3


def test_tuple_of_prefixes() -> None:
    subs = Subscriptions()
    sub = subs.subscribe(("salt/key", "salt/presence/"))
    for tag in ("salt/key", "salt/job/1/new", "salt/presence/change"):
        subs.publish(event(tag))
    assert [sub.next_event().tag, sub.next_event().tag] == ["salt/key", "salt/presence/change"]  # type: ignore[union-attr]


def test_events_the_filter_turns_away_take_no_room() -> None:
    subs = Subscriptions(Limits(outbox_max_messages=1))
    jobs = subs.subscribe("salt/job/")
    for _ in range(5):
        assert subs.publish(event("salt/auth")) == 0
    subs.publish(event("salt/job/1/new"))
    assert jobs.next_event() == event("salt/job/1/new")


def test_wake_on_empty_to_non_empty_only() -> None:
    subs, wake = Subscriptions(), Wakes()
    sub = subs.subscribe(wake=wake)
    subs.publish(event("a"))
    subs.publish(event("b"))
    assert wake.calls == 1
    sub.next_event()
    sub.next_event()
    subs.publish(event("c"))
    assert wake.calls == 2


def test_overflow_by_count_cuts_the_subscriber_off_with_the_close_policy() -> None:
    subs, wake = Subscriptions(Limits(outbox_max_messages=2)), Wakes()
    slow = subs.subscribe(wake=wake)
    fast = subs.subscribe()
    dropped = []
    for i in range(3):
        dropped.append(subs.publish(event(str(i))))
        assert fast.next_event() == event(str(i))  # the one that keeps up is not affected…
    assert dropped == [0, 0, 1]
    assert len(subs) == 1  # …and the slow one is gone
    assert wake.calls == 2  # once non-empty, once cut off
    with pytest.raises(SlowSubscriber) as info:
        slow.next_event()
    assert (info.value.code, info.value.reason) == (Overflow().code, Overflow().reason)
    subs.publish(event("later"))
    with pytest.raises(SlowSubscriber):
        slow.next_event()  # stays cut off


def test_overflow_by_raw_bytes() -> None:
    subs = Subscriptions(Limits(outbox_max_bytes=25))
    sub = subs.subscribe()
    assert subs.publish(event("a", 10)) == 0
    assert subs.publish(event("b", 10)) == 0
    assert subs.publish(event("c", 10)) == 1
    with pytest.raises(SlowSubscriber):
        sub.next_event()


def test_a_subscriber_that_keeps_up_loses_nothing() -> None:
    subs = Subscriptions(Limits(outbox_max_messages=1))
    sub = subs.subscribe()
    for i in range(1000):
        subs.publish(event(str(i)))
        assert sub.next_event() == event(str(i))


def test_explicit_bound_overrides_the_outbox_default() -> None:
    subs = Subscriptions(Limits(outbox_max_messages=1000))
    sub = subs.subscribe(max_events=1)
    subs.publish(event("a"))
    assert subs.publish(event("b")) == 1
    with pytest.raises(SlowSubscriber):
        sub.next_event()


def test_end_all_delivers_what_is_queued_then_ends() -> None:
    subs, wake = Subscriptions(), Wakes()
    sub = subs.subscribe(wake=wake)
    subs.publish(event("a"))
    subs.end_all()
    assert sub.ended and wake.calls == 2
    assert sub.next_event() == event("a")
    assert sub.next_event() is None
    late = subs.subscribe()
    assert late.ended and len(subs) == 0
    subs.publish(event("b"))
    assert sub.next_event() is None


def test_unsubscribe() -> None:
    subs = Subscriptions()
    sub = subs.subscribe()
    subs.unsubscribe(sub)
    subs.unsubscribe(sub)  # idempotent
    subs.publish(event("a"))
    assert sub.next_event() is None


# -- EventBusLink ------------------------------------------------------------------


def test_link_dispatches_each_event_to_streams_and_subscribers() -> None:
    streams, subs = EventStreams(), Subscriptions()
    box = Outbox(100, 1 << 20)
    streams.all_events.subscribe(box)
    sub = subs.subscribe("salt/job/")
    link = EventBusLink("/run/salt", streams, subs)
    assert link.path == "/run/salt/master_event_pub.ipc"
    link.connected()
    wire = encode_pub_message("salt/job/1/new", {"jid": "1"}) + encode_pub_message("other", {})
    assert link.receive_data(wire[:5], 0.0) == []
    link.receive_data(wire[5:], 0.0)
    assert streams.dispatched == 2 and len(box) == 2
    got = sub.next_event()
    assert got is not None and got.tag == "salt/job/1/new" and got.data == {"jid": "1"}
    assert sub.next_event() is None


def test_link_streams_events_whose_data_json_cannot_hold() -> None:
    # Found by tests/test_fuzz_eventbus.py: a bytes map key (any minion can fire one)
    # raised TypeError out of receive_data, which ended the server's event feed.
    streams = EventStreams()
    box, view = Outbox(100, 1 << 20), Outbox(100, 1 << 20)
    streams.all_events.subscribe(box)
    streams.attach("formatted_events", view, "t" * 64)
    view.drain(1 << 20)
    link = EventBusLink("/s", streams)
    link.connected()
    jid = "20240101120000123456"
    new = encode_pub_message(f"salt/job/{jid}/new", {"jid": jid, "minions": ["m1"], "fun": "test.arg"})
    ret = {"id": "m1", "jid": jid, "retcode": 0, "return": {b"\xffkey": [1]}, "success": True}
    link.receive_data(new + encode_pub_message(f"salt/job/{jid}/ret/m1", ret), 0.0)
    assert streams.dispatched == 2 and len(box) == 2
    assert '"\ufffdkey": [1]'.encode() in box.drain(1 << 20)
    assert '"\ufffdkey": [1]'.encode() in view.drain(1 << 20)


def test_link_garbage_raises_and_reconnect_starts_a_fresh_decoder() -> None:
    link = EventBusLink("/s", EventStreams())
    link.connected()
    with pytest.raises(EventBusError):
        link.receive_data(b"\xc1\xc1\xc1", 0.0)
    link.lost(EventBusError("garbled"))
    link.connected()
    link.receive_data(encode_pub_message("ok", {}), 0.0)
    assert link.streams.dispatched == 1 and link.connections == 2


def test_link_backoff_and_one_notice_per_state_change() -> None:
    link = EventBusLink("/s", EventStreams(), pacing=Pacing(reconnect_min=0.5, reconnect_max=2.0))
    missing = OSError(errno.ENOENT, "No such file or directory")
    assert [link.unavailable(missing) for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    link.connected()
    link.lost(None)
    assert link.unavailable(missing) == 0.5  # reset by the successful connection
    assert link.notices() == [
        Notice(logging.WARNING, "event bus /s/master_event_pub.ipc unavailable (No such file or directory); retrying"),
        Notice(logging.INFO, "subscribed to the event bus at /s/master_event_pub.ipc"),
        Notice(logging.WARNING, "the master closed the event bus"),
        Notice(logging.WARNING, "event bus /s/master_event_pub.ipc unavailable (No such file or directory); retrying"),
    ]
    assert link.notices() == []
    assert link.state == "waiting"


def test_link_loss_reasons() -> None:
    link = EventBusLink("/s", EventStreams())
    link.lost(ConnectionResetError("reset"))
    link.connected()
    link.lost(EventBusError("bad bytes"))
    messages = [n.message for n in link.notices()]
    assert messages[0] == "event bus connection lost (reset)"
    assert messages[2] == "event bus stream unreadable (bad bytes); reconnecting"


def test_backoff() -> None:
    backoff = Backoff(0.05, 0.3)
    assert [backoff.delay() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.delay() == 0.05


def test_gap_policy_drops_new_events_then_one_notice_where_the_hole_is() -> None:
    subs = Subscriptions(Limits(outbox_max_messages=4, overflow=Overflow(policy="gap")))
    sub = subs.subscribe()
    for i in range(10):
        assert subs.publish(event(str(i))) == 0  # never cut off
    got = [sub.next_event(), sub.next_event()]  # down to half: the notice is queued
    subs.publish(event("10"))
    while (next_event := sub.next_event()) is not None:
        got.append(next_event)
    assert [e.tag for e in got if e] == ["0", "1", "2", "3", "saltnado/gap", "10"]
    assert got[4] == SaltEvent("saltnado/gap", {"missed": 6})
    assert len(subs) == 1


def test_gap_policy_resumes_on_offer_when_already_drained() -> None:
    subs = Subscriptions(Limits(outbox_max_bytes=15, overflow=Overflow(policy="gap")))
    sub = subs.subscribe()
    sub.offer(event("big", 20))  # bigger than the bound: a gap at once (the fan-out would send a dropped notice)
    subs.publish(event("next", 5))
    assert [sub.next_event(), sub.next_event(), sub.next_event()] == [
        SaltEvent("saltnado/gap", {"missed": 1}), event("next", 5), None
    ]


def test_gap_policy_tells_an_empty_queue_at_once() -> None:
    subs, wake = Subscriptions(Limits(outbox_max_bytes=15, overflow=Overflow(policy="gap"))), Wakes()
    sub = subs.subscribe(wake=wake)
    sub.offer(event("big", 20))  # nothing queued to wait for: the notice goes now
    assert wake.calls == 1
    assert sub.next_event() == SaltEvent("saltnado/gap", {"missed": 1})


@pytest.mark.parametrize("policy", list(SlowClientPolicy))
def test_a_subscription_and_an_outbox_follow_one_policy(policy: SlowClientPolicy) -> None:
    """The same offers and takes give the same queue, whatever holds it."""
    box = Outbox(3, 1 << 20, overflow=Overflow(policy=policy))
    sub = Subscription(3, 1 << 20, overflow=Overflow(policy=policy))
    for n in range(12):
        assert box.offer(b"x" * 10) == sub.offer(event(str(n)))
        if n % 4 == 3:
            box.drain(10)
            with pytest.raises(SlowSubscriber) if sub.overflowed else contextlib.nullcontext():
                sub.next_event()
        state = [(len(q), q.missed, q.missed_total, q.gaps, q.overflowed) for q in (box, sub)]
        assert state[0] == state[1]
    assert (box.gaps, box.overflowed) == ((2, False) if policy == "gap" else (0, True))
