"""One client connection from first byte to close: HTTP, then maybe a stream.

:class:`ServerConnection` is what a binding drives, with a fixed verb set:

* ``receive_data(data)`` — bytes from the socket; ``b""`` means EOF;
* ``next_request()`` — a complete HTTP request for the binding to run through
  :class:`~saltnado_core.app.App` (None while there is none, or while
  ``input_paused``);
* ``input_paused`` — the client has not read its responses (more than
  ``limits.write_chunk_bytes`` of them wait to be taken): read nothing more and
  ask ``next_request()`` again once the writer has taken ``data_to_send()``, so
  a client that pipelines requests without reading the answers holds a bounded
  amount of memory, and TCP slows it down;
* ``respond(outcome)`` — the app's :class:`Response`, :class:`AcceptWebSocket`
  or :class:`AcceptEventStream`;
* ``take_salt_calls()`` / ``salt_call_done(call, error)`` — Salt calls a stream
  needs (the formatted view's grains request);
* ``expire(now)`` — end a stream whose token has expired (call about once a second);
* ``tick(now)`` — enforce the timeouts and ping websockets (call every tick);
* ``stream_token`` — the token of an open stream, re-checked with Salt
  (:class:`~saltnado_core.revocation.TokenRecheck`);
* ``close(code, reason)`` — e.g. 1001 at shutdown (a request being answered
  gets its response first, with ``Connection: close``);
* ``abandon_request(reason)`` — answer the request being answered with 503 now
  (shutdown cannot wait for it any longer);
* ``data_to_send()`` — everything to write now, as one coalesced ``bytes``;
* ``finished`` — true once the binding should flush and drop the socket;
* ``cut_off`` — the client is being dropped for not keeping up (its outbox
  overflowed, or a timeout ran out): what is left to write gets the close
  handshake time, however full its socket, then the binding drops it.

``wake`` (given by the binding) is called whenever output becomes ready outside
a call the binding made itself — i.e. when the fan-out queues a message.

A stream is either a websocket (``/all_events``, ``/formatted_events``) or
Server-Sent Events over a chunked HTTP response (``/events``); both receive
pre-encoded messages through the connection's bounded :class:`Outbox`.

Timeouts (``limits.timeouts``) are kept without a clock: :meth:`tick` gets the
binding's monotonic ``now``, and each wait (for the first request, the rest of a
request, the next request, "websocket client ready", any sign of life after a
ping) is timed from the first tick that sees it; ``_WAITS`` says what each
wait's expiry does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from .outcomes import AcceptEventStream, AcceptWebSocket, Outcome
from .broadcast import Outbox, Overflow
from .kinds import CloseCode
from .config import Limits
from .http import HTTPConnection, Request, Response, error_response, status_line
from .messages import SSE_PREAMBLE, dumps, text_frame
from .salt_calls import SaltCall, classify_salt_error
from .streams import EventStreams
from .websocket import Closed, TextReceived, WebSocketSession

READY_MESSAGE = "websocket client ready"
CLOSE_HEADER = (("connection", "close"),)
_UPGRADED = HTTPConnection()  # shared stand-in for the HTTP phase of upgraded connections
_UPGRADED.closed = True


class Phase(enum.Enum):
    HTTP = "http"  # requests and responses
    AWAIT_READY = "await_ready"  # upgraded; waiting for "websocket client ready"
    STREAMING = "streaming"  # subscribed to a stream (websocket or SSE)
    CLOSING = "closing"  # websocket close sent, waiting for the peer's
    DONE = "done"  # flush output, then drop the socket


class Wait(enum.Enum):
    """What a connection waits for from its client."""

    FIRST_REQUEST = "first_request"  # accept → the first request in full
    REQUEST = "request"  # a request's first byte → all of it
    NEXT_REQUEST = "next_request"  # a response sent → the next request's first byte
    READY = "ready"  # 101 sent → "websocket client ready"
    PONG = "pong"  # a ping sent → any bytes at all


class Expiry(enum.Enum):
    """What the client gets when a wait times out."""

    REQUEST_TIMEOUT = "408"  # 408 with a JSON reason, then close (quietly if no byte came)
    DROP = "drop"  # close without a word (an idle keep-alive connection)
    CLOSE = "close"  # websocket close frame with a code and reason; the binding
    #                  drops TCP after close_handshake if the peer does not answer


# Each wait: the ``Timeouts`` field bounding it, what its expiry does (and the close code).
_WAITS: dict[Wait, tuple[str, Expiry, int]] = {
    Wait.FIRST_REQUEST: ("handshake_timeout", Expiry.REQUEST_TIMEOUT, 0),
    Wait.REQUEST: ("header_timeout", Expiry.REQUEST_TIMEOUT, 0),
    Wait.NEXT_REQUEST: ("keepalive_timeout", Expiry.DROP, 0),
    Wait.READY: ("handshake_timeout", Expiry.CLOSE, CloseCode.POLICY_VIOLATION),
    Wait.PONG: ("ws_pong_timeout", Expiry.CLOSE, CloseCode.INTERNAL_ERROR),
}

# Everything a connection can do, per phase; anything else is a bug (KeyError).
_TRANSITIONS: dict[tuple[Phase, str], Phase] = {
    (Phase.HTTP, "upgrade"): Phase.AWAIT_READY,
    (Phase.HTTP, "event_stream"): Phase.STREAMING,
    (Phase.HTTP, "end"): Phase.DONE,
    (Phase.AWAIT_READY, "ready"): Phase.STREAMING,
    (Phase.AWAIT_READY, "close"): Phase.CLOSING,
    (Phase.STREAMING, "close"): Phase.CLOSING,
    (Phase.AWAIT_READY, "end"): Phase.DONE,
    (Phase.STREAMING, "end"): Phase.DONE,
    (Phase.CLOSING, "end"): Phase.DONE,
}


class ServerConnection:
    def __init__(
        self,
        limits: Limits,
        streams: EventStreams,
        wake: Callable[[], None] = lambda: None,
        overflow: Overflow | None = None,  # default: limits.overflow
        open_connections: int = 0,  # other client connections open; at max_connections → 503
    ) -> None:
        self.limits = limits
        self.phase = Phase.HTTP
        self._streams = streams
        self._overflow = overflow if overflow is not None else limits.overflow
        self._http = HTTPConnection(limits.max_header_bytes, limits.max_body_bytes, limits.max_header_count)
        self._refused = open_connections >= limits.max_connections
        self._ws: WebSocketSession | None = None
        self._sse = False  # streaming Server-Sent Events over the HTTP response
        self._stream: tuple[str, str, bool] | None = None  # (name, token, delta) to join
        self._attached = False
        self._salt_calls: list[SaltCall] = []
        self.outbox = Outbox(limits.outbox_max_messages, limits.outbox_max_bytes, wake, self._overflow)
        self._request: Request | None = None  # the request awaiting respond()
        self._prefix = b""  # output that must precede the rest (101, head, frames before a close)
        self.token_expire: float | None = None
        self.close_reason: Closed | None = None  # how the websocket ended, once it has
        self._close_after_response = False  # close() came while a request was being answered
        self._timed_out = False
        # timeouts (see tick): the first tick's time, the wait being timed and since when
        self._opened: float | None = None
        self._waiting: tuple[Wait, int] | None = None
        self._since = 0.0
        self._next_ping: float | None = None
        self._pinged = False  # a ping is out and the client has sent nothing since

    @property
    def finished(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def stream_token(self) -> str | None:
        """The token an open stream was granted with (None before or after a stream),
        for re-checking it with Salt: see :mod:`saltnado_core.revocation`."""
        if self._stream is None or self.phase not in (Phase.AWAIT_READY, Phase.STREAMING):
            return None
        return self._stream[1] or None

    @property
    def cut_off(self) -> bool:
        return self.outbox.overflowed or self._timed_out

    def _go(self, action: str) -> None:
        self.phase = _TRANSITIONS[(self.phase, action)]
        if self.phase is Phase.STREAMING and self._stream is not None:
            name, token, delta = self._stream
            self._salt_calls += self._streams.attach(name, self.outbox, token, delta)
            self._attached = True
        if self.phase in (Phase.CLOSING, Phase.DONE) and self._attached and self._stream is not None:
            self._streams.detach(self._stream[0], self.outbox, self._stream[1])
            self._attached = False
        if self.phase is Phase.DONE:
            self.outbox.clear()

    # -- input -------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self.phase is Phase.DONE:
            return
        if self._sse:  # a client has nothing to say on an event stream but goodbye
            if not data:
                self._go("end")
            return
        if self._ws is None:
            self._http.receive_data(data)
            if self._http.closed:
                self._go("end")
            return
        self._pinged = False  # any bytes, a pong or not, show the client is there
        self._ws.receive_data(data)
        self._websocket_events()

    @property
    def input_paused(self) -> bool:
        return self.phase is Phase.HTTP and self._http.backlog > self.limits.write_chunk_bytes

    def next_request(self) -> Request | None:
        if self.phase is not Phase.HTTP or self.input_paused:
            return None
        request = self._http.next_request()
        if request is not None and self._refused:
            # Read the request first: closing with it unread could reset the
            # connection before the client reads the answer.
            reason = f"the server is at its limit of {self.limits.max_connections} connections; try again later"
            self._http.send_response(error_response(503, reason, [("connection", "close")]))
            request = None
        self._request = request or self._request
        if self._http.closed:  # a protocol error was answered
            self._go("end")
        return request

    def _websocket_events(self) -> None:
        assert self._ws is not None
        for event in self._ws.events():
            if isinstance(event, TextReceived):
                # The reference streams after this exact text and ignores any other.
                if event.text == READY_MESSAGE and self.phase is Phase.AWAIT_READY:
                    self._go("ready")
            elif isinstance(event, Closed):
                self.close_reason = event
                if self.phase in (Phase.AWAIT_READY, Phase.STREAMING):
                    self._go("close")
        if self._ws.closed and self.phase is not Phase.DONE:
            self._go("end")

    # -- decisions from the binding -------------------------------------------
    def respond(self, outcome: Outcome) -> None:
        """Answer the request from :meth:`next_request` with the app's outcome."""
        if self.phase is not Phase.HTTP:
            return
        if self._close_after_response:  # the server is closing: no upgrade, no keep-alive
            if not isinstance(outcome, Response):
                outcome = error_response(503, "the server is shutting down")
            outcome = Response(outcome.status, outcome.body, outcome.headers + CLOSE_HEADER, outcome.content_type)
        if isinstance(outcome, Response):
            self._http.send_response(outcome)
            self._request = None
            if self._http.closed:
                self._go("end")
            return
        self.token_expire = outcome.token_expire
        if isinstance(outcome, AcceptEventStream):
            self._http.start_stream(outcome.headers, SSE_PREAMBLE)
            self._prefix = self._http.data_to_send()
            self._sse = True
            self._stream = ("events", outcome.token, False)
            self._go("event_stream")
            return
        assert isinstance(outcome, AcceptWebSocket) and self._request is not None
        self._stream = (outcome.stream, outcome.token, outcome.delta)
        trailing = self._http.accept_websocket(self._request)
        self._request = None
        self._prefix = self._http.data_to_send()
        self._http = _UPGRADED  # not used again: free h11's state (~1 KB per idle websocket)
        self._ws = WebSocketSession(max_message_bytes=self.limits.max_ws_message_bytes)
        self._go("upgrade")
        if trailing:
            self._ws.receive_data(trailing)
            self._websocket_events()

    def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        """Close politely: a request being answered gets its response first (with
        ``Connection: close``; an upgrade or event stream it asked for is refused
        with 503), an idle or half-received one is closed at once; a stream gets
        what is queued, then its end (a close frame for a websocket, the last
        chunk for an event stream)."""
        if self.phase is Phase.HTTP:
            if self._http.busy:
                self._close_after_response = True
            else:
                self._go("end")
        elif self._sse:
            if self.phase is Phase.STREAMING:
                self._prefix += self.outbox.drain(self.outbox.queued_bytes) + self._http.end_stream()
                self._go("end")
        elif self._ws is not None and self.phase in (Phase.AWAIT_READY, Phase.STREAMING):
            self._prefix += self.outbox.drain(self.outbox.queued_bytes)
            self._ws.close(code, reason)
            self._websocket_events()

    def abandon_request(self, reason: str) -> bool:
        """Answer the request being answered with 503 and ``reason`` now and close,
        when the server cannot wait for it (a shutdown past its timeout); its own
        response, if it comes later, is dropped. True if there was one."""
        if self.phase is not Phase.HTTP or not self._http.busy:
            return False
        self._http.send_response(error_response(503, reason, CLOSE_HEADER))
        self._request = None
        self._go("end")
        return True

    def expire(self, now: float) -> bool:
        """End the stream if its token has expired by ``now``; True if it did."""
        if self.token_expire is None or now < self.token_expire:
            return False
        if self.phase not in (Phase.AWAIT_READY, Phase.STREAMING):
            return False
        self.close(CloseCode.POLICY_VIOLATION, "token expired")
        return True

    # -- timeouts ------------------------------------------------------------
    def tick(self, now: float) -> bool:
        """Enforce ``limits.timeouts`` at ``now``, the binding's monotonic clock
        (seconds), and ping a streaming websocket when due; call it every tick.

        A wait is timed from the first tick that sees it, so a timeout fires after
        its length plus at most two tick intervals, never before. Streams (an
        ``/events`` response, a websocket once ready) are never cut by the HTTP
        timeouts. Returns True if the connection has new output or has finished:
        the binding wakes its writer.
        """
        if self.phase is Phase.STREAMING:  # the common case at scale: keep it short
            return self._ws is not None and self._keep_alive(now)
        if self.phase is not Phase.HTTP and self.phase is not Phase.AWAIT_READY:
            return False  # closing (the binding times the close handshake) or done
        if self._opened is None:
            self._opened = now
        timeouts = self.limits.timeouts
        http = self._http
        if (
            self.phase is Phase.HTTP
            and not http.requests
            and not http.busy
            and 0 < timeouts.handshake_timeout <= now - self._opened
        ):
            return self._time_out(Wait.FIRST_REQUEST)
        waiting = self._wait()
        if waiting != self._waiting:
            self._waiting, self._since = waiting, now
        elif waiting is not None:
            limit = getattr(timeouts, _WAITS[waiting[0]][0])
            if 0 < limit <= now - self._since:
                return self._time_out(waiting[0])
        return False

    def _wait(self) -> tuple[Wait, int] | None:
        """What the client is being waited for now (with the request number)."""
        if self.phase is Phase.AWAIT_READY:
            return Wait.READY, 0
        http = self._http
        if http.busy:  # the server is answering: nothing is expected of the client
            return None
        if http.receiving:
            return Wait.REQUEST, http.requests
        return (Wait.NEXT_REQUEST, http.requests) if http.requests else None  # the first: see tick

    def _keep_alive(self, now: float) -> bool:
        """A streaming websocket: ping it every interval; fail it if nothing at all
        has come back ``ws_pong_timeout`` after the oldest unanswered ping."""
        timeouts = self.limits.timeouts
        if self._pinged and 0 < timeouts.ws_pong_timeout <= now - self._since:
            return self._time_out(Wait.PONG)
        if timeouts.ws_ping_interval <= 0:
            return False
        if self._next_ping is None:
            self._next_ping = now + timeouts.ws_ping_interval
            return False
        if now < self._next_ping:
            return False
        assert self._ws is not None
        self._next_ping = now + timeouts.ws_ping_interval
        self._ws.ping()
        if not self._pinged:  # the wait runs from the oldest unanswered ping
            self._pinged, self._since = True, now
        return True

    def _time_out(self, wait: Wait) -> bool:
        self._timed_out = True
        field, expiry, code = _WAITS[wait]
        seconds = f"{getattr(self.limits.timeouts, field):g}"
        if expiry is Expiry.REQUEST_TIMEOUT and self._http.receiving:
            when = " of connecting" if wait is Wait.FIRST_REQUEST else ""
            self._http.time_out(f"request not received in full within {seconds} s{when}")
            self._go("end")
        elif expiry is not Expiry.CLOSE:  # nothing was asked: nothing to answer
            self._go("end")
        elif wait is Wait.READY:
            self.close(code, f"no '{READY_MESSAGE}' within {seconds} s")
        else:  # a peer gone quiet is told why; unanswered, the close ends in a drop
            self.close(code, f"no pong within {seconds} s")
        return True

    # -- Salt calls a stream needs (e.g. /formatted_events' grains request) ----
    def take_salt_calls(self) -> list[SaltCall]:
        """Salt calls to run for this connection; report each with :meth:`salt_call_done`."""
        calls, self._salt_calls = self._salt_calls, []
        return calls

    def salt_call_done(self, call: SaltCall, error: BaseException | None = None) -> None:
        """A call from :meth:`take_salt_calls` finished; a failure is told to the
        client as ``{"error": {"status", "return"}}`` and the stream goes on."""
        if error is None or self.phase is not Phase.STREAMING or self._ws is None:
            return
        status, reason = classify_salt_error(error)
        if status == 400:  # e.g. "Client disabled: 'local_async'. Add to 'netapi_enable_clients' …"
            reason = f"Salt refused the request: {reason}"
        message = {"error": {"status": status_line(status), "return": reason}}
        self.outbox.offer(text_frame(dumps(message).encode("utf-8")))

    # -- output ------------------------------------------------------------
    def data_to_send(self) -> bytes:
        head, self._prefix = self._prefix, b""
        if self._sse:
            if self.outbox.overflowed and self.phase is Phase.STREAMING:
                # A client too slow for its event stream: end the response.
                self._go("end")
                return head + self._http.end_stream()
            if self.phase is Phase.STREAMING:
                return head + self.outbox.drain(self.limits.write_chunk_bytes)
            return head
        if self._ws is None:
            return head + self._http.data_to_send()
        if self.outbox.overflowed and self._ws.open:
            self._ws.close(self._overflow.code, self._overflow.reason)
            self._websocket_events()
        control = self._ws.data_to_send()
        if self.phase is Phase.STREAMING and self._ws.open:
            return head + control + self.outbox.drain(self.limits.write_chunk_bytes)
        return head + control

    @property
    def wants_write(self) -> bool:
        """True if :meth:`data_to_send` would return something now."""
        return bool(self._prefix or len(self.outbox) or self.outbox.overflowed)
