"""Fuzzing the websocket session: any client frames, valid or not, in any split.

:class:`WebSocketSession` alone, and a whole ``/all_events`` connection after the
upgrade (events published, server closes, token expiry at any point). Whatever
arrives, the server writes only well-formed frames — text, pongs echoing pings, one
close with a valid code, last — buffers no more than its limits, reports one
:class:`Closed`, and after EOF the connection is finished. Never an exception.
Frames come from :func:`fuzzing.client_frame`; sizes from ``SALTNADO_FUZZ``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from fuzzing import (
    FUZZ,
    READY_TEXT,
    check_one_close_last,
    client_frames,
    count,
    mutated,
    read_server_frames,
    split,
)
from saltnado_core import (
    App,
    EventStreams,
    GetToken,
    Limits,
    Phase,
    SaltEvent,
    ServerConnection,
    Settings,
    WebSocketSession,
)
from saltnado_core.driving import Served
from saltnado_core.salt_calls import GetAuthList
from saltnado_core.testing import Driver
from saltnado_core.websocket import Closed, TextReceived

MAX_MESSAGE = 64
from core_literals import NOW, RECORD, TOKEN

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    f"GET /all_events/{TOKEN} HTTP/1.1\r\nHost: salt.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()
EVENT = SaltEvent("salt/job/20240101120000123456/ret/minion1", {"return": True, "id": "minion1", "ü": "✓"})
# Largest thing wsproto may hold between reads: a frame header (14 bytes) and a
# control frame's payload (125), which it needs whole. Data payloads stream through.
WSPROTO_MAX_HELD = 14 + 125


def held_by_wsproto(session: WebSocketSession) -> int:
    """Bytes wsproto holds unparsed (the session keeps no wsproto connection between frames)."""
    ws = session._wsproto
    return 0 if ws is None else len(ws._proto._frame_decoder.buffer)


def message_held(session: WebSocketSession) -> int:
    """Bytes of the unfinished incoming message the session holds."""
    return sum(len(p.encode()) if isinstance(p, str) else len(p) for p in session._parts)


def check_session_bounded(session: WebSocketSession, max_message: int = MAX_MESSAGE) -> None:
    assert message_held(session) <= max_message
    if not session.closed:
        assert held_by_wsproto(session) <= WSPROTO_MAX_HELD


def pings_in(data: bytes) -> set[bytes]:
    """Payloads of the valid pings among client bytes (unmasked), as far as they parse."""
    from wsproto.frame_protocol import ParseFailed

    reader = FrameProtocol(client=False, extensions=[])
    reader.receive_bytes(data)
    found = set()
    try:
        for frame in reader.received_frames():
            if frame.opcode is Opcode.PING:
                found.add(bytes(frame.payload))
    except ParseFailed:
        pass
    return found


# -- the session alone -------------------------------------------------------------------


@FUZZ
@given(client_frames, st.data())
def test_session_any_client_frames(data: bytes, draw: st.DataObject) -> None:
    count("websocket")
    data = draw.draw(mutated(data)) if draw.draw(st.booleans()) else data
    session_run(data, draw.draw(split(data)), lambda options: draw.draw(st.sampled_from(options)))


def session_run(data: bytes, chunks: list[bytes], choose: Callable[[Sequence[Any]], Any]) -> None:
    """``data`` in ``chunks`` through a session, with sends and closes in between, then EOF."""
    session = WebSocketSession(max_message_bytes=MAX_MESSAGE)
    out, events = b"", []
    for chunk in chunks:
        session.receive_data(chunk)
        check_session_bounded(session)
        action = choose(["none"] * 6 + ["ping", "close"])
        if action == "ping":  # the keep-alive ping, between or inside the client's frames
            session.ping(choose([b"", b"x", b"\xff" * 125]))
        elif action == "close":
            session.close(choose([1000, 1001, 1008, 1013]), "bye")
        events += session.events()
        out += session.data_to_send()
    session.receive_data(b"")  # EOF
    events += session.events()
    out += session.data_to_send()
    assert session.closed and not session.open
    closes = [e for e in events if isinstance(e, Closed)]
    assert len(closes) == 1 and events[-1] == closes[0], events
    for event in events:
        if isinstance(event, TextReceived):
            assert len(event.text.encode()) <= MAX_MESSAGE
    frames = read_server_frames(out)
    check_one_close_last(frames)
    pings = pings_in(data)
    for opcode, payload in frames:
        if opcode is Opcode.PONG:
            assert bytes(payload) in pings
    session.receive_data(b"more")  # after the end: ignored
    assert session.data_to_send() == b"" and session.events() == []


# -- a whole /all_events connection after the upgrade ------------------------------------


class Connection(Driver):
    """One ServerConnection upgraded the way a binding does it."""

    def __init__(self) -> None:
        self.streams = EventStreams()
        self.limits = Limits(max_ws_message_bytes=MAX_MESSAGE, outbox_max_messages=5, outbox_max_bytes=4096)
        conn = ServerConnection(self.limits, self.streams)
        answers = {GetToken: RECORD, GetAuthList: [".*"]}
        super().__init__(conn, App(Settings(websockets=True, disable_ssl=True)), answers, now=NOW)

    def serve(self) -> list[Served]:
        """Answered (never with an unexpected error), then checked before the output is taken."""
        served = super().serve()
        assert all(s.error is None for s in served)
        self.check_bounded()
        return served

    def check_bounded(self) -> None:
        outbox = self.conn.outbox
        assert len(outbox) <= self.limits.outbox_max_messages
        assert outbox.queued_bytes <= self.limits.outbox_max_bytes
        session = self.conn._ws
        if session is not None:
            check_session_bounded(session)


SWITCHING_END = b"\r\n\r\n"
READY = bytes(FrameProtocol(client=True, extensions=[]).send_data(READY_TEXT, True))


@FUZZ
@given(client_frames, st.booleans(), st.data())
def test_connection_any_client_frames_while_streaming(data: bytes, ready_first: bool, draw: st.DataObject) -> None:
    count("websocket")
    stream = UPGRADE + (READY if ready_first else b"") + data
    connection_run(draw.draw(split(stream)), lambda options: draw.draw(st.sampled_from(options)))


def connection_run(chunks: list[bytes], choose: Callable[[Sequence[Any]], Any]) -> None:
    """An upgrade and client frames in ``chunks``, with events published, server closes
    and token expiry in between, then EOF."""
    case = Connection()
    out, clock = b"", 0.0
    for chunk in chunks:
        upgraded = case.conn.phase is not Phase.HTTP
        action = choose(["none"] * 4 + ["event", "burst", "close", "expire", "tick"]) if upgraded else ""
        if action == "event":
            case.streams.dispatch(EVENT)
        elif action == "burst":  # more than the outbox holds: the slow-client policy
            for _ in range(8):
                case.streams.dispatch(EVENT)
        elif action == "close":
            case.conn.close()
        elif action == "expire":
            case.conn.expire(NOW + 101)
        elif action == "tick":  # time passes: pings are due, then a pong is overdue
            clock += choose([1.0, 21.0, 41.0])
            case.conn.tick(clock)
        out += case.feed(chunk)
    out += case.feed(b"")  # EOF
    assert case.conn.finished and case.conn.phase is Phase.DONE
    assert len(case.streams.all_events) == 0 and len(case.conn.outbox) == 0
    head, sep, frames_out = out.partition(SWITCHING_END)
    if not head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"):  # the upgrade itself was broken
        assert head.startswith(b"HTTP/1.1 4") or out == b"", out[:200]
        return
    frames = read_server_frames(frames_out)
    check_one_close_last(frames)
    for opcode, payload in frames:
        if opcode is Opcode.TEXT:
            assert payload == '{"data": {"return": true, "id": "minion1", "ü": "✓"}, "tag": "' + EVENT.tag + '"}'
    assert case.feed(b"late") == b""
