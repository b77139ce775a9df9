"""The slow-client policy in the core: close (default) or gap notices; bounds always hold.

Bytes in, bytes out: no sockets, no event loop.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import Opcode

from saltnado_core import (
    Broadcast, ConfigError, EventStreams, Limits, Outbox, Overflow, SaltEvent, Settings, SlowClientPolicy,
)
from saltnado_core.bounded import GAP_TAG
from saltnado_core.broadcast import gap_frame
from saltnado_core.messages import all_events_frame, text_frame

from test_core_websocket import decode_server, streaming

GAP = Overflow(policy="gap")


class Wake:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def message(n: int, size: int = 10) -> bytes:
    return b"%0*d" % (size, n)


def gap_of(data: bytes) -> int | None:
    """The ``missed`` count if ``data`` is a gap-notice frame, else None."""
    [(opcode, payload)] = decode_server(data)
    assert opcode is Opcode.TEXT
    decoded = json.loads(payload)
    return decoded["data"]["missed"] if decoded["tag"] == GAP_TAG else None


# -- the notice --------------------------------------------------------------------


def test_gap_notice_is_a_text_frame_in_the_all_events_shape() -> None:
    assert gap_frame(3) == text_frame(b'{"data": {"missed": 3}, "tag": "saltnado/gap"}')
    assert decode_server(gap_frame(12345)) == [
        (Opcode.TEXT, '{"data": {"missed": 12345}, "tag": "saltnado/gap"}')
    ]


def test_events_stream_gap_notice_is_an_sse_event() -> None:
    streams = EventStreams()
    box = Outbox(2, 10_000, overflow=GAP)
    streams.attach("events", box, "")
    for n in range(4):
        streams.dispatch(SaltEvent(f"t/{n}", {"n": n}))
    box.drain(10_000)
    streams.dispatch(SaltEvent("t/4", {"n": 4}))
    out = box.drain(10_000)
    notice = b'tag: saltnado/gap\ndata: {"data": {"missed": 2}, "tag": "saltnado/gap"}\n\n'
    assert out.startswith(b"%x\r\n" % len(notice) + notice + b"\r\n")
    assert b"tag: t/4\n" in out


# -- gap policy: outbox ------------------------------------------------------------


def test_gap_policy_drops_new_messages_and_keeps_the_subscriber() -> None:
    wake = Wake()
    box = Outbox(4, 10_000, wake, GAP)
    assert all(box.offer(message(n)) for n in range(10))  # never cut off
    assert not box.overflowed
    assert (len(box), box.queued_bytes) == (4, 40)
    assert (box.missed, box.missed_total, box.gaps) == (6, 6, 1)
    assert wake.calls == 1  # dropping wakes nobody: the writer already has work


def test_gap_notice_is_queued_once_drained_to_half_then_delivery_resumes() -> None:
    box = Outbox(4, 10_000, overflow=GAP)
    for n in range(10):
        box.offer(message(n))
    assert box.drain(10) == message(0)  # 3 left: above half of 4
    assert box.missed == 6
    assert box.drain(10) == message(1)  # 2 left: at half → the notice is queued
    assert box.missed == 0
    box.offer(message(10))
    assert box.drain(20) == message(2) + message(3)
    rest = box.drain(10_000)
    assert rest == gap_frame(6) + message(10)
    assert (box.missed_total, box.gaps) == (6, 1)


def test_gap_notice_comes_as_soon_as_the_outbox_drains_without_new_events() -> None:
    box = Outbox(2, 10_000, overflow=GAP)
    for n in range(5):
        box.offer(message(n))
    assert box.drain(10_000) == message(0) + message(1)
    assert box.drain(10_000) == gap_frame(3)


def test_gap_by_bytes_resumes_below_half_the_byte_bound() -> None:
    box = Outbox(100, 200, overflow=GAP)
    for n in range(8):
        box.offer(message(n, 40))  # 5 fit
    assert (len(box), box.queued_bytes, box.missed) == (5, 200, 3)
    box.drain(80)  # 120 bytes left: above 100
    assert box.missed == 3
    box.drain(40)  # 80 left
    assert box.missed == 0
    assert box.queued_bytes == 80 + len(gap_frame(3)) <= 200


def test_message_bigger_than_the_bound_on_an_empty_outbox_is_announced_at_once() -> None:
    wake = Wake()
    box = Outbox(10, 100, wake, GAP)
    assert box.offer(b"x" * 101)
    assert box.missed == 0 and box.missed_total == 1
    assert box.drain(1000) == gap_frame(1)
    assert wake.calls == 1


def test_bounds_too_small_for_the_notice_keep_counting() -> None:
    box = Outbox(10, 8, overflow=GAP)
    box.offer(b"x" * 9)
    box.offer(b"y" * 9)
    assert (len(box), box.missed) == (0, 2)


def test_gap_policy_broadcast_never_unsubscribes() -> None:
    broadcast = Broadcast()
    slow = Outbox(2, 10_000, overflow=GAP)
    fast = Outbox(2, 10_000, overflow=GAP)
    broadcast.subscribe(slow)
    broadcast.subscribe(fast)
    for n in range(10):
        assert broadcast.publish(message(n)) == 0
        assert fast.drain(10_000) == message(n)
    assert len(broadcast) == 2 and slow.missed == 8 and fast.missed_total == 0


@settings(max_examples=300)
@given(st.lists(st.one_of(st.integers(1, 40), st.just(-1), st.just(-2)), max_size=200),
       st.integers(1, 6), st.integers(60, 200))
def test_gap_policy_accounts_for_every_message(ops: list[int], max_messages: int, max_bytes: int) -> None:
    """Whatever the interleaving of offers and drains: the bounds hold, and what is
    delivered is every message in order, each hole announced with its exact size."""
    box = Outbox(max_messages, max_bytes, overflow=GAP)
    out = bytearray()
    sent = 0
    for op in ops:
        if op > 0:
            box.offer(text_frame(b"%d:" % sent + b"x" * op))
            sent += 1
        else:
            out += box.drain(30 if op == -1 else 10_000)
        assert len(box) <= max_messages and box.queued_bytes <= max_bytes
    while chunk := box.drain(10**9):  # as a binding's writer does
        out += chunk
    expected = 0
    for opcode, payload in decode_server(bytes(out)):
        if payload.startswith("{"):
            missed = json.loads(payload)["data"]["missed"]
            assert missed > 0
            expected += missed
        else:
            assert int(payload.split(":")[0]) == expected
            expected += 1
    assert expected + box.missed == sent


# -- close policy (the default) through a websocket connection ---------------------


def test_close_policy_closes_with_the_configured_code_and_reason() -> None:
    limits = Limits(outbox_max_messages=3, overflow=Overflow(1008, "keep up or go"))
    binding = streaming(limits)
    frame = all_events_frame(SaltEvent("t", {}))
    for _ in range(4):
        binding.streams.all_events.publish(frame)
    assert binding.subscribers == 0
    assert binding.conn.outbox.queued_bytes == 0  # freed at once
    assert decode_server(binding.conn.data_to_send()) == [(Opcode.CLOSE, (1008, "keep up or go"))]


def test_gap_policy_through_a_websocket_connection() -> None:
    limits = Limits(outbox_max_messages=2, overflow=GAP)
    binding = streaming(limits)
    frames = [all_events_frame(SaltEvent("t", {"n": n})) for n in range(5)]
    for frame in frames:
        binding.streams.all_events.publish(frame)
    assert binding.subscribers == 1
    assert binding.conn.data_to_send() == frames[0] + frames[1]
    binding.streams.all_events.publish(frames[4])
    out = binding.conn.data_to_send()
    assert out == gap_frame(3) + frames[4]
    assert gap_of(gap_frame(3)) == 3


# -- configuration -------------------------------------------------------------------


def opts(**block: object) -> dict[str, object]:
    return {"rest_tornado": {"port": 8000, "disable_ssl": True, **block}}


def test_defaults() -> None:
    settings = Settings.from_opts(opts())
    assert settings.limits.overflow == Overflow(1013, "client too slow: outbox full", "close")
    assert settings.num_processes == 1


def test_slow_client_keys() -> None:
    settings = Settings.from_opts(opts(
        slow_client_policy="gap", slow_client_close_code=1008, slow_client_close_reason="bye",
        num_processes=4,
    ))
    assert settings.limits.overflow == Overflow(1008, "bye", "gap")
    assert settings.num_processes == 4


@pytest.mark.parametrize(("key", "value", "says"), [
    ("slow_client_policy", "drop", "close, gap"),
    ("slow_client_close_code", 1000, "1008 or 1013"),
    ("slow_client_close_code", "x", "integer"),
    ("slow_client_close_reason", "é" * 62, "123 bytes"),
    ("num_processes", "many", "integer"),
])
def test_bad_slow_client_settings_are_config_errors(key: str, value: object, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.from_opts(opts(**{key: value}))


def test_the_policy_is_an_enum_that_compares_as_its_config_string() -> None:
    assert Overflow(policy="gap").policy is SlowClientPolicy.GAP  # as a test or a host writes it
    assert Overflow().policy is SlowClientPolicy.CLOSE and Overflow().policy == "close"
    assert Settings.from_opts(opts(slow_client_policy="gap")).limits.overflow.policy is SlowClientPolicy.GAP
    with pytest.raises(ValueError):
        Overflow(policy="drop")
    with pytest.raises(ConfigError) as info:
        Settings.from_opts(opts(slow_client_policy="drop"))
    assert str(info.value) == "'rest_tornado: slow_client_policy' must be one of close, gap, got 'drop'"
