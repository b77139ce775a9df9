"""An event too big for an outbox once encoded (JSON writes ``\\x01`` as six
bytes), bytes in and out: every client it is too big for, fast or slow, gets a
``saltnado/dropped`` notice in its place, framed for its stream, and stays
connected; the same for in-process subscribers and their raw-size bound."""

from __future__ import annotations

import json

import pytest

from saltnado_core import EventStreams, Limits, Outbox, Overflow, SaltEvent, SlowClientPolicy
from saltnado_core.messages import http_chunk, text_frame
from saltnado_core.subscriptions import Subscriptions

# 227 bytes of msgpack, 1,236 of JSON: each \x01 is written "\u0001"
BIG = SaltEvent("big", {"blob": "\x01" * 200})
SMALL = SaltEvent("small", {})
SMALL_JSON = b'{"data": {}, "tag": "small"}'


def dropped_json(tag: str, size: int) -> bytes:
    return b'{"data": {"tag": "%s", "bytes": %d}, "tag": "saltnado/dropped"}' % (tag.encode(), size)


@pytest.mark.parametrize("policy", list(SlowClientPolicy))
def test_an_event_no_outbox_can_take_is_dropped_with_a_notice_and_nobody_is_cut_off(policy: SlowClientPolicy) -> None:
    streams = EventStreams()
    overflow = Overflow(policy=policy)
    fast, sse = Outbox(100, 1000, overflow=overflow), Outbox(100, 1000, overflow=overflow)
    streams.attach("all_events", fast, "")
    streams.attach("events", sse, "")
    streams.dispatch(BIG)
    streams.dispatch(SMALL)
    # the websocket frame is 1,240 bytes, the SSE chunk 1,260: each stream says its own size
    assert fast.drain(1 << 20) == text_frame(dropped_json("big", 1240)) + text_frame(SMALL_JSON)
    assert sse.drain(1 << 20) == (
        http_chunk(b"tag: saltnado/dropped\ndata: " + dropped_json("big", 1260) + b"\n\n")
        + http_chunk(b"tag: small\ndata: " + SMALL_JSON + b"\n\n")
    )
    assert not fast.overflowed and not sse.overflowed and fast.missed_total == 0
    assert (len(streams.all_events), len(streams.events)) == (1, 1)
    assert streams.dropped == 2  # once on each stream


def test_only_the_outboxes_too_small_get_the_notice() -> None:
    streams = EventStreams()
    small, roomy = Outbox(100, 1000), Outbox(100, 1 << 20)
    streams.attach("all_events", small, "")
    streams.attach("all_events", roomy, "")
    streams.dispatch(BIG)
    assert small.drain(1 << 20) == text_frame(dropped_json("big", 1240))
    assert json.loads(roomy.drain(1 << 20)[4:]) == {"data": BIG.data, "tag": "big"}
    assert streams.dropped == 1


def test_the_notice_carries_at_most_256_characters_of_the_tag() -> None:
    streams = EventStreams()
    box = Outbox(100, 3000)
    streams.attach("all_events", box, "")
    tag = "\x02" * 600  # the tag alone is 3,600 bytes of JSON
    streams.dispatch(SaltEvent(tag, {}))
    out = box.drain(1 << 20)
    assert json.loads(out[4:]) == {"data": {"tag": "\x02" * 256, "bytes": 3627}, "tag": "saltnado/dropped"}
    assert not box.overflowed


def test_a_slow_outbox_still_gets_its_policy_for_the_notice() -> None:
    streams = EventStreams()
    slow = Outbox(1, 1000)
    streams.attach("all_events", slow, "")
    streams.dispatch(SMALL)  # its one place taken
    streams.dispatch(BIG)
    assert slow.overflowed and len(streams.all_events) == 0


def test_an_in_process_subscriber_gets_the_notice_in_place_of_a_body_bigger_than_its_bound() -> None:
    subs = Subscriptions(Limits(outbox_max_bytes=100))
    sub = subs.subscribe("")
    small_bound = subs.subscribe("", max_bytes=10)
    raw = b"big\n\n" + b"x" * 200
    assert subs.publish(SaltEvent("big", {}, raw)) == 0  # nobody cut off
    subs.publish(SaltEvent("ok", {}, b"ok\n\n\x80"))
    notice = SaltEvent("saltnado/dropped", {"tag": "big", "bytes": len(raw)})
    assert [sub.next_event(), sub.next_event(), sub.next_event()] == [notice, SaltEvent("ok", {}), None]
    assert [small_bound.next_event(), small_bound.next_event()] == [notice, SaltEvent("ok", {})]
    assert subs.dropped == 1
