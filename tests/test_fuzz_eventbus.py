"""Fuzzing the event-bus codec and what it feeds: any bytes from the master's
publisher socket, valid Salt events or not, in any split.

The decoder yields :class:`SaltEvent` objects, and an :class:`UndecodableEvent`
for a message whose body does not decode (the stream goes on), or raises
:class:`EventBusError` when the framing breaks (and stays failed: the binding
reconnects); it never holds more than ``max_event_bytes`` of an unfinished
message. Whatever the event bodies, the bus link stays up. Every event it yields is
dispatched to every stream — ``/all_events`` frames, ``/events`` SSE chunks, the
``/formatted_events`` view (full and delta), in-process subscribers — whatever
its data holds (bytes keys, ext types, NaN, odd shapes for the tags the view
reads): one event must never take the server down. Sizes from ``SALTNADO_FUZZ``.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import FUZZ, count, mutated, read_server_frames, split
from saltnado_core import EventBusDecoder, EventBusError, EventStreams, Outbox, SaltEvent, encode_pub_message
from saltnado_core.buslink import BusState, EventBusLink
from saltnado_core.eventbus import BodyFault, UndecodableEvent
from saltnado_core.formatted import FormattedView
from saltnado_core.subscriptions import Subscriptions

# -- what a publisher might send -----------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
exts = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)) | st.builds(
    msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)
)
keys = st.text(max_size=8) | st.binary(max_size=8) | st.integers(-5, 2**64 - 1) | st.none() | st.booleans() | st.floats()
values = st.recursive(
    scalars | exts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
jids = st.sampled_from(["20240101120000123456", "req", ""]) | st.text(max_size=6)
mids = st.sampled_from(["minion1", "minion2", ""]) | st.text(max_size=6)


def maybe(draw: st.DrawFn, value: Any) -> Any:
    """``value``, or now and then anything else in its place."""
    return value if draw(st.integers(0, 4)) else draw(values)


@st.composite
def salt_event(draw: st.DrawFn) -> tuple[str, Any]:
    """A tag and data: the families /formatted_events reads, in Salt's shape or not, or anything."""
    family = draw(st.sampled_from(["new", "ret", "key", "presence", "change", "start", "any"]))
    jid, mid = draw(jids), draw(mids)
    minions = draw(st.lists(mids, max_size=3))
    if family == "new":
        tag = f"salt/job/{jid}/new"
        data = {"jid": maybe(draw, jid), "minions": maybe(draw, minions), "fun": maybe(draw, "test.ping"),
                "tgt": maybe(draw, "*"), "tgt_type": maybe(draw, "glob"), "_stamp": maybe(draw, "2024-01-01")}
    elif family == "ret":
        tag = f"salt/job/{jid}/ret/{mid}" + draw(st.sampled_from(["", "/extra"]))
        data = {"id": maybe(draw, mid), "jid": maybe(draw, jid), "return": draw(values),
                "retcode": maybe(draw, 0), "success": maybe(draw, True), "fun": maybe(draw, "grains.items")}
    elif family == "key":
        tag = "salt/key"
        data = {"act": maybe(draw, draw(st.sampled_from(["accept", "accepted", "delete", "reject", "pend"]))),
                "id": maybe(draw, mid), "result": maybe(draw, True)}
    elif family == "presence":
        tag, data = "salt/presence/present", {"present": maybe(draw, minions)}
    elif family == "change":
        tag = "salt/presence/change"
        data = {"new": maybe(draw, minions), "lost": maybe(draw, draw(st.lists(mids, max_size=3)))}
    elif family == "start":
        tag, data = draw(st.sampled_from([f"salt/minion/{mid}/start", "minion_start"])), {"id": maybe(draw, mid)}
    else:
        tag, data = draw(st.text(max_size=30)), draw(values)
    if draw(st.integers(0, 9)) == 0:
        data = draw(values)  # not a map at all
    return tag.replace("\n\n", "\n").rstrip("\n"), data  # a tag ending in "\n" would move the separator


def pub(*bodies: bytes | str) -> tuple[bytes, list[bytes | BodyFault]]:
    """Publisher messages carrying ``bodies`` → (bytes, the bodies the decoder must yield)."""
    raw = b"".join(msgpack.packb({"head": {}, "body": b}, unicode_errors="surrogateescape") for b in bodies)
    return raw, [b.encode("utf-8", "surrogateescape") if isinstance(b, str) else b for b in bodies]


@st.composite
def bus_message(draw: st.DrawFn) -> tuple[bytes, list[bytes | BodyFault] | None]:
    """Message(s) on the publisher socket → (bytes, the event bodies they carry or
    why each does not decode, or None if the framing is broken)."""
    kind = draw(st.sampled_from(["event"] * 6 + ["deep", "str_body", "no_tagend", "not_a_map", "no_body", "bad_data"]))
    if kind == "event":
        tag, data = draw(salt_event())
        return pub(tag.encode() + b"\n\n" + msgpack.packb(data))
    if kind == "deep":  # nesting msgpack accepts (up to ~1000) but JSON's encoder may not
        jid, mid, depth = draw(jids), draw(mids), draw(st.integers(1, 1023))
        new = msgpack.packb({"jid": jid, "minions": [mid], "fun": "test.arg"})
        ret = b"\x83" + b"".join(map(msgpack.packb, ["id", mid, "retcode", 0, "return"])) + b"\x91" * depth + b"\xc0"
        return pub(f"salt/job/{jid}/new".encode() + b"\n\n" + new, f"salt/job/{jid}/ret/{mid}".encode() + b"\n\n" + ret)
    if kind == "str_body":  # older publishers sent str bodies holding the raw msgpack bytes
        tag, data = draw(salt_event())
        return pub((tag.encode() + b"\n\n" + msgpack.packb(data)).decode("utf-8", "surrogateescape"))
    if kind == "no_tagend":
        return pub(draw(st.binary(max_size=30)).replace(b"\n\n", b""))[0], [BodyFault.NO_TAG_END]
    if kind == "not_a_map":
        return msgpack.packb(draw(values)), None
    if kind == "no_body":
        return msgpack.packb({"head": draw(values)}), None
    # data that is not one msgpack value: something left over after it
    return pub(b"t\n\n" + msgpack.packb(draw(values)) + draw(st.binary(min_size=1, max_size=8)))[0], [BodyFault.TRAILING]


# -- the fan-out every event goes through ---------------------------------------------------


class FanOut:
    """Every stream with one subscriber, as a busy server has them."""

    def __init__(self) -> None:
        self.streams = EventStreams(FormattedView(max_jobs=4))
        self.subscriptions = Subscriptions()
        self.outboxes = {
            name: Outbox(100, 1 << 20) for name in ("all_events", "events", "formatted_events", "delta")
        }
        for name, outbox in self.outboxes.items():
            if name == "delta":
                self.streams.attach("formatted_events", outbox, "t" * 64, delta=True)
            else:
                self.streams.attach(name, outbox, "t" * 64)
        self.subscription = self.subscriptions.subscribe("")

    def dispatch(self, event: SaltEvent) -> None:
        self.streams.dispatch(event, 1_700_000_000.0)
        self.subscriptions.publish(event)
        assert self.subscription.next_event() == event
        for name, outbox in self.outboxes.items():
            data = outbox.drain(1 << 30)
            if name == "events":
                check_sse(data, event)
            else:
                for _, payload in read_server_frames(data):
                    json.loads(payload)  # each frame is one JSON document
                if name == "all_events":
                    assert data, "every event reaches /all_events"


def check_sse(data: bytes, event: SaltEvent) -> None:
    """HTTP chunks, each one ``tag:``/``data:`` event ending in a blank line."""
    rest = data
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        chunk, rest = rest[:n], rest[n:]
        assert rest.startswith(b"\r\n")
        rest = rest[2:]
        tag_line, data_line, blank = chunk.split(b"\n", 2)
        assert tag_line.startswith(b"tag: ") and b"\r" not in tag_line
        assert json.loads(data_line.removeprefix(b"data: "))["tag"] == event.tag
        assert blank == b"\n"


# -- the properties --------------------------------------------------------------------------


def decode_all(
    decoder: EventBusDecoder, chunks: list[bytes], max_event: int, fanout: FanOut
) -> list[SaltEvent | UndecodableEvent]:
    """Feed every chunk; returns the events and skips, or raises EventBusError."""
    events: list[SaltEvent | UndecodableEvent] = []
    fed = 0
    for chunk in chunks:
        decoder.feed(chunk)
        fed += len(chunk)
        for event in decoder.events():
            assert isinstance(event.tag, str)
            if isinstance(event, SaltEvent):
                fanout.dispatch(event)
            events.append(event)
        # never more than one message's limit held back
        assert fed - decoder._unpacker.tell() <= max_event
    return events


@FUZZ
@given(st.lists(bus_message(), max_size=6), st.sampled_from([200, 2000, 1 << 20]), st.data())
def test_any_publisher_bytes_in_any_split(
    messages: list[tuple[bytes, list[bytes] | None]], max_event: int, draw: st.DataObject
) -> None:
    count("eventbus")
    stream = b"".join(raw for raw, _ in messages)
    cut = draw.draw(st.sampled_from(["whole", "truncated", "corrupted", "garbage"]))
    if cut == "truncated" and stream:
        stream = stream[: draw.draw(st.integers(0, len(stream) - 1))]
    elif cut == "corrupted" and stream:
        at = draw.draw(st.integers(0, len(stream) - 1))
        stream = stream[:at] + bytes([draw.draw(st.integers(0, 255))]) + stream[at + 1 :]
    elif cut == "garbage":
        stream += draw.draw(st.binary(min_size=1, max_size=40))
    decoder = EventBusDecoder(max_event_bytes=max_event)
    try:
        events = decode_all(decoder, draw.draw(split(stream)), max_event, FanOut())
    except EventBusError:
        with pytest.raises(EventBusError):  # no resync: it stays failed
            decoder.feed(b"\x80")
        with pytest.raises(EventBusError):
            list(decoder.events())
        return
    expected = []
    for _, bodies in messages:
        if bodies is None:
            break  # the decoder fails there (or, once in a while, reads it as something valid)
        expected += bodies
    if cut in ("whole", "truncated"):
        # Whole messages come out, in order (a body that does not decode as a skip
        # saying why), and nothing else before the first broken framing.
        outcomes = [event.raw if isinstance(event, SaltEvent) else event.fault for event in events]
        assert outcomes[: len(expected)] == expected[: len(events)]
    if cut == "whole" and all(bodies is not None and len(raw) <= max_event for raw, bodies in messages):
        assert len(events) == len(expected)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Salt tags never contain the "\n\n" separator (nor end with "\n", which would move it).
tags = st.text(max_size=40).filter(lambda t: "\n\n" not in t and not t.endswith("\n"))


@FUZZ
@given(st.lists(st.tuples(tags, json_like), max_size=6), st.data())
def test_valid_events_round_trip_under_any_split(items: list[tuple[str, Any]], draw: st.DataObject) -> None:
    """What ``encode_pub_message`` writes decodes to the same events, however the reads fall."""
    count("eventbus")
    stream = b"".join(encode_pub_message(tag, data) for tag, data in items)
    events = decode_all(EventBusDecoder(), draw.draw(split(stream, max_cuts=20)), 16 << 20, FanOut())
    assert events == [SaltEvent(tag, data) for tag, data in items]


@FUZZ
@given(st.binary(max_size=400), st.data())
def test_arbitrary_bytes(garbage: bytes, draw: st.DataObject) -> None:
    count("eventbus")
    decoder = EventBusDecoder(max_event_bytes=256)
    try:
        decode_all(decoder, draw.draw(split(garbage)), 256, FanOut())
    except EventBusError:
        with pytest.raises(EventBusError):
            list(decoder.events())


# -- event bodies: whatever an API user or a minion fires, the bus link stays up ---------------

BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xc0\xaf"]


@st.composite
def event_body(draw: st.DrawFn) -> bytes | str:
    """An event's body as anyone able to fire an event could shape it: valid, or
    a tag holding the separator, a str that is not UTF-8 (invalid bytes, a lone
    surrogate), data cut short, nested too deeply, an array or map as a map key,
    a few bytes changed, or any bytes at all."""
    tag, data = draw(salt_event())
    head, packed = tag.encode(), msgpack.packb(data)
    kind = draw(st.sampled_from(["valid", "tagend", "utf8", "cut", "deep", "key", "mutated", "bytes"]))
    if kind == "tagend":
        head += b"\n\n" + draw(st.text(max_size=10)).encode()
    elif kind == "utf8":
        text = draw(st.text(max_size=10)).encode()
        at = draw(st.integers(0, len(text)))
        bad = text[:at] + draw(st.sampled_from(BAD_UTF8)) + text[at:]
        packed = b"\x82\xa1s\xd9" + bytes([len(bad)]) + bad + b"\xa1d" + packed  # {"s": <bad str>, "d": data}
    elif kind == "cut":
        packed = packed[: draw(st.integers(0, max(len(packed) - 1, 0)))]
    elif kind == "deep":
        packed = b"\x91" * draw(st.integers(1000, 1100)) + b"\xc0"
    elif kind == "key":
        packed = b"\x81" + draw(st.sampled_from([b"\x90", b"\x91\x01", b"\x80", b"\x81\x01\x02"])) + packed
    body = head + b"\n\n" + packed
    if kind == "mutated":
        body = draw(mutated(body))
    elif kind == "bytes":
        body = draw(st.binary(max_size=60))
    return body.decode("utf-8", "surrogateescape") if draw(st.integers(0, 9)) == 0 else body  # old str bodies


@FUZZ
@given(st.lists(event_body(), min_size=1, max_size=8), st.data())
def test_no_event_body_takes_the_bus_link_down(bodies: list[bytes | str], draw: st.DataObject) -> None:
    count("eventbus")
    fanout = FanOut()
    link = EventBusLink("/srv/salt", fanout.streams, fanout.subscriptions)
    link.connected(0.0)
    link.notices()
    stream = pub(*bodies)[0] + encode_pub_message("saltnado/test/last", {"ok": True})
    for chunk in draw.draw(split(stream, max_cuts=20)):
        link.receive_data(chunk, 1.0)  # raises nothing: the framing is intact
    assert link.state is BusState.CONNECTED and link.master_available
    assert fanout.streams.dispatched + sum(link.skipped.values()) == len(bodies) + 1
    (*_, (_, last)) = read_server_frames(fanout.outboxes["all_events"].drain(1 << 30))
    assert json.loads(last) == {"data": {"ok": True}, "tag": "saltnado/test/last"}  # the next event gets through
    notices = link.notices()
    assert len(notices) == len(link.skipped)  # one line per kind of fault, whatever the count
    assert all("\n" not in notice.message for notice in notices)
