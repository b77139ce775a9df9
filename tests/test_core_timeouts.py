"""Timeouts through ServerConnection.tick(now): literal bytes in and out, a fake
monotonic clock, no sleeping.

Every wait is timed from the first tick that sees it, so each test ticks at the
moment the wait begins (as a binding's ticker would, up to one interval later).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol

from saltnado_core import App, EventStreams, GetToken, Limits, Phase, ServerConnection, Settings, Timeouts
from saltnado_core.salt_calls import GetAuthList
from saltnado_core.testing import Driver

NOW = 1_700_000_000.0  # wall clock, for the token only
TOKEN = "0123456789abcdef" * 4
RECORD = {"token": TOKEN, "start": NOW, "expire": NOW + 100, "name": "saltuser", "eauth": "pam"}
SETTINGS = Settings(websockets=True, disable_ssl=True, netapi_enable_clients=("local",))
TIMEOUTS = Timeouts(
    handshake_timeout=10, header_timeout=10, keepalive_timeout=60, ws_ping_interval=20, ws_pong_timeout=20
)

GET_ROOT = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
LOGIN = b"POST /login HTTP/1.1\r\nHost: t\r\nContent-Length: 43\r\n\r\nusername=saltuser&password=s3cret&eauth=pam"
UPGRADE = (
    f"GET /all_events/{TOKEN} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
    b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
READY = bytes(FrameProtocol(True, []).send_data("websocket client ready", True))
PING = b"\x89\x00"  # unmasked, empty payload


def timeout_408(reason: bytes) -> bytes:
    body = b'{"status": "408 Request Timeout", "return": "' + reason + b'"}'
    return (
        b"HTTP/1.1 408 Request Timeout\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body


def close_frame(code: int, reason: str) -> bytes:
    payload = code.to_bytes(2, "big") + reason.encode()
    return b"\x88" + bytes([len(payload)]) + payload


class Binding(Driver):
    """A binding's loop over one ServerConnection, its ticker driven by hand."""

    def __init__(self, timeouts: Timeouts = TIMEOUTS, limits: Limits | None = None) -> None:
        self.streams = EventStreams()
        conn = ServerConnection(limits or Limits(timeouts=timeouts), self.streams)
        # a valid token that may read events
        super().__init__(conn, App(SETTINGS), {GetToken: RECORD, GetAuthList: [".*"]}, now=NOW)

    def tick(self, now: float) -> bytes | None:
        """Output if the tick asked for the writer to be woken, else None."""
        return self.conn.data_to_send() if self.conn.tick(now) else None


def streaming(timeouts: Timeouts = TIMEOUTS, at: float = 0) -> Binding:
    binding = Binding(timeouts)
    binding.tick(at)
    assert binding.feed(UPGRADE + READY) == SWITCHING
    assert binding.conn.phase is Phase.STREAMING
    assert binding.tick(at) is None  # the ping schedule starts here
    return binding


# -- before the first request (handshake_timeout) -----------------------------------


def test_silent_connection_is_dropped_quietly() -> None:
    binding = Binding()
    assert binding.tick(100) is None
    assert binding.tick(109.9) is None
    assert binding.tick(110) == b""
    assert binding.conn.finished


def test_first_request_trickled_byte_by_byte_gets_408_at_the_handshake_timeout() -> None:
    binding = Binding()
    binding.tick(0)
    for second, byte in enumerate(GET_ROOT[:10]):  # one byte a second does not extend it
        assert binding.feed(bytes([byte])) == b""
        assert binding.tick(second) is None
    assert binding.tick(9.99) is None
    assert binding.tick(10) == timeout_408(b"request not received in full within 10 s of connecting")
    assert binding.conn.finished


def test_first_request_also_has_the_header_timeout_if_shorter() -> None:
    binding = Binding(Timeouts(handshake_timeout=100, header_timeout=3))
    binding.tick(0)
    binding.tick(50)
    binding.feed(GET_ROOT[:5])
    assert binding.tick(50) is None
    assert binding.tick(52.9) is None
    assert binding.tick(53) == timeout_408(b"request not received in full within 3 s")


def test_first_request_in_time_is_served() -> None:
    binding = Binding()
    binding.tick(0)
    binding.feed(GET_ROOT[:5])
    binding.tick(9)
    assert binding.feed(GET_ROOT[5:]).startswith(b"HTTP/1.1 200 OK\r\n")
    assert binding.tick(10) is None and binding.tick(11) is None
    assert binding.conn.phase is Phase.HTTP


# -- between and during later requests (keepalive_timeout, header_timeout) -------------


def test_idle_keepalive_connection_is_closed_quietly() -> None:
    binding = Binding()
    binding.tick(0)
    assert binding.feed(GET_ROOT).startswith(b"HTTP/1.1 200 OK\r\n")
    assert binding.tick(1) is None
    assert binding.tick(60.9) is None  # idle for less than 60 s: kept
    assert binding.tick(61) == b""
    assert binding.conn.finished


def test_each_request_restarts_the_keepalive_clock() -> None:
    binding = Binding()
    binding.tick(0)
    for start in range(0, 250, 50):  # a request every 50 s, each seen by the next tick
        assert binding.feed(GET_ROOT).startswith(b"HTTP/1.1 200 OK\r\n")
        assert binding.tick(start + 1) is None
        assert binding.tick(start + 50) is None
    assert binding.tick(201 + 59.9) is None
    assert binding.tick(201 + 60) == b""


def test_slowloris_on_a_kept_alive_connection_gets_408() -> None:
    binding = Binding()
    binding.tick(0)
    binding.feed(GET_ROOT)
    binding.tick(1)
    for second in range(30, 40):  # the next request, a byte a second
        binding.feed(GET_ROOT[second - 30 : second - 29])
        assert binding.tick(second) is None
    assert binding.tick(39.9) is None
    assert binding.tick(40) == timeout_408(b"request not received in full within 10 s")
    assert binding.conn.finished


def test_slow_body_gets_408() -> None:
    binding = Binding()
    binding.tick(0)
    head = LOGIN.index(b"\r\n\r\n") + 4
    assert binding.feed(LOGIN[: head + 5]) == b""  # the head and 5 of 43 body bytes
    assert binding.tick(9) is None
    assert binding.tick(10) == timeout_408(b"request not received in full within 10 s of connecting")


def test_pipelined_partial_request_is_timed_as_a_request_not_as_idle() -> None:
    binding = Binding()
    binding.tick(0)
    assert binding.feed(GET_ROOT + GET_ROOT[:8]).count(b"HTTP/1.1 200 OK") == 1
    assert binding.tick(1) is None
    assert binding.tick(11) == timeout_408(b"request not received in full within 10 s")


def test_no_timeout_while_the_server_is_answering() -> None:
    # A Salt call can take longer than any HTTP timeout: nothing is asked of the client.
    binding = Binding()
    binding.tick(0)
    binding.conn.receive_data(GET_ROOT)  # read, but not answered yet
    request = binding.conn.next_request()
    assert request is not None
    assert binding.tick(5) is None
    assert binding.tick(1000) is None
    binding.conn.respond(binding.app.handle(request, NOW).start())  # type: ignore[arg-type]
    assert binding.conn.data_to_send().startswith(b"HTTP/1.1 200 OK\r\n")
    assert binding.tick(1001) is None
    assert binding.tick(1061) == b""  # then the keep-alive clock runs


def test_zero_turns_each_timeout_off() -> None:
    off = Timeouts(handshake_timeout=0, header_timeout=0, keepalive_timeout=0, ws_ping_interval=0, ws_pong_timeout=0)
    silent, partial, idle = Binding(off), Binding(off), Binding(off)
    for binding in (silent, partial, idle):
        binding.tick(0)
    partial.feed(GET_ROOT[:5])
    idle.feed(GET_ROOT)
    for binding in (silent, partial, idle):
        binding.tick(1)
        assert binding.tick(1e9) is None
        assert binding.conn.phase is Phase.HTTP
    ws = streaming(off)
    assert ws.tick(1e9) is None
    assert ws.conn.phase is Phase.STREAMING


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(0.01, 3.0), min_size=1, max_size=40),
    first_byte=st.floats(0, 5.0),
)
def test_request_timeout_never_fires_early_nor_more_than_two_ticks_late(gaps: list[float], first_byte: float) -> None:
    """Ticks at irregular times (each gap at most 3 s): the 408 comes no sooner than
    10 s after the first byte and no later than 10 s plus two gaps."""
    binding = Binding(Timeouts(handshake_timeout=0, header_timeout=10))
    now, sent = 0.0, False
    binding.tick(now)
    for gap in gaps + [3.0] * 10:
        if not sent and now + gap > first_byte:  # the first byte arrives between two ticks
            binding.feed(GET_ROOT[:1])
            sent = True
        now += gap
        out = binding.tick(now)
        if out is not None:
            assert sent and now >= first_byte + 10
            assert now <= first_byte + 10 + 2 * 3.0
            assert out.startswith(b"HTTP/1.1 408 ")
            return
        assert not sent or now < first_byte + 10 + 2 * 3.0
    raise AssertionError("no 408")


# -- websockets (handshake_timeout for the ready message, pings) ---------------------------


def test_websocket_that_never_says_ready_is_closed_1008() -> None:
    binding = Binding()
    binding.tick(0)
    assert binding.feed(UPGRADE) == SWITCHING
    assert binding.tick(1) is None
    assert binding.tick(10.9) is None
    assert binding.tick(11) == close_frame(1008, "no 'websocket client ready' within 10 s")
    assert binding.conn.phase is Phase.CLOSING
    assert binding.feed(bytes(FrameProtocol(True, []).close(1008))) == b""  # the client answers
    assert binding.conn.finished
    assert len(binding.streams.all_events) == 0


def test_streaming_websocket_is_pinged_every_interval() -> None:
    binding = streaming()
    assert binding.tick(19.9) is None
    assert binding.tick(20) == PING
    binding.feed(bytes(FrameProtocol(True, []).pong(b"")))
    assert binding.tick(39.9) is None
    assert binding.tick(40) == PING
    binding.feed(bytes(FrameProtocol(True, []).pong(b"")))
    assert binding.tick(60) == PING
    assert binding.conn.phase is Phase.STREAMING


def test_websocket_without_pong_is_closed_1011() -> None:
    binding = streaming()
    assert binding.tick(20) == PING
    assert binding.tick(39.9) is None
    assert binding.tick(40) == close_frame(1011, "no pong within 20 s")
    assert binding.conn.phase is Phase.CLOSING  # the binding drops it after close_handshake
    assert len(binding.streams.all_events) == 0


def test_any_bytes_from_the_client_count_as_alive() -> None:
    binding = streaming()
    assert binding.tick(20) == PING
    binding.feed(bytes(FrameProtocol(True, []).send_data("still here", True)))  # not a pong
    assert binding.tick(40) == PING
    assert binding.tick(59.9) is None
    assert binding.tick(60) == close_frame(1011, "no pong within 20 s")  # 20 s after the ping at 40


def test_pings_from_the_client_do_not_count_as_alive() -> None:
    """A flood of pings proves nothing (the client need not read a byte to send them):
    the pong deadline runs on."""
    binding = streaming()
    ping = bytes(FrameProtocol(True, []).ping(b"p"))
    assert binding.tick(20) == PING
    for second in range(21, 40):
        binding.tick(second)  # refills the ping budget: these pings are answered
        assert binding.feed(ping) == b"\x8a\x01p"
    assert binding.tick(40) == close_frame(1011, "no pong within 20 s")


def test_pong_deadline_runs_from_the_oldest_unanswered_ping() -> None:
    binding = streaming(Timeouts(ws_ping_interval=5, ws_pong_timeout=12))
    assert binding.tick(5) == PING
    assert binding.tick(10) == PING  # still unanswered
    assert binding.tick(15) == PING
    assert binding.tick(17) == close_frame(1011, "no pong within 12 s")


def test_pinged_websocket_is_never_cut_by_the_http_timeouts() -> None:
    binding = streaming()
    pong = bytes(FrameProtocol(True, []).pong(b""))
    for interval in range(1, 100):  # over half an hour, answering every ping
        assert binding.tick(interval * 20) == PING
        binding.feed(pong)
    assert binding.conn.phase is Phase.STREAMING
    assert len(binding.streams.all_events) == 1


def test_event_stream_is_never_cut_by_the_http_timeouts() -> None:
    binding = Binding()
    binding.tick(0)
    head = binding.feed(f"GET /events HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {TOKEN}\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    for second in range(1, 3600, 7):
        assert binding.tick(second) is None  # no pings on an event stream either
    assert binding.conn.phase is Phase.STREAMING
    assert len(binding.streams.events) == 1
