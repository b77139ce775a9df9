"""The Salt event-bus codec, fed literal Salt 3008 bytes in every split."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import msgpack
import pytest

from saltnado_core import EventBusDecoder, EventBusError, SaltEvent, encode_pub_message, encode_pull_message
from saltnado_core.eventbus import BodyFault, UndecodableEvent



def salt_pub_message(tag: str, data: Any) -> bytes:
    """One message exactly as Salt 3008's publisher writes it (``frame_msg`` + ``SaltEvent.pack``)."""
    return msgpack.packb(
        {"head": {}, "body": tag.encode() + b"\n\n" + msgpack.packb(data, use_bin_type=True)},
        use_bin_type=True,
    )


def decode(chunks: Iterable[bytes], max_event_bytes: int = 16 * 1024 * 1024) -> list[SaltEvent | UndecodableEvent]:
    """Feed ``chunks`` one by one, collecting events after each (as a binding does)."""
    decoder = EventBusDecoder(max_event_bytes)
    events: list[SaltEvent | UndecodableEvent] = []
    for chunk in chunks:
        decoder.feed(chunk)
        events.extend(decoder.events())
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


JOB_RET = {
    "cmd": "_return",
    "id": "minion1",
    "success": True,
    "return": {"pkg_|-vim_|-vim_|-installed": {"result": True, "comment": "ünïcode ✓"}},
    "retcode": 0,
    "jid": "20240101120000123456",
    "fun": "state.apply",
    "fun_args": ["vim", {"test": True}],
    "_stamp": "2024-01-01T12:00:00.123456",
}
TAG = "salt/job/20240101120000123456/ret/minion1"
EVENTS = [
    SaltEvent(TAG, JOB_RET),
    SaltEvent("salt/auth", {"act": "accept", "id": "minion1", "result": True}),
    SaltEvent("minion_start", {"data": "Minion minion1 started", "cmd": "_minion_event"}),
    SaltEvent("salt/key", {}),
]
STREAM = b"".join(salt_pub_message(e.tag, e.data) for e in EVENTS)


# -- the wire format -------------------------------------------------------------


def test_encode_pub_message_is_salts_format() -> None:
    assert encode_pub_message(TAG, JOB_RET) == salt_pub_message(TAG, JOB_RET)
    assert encode_pub_message("a/b", {"x": 1}) == (
        b"\x82\xa4head\x80\xa4body\xc4\x09a/b\n\n\x81\xa1x\x01"
    )


def test_encode_pull_message_has_big_endian_length_prefix() -> None:
    payload = salt_pub_message("a/b", {"x": 1})
    framed = encode_pull_message("a/b", {"x": 1})
    assert framed == b"\x00\x00\x00\x17" + payload
    assert struct.unpack(">I", framed[:4]) == (len(payload),)


def test_encode_pull_message_length_above_one_byte() -> None:
    framed = encode_pull_message("big", {"blob": "x" * 70_000})
    assert framed[:4] == len(framed[4:]).to_bytes(4, "big")
    assert framed[:2] == b"\x00\x01"  # > 65535, so the high bytes matter


# -- decoding valid streams ------------------------------------------------------


def test_one_event_whole() -> None:
    assert decode([salt_pub_message(TAG, JOB_RET)]) == [SaltEvent(TAG, JOB_RET)]


def test_event_keeps_raw_body_out_of_equality() -> None:
    (event,) = decode([salt_pub_message("t", {"a": 1})])
    assert event.raw == b"t\n\n\x81\xa1a\x01"
    assert event == SaltEvent("t", {"a": 1}, b"different raw")


def test_one_event_byte_by_byte() -> None:
    message = salt_pub_message(TAG, JOB_RET)
    decoder = EventBusDecoder()
    for byte in bytewise(message)[:-1]:
        decoder.feed(byte)
        assert list(decoder.events()) == []  # nothing until the last byte
    decoder.feed(message[-1:])
    assert list(decoder.events()) == [SaltEvent(TAG, JOB_RET)]


def test_many_events_concatenated() -> None:
    assert decode([STREAM]) == EVENTS


def test_many_events_byte_by_byte() -> None:
    assert decode(bytewise(STREAM)) == EVENTS


def test_stream_split_at_every_offset() -> None:
    for offset in range(len(STREAM) + 1):
        assert decode([STREAM[:offset], STREAM[offset:]]) == EVENTS, offset


def test_trailing_partial_message_waits() -> None:
    partial = salt_pub_message("next", {"n": 2})
    decoder = EventBusDecoder()
    decoder.feed(salt_pub_message("first", {"n": 1}) + partial[:5])
    assert list(decoder.events()) == [SaltEvent("first", {"n": 1})]
    assert list(decoder.events()) == []
    decoder.feed(partial[5:])
    assert list(decoder.events()) == [SaltEvent("next", {"n": 2})]


def test_empty_feed_is_harmless() -> None:
    assert decode([b"", STREAM, b""]) == EVENTS


def test_empty_data_part_is_empty_dict() -> None:
    message = msgpack.packb({"head": {}, "body": b"salt/empty\n\n"}, use_bin_type=True)
    assert decode([message]) == [SaltEvent("salt/empty", {})]


def test_non_dict_data_and_bytes_values() -> None:
    data = {"blob": b"\x00\xff", "list": [1, 2.5, None, True], "neg": -(2**40)}
    message = salt_pub_message("t", data)
    assert decode([message]) == [SaltEvent("t", data)]
    assert decode([salt_pub_message("t", [1, "two"])]) == [SaltEvent("t", [1, "two"])]


def test_non_ascii_tag() -> None:
    assert decode([salt_pub_message("salt/ünï/✓", {"a": "ß"})]) == [SaltEvent("salt/ünï/✓", {"a": "ß"})]


def test_extra_head_fields_are_ignored() -> None:
    message = msgpack.packb(
        {"head": {"mid": 7, "topic_lst": ["x"]}, "body": b"t\n\n\x01"}, use_bin_type=True
    )
    assert decode([message]) == [SaltEvent("t", 1)]


def test_body_with_str_type_utf8() -> None:
    # Older publishers packed the body as a msgpack str, not bin.
    message = msgpack.packb({"head": {}, "body": "salt/é\n\n\x05"}, use_bin_type=True)
    assert message[12:13] == b"\xaa"  # fixstr: the body really is str-typed here
    assert decode([message]) == [SaltEvent("salt/é", 5)]


def test_body_with_str_type_carrying_raw_msgpack() -> None:
    # use_bin_type=False packs bytes as (non-UTF-8) str: the body must still decode.
    body = TAG.encode() + b"\n\n" + msgpack.packb(JOB_RET, use_bin_type=True)
    message = msgpack.packb({"head": {}, "body": body}, use_bin_type=False)
    assert decode([message]) == [SaltEvent(TAG, JOB_RET)]
    assert decode(bytewise(message)) == [SaltEvent(TAG, JOB_RET)]


def test_message_at_the_size_limit_is_accepted() -> None:
    message = salt_pub_message("t", {"blob": "x" * 1000})
    assert decode([message], max_event_bytes=len(message)) == [SaltEvent("t", {"blob": "x" * 1000})]
    assert decode(bytewise(message), max_event_bytes=len(message)) == [
        SaltEvent("t", {"blob": "x" * 1000})
    ]


def test_limit_applies_per_message_not_per_stream() -> None:
    message = salt_pub_message("t", {"blob": "x" * 100})
    chunks = [message] * 50  # 50x the limit in total, one message at a time
    assert decode(chunks, max_event_bytes=len(message) + 10) == [
        SaltEvent("t", {"blob": "x" * 100})
    ] * 50


# -- garbage ---------------------------------------------------------------------

GARBAGE = {
    "non-map int": msgpack.packb(42),
    "non-map list": msgpack.packb([{"head": {}, "body": b"t\n\n\x01"}]),
    "non-map str": msgpack.packb("salt/tag\n\n\x01"),
    "map without body": msgpack.packb({"head": {}}, use_bin_type=True),
    "reserved byte 0xc1": b"\xc1",
    "unhashable map key": b"\x81\x81\x01\x02\x03",  # {{1: 2}: 3}
    "random bytes": bytes.fromhex("c1d4e8f7a09b3c5e2f81004412deadbeef"),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_raises_and_decoder_stays_failed(garbage: bytes) -> None:
    decoder = EventBusDecoder()
    decoder.feed(garbage)
    with pytest.raises(EventBusError):
        list(decoder.events())
    # No resync: a good message afterwards is refused, by feed and by events.
    with pytest.raises(EventBusError):
        decoder.feed(salt_pub_message("good", {}))
    with pytest.raises(EventBusError):
        list(decoder.events())


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_byte_by_byte_raises(garbage: bytes) -> None:
    with pytest.raises(EventBusError):
        decode(bytewise(garbage))


def test_good_events_before_garbage_are_delivered_first() -> None:
    decoder = EventBusDecoder()
    decoder.feed(STREAM + GARBAGE["map without body"] + salt_pub_message("after", {}))
    seen: list[SaltEvent] = []
    with pytest.raises(EventBusError, match="not a {head, body} map"):
        for event in decoder.events():
            seen.append(event)
    assert seen == EVENTS
    with pytest.raises(EventBusError):
        list(decoder.events())  # "after" is never delivered


# -- a body that does not decode, in intact framing: skipped, and the stream goes on -----------


def body_message(body: object) -> bytes:
    return msgpack.packb({"head": {}, "body": body}, use_bin_type=True)


# name → (the body, why it does not decode, the tag the skip reports)
UNDECODABLE = {
    # Salt splits at the first "\n\n": the rest of the tag is read as data, then the data
    "tag holding \\n\\n": (b"salt/a\n\nb\n\n\x81\xa1x\x01", BodyFault.TRAILING, "salt/a"),
    "body data has extra bytes": (b"t\n\n\x01\x02", BodyFault.TRAILING, "t"),
    "str of invalid UTF-8": (b"t\n\n\x81\xa1s\xa2\xc3\x28", BodyFault.NOT_UTF8, "t"),
    "str with a lone surrogate": (b"t\n\n\x81\xa1s\xa3\xed\xa0\x80", BodyFault.NOT_UTF8, "t"),
    "body data truncated": (b"t\n\n\x82\xa1a", BodyFault.TRUNCATED, "t"),
    "array header past the data": (b"t\n\n\xdc\x00\x10\x01", BodyFault.TRUNCATED, "t"),
    "nesting past 1,024": (b"t\n\n" + b"\x91" * 1025 + b"\xc0", BodyFault.TOO_DEEP, "t"),
    "array as a map key": (b"t\n\n\x81\x91\x01\x02", BodyFault.BAD_KEY, "t"),
    "map as a map key": (b"t\n\n\x81\x81\x01\x02\x03", BodyFault.BAD_KEY, "t"),
    "body data not msgpack": (b"t\n\n\xc1", BodyFault.NOT_MSGPACK, "t"),
    "body without separator": (b"salt/tag\n{}", BodyFault.NO_TAG_END, ""),
    "body is int": (7, BodyFault.NOT_BYTES, ""),
    "body is map": ({"tag": "x"}, BodyFault.NOT_BYTES, ""),
}


@pytest.mark.parametrize("case", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_undecodable_body_is_skipped_and_the_next_event_decoded(case: tuple[object, BodyFault, str]) -> None:
    body, fault, tag = case
    bad = body_message(body)
    stream = salt_pub_message("before", {"n": 1}) + bad + salt_pub_message("after", {"n": 2})
    expected = [SaltEvent("before", {"n": 1}), UndecodableEvent(fault, tag, len(bad)), SaltEvent("after", {"n": 2})]
    assert decode([stream]) == expected
    assert decode(bytewise(stream)) == expected
    assert decode([stream + b"\x82"]) == expected  # trailing data: the next message, waiting


def test_oversized_message_whole() -> None:
    message = salt_pub_message("t", {"blob": "x" * 2000})
    decoder = EventBusDecoder(max_event_bytes=1024)
    with pytest.raises(EventBusError, match="size limit"):
        decoder.feed(message)
    with pytest.raises(EventBusError):
        list(decoder.events())
    with pytest.raises(EventBusError):
        decoder.feed(b"")


def test_oversized_message_byte_by_byte_fails_by_the_limit() -> None:
    message = salt_pub_message("t", {"blob": "x" * 2000})
    decoder = EventBusDecoder(max_event_bytes=1024)
    fed = 0
    with pytest.raises(EventBusError, match="size limit"):
        for byte in bytewise(message):
            decoder.feed(byte)
            fed += 1
            assert list(decoder.events()) == []
    assert fed == 1024 + 1  # refused on the first byte past the limit


def test_oversized_message_with_incrementally_parsed_head() -> None:
    # msgpack consumes a long head array as it arrives, so its own buffer bound
    # never trips; the decoder still counts the whole message.
    message = msgpack.packb({"head": [[0] * 1000] * 100, "body": b"t\n\n\x01"}, use_bin_type=True)
    decoder = EventBusDecoder(max_event_bytes=4096)
    fed = 0
    with pytest.raises(EventBusError, match="size limit"):
        for offset in range(0, len(message), 100):
            decoder.feed(message[offset : offset + 100])
            fed += 100
            assert list(decoder.events()) == []
    assert fed == 4100


def test_oversized_message_completed_in_one_chunk_is_refused() -> None:
    message = msgpack.packb({"head": [[0] * 100] * 7, "body": b"t\n\n\x01"}, use_bin_type=True)
    assert 512 < len(message) < 1024
    decoder = EventBusDecoder(max_event_bytes=512)
    decoder.feed(message[:400])  # each chunk fits the limit, the message does not
    assert list(decoder.events()) == []
    decoder.feed(message[400:])
    with pytest.raises(EventBusError, match="size limit"):
        list(decoder.events())


def test_huge_declared_length_never_buffers_past_the_limit() -> None:
    # A bin32 header announcing 4 GiB: the decoder waits, but only up to the limit.
    decoder = EventBusDecoder(max_event_bytes=4096)
    decoder.feed(b"\x82\xa4head\x80\xa4body\xc6\xff\xff\xff\xff")
    assert list(decoder.events()) == []
    with pytest.raises(EventBusError, match="size limit"):
        for _ in range(5):
            decoder.feed(b"\x00" * 1024)
            assert list(decoder.events()) == []
