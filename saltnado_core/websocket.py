"""Websocket server session on wsproto, after the HTTP upgrade.

:class:`WebSocketSession` turns client bytes into complete :class:`TextReceived`
messages (bounded by ``max_message_bytes`` → close 1009), answers pings (at
most ``max_pings_per_second``, else close 1008), and runs the close handshake
(RFC 6455 §5.5.1: echo the peer's close, then the TCP connection may close). A
binary message is held to the same bound, then dropped unreported: the
reference streams after one text message and ignores any other.
Server messages are prebuilt frames handed to the binding directly (see
:mod:`saltnado_core.messages`), which is safe because the session never
fragments outgoing messages.

Everything the client makes the session say (pongs, the close echo) waits in
its output until taken; :attr:`WebSocketSession.backlog` counts it, so the
connection can stop reading a client that floods pings without reading the
answers (see ``ServerConnection.input_paused``).
"""

from __future__ import annotations

from dataclasses import dataclass

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from .kinds import CloseCode
from .messages import text_frame
from .wsproto_idle import between_frames


@dataclass(frozen=True, slots=True)
class TextReceived:
    text: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over; ``code``/``reason`` say who closed it and why."""

    code: int
    reason: str = ""


WebSocketEvent = TextReceived | Closed


class WebSocketSession:
    """One websocket's frames, on a wsproto connection that exists only while needed.

    Between frames an open websocket's wsproto state is the same as a new one's (no
    partial frame, no fragmented message, nothing queued), so the session drops it
    then and makes a fresh one when bytes arrive: an idle streaming websocket keeps
    ~0.3 KB here instead of ~2 KB (with ten thousand of them, 17 MB). Whether it is
    between frames is read from wsproto's private state by
    :func:`~saltnado_core.wsproto_idle.between_frames`, checked at import.
    """

    def __init__(
        self, trailing_data: bytes = b"", max_message_bytes: int = 64 * 1024, max_pings_per_second: int = 10
    ) -> None:
        self._wsproto: Connection | None = None
        self._max = max_message_bytes
        self._parts: list[str] = []  # the text message being received
        self._size = 0
        self._out: list[bytes] = []
        self.backlog = 0  # bytes in _out: output not yet taken by data_to_send()
        # The ping budget, a token bucket refilled by refill_pings(now): RFC 6455
        # §5.5.2 has every ping answered, so each one a client sends costs output.
        self._ping_rate = max_pings_per_second
        self._pings_left = float(max_pings_per_second)
        self._refilled: float | None = None
        self._heard = False  # a frame other than a ping arrived (see take_sign_of_life)
        self._events: list[WebSocketEvent] = []
        self._close_reported = False
        self.closed = False  # no more frames can be sent; flush, then drop TCP
        if trailing_data:
            self.receive_data(trailing_data)

    @property
    def _ws(self) -> Connection:
        ws = self._wsproto
        if ws is None:
            ws = self._wsproto = Connection(ConnectionType.SERVER)
        return ws

    @property
    def open(self) -> bool:
        return self._wsproto is None or self._wsproto.state is ConnectionState.OPEN

    def receive_data(self, data: bytes) -> None:
        """Feed client bytes; ``b""`` means the TCP stream ended."""
        if self.closed:
            return
        if not data:
            self._ws.receive_data(None)
        else:
            self._ws.receive_data(data)
        for event in self._ws.events():
            self._heard = self._heard or not isinstance(event, Ping)
            if isinstance(event, (TextMessage, BytesMessage)):
                self._message_part(event)
            elif isinstance(event, Ping):
                self._ping(event)
            elif isinstance(event, CloseConnection):
                self._remote_close(event)
            if self.closed:
                break
        if between_frames(self._ws):
            self._wsproto = None

    def events(self) -> list[WebSocketEvent]:
        events, self._events = self._events, []
        return events

    def take_sign_of_life(self) -> bool:
        """True if a frame other than a ping (a pong, a message, a close) arrived since
        the last call: the peer reads what it is sent. Pings alone prove nothing — a
        client flooding them need not read a byte — so they do not count."""
        heard, self._heard = self._heard, False
        return heard

    def refill_pings(self, now: float) -> None:
        """Give back ``max_pings_per_second`` pings per second since the last call
        (``now``: the binding's monotonic clock), up to one second's worth."""
        if self._refilled is not None:
            self._pings_left = min(float(self._ping_rate), self._pings_left + self._ping_rate * (now - self._refilled))
        self._refilled = now

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (RFC 6455 §5.5.2); the peer's pong, like any frame, comes
        back through :meth:`receive_data` and is not reported."""
        if self.open:  # built here: a released wsproto connection stays released
            assert len(payload) <= 125, "RFC 6455 §5.5: a control frame's payload is at most 125 bytes"
            self._queue(bytes((0x89, len(payload))) + payload)

    def send_text(self, text: str) -> None:
        """Send a text message the client's own message caused (rest_cherrypy's
        ``server received message``): counted in :attr:`backlog` like a pong, so a
        client that sends without reading is not read from (``input_paused``)."""
        if self.open:
            self._queue(text_frame(text.encode("utf-8")))

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the close handshake (no-op once closing)."""
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._send(CloseConnection(code=code, reason=reason))
            if not self._close_reported:
                self._report(Closed(code, reason))
        if self._ws.state is ConnectionState.CLOSED:
            self.closed = True

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        self.backlog = 0
        return out

    # -- internals -------------------------------------------------------
    def _queue(self, frame: bytes) -> None:
        self._out.append(frame)
        self.backlog += len(frame)

    def _send(self, event: Pong | CloseConnection) -> None:
        self._queue(self._ws.send(event))

    def _ping(self, event: Ping) -> None:
        # Once our close is sent wsproto refuses a pong (and the peer
        # expects none): answering would raise LocalProtocolError.
        if not self.open:
            return
        if self._pings_left < 1:  # RFC 6455 §7.4.1: 1008, "a message that violates its policy"
            self.close(CloseCode.POLICY_VIOLATION, f"more than {self._ping_rate} pings a second")
            return
        self._pings_left -= 1
        self._send(event.response())

    def _message_part(self, event: TextMessage | BytesMessage) -> None:
        if not self.open:  # RFC 6455 §5.5.1: after sending close, ignore data
            return
        data = event.data
        self._size += len(data.encode()) if isinstance(data, str) else len(data)
        if self._size > self._max:
            self._parts.clear()
            self.close(CloseCode.MESSAGE_TOO_BIG, f"message exceeds {self._max} bytes")
            return
        if isinstance(data, str):  # a binary message is only counted: nothing reads one
            self._parts.append(data)
        if event.message_finished:
            parts, self._parts, self._size = self._parts, [], 0
            if isinstance(event, TextMessage):
                self._events.append(TextReceived("".join(parts)))

    def _remote_close(self, event: CloseConnection) -> None:
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the close handshake: echo its code (§5.5.1).
            self._send(event.response())
            self._report(Closed(event.code, event.reason or ""))
        elif state is ConnectionState.OPEN:
            # wsproto reports a peer's protocol violation (bad frame, bad UTF-8)
            # as a close event without changing state: we close with its code.
            self.close(event.code, event.reason or "")
        elif event.code == CloseReason.ABNORMAL_CLOSURE and not self._close_reported:
            self._report(Closed(CloseReason.ABNORMAL_CLOSURE, "connection lost"))
        # else: the peer answered our close; the handshake is complete.
        self.closed = True

    def _report(self, event: Closed) -> None:
        self._close_reported = True
        self._events.append(event)
