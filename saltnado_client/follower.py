"""The client's sans-IO core: log in, open ``/all_events``, follow it, reconnect, resume.

:class:`Follower` does no I/O and keeps no clock. A driver (``saltnado_client.stream``,
the same few lines for trio and asyncio) owns at most one socket and asks the
follower what to do next, h11-style::

    while True:
        step = follower.next_step()
        write follower.data_to_send() to the socket (if any; a failed write is
            follower.connection_lost(reason))
        Deliver(item)   → hand item to the user (the next one is asked for only
                          when the user wants it: nothing is read meanwhile)
        Open(endpoint)  → open TCP (+TLS); follower.connected() or .connection_lost(why)
        Receive(t)      → read up to READ_BYTES: follower.receive_data(data) (b"" at EOF),
                          nothing within t seconds: follower.timed_out()
        Close()         → drop the socket; follower.closed()
        Sleep(s)        → sleep s seconds; follower.slept()
        Fail(error)     → raise error (credentials refused, a 403, a bad filter)

Reads happen only on ``Receive``, which comes only when every item already
parsed has been delivered: a consumer that stops asking stops the reading, TCP
pushes back, and the server's slow-client policy decides (it closes the stream,
or sends a gap notice). What one read can hold is bounded by ``READ_BYTES``
and by ``max_message_bytes``.

Reconnecting: after any end of a stream — a close frame (the server restarting
sends 1001, a slow client gets 1013, an expired token 1008), EOF, a failed read
or write, nothing read within ``idle_timeout`` (the server pings every 20 s), a
failed connect, a 5xx before the upgrade — the follower waits (:class:`Backoff`:
exponential, capped, jittered) and reopens the stream with ``last_event_id``,
the id of the last message that carried one. A 401 on reopening means the
token expired or was revoked: with credentials the follower logs in again at
once (once; a second 401 in a row is a failure), else it fails. Other 4xx
answers (403: the token may not read the bus; 400: a bad ``?tag=`` filter)
cannot get better by retrying: :class:`Refused`.

Phases change only through ``_TRANSITIONS``; an input a phase does not expect
raises :class:`FollowerMisuse` (a driver bug, never the server's doing).
"""

from __future__ import annotations

import enum
import json
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urlsplit

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .events import Connected, Disconnected, Event, Item, ProtocolError, parse_message

READ_BYTES = 64 * 1024  # one read from the socket
MAX_REJECTION_BYTES = 4096  # of an error body kept for the error's message
MAX_LOGIN_RESPONSE_BYTES = 1024 * 1024
READY = "websocket client ready"


class Refused(Exception):
    """The server refused what retrying cannot change: ``status`` (401 for bad
    credentials or an expired token without credentials, 403, 400, 404…) and its
    reason (the server's ``return`` text)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class FollowerMisuse(Exception):
    """The driver called the follower in a phase that does not take that call."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the server is: ``http://host:port`` (or ``https://``: TLS)."""

    host: str
    port: int
    tls: bool
    base_path: str = ""  # a prefix the server is mounted under (behind a proxy)

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """``http[s]://host[:port][/prefix]`` (``ws[s]://`` taken as the same); ValueError otherwise."""
        parts = urlsplit(url)
        scheme = {"http": "http", "ws": "http", "https": "https", "wss": "https"}.get(parts.scheme)
        if scheme is None or not parts.hostname:
            raise ValueError(f"not an http(s):// URL: {url!r}")
        tls = scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What ``POST /login`` takes. Kept out of ``repr``."""

    username: str
    password: str = field(repr=False)
    eauth: str = "auto"


class Backoff:
    """Delays between attempts: ``first`` doubling up to ``cap``, each drawn
    uniformly from its upper half (so clients that lost the same server do not
    all come back in the same instant). :meth:`reset` once a stream is open."""

    __slots__ = ("first", "cap", "_attempt", "_random")

    def __init__(self, first: float = 0.1, cap: float = 30.0, rand: Callable[[], float] = random.random) -> None:
        if not 0 < first <= cap:
            raise ValueError("backoff wants 0 < first <= cap")
        self.first = first
        self.cap = cap
        self._attempt = 0
        self._random = rand

    def delay(self) -> float:
        base: float = min(self.cap, self.first * 2.0 ** min(self._attempt, 62))
        self._attempt += 1
        return base / 2 + float(self._random()) * base / 2

    def reset(self) -> None:
        self._attempt = 0


# -- steps: what the driver does next --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    item: Item


@dataclass(frozen=True, slots=True)
class Open:
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class Receive:
    timeout: float


@dataclass(frozen=True, slots=True)
class Close:
    pass


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Fail:
    error: Exception


Step = Deliver | Open | Receive | Close | Sleep | Fail


class Phase(enum.Enum):
    LOGIN = "login"  # to open a connection for POST /login
    LOGGING_IN = "logging in"  # the login request is out; reading its answer
    OPEN_STREAM = "open stream"  # to open a connection for the websocket
    HANDSHAKE = "handshake"  # the upgrade request is out; reading its answer
    STREAMING = "streaming"
    CLOSING = "closing"  # to drop the socket, then ``_after_close``
    BACKOFF = "backoff"  # to sleep, then open the stream (or log in) again
    FAILED = "failed"
    STOPPED = "stopped"  # the user closed the stream


class Input(enum.Enum):
    CONNECTED = "connected"
    DATA = "receive_data"
    TIMED_OUT = "timed_out"
    LOST = "connection_lost"
    CLOSED = "closed"
    SLEPT = "slept"
    STOP = "stop"


_SOCKET = {Input.DATA, Input.TIMED_OUT, Input.LOST, Input.STOP}
# What each phase takes; anything else is FollowerMisuse.
_TRANSITIONS: dict[Phase, set[Input]] = {
    Phase.LOGIN: {Input.CONNECTED, Input.LOST, Input.STOP},
    Phase.LOGGING_IN: _SOCKET,
    Phase.OPEN_STREAM: {Input.CONNECTED, Input.LOST, Input.STOP},
    Phase.HANDSHAKE: _SOCKET,
    Phase.STREAMING: _SOCKET,
    Phase.CLOSING: {Input.CLOSED, Input.LOST, Input.DATA, Input.TIMED_OUT, Input.STOP},
    Phase.BACKOFF: {Input.SLEPT, Input.STOP},
    Phase.FAILED: {Input.STOP, Input.CLOSED, Input.LOST},
    Phase.STOPPED: {Input.STOP, Input.CLOSED, Input.LOST},
}


def stream_target(base_path: str, tags: Sequence[str], last_event_id: str | None) -> str:
    """``/all_events?ids=1[&tag=…][&last_event_id=…]``: the token never goes in the URL."""
    query: list[tuple[str, str]] = [("ids", "1")]
    query += [("tag", tag) for tag in tags]
    if last_event_id is not None:
        query.append(("last_event_id", last_event_id))
    return f"{base_path}/all_events?" + urlencode(query, quote_via=quote, safe="/*?!")


def _error_reason(body: bytes) -> str:
    """The ``return`` of the server's error JSON, else the start of the body."""
    try:
        answer = json.loads(body)
        if isinstance(answer, dict) and isinstance(answer.get("return"), str):
            return str(answer["return"])
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace") or "no reason given"


class LoginExchange:
    """One ``POST /login`` on h11: :meth:`request` bytes, then :meth:`receive_data`
    until it returns the token (or raises :class:`Refused` for a 4xx,
    :class:`ConnectionError` for anything else: a 5xx, EOF, not HTTP)."""

    def __init__(self, endpoint: Endpoint, credentials: Credentials) -> None:
        self._endpoint = endpoint
        self._credentials = credentials
        self._conn = h11.Connection(h11.CLIENT)
        self._status = 0
        self._body = bytearray()

    def request(self) -> bytes:
        c = self._credentials
        body = json.dumps({"username": c.username, "password": c.password, "eauth": c.eauth}).encode()
        head = h11.Request(method="POST", target=f"{self._endpoint.base_path}/login", headers=[
            ("Host", self._endpoint.host_header), ("Content-Type", "application/json"),
            ("Accept", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close"),
        ])
        return self._conn.send(head) + self._conn.send(h11.Data(data=body)) + self._conn.send(h11.EndOfMessage())

    def receive_data(self, data: bytes) -> str | None:
        """The token once the answer is complete; None while more is needed."""
        self._conn.receive_data(data)
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ConnectionError(f"the login answer is not HTTP: {exc}") from None
            if event is h11.NEED_DATA:
                if not data:
                    raise ConnectionError("the server closed the connection before answering the login")
                return None
            if isinstance(event, h11.Response):
                self._status = event.status_code
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > MAX_LOGIN_RESPONSE_BYTES:
                    raise ConnectionError("the login answer is too large")
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return self._token()

    def _token(self) -> str:
        if 400 <= self._status < 500:
            raise Refused(self._status, _error_reason(bytes(self._body)))
        if self._status != 200:
            raise ConnectionError(f"login answered {self._status}: {_error_reason(bytes(self._body))}")
        try:
            token = json.loads(self._body)["return"][0]["token"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ConnectionError("the login answer holds no token") from None
        if not isinstance(token, str) or not token:
            raise ConnectionError("the login answer holds no token")
        return token


class Follower:
    """Follow ``/all_events`` of one server across disconnects (see the module docstring).

    ``token`` (a token from ``POST /login``) or ``credentials`` (to log in, and
    again when the token is refused) or both. ``tags``: ``?tag=`` globs (None or
    empty: every event). ``last_event_id``: resume after this id from the start.
    ``idle_timeout``: a stream that sends nothing (not even a ping) this long is
    taken for dead. ``max_message_bytes``: a larger message is a
    :class:`ProtocolError`."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        token: str | None = None,
        credentials: Credentials | None = None,
        tags: Sequence[str] = (),
        last_event_id: str | None = None,
        backoff: Backoff | None = None,
        idle_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if token is None and credentials is None:
            raise ValueError("a token or credentials (username, password, eauth) are needed")
        self.endpoint = endpoint
        self.token = token
        self.credentials = credentials
        self.tags = tuple(tags)
        self.last_event_id = last_event_id
        self.backoff = backoff or Backoff()
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_message_bytes = max_message_bytes
        self.attempts = 0  # streams opened (accepted upgrades)
        self.phase = Phase.LOGIN if token is None else Phase.OPEN_STREAM
        self._items: deque[Item] = deque()
        self._out = bytearray()
        self._login: LoginExchange | None = None
        self._ws: WSConnection | None = None
        self._fresh_login = False  # the token in hand was just given: a 401 for it is final
        self._rejection: tuple[int, bytearray] | None = None
        self._parts: list[str] = []
        self._part_bytes = 0
        self._after_close = Phase.BACKOFF
        self._error: Exception | None = None

    # -- questions ------------------------------------------------------------------

    def next_step(self) -> Step:
        """What the driver does next (see the module docstring)."""
        if self._items:
            return Deliver(self._items.popleft())
        phase = self.phase
        if phase in (Phase.LOGIN, Phase.OPEN_STREAM):
            return Open(self.endpoint)
        if phase in (Phase.LOGGING_IN, Phase.HANDSHAKE):
            return Receive(self.connect_timeout)
        if phase is Phase.STREAMING:
            return Receive(self.idle_timeout)
        if phase is Phase.CLOSING:
            return Close()
        if phase is Phase.BACKOFF:
            return Sleep(self._delay)
        if phase is Phase.FAILED:
            assert self._error is not None
            return Fail(self._error)
        return Close()  # STOPPED: nothing more; the driver stops asking

    def data_to_send(self) -> bytes:
        """Bytes to write before the next step (a request, a pong, a close)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- verbs ----------------------------------------------------------------------

    def connected(self) -> None:
        """The connection asked for by :class:`Open` is up (TLS included)."""
        self._take(Input.CONNECTED)
        if self.phase is Phase.LOGIN:
            assert self.credentials is not None
            self._login = LoginExchange(self.endpoint, self.credentials)
            self._out += self._login.request()
            self.phase = Phase.LOGGING_IN
            return
        assert self.token is not None
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._parts, self._part_bytes, self._rejection = [], 0, None
        target = stream_target(self.endpoint.base_path, self.tags, self.last_event_id)
        self._out += self._ws.send(Request(
            host=self.endpoint.host_header, target=target,
            extra_headers=[(b"X-Auth-Token", self.token.encode())],
        ))
        self.phase = Phase.HANDSHAKE

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the socket; ``b""`` at EOF."""
        self._take(Input.DATA)
        if self.phase is Phase.CLOSING:
            return  # the rest of a connection being dropped
        try:
            if self.phase is Phase.LOGGING_IN:
                self._login_data(data)
            else:
                self._ws_data(data)
        except Refused as exc:
            self._fail(exc)
        except ProtocolError as exc:
            self._fail(exc)
        except (ConnectionError, RemoteProtocolError, LocalProtocolError) as exc:
            self._lost(str(exc))

    def timed_out(self) -> None:
        """Nothing arrived within :class:`Receive`'s timeout."""
        self._take(Input.TIMED_OUT)
        if self.phase is Phase.STREAMING:
            self._lost(f"nothing received in {self.idle_timeout:g} s")
        elif self.phase is not Phase.CLOSING:
            self._lost(f"no answer in {self.connect_timeout:g} s")

    def connection_lost(self, reason: str) -> None:
        """Connecting, reading or writing failed (``reason``: the OS error's words)."""
        self._take(Input.LOST)
        if self.phase in (Phase.LOGIN, Phase.OPEN_STREAM):
            self._schedule_retry(reason, code=None, connection_open=False)
        elif self.phase not in (Phase.CLOSING, Phase.FAILED, Phase.STOPPED):
            self._lost(reason)

    def closed(self) -> None:
        """The socket :class:`Close` asked to drop is gone."""
        self._take(Input.CLOSED)
        if self.phase is Phase.CLOSING:
            self.phase = self._after_close

    def slept(self) -> None:
        """The :class:`Sleep` is over."""
        self._take(Input.SLEPT)
        self.phase = Phase.LOGIN if self.token is None else Phase.OPEN_STREAM

    def stop(self) -> None:
        """The user is done: a close frame (1000) goes out if a stream is open; then
        :meth:`next_step` says Close (drop the socket, if any) and nothing more."""
        self._take(Input.STOP)
        if self.phase is Phase.STREAMING and self._ws is not None:
            try:
                self._out += self._ws.send(CloseConnection(code=1000, reason="client done"))
            except LocalProtocolError:
                pass
        self._items.clear()
        self.phase = Phase.STOPPED

    # -- inside ---------------------------------------------------------------------

    def _take(self, given: Input) -> None:
        if given not in _TRANSITIONS[self.phase]:
            raise FollowerMisuse(f"{given.value}() in phase {self.phase.value}")

    def _login_data(self, data: bytes) -> None:
        assert self._login is not None
        token = self._login.receive_data(data)
        if token is not None:
            self.token = token
            self._fresh_login = True
            self._login = None
            self._close_then(Phase.OPEN_STREAM)

    def _ws_data(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        ws.receive_data(data or None)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                self._accepted()
            elif isinstance(event, RejectConnection):
                self._rejection = (event.status_code, bytearray())
                if not event.has_body:
                    self._rejected()
                    return
            elif isinstance(event, RejectData):
                assert self._rejection is not None
                body = self._rejection[1]
                body += event.data[: MAX_REJECTION_BYTES - len(body)]
                if event.body_finished:
                    self._rejected()
                    return
            elif isinstance(event, TextMessage):
                self._message_part(event.data, event.message_finished)
            elif isinstance(event, BytesMessage):
                raise ProtocolError("the server sent a binary message")
            elif isinstance(event, Ping):
                self._out += ws.send(event.response())
            elif isinstance(event, CloseConnection):
                self._out += ws.send(event.response())
                self._lost(f"the server closed the stream: {event.reason or 'no reason'}", code=event.code)
                return
        if not data and self.phase in (Phase.HANDSHAKE, Phase.STREAMING):
            self._lost("the server closed the connection")

    def _accepted(self) -> None:
        assert self._ws is not None
        self._out += self._ws.send(TextMessage(data=READY))
        self.phase = Phase.STREAMING
        self.attempts += 1
        self._fresh_login = False
        self.backoff.reset()
        self._items.append(Connected(self.last_event_id, self.attempts))

    def _rejected(self) -> None:
        assert self._rejection is not None
        status, body = self._rejection
        reason = _error_reason(bytes(body))
        if status == 401 and self.credentials is not None and not self._fresh_login:
            self.token = None  # expired or revoked: log in again, at once
            self._close_then(Phase.LOGIN)
        elif 400 <= status < 500:
            self._fail(Refused(status, reason))
        else:  # 503 at the connection limit, a proxy's 502…
            self._lost(f"the server answered {status}: {reason}", code=status)

    def _message_part(self, text: str, finished: bool) -> None:
        self._part_bytes += len(text)
        if self._part_bytes > self.max_message_bytes:
            raise ProtocolError(f"a message exceeds {self.max_message_bytes} characters")
        self._parts.append(text)
        if not finished:
            return
        whole = "".join(self._parts)
        self._parts, self._part_bytes = [], 0
        item, event_id = parse_message(whole)
        if event_id is not None:
            self.last_event_id = event_id
        self._items.append(item)

    def _close_then(self, phase: Phase) -> None:
        self._after_close = phase
        self.phase = Phase.CLOSING

    def _lost(self, reason: str, code: int | None = None) -> None:
        self._schedule_retry(reason, code, connection_open=True)

    def _schedule_retry(self, reason: str, code: int | None, connection_open: bool) -> None:
        self._login = None
        self._ws = None
        self._delay = self.backoff.delay()
        self._items.append(Disconnected(reason, round(self._delay, 3), self.last_event_id, code))
        if connection_open:
            self._close_then(Phase.BACKOFF)
        else:
            self.phase = Phase.BACKOFF

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._close_then(Phase.FAILED)

    _delay: float = 0.0


def is_event(item: Item) -> bool:
    """True for Salt's events, False for notices."""
    return isinstance(item, Event)
