"""One client connection from first byte to close: HTTP, then maybe a stream.

:class:`ServerConnection` is the whole contract between the core and a binding.
A binding owns the socket, its tasks and a monotonic clock; everything else —
what to answer, when to close and with which code, when to give up on a client —
is decided here, so every binding is the same small loop::

    reader:  data = recv(); conn.receive_data(data)      # b"" at EOF
             run each conn.next_request() through the app → conn.respond(outcome)
             run conn.take_salt_calls() in worker threads → conn.salt_call_done(call, error)
    writer:  data = conn.data_to_send()
             if not data and conn.finished: drop the socket
             deadline = conn.drop_deadline(now)          # one line: math.inf, or when to drop
             send data, or wait for a wake
    timer:   every pacing.tick_interval: conn.tick(monotonic), conn.expire(wall clock)

Verbs (what the binding tells the connection):

* ``receive_data(data)`` — bytes from the socket; ``b""`` is EOF: requests that
  arrived in full are still answered, then the connection ends; an open stream
  ends at once; what is left to write gets the close-handshake time;
* ``next_request()`` — a complete request for the app (None while there is none,
  or while ``input_paused``); ``respond(outcome)`` — its :class:`Response`,
  :class:`AcceptWebSocket` or :class:`AcceptEventStream`;
* ``continue_wanted`` / ``answer_head(refusal)`` — a request head whose client
  waits for ``100 Continue``, and the app's verdict on it (the 100, or a refusal
  sent before the body); :func:`~saltnado_core.driving.serve_requests` does both;
* ``take_salt_calls()`` / ``salt_call_done(call, error)`` — Salt calls a stream
  needs (the formatted view's grains request), and an event log's range a
  resuming client missed (:class:`~saltnado_core.eventlog.FetchEvents`, answered
  to :meth:`EventStreams.fetched` instead);
* ``tick(now)`` — timeouts and websocket pings on the monotonic clock; ``expire(now)``
  — end a stream whose token expired, on the wall clock; both about once a second;
* ``close(code, reason)`` — e.g. 1001 at shutdown (a request being answered gets
  its response first, with ``Connection: close``); ``abandon_request(reason)`` —
  answer the request being answered with 503 now;
* ``data_to_send()`` — everything to write now, as one ``bytes``; a response body
  larger than ``limits.write_chunk_bytes`` comes one slice per call, so write what
  it returned before asking again (as the writer loop does);
* ``take_rejections()`` — the requests the connection answered on its own (a
  malformed request's 400, 408, 413, 431, 505, the 503 at the connection limit),
  for the access log: :func:`~saltnado_core.driving.serve_requests` yields them
  as ``Served``; a binding's timer logs those a timeout (408) produced.

Questions (what the binding asks; it never reads the phase or the outbox):

* ``finished`` — flush what ``data_to_send()`` returned, then drop the socket;
* ``drop_deadline(now)`` — when to drop the socket whatever is left unwritten
  (``math.inf``: not yet). Once the connection is ending — its close frame is out,
  the client is cut off (outbox overflow, a timeout) or has closed its side — it
  is ``now + pacing.close_handshake`` from the first ask, then the same time;
* ``input_paused`` — the client is not reading what it caused the server to say
  (responses, pongs, a close echo), in any phase: read nothing more until the
  writer has written ``data_to_send()``, then ask ``next_request()`` again;
* ``can_write_directly`` — queued output is only stream messages, which a shared
  fan-out writer may write without waking this connection's own task (after
  writing, ``wants_write`` says whether anything is left);
* ``stream_token`` — the token of an open stream, re-checked with Salt
  (:class:`~saltnado_core.revocation.TokenRecheck`).

``wake`` (given by the binding) is called whenever output becomes ready outside
a call the binding made itself — i.e. when the fan-out queues a message.

State is one :class:`Phase` plus, once a stream is accepted, its
:class:`~saltnado_core.kinds.StreamKind`; phases change only through
``_TRANSITIONS`` (anything else raises :class:`ConnectionMisuse`), and what
entering or leaving a phase does (joining and leaving the event stream, freeing
the outbox) is done in one place, :meth:`ServerConnection._go`.

Timeouts (``limits.timeouts``) are kept without a clock: :meth:`tick` gets the
binding's monotonic ``now``, and each wait (for the first request, the rest of a
request, the next request, the client taking a large body's next slice,
"websocket client ready", any frame but a ping after a ping) is timed from the
first tick that sees it; ``_WAITS`` says what
each wait's expiry does. The same ticks refill a websocket's ping budget.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from .bounded import Overflow
from .broadcast import Outbox
from .config import Limits
from .eventlog import FetchEvents
from .history import EventId
from .http import CLOSE_HEADER, HTTPConnection, Rejection, Request, Response, error_response, status_line
from .kinds import CloseCode, StreamKind, Transport, stream_kind
from .messages import SSE_PREAMBLE, dumps, text_frame
from .outcomes import AcceptEventStream, AcceptWebSocket, Outcome
from .pacing import Pacing
from .salt_calls import SaltCall, classify_salt_error
from .streams import EventStreams
from .tagfilter import TagFilter
from .websocket import Closed, TextReceived, WebSocketSession

READY_MESSAGE = "websocket client ready"
RECEIVED_MESSAGE = "server received message"  # rest_cherrypy's answer to each client message on /ws


class Phase(enum.Enum):
    HTTP = "http"  # requests and responses
    AWAIT_READY = "await_ready"  # upgraded; waiting for "websocket client ready"
    STREAMING = "streaming"  # subscribed to a stream (websocket or SSE)
    CLOSING = "closing"  # websocket close sent, waiting for the peer's
    DONE = "done"  # flush output, then drop the socket


class Event(enum.Enum):
    """What moves a connection from one phase to the next."""

    UPGRADE = "upgrade"  # the 101 is sent
    EVENT_STREAM = "event_stream"  # the 200 text/event-stream head is sent
    READY = "ready"  # "websocket client ready" arrived
    CLOSE = "close"  # a websocket close frame was sent or received
    END = "end"  # nothing more will be said: flush, then drop


# Everything a connection can do, per phase; anything else raises ConnectionMisuse.
_TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.HTTP, Event.UPGRADE): Phase.AWAIT_READY,
    (Phase.HTTP, Event.EVENT_STREAM): Phase.STREAMING,
    (Phase.HTTP, Event.END): Phase.DONE,
    (Phase.AWAIT_READY, Event.READY): Phase.STREAMING,
    (Phase.AWAIT_READY, Event.CLOSE): Phase.CLOSING,
    (Phase.STREAMING, Event.CLOSE): Phase.CLOSING,
    (Phase.AWAIT_READY, Event.END): Phase.DONE,
    (Phase.STREAMING, Event.END): Phase.DONE,
    (Phase.CLOSING, Event.END): Phase.DONE,
}


class ConnectionMisuse(Exception):
    """A binding (or the core itself) asked a connection for something its phase
    does not allow — a bug, as h11's ``LocalProtocolError``; never the client's doing."""


def next_phase(phase: Phase, event: Event) -> Phase:
    """The phase ``event`` leads to from ``phase``; :class:`ConnectionMisuse` if it
    leads nowhere (as h11's ``_state.py`` turns a missing transition into an error)."""
    try:
        return _TRANSITIONS[(phase, event)]
    except KeyError:
        raise ConnectionMisuse(f"{event.value!r} is not possible in phase {phase.value!r}") from None


class Wait(enum.Enum):
    """What a connection waits for from its client."""

    FIRST_REQUEST = "first_request"  # accept → the first request in full
    REQUEST = "request"  # a request's first byte → all of it
    NEXT_REQUEST = "next_request"  # a response sent → the next request's first byte
    BODY = "body"  # a large body's slice handed out → the client has read it (the next is taken)
    READY = "ready"  # 101 sent → "websocket client ready"
    PONG = "pong"  # a ping sent → any frame but a ping


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
    # a client that reads nothing of a large response (a slice, write_chunk_bytes) for
    # this long is dropped: it holds a connection and a slice, not the whole body
    Wait.BODY: ("keepalive_timeout", Expiry.DROP, 0),
    Wait.READY: ("handshake_timeout", Expiry.CLOSE, CloseCode.POLICY_VIOLATION),
    Wait.PONG: ("ws_pong_timeout", Expiry.CLOSE, CloseCode.INTERNAL_ERROR),
}


@dataclass(frozen=True, slots=True)
class Stream:
    """The stream a connection was granted: its kind and the client's token."""

    kind: StreamKind
    token: str = field(repr=False)
    delta: bool = False  # /formatted_events?delta=1
    tags: TagFilter | None = None  # ?tag=<glob>: checked by the fan-out before queueing
    ids: bool = False  # ?ids=1: each event carries its id
    last_event_id: EventId | None = None  # resume after it when the stream starts


class ServerConnection:
    def __init__(
        self,
        limits: Limits,
        streams: EventStreams,
        wake: Callable[[], None] = lambda: None,
        overflow: Overflow | None = None,  # default: limits.overflow
        open_connections: int = 0,  # other client connections open; at max_connections → 503
        pacing: Pacing = Pacing(),
        peer: str | None = None,  # the client's IP address, stamped on each Request as ``client``
    ) -> None:
        self.limits = limits
        self.phase = Phase.HTTP
        self.stream: Stream | None = None  # set when a stream is accepted
        self._streams = streams
        self._overflow = overflow if overflow is not None else limits.overflow
        self._close_handshake = pacing.close_handshake
        # HTTP until an upgrade, then None: h11's state is freed (~1 KB per idle websocket)
        self._http: HTTPConnection | None = HTTPConnection(
            limits.max_header_bytes, limits.max_body_bytes, limits.max_header_count, limits.write_chunk_bytes, peer
        )
        self._refused = open_connections >= limits.max_connections
        self._rejections: list[Rejection] = []  # the 503 above, once answered
        self._ws: WebSocketSession | None = None  # after an upgrade
        self._salt_calls: list[SaltCall | FetchEvents] = []
        self.outbox = Outbox(limits.outbox_max_messages, limits.outbox_max_bytes, wake, self._overflow)
        self._request: Request | None = None  # the request awaiting respond()
        self._prefix = b""  # output that must precede the rest (101, head, frames before a close)
        self.token_expire: float | None = None
        self.close_reason: Closed | None = None  # how the websocket ended, once it has
        self._close_after_response = False  # close() came while a request was being answered
        self._timed_out = False
        self._eof = False  # the client has closed its side
        self._drop_at = math.inf  # see drop_deadline
        # timeouts (see tick): the first tick's time, the wait being timed and since when
        self._opened: float | None = None
        self._waiting: tuple[Wait, int] | None = None
        self._since = 0.0
        self._next_ping: float | None = None
        self._pinged = False  # a ping is out and the client has sent no frame but pings since

    # -- questions -------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def stream_token(self) -> str | None:
        """The token an open stream was granted with (None before or after a stream),
        for re-checking it with Salt: see :mod:`saltnado_core.revocation`."""
        if self.stream is None or self.phase not in (Phase.AWAIT_READY, Phase.STREAMING):
            return None
        return self.stream.token or None

    @property
    def attached(self) -> bool:
        """Joined to its stream (offered its messages): from the client being ready
        until the stream ends. For the figures of :mod:`saltnado_core.counts`."""
        return self.phase is Phase.STREAMING

    @property
    def cut_off(self) -> bool:
        """The client is being dropped for not keeping up (its outbox overflowed,
        or a timeout ran out)."""
        return self.outbox.overflowed or self._timed_out

    def drop_deadline(self, now: float) -> float:
        """When to drop the socket whatever is left unwritten, on the binding's
        monotonic clock (``now``): ``math.inf`` until the connection is ending —
        its close frame is out, it is cut off, or the client has closed its side —
        then ``pacing.close_handshake`` s after the first ask (RFC 6455 §7.1.1: the
        peer's close, and what it has not read, are not waited for forever)."""
        if self._drop_at == math.inf and (self.phase is Phase.CLOSING or self.cut_off or self._eof):
            self._drop_at = now + self._close_handshake
        return self._drop_at

    @property
    def input_paused(self) -> bool:
        """More than ``limits.write_chunk_bytes`` of output the client caused waits
        to be taken: HTTP responses, or on a websocket (waiting for ready, streaming
        or closing) pongs and a close echo. A client that pipelines requests or
        floods pings without reading the answers is not read from (TCP slows it
        down), so it holds a bounded amount of memory: this much, what one read
        adds, and what the writer is writing. Nor while a large response body is
        being handed out slice by slice: it is output the client caused, too."""
        if self._ws is None and self._http is not None and self._http.sending_body:
            return True
        return self.reply_backlog > self.limits.write_chunk_bytes

    @property
    def reply_backlog(self) -> int:
        """Bytes of output the client caused (responses; pongs, a close echo) not yet
        taken by :meth:`data_to_send`; stream messages are the outbox's, bounded apart."""
        owed = self._http if self._ws is None else self._ws
        return 0 if owed is None else owed.backlog

    @property
    def can_write_directly(self) -> bool:
        """Queued output is stream messages only (no handshake, no close): a shared
        fan-out writer may write it without this connection's own task."""
        return self.phase is Phase.STREAMING and not self.outbox.overflowed

    @property
    def wants_write(self) -> bool:
        """True if :meth:`data_to_send` would return something now."""
        return bool(self._prefix or len(self.outbox) or self.outbox.overflowed)

    # -- phases ----------------------------------------------------------------
    def _go(self, event: Event) -> None:
        """Take the transition ``event``, then do what the change of phase means:
        entering STREAMING joins the event stream, leaving it leaves the stream,
        DONE frees the outbox."""
        left, self.phase = self.phase, next_phase(self.phase, event)
        phase, stream = self.phase, self.stream
        if stream is not None and phase is Phase.STREAMING:
            self._salt_calls += self._streams.attach(
                stream.kind, self.outbox, stream.token, stream.delta, stream.tags, stream.ids, stream.last_event_id
            )
        elif stream is not None and left is Phase.STREAMING:
            self._streams.detach(stream.kind, self.outbox, stream.token)
        if phase is Phase.DONE:
            self.outbox.clear()
            if self._http is not None:  # ended before a large body was out: it is cut short
                self._http.drop_body()

    @property
    def _sse(self) -> bool:
        return self.stream is not None and self.stream.kind.transport is Transport.SSE

    # -- input -------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` means it has closed its side (EOF), after
        which nothing more is read (h11 and wsproto refuse data after an EOF)."""
        if self.phase is Phase.DONE or self._eof:
            return
        if not data:
            self._eof = True
        if self._ws is not None:
            self._ws.receive_data(data)
            self._websocket_events()
        elif self._sse:  # a client has nothing to say on an event stream but goodbye
            if not data:
                self._go(Event.END)
        else:
            assert self._http is not None
            self._http.receive_data(data)
            if self._http.closed:
                self._go(Event.END)

    def next_request(self) -> Request | None:
        """The next complete request to run through the app, or None (none yet, the
        client is not reading its answers, or the connection is past HTTP). After
        EOF, once every request that arrived in full is answered, the connection ends."""
        if self.phase is not Phase.HTTP:
            return None
        http = self._http
        assert http is not None
        if not self.input_paused:
            request = http.next_request()
            if request is not None and self._refused:
                # Read the request first: closing with it unread could reset the
                # connection before the client reads the answer.
                reason = f"the server is at its limit of {self.limits.max_connections} connections; try again later"
                refusal = error_response(503, reason, CLOSE_HEADER)
                http.send_response(refusal)
                self._rejections.append(Rejection(request, refusal))
                request = None
            self._request = request or self._request
            if http.closed:  # a protocol error was answered, or the client said goodbye
                self._go(Event.END)
                return request
            if request is not None:
                return request
        if self._eof:
            self.close()  # the client has closed its side: close what is still open
        return None

    @property
    def continue_wanted(self) -> Request | None:
        """The head (no body yet) of a request whose client waits for ``100
        Continue``: the app judges it (:meth:`App.refusal <saltnado_core.app.App.refusal>`)
        and :meth:`answer_head` says what it decided; None when there is none."""
        if self.phase is not Phase.HTTP or self._refused or self.input_paused:
            return None
        assert self._http is not None
        return self._http.continue_wanted

    def answer_head(self, refusal: Response | None) -> None:
        """Answer :attr:`continue_wanted`: None sends ``100 Continue``; a response
        refuses the request before its body is sent, and the connection ends."""
        assert self._http is not None
        if refusal is None:
            self._http.send_continue()
            return
        self._http.refuse_unread(refusal)
        self._go(Event.END)

    def _websocket_events(self) -> None:
        assert self._ws is not None
        if self._ws.take_sign_of_life():  # the client reads: a pong, or any frame but a ping
            self._pinged = False
        for event in self._ws.events():
            if isinstance(event, TextReceived):
                # The reference streams after this exact text and ignores any other;
                # rest_cherrypy's /ws answers every message, this one included.
                if self.stream is not None and self.stream.kind.acknowledges:
                    self._ws.send_text(RECEIVED_MESSAGE)
                if event.text == READY_MESSAGE and self.phase is Phase.AWAIT_READY:
                    self._go(Event.READY)
            elif isinstance(event, Closed):
                self.close_reason = event
                if self.phase in (Phase.AWAIT_READY, Phase.STREAMING):
                    self._go(Event.CLOSE)
        if self._ws.closed and self.phase is not Phase.DONE:
            self._go(Event.END)

    # -- decisions from the binding -------------------------------------------
    def respond(self, outcome: Outcome) -> None:
        """Answer the request from :meth:`next_request` with the app's outcome.

        A response that comes after the connection ended (the client vanished, or
        :meth:`abandon_request` answered for it) is dropped. Raises
        :class:`ConnectionMisuse` when no request is awaiting an answer."""
        if self.phase is Phase.DONE:
            return
        http = self._http
        if self.phase is not Phase.HTTP or http is None or not http.busy:
            raise ConnectionMisuse(f"respond() with no request awaiting an answer (phase {self.phase.value!r})")
        if self._close_after_response:  # the server is closing: no upgrade, no keep-alive
            if not isinstance(outcome, Response):
                outcome = error_response(503, "the server is shutting down")
            outcome = Response(outcome.status, outcome.body, outcome.headers + CLOSE_HEADER, outcome.content_type)
        if isinstance(outcome, Response):
            http.send_response(outcome)
            self._request = None
            if http.closed:
                self._go(Event.END)
            return
        self.token_expire = outcome.token_expire
        if isinstance(outcome, AcceptEventStream):
            http.start_stream(outcome.headers, SSE_PREAMBLE)
            self._prefix = http.data_to_send()
            self.stream = Stream(
                StreamKind.EVENTS, outcome.token, tags=outcome.tags, ids=outcome.ids, last_event_id=outcome.last_event_id
            )
            self._go(Event.EVENT_STREAM)
            return
        assert isinstance(outcome, AcceptWebSocket) and self._request is not None
        self.stream = Stream(
            stream_kind(outcome.stream), outcome.token, outcome.delta, outcome.tags, outcome.ids, outcome.last_event_id
        )
        trailing = http.accept_websocket(self._request, outcome.subprotocol)
        self._request = None
        self._prefix = http.data_to_send()
        self._http = None  # not used again: free h11's state
        self._ws = WebSocketSession(
            max_message_bytes=self.limits.max_ws_message_bytes,
            max_pings_per_second=self.limits.max_ws_pings_per_second,
        )
        self._go(Event.UPGRADE)
        if trailing:
            self._ws.receive_data(trailing)
            self._websocket_events()

    def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        """Close politely: a request being answered gets its response first (with
        ``Connection: close``; an upgrade or event stream it asked for is refused
        with 503), an idle or half-received one is closed at once; a stream gets
        what is queued, then its end (a close frame for a websocket, the last
        chunk for an event stream). Idempotent."""
        if self.phase is Phase.HTTP:
            assert self._http is not None
            if self._http.busy or self._http.sending_body:  # the answer goes out whole first
                self._close_after_response = True
            else:
                self._go(Event.END)
        elif self._sse:
            if self.phase is Phase.STREAMING:
                assert self._http is not None
                self._prefix += self._http.stream_data(self.outbox.drain(self.outbox.queued_bytes))
                self._prefix += self._http.end_stream()
                self._go(Event.END)
        elif self._ws is not None and self.phase in (Phase.AWAIT_READY, Phase.STREAMING):
            self._prefix += self.outbox.drain(self.outbox.queued_bytes)
            self._ws.close(code, reason)
            self._websocket_events()

    def abandon_request(self, reason: str) -> bool:
        """Answer the request being answered with 503 and ``reason`` now and close,
        when the server cannot wait for it (a shutdown past its timeout); its own
        response, if it comes later, is dropped. True if there was one."""
        if self.phase is not Phase.HTTP or self._http is None or not self._http.busy:
            return False
        self._http.send_response(error_response(503, reason, CLOSE_HEADER))
        self._request = None
        self._go(Event.END)
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
        (seconds), ping a streaming websocket when due and refill a websocket's
        ping budget (``limits.max_ws_pings_per_second``); call it every tick.

        A wait is timed from the first tick that sees it, so a timeout fires after
        its length plus at most two tick intervals, never before. Streams (an
        ``/events`` response, a websocket once ready) are never cut by the HTTP
        timeouts. Returns True if the connection has new output or has finished:
        the binding wakes its writer.
        """
        ws = self._ws
        if ws is not None:
            ws.refill_pings(now)
        if self.phase is Phase.STREAMING:  # the common case at scale: keep it short
            return ws is not None and self._keep_alive(now)
        if self.phase is not Phase.HTTP and self.phase is not Phase.AWAIT_READY:
            return False  # closing (the binding times the close handshake) or done
        if self._opened is None:
            self._opened = now
        timeouts = self.limits.timeouts
        http = self._http
        if (
            http is not None
            and self.phase is Phase.HTTP
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
        assert http is not None  # HTTP phase
        if http.busy:  # the server is answering: nothing is expected of the client
            return None
        if http.sending_body:  # the client must read: each slice it takes restarts the wait
            return Wait.BODY, http.body_sent
        if http.receiving:
            return Wait.REQUEST, http.requests
        return (Wait.NEXT_REQUEST, http.requests) if http.requests else None  # the first: see tick

    def _keep_alive(self, now: float) -> bool:
        """A streaming websocket: ping it every interval; fail it if no frame but
        pings has come back ``ws_pong_timeout`` after the oldest unanswered ping."""
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
        http = self._http
        if expiry is Expiry.REQUEST_TIMEOUT and http is not None and http.receiving:
            when = " of connecting" if wait is Wait.FIRST_REQUEST else ""
            http.time_out(f"request not received in full within {seconds} s{when}")
            self._go(Event.END)
        elif expiry is not Expiry.CLOSE:  # nothing was asked: nothing to answer
            self._go(Event.END)
        elif wait is Wait.READY:
            self.close(code, f"no '{READY_MESSAGE}' within {seconds} s")
        else:  # a peer gone quiet is told why; unanswered, the close ends in a drop
            self.close(code, f"no pong within {seconds} s")
        return True

    # -- Salt calls a stream needs (e.g. /formatted_events' grains request) ----
    def take_salt_calls(self) -> list[SaltCall | FetchEvents]:
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

    def take_rejections(self) -> list[Rejection]:
        """The requests answered without the app since the last call (see the module docstring)."""
        rejections, self._rejections = self._rejections, []
        return rejections + (self._http.take_rejections() if self._http is not None else [])

    # -- output ------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Everything to write now, as one ``bytes`` (``b""``: nothing)."""
        head, self._prefix = self._prefix, b""
        if self._sse:
            if self.outbox.overflowed and self.phase is Phase.STREAMING:
                # A client too slow for its event stream: end the response.
                assert self._http is not None
                self._go(Event.END)
                return head + self._http.end_stream()
            if self.phase is Phase.STREAMING:
                assert self._http is not None
                return head + self._http.stream_data(self.outbox.drain(self.limits.write_chunk_bytes))
            return head
        if self._ws is None:
            http = self._http
            if http is None:
                return head
            out = head + http.data_to_send()
            if self.phase is Phase.HTTP and (
                http.closed or (self._close_after_response and not http.busy and not http.sending_body)
            ):  # the last slice of a large body is out, and the connection closes after it
                self._go(Event.END)
            return out
        if self.outbox.overflowed and self._ws.open:
            self._ws.close(self._overflow.code, self._overflow.reason)
            self._websocket_events()
        control = self._ws.data_to_send()
        if self.phase is Phase.STREAMING and self._ws.open:
            return head + control + self.outbox.drain(self.limits.write_chunk_bytes)
        return head + control
