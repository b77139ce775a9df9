"""What the fuzz tests (``tests/test_fuzz_*.py``) share: the hypothesis settings, the
input counter, and strict readers for what the server writes.

Two sizes, chosen by the ``SALTNADO_FUZZ`` environment variable:

* ``ci`` (default): a few hundred inputs per test, the whole fuzz set in seconds;
* ``long``: ``LONG_EXAMPLES`` inputs per test per run. ``benchmarks/fuzz_long.py``
  runs the fuzz set this way round after round, with a new seed each time, until
  the three parsers have had at least a million inputs between them.

``SALTNADO_FUZZ_EXAMPLES=N`` overrides the per-test count of either profile.
Every test body calls :func:`count` once per input it runs, so the numbers printed
at the end of the session (and written to ``SALTNADO_FUZZ_COUNTS``, a JSON file,
when set) are inputs actually run, shrinking included, not ``max_examples``.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

PROFILE = os.environ.get("SALTNADO_FUZZ", "ci")
CI_EXAMPLES = 250
LONG_EXAMPLES = 20_000  # per test per run; hypothesis keeps a tree of every input, so runs stay this size
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"SALTNADO_FUZZ must be 'ci' or 'long', not {PROFILE!r}")

FUZZ = settings(
    max_examples=int(os.environ.get("SALTNADO_FUZZ_EXAMPLES", CI_EXAMPLES if PROFILE == "ci" else LONG_EXAMPLES)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
    # The long run explores; a failure it finds is reproduced from the printed blob.
    database=None if PROFILE == "long" else settings.default.database,
)

INPUTS: Counter[str] = Counter()  # parser → inputs run


def count(parser: str) -> None:
    INPUTS[parser] += 1


def report() -> str | None:
    """The session's summary line (and the JSON file), if any fuzz test ran."""
    if not INPUTS:
        return None
    path = os.environ.get("SALTNADO_FUZZ_COUNTS")
    if path:
        with open(path, "w") as out:
            json.dump(dict(INPUTS), out)
    parts = ", ".join(f"{name} {n:,}" for name, n in sorted(INPUTS.items()))
    return f"fuzz inputs run ({PROFILE}): {parts}; total {sum(INPUTS.values()):,}"


# -- input shaping -------------------------------------------------------------------


@st.composite
def split(draw: st.DrawFn, data: bytes, max_cuts: int = 10) -> list[bytes]:
    """``data`` cut at random points into non-empty pieces (``b""`` means EOF to the core)."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(data) - 1, 1)), max_size=max_cuts))))
    bounds = [0, *(c for c in cuts if c < len(data)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


@st.composite
def mutated(draw: st.DrawFn, data: bytes, max_edits: int = 3) -> bytes:
    """``data`` with a few bytes replaced, inserted, deleted or a span duplicated."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, max_edits))):
        at = draw(st.integers(0, len(out)))
        edit = draw(st.sampled_from(["replace", "insert", "delete", "duplicate", "truncate"]))
        if edit == "replace" and at < len(out):
            out[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif edit == "delete":
            del out[at : at + draw(st.integers(1, 4))]
        elif edit == "duplicate":
            out[at:at] = out[at : at + draw(st.integers(1, 16))]
        elif edit == "truncate":
            del out[at:]
    return bytes(out)


# -- websocket client frames -----------------------------------------------------------

READY_TEXT = "websocket client ready"
_FRAME_KINDS = ["text", "text", "binary", "continuation", "ping", "ping", "pong", "close", "ready",
                "bad_utf8", "reserved_opcode"]
_VALID_KINDS = ["text", "text", "binary", "continuation", "ping", "pong", "close", "ready"]
_VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999]
_CLOSE_CODES = [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1011, 1015, 999, 2999, 3000, 4999, 5000]
_BAD_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xc0\xaf"]


def mostly(p_false: int = 10) -> st.SearchStrategy[bool]:
    """True but for about one draw in ``p_false``."""
    return st.sampled_from([True] * (p_false - 1) + [False])


@st.composite
def client_frame(draw: st.DrawFn, max_payload: int = 200, valid: bool = False) -> bytes:
    """One websocket frame as a client might send it, valid or not (RFC 6455 §5.2):
    any opcode, FIN and RSV bits, masked or not, lengths in minimal or oversized
    encodings or lying about the payload, invalid UTF-8, control frames over 125
    bytes or fragmented, close frames with any code and reason."""
    broken = not valid and draw(mostly(3)) is False  # one frame in three may break a rule on purpose
    kind = draw(st.sampled_from(_FRAME_KINDS if broken else _VALID_KINDS))
    data_frame = kind in ("text", "binary", "continuation", "bad_utf8")
    fin = draw(mostly(4)) if data_frame else (draw(mostly(20)) if broken else True)
    if kind == "text":
        opcode, payload = 0x1, draw(st.text(max_size=max_payload)).encode()
    elif kind == "bad_utf8":
        text = draw(st.text(max_size=20)).encode()
        at = draw(st.integers(0, len(text)))
        opcode, payload = draw(st.sampled_from([0x1, 0x0])), text[:at] + draw(st.sampled_from(_BAD_UTF8)) + text[at:]
    elif kind == "binary":
        opcode, payload = 0x2, draw(st.binary(max_size=max_payload))
    elif kind == "continuation":
        opcode, payload = 0x0, draw(st.text(max_size=max_payload // 2)).encode()
    elif kind in ("ping", "pong"):
        opcode, payload = (0x9 if kind == "ping" else 0xA), draw(st.binary(max_size=127 if broken else 125))
    elif kind == "close":
        opcode = 0x8
        shapes = ["empty", "one_byte", "code", "code_reason", "bad_reason", "long_reason"]
        shape = draw(st.sampled_from(shapes if broken else ["empty", "code", "code_reason"]))
        codes = st.sampled_from(_CLOSE_CODES) | st.integers(0, 65535) if broken else st.sampled_from(_VALID_CODES)
        code = draw(codes).to_bytes(2, "big")
        payload = {
            "empty": b"",
            "one_byte": code[:1],
            "code": code,
            "code_reason": code + draw(st.text(max_size=30)).encode(),
            "bad_reason": code + draw(st.sampled_from(_BAD_UTF8)),
            "long_reason": code + b"r" * draw(st.integers(100, 130)),
        }[shape]
    elif kind == "reserved_opcode":
        opcode, payload = draw(st.sampled_from([0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])), b"x"
    else:
        opcode, payload = 0x1, READY_TEXT.encode()
    rsv = 0 if not broken or draw(mostly(4)) else draw(st.integers(1, 7))
    masked = not broken or draw(mostly(4))  # RFC 6455 §5.1: a client must mask
    n = len(payload)
    encoding = draw(st.sampled_from(["minimal"] * 3 + ["16", "64", "lie"])) if broken else "minimal"
    declared = n + draw(st.integers(-3, 40)) if encoding == "lie" else n
    declared = max(declared, 0)
    if encoding == "16" or (encoding != "64" and 126 <= declared < 65536):
        length = bytes([126]) + declared.to_bytes(2, "big") if declared < 65536 else bytes([127]) + declared.to_bytes(8, "big")
    elif encoding == "64" or declared >= 65536:
        length = bytes([127]) + declared.to_bytes(8, "big")
    else:
        length = bytes([declared])
    header = bytes([(0x80 if fin else 0) | rsv << 4 | opcode]) + bytes([length[0] | (0x80 if masked else 0)]) + length[1:]
    if masked:
        key = draw(st.binary(min_size=4, max_size=4))
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        header += key
    return header + payload


@st.composite
def huge_frame_header(draw: st.DrawFn) -> bytes:
    """A masked data frame header declaring far more payload than any limit."""
    declared = draw(st.integers(65_536, 2**63 - 1))
    return bytes([0x81, 0xFF]) + declared.to_bytes(8, "big") + draw(st.binary(min_size=4, max_size=4))


# Well-formed frames only (which may still break the message rules: a continuation
# with nothing to continue, a message over the limit), or frames mixed with junk.
client_frames = st.one_of(
    st.lists(client_frame(valid=True), max_size=10),
    st.lists(st.one_of(*[client_frame()] * 8, huge_frame_header(), st.binary(min_size=1, max_size=20)), max_size=10),
).map(b"".join)


# -- reading the server's output -----------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) ([\x20-\x7e]*)")
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ?([\x20-\x7e\x80-\xff]*)")


@dataclass(frozen=True)
class WireResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


class Unparsable(AssertionError):
    pass


def read_responses(out: bytes, bodyless: Callable[[int], bool | None]) -> tuple[list[WireResponse], bytes]:
    """Split HTTP/1.1 output into responses; returns them and what follows the last
    one that ends the HTTP phase (a 101's websocket frames, an event stream's
    chunks). ``bodyless(i)`` says whether the i-th final response answers HEAD
    (None: not known — the request did not parse; then a head that ends the
    output has no body).

    Raises :class:`Unparsable` if the bytes are not well-formed responses.
    """
    responses: list[WireResponse] = []
    finals = 0
    rest = out
    while rest:
        head, sep, after = rest.partition(b"\r\n\r\n")
        if not sep:
            raise Unparsable(f"incomplete response head: {rest[:200]!r}")
        status_line, *lines = head.split(b"\r\n")
        match = _STATUS_LINE.fullmatch(status_line)
        if not match:
            raise Unparsable(f"bad status line: {status_line!r}")
        headers = []
        for line in lines:
            found = _HEADER.fullmatch(line)
            if not found:
                raise Unparsable(f"bad header line: {line!r}")
            headers.append((found[1].decode().lower(), found[2].decode("latin-1")))
        status = int(match[1])
        response = WireResponse(status, headers, b"")
        if status == 100:
            responses.append(response)
            rest = after
            continue
        if status == 101 or response.header("content-type") == "text/event-stream":
            responses.append(response)
            return responses, after
        length = response.header("content-length")
        if status in (204, 304):  # RFC 9110 §8.6: no body, and no Content-Length
            if length is not None:
                raise Unparsable(f"a {status} with a Content-Length: {head!r}")
            length = "0"
        if length is None or not length.isdigit():
            raise Unparsable(f"response without a Content-Length: {head!r}")
        no_body = bodyless(finals)
        size = 0 if no_body or (no_body is None and not after) else int(length)
        if len(after) < size:
            raise Unparsable(f"body shorter than its Content-Length: {head!r}")
        responses.append(WireResponse(status, headers, after[:size]))
        finals += 1
        rest = after[size:]
    return responses, b""


def check_error_body(response: WireResponse, head: bool = False) -> None:
    """An error answer is ``{"status": "<code> <phrase>", "return": "<why>"}`` in
    JSON or YAML (the ``Content-Type`` says which)."""
    media = response.header("content-type")
    assert media in ("application/json", "application/x-yaml"), response
    if head:
        return
    payload = json.loads(response.body) if media == "application/json" else yaml.safe_load(response.body)
    assert isinstance(payload, dict) and set(payload) == {"status", "return"}, payload
    assert payload["status"].split(" ")[0] == str(response.status), payload
    assert isinstance(payload["return"], str) and payload["return"], payload


# RFC 6455 §7.4: the codes a close frame may carry.
_SENDABLE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}


def read_server_frames(data: bytes) -> list[tuple[Opcode, Any]]:
    """Server websocket output as (opcode, payload); close payloads are (code, reason).

    Decoded by wsproto's client side, which refuses masked server frames, control
    frames over 125 bytes, invalid UTF-8 and invalid close codes. A frame cut
    short is an error too: the server only writes whole frames.
    """
    reader = FrameProtocol(client=True, extensions=[])
    reader.receive_bytes(data)
    frames = []
    for frame in reader.received_frames():
        assert frame.frame_finished and frame.message_finished, "server frames are never fragmented"
        if frame.opcode is Opcode.CLOSE:
            code, reason = frame.payload
            # 1005 is how the reader reports an empty close payload (an echo of one).
            assert code in _SENDABLE or 3000 <= code <= 4999 or (code, reason) == (1005, ""), frame.payload
        frames.append((frame.opcode, frame.payload))
    assert not reader._frame_decoder.buffer.buffer, "output ends inside a frame"
    return frames


def check_one_close_last(frames: list[tuple[Opcode, Any]]) -> None:
    """Text, pongs and the server's keep-alive pings, then at most one close, last."""
    opcodes = [opcode for opcode, _ in frames]
    assert set(opcodes) <= {Opcode.TEXT, Opcode.PING, Opcode.PONG, Opcode.CLOSE}, opcodes
    if Opcode.CLOSE in opcodes:
        assert opcodes.index(Opcode.CLOSE) == len(opcodes) - 1, opcodes


__all__ = [
    "FUZZ", "INPUTS", "READY_TEXT", "CloseReason", "client_frame", "client_frames", "mostly", "Unparsable", "WireResponse", "check_error_body",
    "check_one_close_last", "count", "mutated", "read_responses", "read_server_frames", "report", "split",
]
