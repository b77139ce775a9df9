"""The /all_events websocket through ServerConnection + App, from upgrade to close.

Client frames are built with wsproto's client FrameProtocol (masked, as RFC 6455
§5.3 requires); server output is asserted literally or decoded with wsproto.
"""

from __future__ import annotations

from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request as WSRequest, TextMessage
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

from saltnado_core import (
    AcceptWebSocket,
    App,
    EventStreams,
    GetToken,
    Limits,
    MakeToken,
    Phase,
    SaltEvent,
    ServerConnection,
    Settings,
    Timeouts,
    all_events_frame,
)
from saltnado_core.salt_calls import GetAuthList, PublishGrains
from saltnado_core.testing import Driver, handle
from saltnado_core.websocket import Closed, TextReceived, WebSocketSession

from core_literals import NOW, RECORD, TOKEN

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
SETTINGS = Settings(websockets=True, disable_ssl=True)

SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"upgrade: websocket\r\n"
    b"connection: Upgrade\r\n"
    b"sec-websocket-accept: " + RFC_ACCEPT.encode() + b"\r\n"
    b"\r\n"
)
UNAUTHORIZED = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b"server: saltnado\r\n"
    b"content-type: application/json\r\n"
    b"content-length: 57\r\n"
    b"www-authenticate: Session\r\n"
    b"\r\n"
    b'{"status": "401 Unauthorized", "return": "Please log in"}'
)
EVENT = SaltEvent("salt/job/20240101120000123456/ret/minion1", {"return": True, "id": "minion1", "ü": "✓"})


def upgrade_request(
    token: str = TOKEN, key: str = RFC_KEY, version: str = "13", upgrade: bool = True, path: str = "all_events"
) -> bytes:
    lines = [f"GET /{path}/{token} HTTP/1.1", "Host: salt.example:8000", "Origin: http://salt.example:8000"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    lines += [f"Sec-WebSocket-Key: {key}", f"Sec-WebSocket-Version: {version}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frames() -> FrameProtocol:
    return FrameProtocol(client=True, extensions=[])


def masked_text(text: str) -> bytes:
    return bytes(client_frames().send_data(text, True))


READY = masked_text("websocket client ready")


def decode_server(data: bytes) -> list[tuple[Opcode, Any]]:
    """Server output as (opcode, payload) pairs; close payloads are (code, reason)."""
    reader = client_frames()
    reader.receive_bytes(data)
    return [(frame.opcode, frame.payload) for frame in reader.received_frames()]


class Wake:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


class Binding(Driver):
    def __init__(
        self, limits: Limits = Limits(), record: Any = RECORD, auth_list: Any = (".*",), settings: Settings = SETTINGS
    ) -> None:
        self.streams = EventStreams()
        self.wake = Wake()
        # auth_list: Salt's permissions for the token
        answers = {GetToken: record, MakeToken: record, GetAuthList: list(auth_list) if auth_list is not None else None}
        super().__init__(ServerConnection(limits, self.streams, self.wake), App(settings), answers, now=NOW)

    @property
    def subscribers(self) -> int:
        return len(self.streams.all_events)


def streaming(limits: Limits = Limits()) -> Binding:
    binding = Binding(limits)
    assert binding.feed(upgrade_request() + READY) == SWITCHING
    assert binding.conn.phase is Phase.STREAMING
    return binding


# -- the handshake -----------------------------------------------------------------


def test_upgrade_rfc_example_key() -> None:
    binding = Binding()
    assert binding.feed(upgrade_request()) == SWITCHING
    assert binding.calls == [GetToken(TOKEN), GetAuthList(RECORD)]
    assert binding.conn.phase is Phase.AWAIT_READY
    assert binding.conn.token_expire == NOW + 100
    assert binding.subscribers == 0  # not before the client says it is ready


def test_upgrade_request_byte_by_byte() -> None:
    binding = Binding()
    assert binding.feed(*[bytes([b]) for b in upgrade_request() + READY]) == SWITCHING
    assert binding.conn.phase is Phase.STREAMING


def test_ready_frame_in_the_same_chunk_is_not_lost() -> None:
    binding = Binding()
    assert binding.feed(upgrade_request() + READY) == SWITCHING
    assert binding.conn.phase is Phase.STREAMING
    assert binding.subscribers == 1


def test_ready_frame_split_across_the_upgrade_boundary() -> None:
    binding = Binding()
    data = upgrade_request() + READY
    cut = len(upgrade_request()) + 3
    assert binding.feed(data[:cut], data[cut:]) == SWITCHING
    assert binding.conn.phase is Phase.STREAMING


def test_ready_frame_arriving_while_the_token_is_checked() -> None:
    # The binding reads more bytes while GetToken runs in a worker thread.
    binding = Binding()
    binding.conn.receive_data(upgrade_request())
    request = binding.conn.next_request()
    assert request is not None
    binding.conn.receive_data(READY)  # before respond()
    accept, _ = handle(binding.app, request, {GetToken: RECORD, GetAuthList: [".*"]}, now=NOW)
    assert isinstance(accept, AcceptWebSocket)
    binding.conn.respond(accept)
    assert binding.conn.data_to_send() == SWITCHING
    assert binding.conn.phase is Phase.STREAMING


def test_wsproto_client_handshake_and_first_event() -> None:
    client = WSConnection(ConnectionType.CLIENT)
    handshake = client.send(WSRequest(host="salt.example", target=f"/all_events/{TOKEN}"))
    binding = Binding()
    out = binding.feed(handshake + READY)
    assert binding.conn.phase is Phase.STREAMING
    binding.streams.dispatch(EVENT)
    client.receive_data(out + binding.conn.data_to_send())  # wsproto checks Sec-WebSocket-Accept
    events = list(client.events())
    assert isinstance(events[0], AcceptConnection)
    assert events[1:] == [
        TextMessage(
            data='{"data": {"return": true, "id": "minion1", "ü": "✓"}, '
            '"tag": "salt/job/20240101120000123456/ret/minion1"}',
            frame_finished=True,
            message_finished=True,
        )
    ]


# -- refused upgrades ----------------------------------------------------------------


@pytest.mark.parametrize("record", [{}, None, {**RECORD, "expire": NOW}, {**RECORD, "expire": NOW - 5}])
def test_unknown_or_expired_token_is_401(record: Any) -> None:
    binding = Binding(record=record)
    assert binding.feed(upgrade_request()) == UNAUTHORIZED
    assert binding.conn.phase is Phase.HTTP
    assert binding.subscribers == 0


def test_refused_upgrade_keeps_the_connection_for_http() -> None:
    binding = Binding(record={})
    out = binding.feed(upgrade_request() + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(UNAUTHORIZED + b"HTTP/1.1 200 OK\r\n")
    assert binding.conn.phase is Phase.HTTP


@pytest.mark.parametrize("token", [TOKEN[:32], TOKEN + "0", "g" * 64])
def test_token_of_wrong_shape_is_404(token: str) -> None:
    binding = Binding()
    out = binding.feed(upgrade_request(token=token))
    assert out.startswith(b"HTTP/1.1 404 Not Found\r\nserver: saltnado\r\ncontent-type: application/json\r\n")
    assert out.endswith(b'"return": "no such resource: /all_events/<token>"}')  # never echoed
    assert binding.calls == []  # no Salt call for a malformed token


def test_plain_get_is_400() -> None:
    binding = Binding()
    body = b'{"status": "400 Bad Request", "return": "Can \\"Upgrade\\" only to \\"WebSocket\\"."}'
    assert binding.feed(upgrade_request(upgrade=False)) == (
        b"HTTP/1.1 400 Bad Request\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    ) + body
    assert binding.conn.phase is Phase.HTTP


def test_wrong_websocket_version_is_426() -> None:
    binding = Binding()
    body = b'{"status": "426 Upgrade Required", "return": "unsupported websocket version; use 13"}'
    assert binding.feed(upgrade_request(version="8")) == (
        b"HTTP/1.1 426 Upgrade Required\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nsec-websocket-version: 13\r\n\r\n" % len(body)
    ) + body
    assert binding.conn.phase is Phase.HTTP


def test_formatted_events_sends_the_view_and_asks_for_grains_with_the_clients_token() -> None:
    binding = Binding()
    out = binding.feed(upgrade_request(path="formatted_events") + READY)
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    body = out.partition(b"\r\n\r\n")[2]
    assert decode_server(body) == [(Opcode.TEXT, '{"minions": {}}'), (Opcode.TEXT, '{"jobs": {}}')]
    assert binding.conn.take_salt_calls() == [PublishGrains(None, TOKEN)]
    assert binding.conn.take_salt_calls() == []  # handed out once
    assert len(binding.streams.formatted) == 1


def test_formatted_events_tells_the_client_when_salt_refuses() -> None:
    binding = Binding()
    binding.feed(upgrade_request(path="formatted_events") + READY)
    [call] = binding.conn.take_salt_calls()

    class SaltInvocationError(Exception):
        pass

    binding.conn.salt_call_done(call, SaltInvocationError("Client disabled: 'local_async'"))
    assert decode_server(binding.conn.data_to_send()) == [
        (
            Opcode.TEXT,
            '{"error": {"status": "400 Bad Request", "return": '
            '"Salt refused the request: Client disabled: \'local_async\'"}}',
        )
    ]
    assert binding.conn.phase is Phase.STREAMING  # the stream goes on


# -- streaming -------------------------------------------------------------------------


def test_publish_reaches_the_client() -> None:
    binding = streaming()
    wakes = binding.wake.calls
    binding.streams.dispatch(EVENT)
    assert binding.wake.calls == wakes + 1
    assert binding.conn.wants_write
    assert binding.conn.data_to_send() == all_events_frame(EVENT)
    assert not binding.conn.wants_write
    assert decode_server(all_events_frame(EVENT)) == [
        (
            Opcode.TEXT,
            '{"data": {"return": true, "id": "minion1", "ü": "✓"}, '
            '"tag": "salt/job/20240101120000123456/ret/minion1"}',
        )
    ]


def test_publish_coalesces_queued_frames() -> None:
    binding = streaming()
    frames = [all_events_frame(SaltEvent(f"t/{n}", {"n": n})) for n in range(5)]
    for frame in frames:
        binding.streams.all_events.publish(frame)
    assert binding.conn.data_to_send() == b"".join(frames)


def test_write_chunk_bytes_bounds_one_write() -> None:
    frame = all_events_frame(SaltEvent("t", {"blob": "x" * 100}))
    binding = streaming(Limits(write_chunk_bytes=len(frame) * 2))
    for _ in range(5):
        binding.streams.all_events.publish(frame)
    assert binding.conn.data_to_send() == frame * 2
    assert binding.conn.data_to_send() == frame * 2
    assert binding.conn.data_to_send() == frame
    assert binding.conn.data_to_send() == b""


def test_no_events_before_ready() -> None:
    binding = Binding()
    binding.feed(upgrade_request())
    binding.streams.dispatch(EVENT)
    assert binding.conn.data_to_send() == b""
    assert binding.feed(READY) == b""
    binding.streams.dispatch(EVENT)
    assert binding.conn.data_to_send() == all_events_frame(EVENT)


@pytest.mark.parametrize("text", ["hello", "websocket client ready ", "WEBSOCKET CLIENT READY", ""])
def test_other_text_is_ignored(text: str) -> None:
    binding = Binding()
    binding.feed(upgrade_request())
    assert binding.feed(masked_text(text)) == b""
    assert binding.conn.phase is Phase.AWAIT_READY
    assert binding.subscribers == 0
    binding.feed(READY)
    assert binding.subscribers == 1  # now it streams


def test_text_and_binary_while_streaming_are_ignored() -> None:
    binding = streaming()
    assert binding.feed(READY, masked_text("subscribe me twice"), client_frames().send_data(b"\x00\x01", True)) == b""
    assert binding.conn.phase is Phase.STREAMING
    assert binding.subscribers == 1


def test_fragmented_ready_message() -> None:
    binding = Binding()
    binding.feed(upgrade_request())
    frames = client_frames()
    data = frames.send_data("websocket ", False) + frames.send_data("client ready", True)
    assert binding.feed(data) == b""
    assert binding.conn.phase is Phase.STREAMING


def test_ping_is_answered_with_pong() -> None:
    binding = streaming()
    assert binding.feed(client_frames().ping(b"are you there")) == b"\x8a\x0dare you there"
    assert binding.conn.phase is Phase.STREAMING


def test_pong_is_queued_after_pending_events_in_order() -> None:
    binding = streaming()
    binding.streams.dispatch(EVENT)
    out = binding.feed(client_frames().ping(b"p"))
    assert decode_server(out) == [(Opcode.PONG, b"p"), (Opcode.TEXT, all_events_frame(EVENT)[2:].decode())]


# -- closing ---------------------------------------------------------------------------


def test_client_close_is_echoed() -> None:
    binding = streaming()
    out = binding.feed(client_frames().close(CloseReason.NORMAL_CLOSURE, "bye"))
    assert out == b"\x88\x05\x03\xe8bye"
    assert binding.conn.phase is Phase.DONE
    assert binding.conn.finished
    assert binding.subscribers == 0
    assert binding.conn.close_reason == Closed(1000, "bye")
    binding.streams.dispatch(EVENT)  # nothing reaches a closed connection
    assert binding.conn.data_to_send() == b""


def test_client_frames_byte_by_byte_with_trailing_data() -> None:
    binding = streaming()
    frames = client_frames()
    data = (
        frames.ping(b"p1")
        + frames.send_data("ignored", True)
        + frames.close(CloseReason.NORMAL_CLOSURE, "done")
        + masked_text("after the close")  # trailing data: never read
    )
    out = binding.feed(*[bytes([b]) for b in data])
    assert out == b"\x8a\x02p1" + b"\x88\x06\x03\xe8done"
    assert binding.conn.finished
    assert binding.feed(client_frames().ping(b"p2")) == b""


def test_client_close_before_ready() -> None:
    binding = Binding()
    binding.feed(upgrade_request())
    assert binding.feed(client_frames().close(CloseReason.GOING_AWAY)) == b"\x88\x02\x03\xe9"
    assert binding.conn.finished


def test_oversized_message_is_closed_1009() -> None:
    binding = streaming(Limits(max_ws_message_bytes=100))
    out = binding.feed(masked_text("x" * 101))
    assert decode_server(out) == [(Opcode.CLOSE, (CloseReason.MESSAGE_TOO_BIG, "message exceeds 100 bytes"))]
    assert binding.conn.phase is Phase.CLOSING
    assert binding.subscribers == 0
    # The client answers the close: the handshake completes.
    assert binding.feed(client_frames().close(CloseReason.MESSAGE_TOO_BIG)) == b""
    assert binding.conn.finished


def test_oversized_fragmented_message_is_closed_1009() -> None:
    binding = streaming(Limits(max_ws_message_bytes=100))
    frames = client_frames()
    out = binding.feed(*(frames.send_data("x" * 30, False) for _ in range(4)))
    assert decode_server(out) == [(Opcode.CLOSE, (CloseReason.MESSAGE_TOO_BIG, "message exceeds 100 bytes"))]


def test_binary_message_is_held_to_the_limit_and_ignored() -> None:
    binding = streaming(Limits(max_ws_message_bytes=100))
    frames = client_frames()
    assert binding.feed(frames.send_data(b"\x00" * 60, False), frames.send_data(b"\x00" * 40, True)) == b""
    assert binding.conn.phase is Phase.STREAMING and binding.conn._ws._parts == []  # nothing kept
    out = binding.feed(frames.send_data(b"\x00" * 101, True))
    assert decode_server(out) == [(Opcode.CLOSE, (CloseReason.MESSAGE_TOO_BIG, "message exceeds 100 bytes"))]


def test_message_at_the_limit_is_accepted() -> None:
    binding = streaming(Limits(max_ws_message_bytes=100))
    assert binding.feed(masked_text("x" * 100)) == b""
    assert binding.conn.phase is Phase.STREAMING


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x81\x05hello", CloseReason.PROTOCOL_ERROR),  # unmasked client frame
        (b"\xf1\x80\x00\x00\x00\x00", CloseReason.PROTOCOL_ERROR),  # reserved bits set
        (b"\x83\x80\x00\x00\x00\x00", CloseReason.PROTOCOL_ERROR),  # reserved opcode
        (b"\x09\x80\x00\x00\x00\x00", CloseReason.PROTOCOL_ERROR),  # fragmented ping
        (b"\x80\x80\x00\x00\x00\x00", CloseReason.PROTOCOL_ERROR),  # continuation without a start
        (b"\x81\x82\x00\x00\x00\x00\xc3\x28", CloseReason.INVALID_FRAME_PAYLOAD_DATA),  # bad UTF-8
    ],
)
def test_invalid_frame_is_closed_with_a_code(data: bytes, code: CloseReason) -> None:
    binding = streaming()
    out = binding.feed(data)
    ((opcode, (sent_code, _reason)),) = decode_server(out)
    assert (opcode, sent_code) == (Opcode.CLOSE, code)
    assert binding.conn.finished
    assert binding.subscribers == 0
    assert binding.conn.close_reason is not None and binding.conn.close_reason.code == code


def test_eof_while_streaming() -> None:
    binding = streaming()
    assert binding.feed(b"") == b""
    assert binding.conn.finished
    assert binding.subscribers == 0
    assert binding.conn.close_reason == Closed(CloseReason.ABNORMAL_CLOSURE, "connection lost")


def test_server_close_while_streaming_flushes_queued_frames_first() -> None:
    binding = streaming()
    frames = [all_events_frame(SaltEvent(f"t/{n}", {"n": n})) for n in range(3)]
    for frame in frames:
        binding.streams.all_events.publish(frame)
    binding.conn.close()
    closing = b"\x88\x16\x03\xe9server shutting down"
    assert binding.conn.data_to_send() == b"".join(frames) + closing
    assert binding.conn.phase is Phase.CLOSING
    assert binding.subscribers == 0
    binding.streams.dispatch(EVENT)  # unsubscribed: nothing after the close frame
    assert binding.conn.data_to_send() == b""
    binding.conn.close()  # idempotent
    assert binding.conn.data_to_send() == b""
    assert binding.feed(client_frames().close(CloseReason.GOING_AWAY)) == b""
    assert binding.conn.finished


@pytest.mark.parametrize("how", ["shutdown", "too big"])
def test_ping_after_server_close_is_not_answered(how: str) -> None:
    # wsproto refuses to send after our close frame; a ping in flight must not crash.
    binding = streaming(Limits(max_ws_message_bytes=30))
    if how == "shutdown":
        binding.conn.close()
        out = binding.conn.data_to_send()
    else:
        out = binding.feed(masked_text("x" * 31))
    assert [opcode for opcode, _ in decode_server(out)] == [Opcode.CLOSE]
    assert binding.feed(client_frames().ping(b"late"), masked_text("late")) == b""
    assert binding.conn.phase is Phase.CLOSING
    assert binding.feed(client_frames().close(CloseReason.NORMAL_CLOSURE)) == b""
    assert binding.conn.finished


def test_server_close_before_ready() -> None:
    binding = Binding()
    binding.feed(upgrade_request())
    binding.conn.close(1001, "bye")
    assert binding.conn.data_to_send() == b"\x88\x05\x03\xe9bye"
    assert binding.conn.phase is Phase.CLOSING


def test_server_close_in_http_phase_ends_the_connection() -> None:
    binding = Binding()
    binding.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    binding.conn.close()
    assert binding.conn.finished
    assert binding.conn.data_to_send() == b""


def test_slow_client_is_closed_1013_and_others_keep_streaming() -> None:
    slow = streaming(Limits(outbox_max_messages=3))
    fast = Binding(Limits(outbox_max_messages=3))
    fast.streams = slow.streams  # one server, two connections
    fast.conn = ServerConnection(fast.conn.limits, slow.streams, fast.wake)
    assert fast.feed(upgrade_request() + READY) == SWITCHING
    assert len(slow.streams.all_events) == 2
    frames = [all_events_frame(SaltEvent(f"t/{n}", {"n": n})) for n in range(6)]
    received = b""
    for frame in frames:
        slow.streams.all_events.publish(frame)
        received += fast.conn.data_to_send()
    assert received == b"".join(frames)
    assert len(slow.streams.all_events) == 1
    assert slow.conn.wants_write
    assert decode_server(slow.conn.data_to_send()) == [
        (Opcode.CLOSE, (CloseReason.TRY_AGAIN_LATER, "client too slow: outbox full"))
    ]
    assert slow.conn.phase is Phase.CLOSING


# -- a client that floods pings ----------------------------------------------------------

PING_125 = bytes(client_frames().ping(b"p" * 125))  # the largest control frame (RFC 6455 §5.5)
PONG_125 = b"\x8a\x7d" + b"p" * 125


@pytest.mark.parametrize("ready", [True, False], ids=["streaming", "await_ready"])
def test_ping_flood_not_read_pauses_reading_with_bounded_pongs_owed(ready: bool) -> None:
    limits = Limits(write_chunk_bytes=1000, max_ws_pings_per_second=1_000_000)  # the budget is tested apart
    binding = streaming(limits) if ready else Binding(limits)
    if not ready:
        assert binding.feed(upgrade_request()) == SWITCHING
    fed = 0
    while not binding.conn.input_paused and fed < 1000:  # a binding's reader, the writer stuck
        binding.conn.receive_data(PING_125)
        fed += 1
    assert binding.conn.input_paused and fed == 8  # 8 × 127 bytes owed > 1000: reading stops
    assert binding.conn.reply_backlog == 8 * 127
    assert binding.conn.data_to_send() == PONG_125 * 8  # the writer takes them …
    assert not binding.conn.input_paused and binding.conn.reply_backlog == 0  # … and reading resumes


def test_close_echo_counts_as_owed_output() -> None:
    binding = streaming(Limits(write_chunk_bytes=2))
    binding.conn.receive_data(bytes(client_frames().close(CloseReason.NORMAL_CLOSURE, "bye")))
    assert binding.conn.input_paused and binding.conn.reply_backlog == 7
    assert binding.conn.data_to_send() == b"\x88\x05\x03\xe8bye"


def test_more_pings_than_the_budget_is_closed_1008() -> None:
    binding = streaming(Limits(max_ws_pings_per_second=3))
    out = binding.feed(PING_125 * 5)
    assert out == PONG_125 * 3 + b"\x88\x1c\x03\xf0more than 3 pings a second"  # the 4th is not answered
    assert binding.conn.phase is Phase.CLOSING
    assert binding.subscribers == 0


def test_ping_budget_is_refilled_by_ticks() -> None:
    binding = streaming(Limits(max_ws_pings_per_second=2, timeouts=Timeouts(ws_ping_interval=0)))  # no pings of ours
    binding.conn.tick(100.0)
    assert binding.feed(PING_125 * 2) == PONG_125 * 2  # a burst of one second's worth
    binding.conn.tick(100.5)  # half a second: one more
    assert binding.feed(PING_125) == PONG_125
    binding.conn.tick(130.0)  # a long pause gives back one second's worth, no more
    assert binding.feed(PING_125 * 2) == PONG_125 * 2
    assert binding.feed(PING_125) == b"\x88\x1c\x03\xf0more than 2 pings a second"


# -- the session's wsproto connection exists only between a frame's first and last byte --
def test_idle_session_releases_its_wsproto_connection_and_still_answers() -> None:
    session = WebSocketSession()
    session.receive_data(READY)
    assert session.events() == [TextReceived("websocket client ready")]
    assert session._wsproto is None and session.open  # nothing held between frames
    ping = bytes(client_frames().ping(b"are you there"))
    session.receive_data(ping[:3])  # a partial frame keeps its decoder
    assert session._wsproto is not None
    session.receive_data(ping[3:])
    assert decode_server(session.data_to_send()) == [(Opcode.PONG, b"are you there")]
    assert session._wsproto is None
    session.ping(b"1")  # our own ping is built without one
    assert session._wsproto is None
    assert decode_server(session.data_to_send()) == [(Opcode.PING, b"1")]


def test_fragmented_message_across_chunks_is_one_message() -> None:
    frames = client_frames()
    first = bytes(frames.send_data("websocket ", False))
    rest = bytes(frames.send_data("client ready", True))
    session = WebSocketSession()
    session.receive_data(first)  # a message in progress keeps its decoder
    assert session.events() == [] and session._wsproto is not None
    session.receive_data(rest)
    assert session.events() == [TextReceived("websocket client ready")]
    assert session._wsproto is None


def test_close_after_release_runs_the_handshake() -> None:
    session = WebSocketSession()
    session.receive_data(READY)
    session.events()
    session.close(1001, "bye")
    assert decode_server(session.data_to_send()) == [(Opcode.CLOSE, (1001, "bye"))]
    assert session.events() == [Closed(1001, "bye")] and not session.open
    session.receive_data(bytes(client_frames().close(1001, "bye")))
    assert session.closed
