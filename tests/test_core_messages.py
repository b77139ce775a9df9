"""Event encodings for streaming clients: JSON bytes and prebuilt websocket frames."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from fuzzing import read_server_frames
from saltnado_core import EventStreams, SaltEvent, all_events_frame, event_json, text_frame
from saltnado_core.broadcast import Outbox
from saltnado_core.kinds import StreamKind, Transport
from saltnado_core.messages import MAX_JSON_DEPTH, TOO_DEEP, dumps
from saltnado_core.negotiation import JSON, serialize

FUZZ_EXAMPLES = int(os.environ.get("SALTNADO_FUZZ_EXAMPLES", "200"))


def wsproto_server_frame(text: str) -> bytes:
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(text, True))


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_text_frame_equals_wsproto_server_frame(length: int) -> None:
    text = "x" * length
    assert text_frame(text.encode()) == wsproto_server_frame(text)


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_text_frame_header_bytes(length: int, header: bytes) -> None:
    payload = b"y" * length
    frame = text_frame(payload)
    assert frame == header + payload


def test_text_frame_multibyte_payload_uses_byte_length() -> None:
    text = "ü" * 100  # 200 bytes: the 16-bit length form, not the 7-bit one
    assert text_frame(text.encode()) == wsproto_server_frame(text)
    assert text_frame(text.encode())[:4] == b"\x81\x7e\x00\xc8"


def test_text_frame_decodes_as_one_unmasked_text_message() -> None:
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(text_frame(b'{"a": 1}'))
    (frame,) = list(client.received_frames())
    assert (frame.opcode, frame.payload, frame.frame_finished, frame.message_finished) == (
        Opcode.TEXT,
        '{"a": 1}',
        True,
        True,
    )


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.text(max_size=300))
def test_text_frame_matches_wsproto_for_any_text(text: str) -> None:
    assert text_frame(text.encode()) == wsproto_server_frame(text)


def test_event_json_exact_bytes() -> None:
    event = SaltEvent("salt/job/20240101/ret/minion1", {"retcode": 0, "return": True, "id": "minion1"})
    assert event_json(event) == (
        b'{"data": {"retcode": 0, "return": true, "id": "minion1"}, "tag": "salt/job/20240101/ret/minion1"}'
    )


def test_event_json_key_order_is_data_then_tag() -> None:
    raw = event_json(SaltEvent("t", {"z": 1, "a": 2}))
    assert list(json.loads(raw)) == ["data", "tag"]
    assert raw.index(b'"data"') < raw.index(b'"tag"')
    assert raw == b'{"data": {"z": 1, "a": 2}, "tag": "t"}'  # data keys keep their order too


def test_event_json_keeps_non_ascii() -> None:
    raw = event_json(SaltEvent("salt/ünï", {"comment": "✓ ß"}))
    assert raw == '{"data": {"comment": "✓ ß"}, "tag": "salt/ünï"}'.encode()
    assert b"\\u" not in raw


def test_event_json_bytes_become_strings() -> None:
    raw = event_json(SaltEvent("t", {"blob": b"abc", "nested": [b"\xc3\xbc"], "bad": b"\xff"}))
    assert raw == '{"data": {"blob": "abc", "nested": ["ü"], "bad": "\ufffd"}, "tag": "t"}'.encode()


def test_event_json_sets_and_unknown_objects() -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing!"

    raw = event_json(SaltEvent("t", {"s": frozenset([1]), "o": Thing()}))
    assert raw == b'{"data": {"s": [1], "o": "thing!"}, "tag": "t"}'


def test_event_json_keys_json_cannot_hold_become_strings() -> None:
    # msgpack maps (strict_map_key=False) may have bytes, ext-type or timestamp keys;
    # json.dumps raised TypeError on them, which stopped the event feed.
    import msgpack

    data = msgpack.unpackb(
        msgpack.packb({b"k\xc3\xbc": 1, 2: {b"\xff": [None]}, msgpack.ExtType(1, b"x"): 3}),
        raw=False, strict_map_key=False,
    )
    assert event_json(SaltEvent("t", data)) == (
        '{"data": {"kü": 1, "2": {"\ufffd": [null]}, "ExtType(code=1, data=b\'x\')": 3}, "tag": "t"}'.encode()
    )


def test_event_json_nesting_too_deep_for_json_is_cut() -> None:
    # msgpack decodes ~1000 levels; json.dumps raised RecursionError on them.
    import msgpack

    deep = msgpack.unpackb(b"\x91" * 1000 + b"\xc0")
    payload = json.loads(event_json(SaltEvent("t", {"return": deep})))
    level, depth = payload["data"], 0
    while isinstance(level, (dict, list)):
        level = level["return"] if isinstance(level, dict) else level[0]
        depth += 1
    assert level == TOO_DEEP and depth == MAX_JSON_DEPTH - 1  # the event map is the first level


def test_event_json_non_dict_data() -> None:
    assert event_json(SaltEvent("t", None)) == b'{"data": null, "tag": "t"}'
    assert event_json(SaltEvent("t", [1, "a"])) == b'{"data": [1, "a"], "tag": "t"}'


def test_all_events_frame_is_text_frame_of_event_json() -> None:
    event = SaltEvent("salt/ünï", {"x": "y" * 200})
    assert all_events_frame(event) == text_frame(event_json(event))
    assert all_events_frame(event) == wsproto_server_frame(event_json(event).decode())


# -- NaN and Infinity: every message parses with a strict JSON parser ---------------------


def strict_json(raw: bytes | str) -> object:
    """``json.loads`` as ``JSON.parse`` reads: ``NaN``, ``Infinity`` and ``-Infinity`` are errors."""

    def reject(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(raw, parse_constant=reject)


def sse_payloads(raw: bytes) -> list[bytes]:
    """The ``data:`` lines of the HTTP chunks in ``raw``."""
    out = []
    while raw:
        size, _, rest = raw.partition(b"\r\n")
        chunk, raw = rest[: int(size, 16)], rest[int(size, 16) + 2 :]
        out += [line[6:] for line in chunk.split(b"\n") if line.startswith(b"data: ")]
    return out


NAN, INF = float("nan"), float("inf")
NON_FINITE = {"nan": NAN, "inf": INF, "neg": -INF, "list": [NAN, 1.5], "set": {INF}, NAN: "key", INF: 1, -INF: 2}


def test_non_finite_numbers_are_null_and_keys_are_strings() -> None:
    assert strict_json(event_json(SaltEvent("salt/x", NON_FINITE))) == {
        "data": {"nan": None, "inf": None, "neg": None, "list": [None, 1.5], "set": [None],
                 "NaN": "key", "Infinity": 1, "-Infinity": 2},
        "tag": "salt/x",
    }
    assert dumps({"deep": [[[NAN]]], "b": b"x"}) == '{"deep": [[[null]]], "b": "x"}'
    assert serialize({"return": [{"minion1": INF}]}, JSON) == b'{"return": [{"minion1": null}]}'


def test_every_message_every_stream_sends_parses_strictly() -> None:
    jid = "20240101120000123456"
    events = [
        SaltEvent("salt/custom", NON_FINITE),
        SaltEvent(f"salt/job/{jid}/new", {"jid": jid, "fun": "test.ping", "arg": [NAN], "tgt": "minion1",
                                           "tgt_type": "glob", "minions": ["minion1"],
                                           "_stamp": "2024-01-01T12:00:00.000000"}),
        SaltEvent(f"salt/job/{jid}/ret/minion1", {"jid": jid, "fun": "test.ping", "id": "minion1", "success": True,
                                                   "return": {"load": INF, "nan": [NAN]}, "retcode": 0,
                                                   "_stamp": "2024-01-01T12:00:01.000000"}),
    ]
    streams = EventStreams()
    boxes = {kind: Outbox(1 << 20, 1 << 30) for kind in StreamKind}
    for kind, box in boxes.items():
        streams.attach(kind, box, "ab" * 32, delta=kind is StreamKind.FORMATTED_EVENTS)
    for i, event in enumerate(events):
        streams.dispatch(event, float(i))
    payloads: list[str] = []
    for kind, box in boxes.items():
        raw = box.drain(1 << 30)
        if kind.transport is Transport.SSE:
            found = [payload.decode() for payload in sse_payloads(raw)]
        else:
            found = [text for _, text in read_server_frames(raw)]
            if kind is StreamKind.WS:  # rest_cherrypy's framing: "data: <json>\n\n"
                assert all(text.startswith("data: ") and text.endswith("\n\n") for text in found)
                found = [text[len("data: "):-2] for text in found]
        assert found, kind
        payloads += found
    assert len(payloads) >= 6
    for payload in payloads:
        strict_json(payload)  # raises on a bare NaN or Infinity
    assert any("null" in payload for payload in payloads)
