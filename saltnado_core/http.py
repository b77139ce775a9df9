"""HTTP/1.1 server side on h11: whole requests in, responses out, with limits.

:class:`HTTPConnection` assembles complete :class:`Request` objects (headers
bounded by ``max_header_bytes`` and ``max_header_count`` → 431, bodies by
``max_body_bytes`` → 413, malformed input → 400), keeps connections alive
between requests, tells whether it is idle, reading or answering (for the
timeouts, see :mod:`saltnado_core.connection`), and hands over the bytes that
follow a websocket upgrade request so none are lost.
Every error it produces itself is a short JSON body with a reason that never
quotes the peer's bytes (they may hold a token), and is kept as a
:class:`Rejection` for the access log.

A response body larger than ``write_chunk_bytes`` is not handed to h11 whole:
its head goes out first and :meth:`HTTPConnection.data_to_send` hands out one
slice of at most ``write_chunk_bytes`` per call — each time the binding's writer
has written the last one — as a ``memoryview`` of the response's own ``bytes``
(h11's ``send_with_data_passthrough``: no copy but the slice handed out). A static
file's bytes are shared by every client (``saltnado_runtime.files``), so a slow
reader of a large file costs the server a slice, not a copy of the file.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from http import HTTPStatus

import h11
from wsproto.utilities import generate_accept_token

from .messages import dumps, unchunk

SERVER_NAME = b"saltnado"


class HTTPError(Exception):
    """A request that must be answered with ``status`` and a JSON reason."""

    def __init__(self, status: int, reason: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # raw request target, e.g. "/all_events/abc?x=1"
    headers: tuple[tuple[str, str], ...]  # names lower-cased
    body: bytes = b""
    http_version: str = "1.1"
    # the client's IP address, from the socket (the binding's peer; None: unknown,
    # e.g. a Unix socket or a host that handed the connection over without one).
    # No header (X-Forwarded-For …) is ever believed for it.
    client: str | None = None

    @property
    def path(self) -> str:
        """The path as sent, still percent-encoded: routes match it as a proxy in
        front saw it (``/%6cogin`` is not ``/login``); the router decodes the
        parameters it captures (see :mod:`saltnado_core.router`)."""
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        parts = self.target.split("?", 1)
        return parts[1] if len(parts) == 2 else ""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The last value of header ``name`` (case-insensitive)."""
        name = name.lower()
        found = default
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    def header_tokens(self, name: str) -> set[str]:
        """Comma-separated tokens of every ``name`` header, lower-cased."""
        name = name.lower()
        return {
            token.strip().lower()
            for key, value in self.headers
            if key == name
            for token in value.split(",")
            if token.strip()
        }

    @property
    def wants_websocket(self) -> bool:
        return "websocket" in self.header_tokens("upgrade")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    content_type: str | None = "application/json"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request the connection answered on its own (400, 408, 413, 431, 505, 503
    at the connection limit): what the access log says about it. ``request`` has
    the method and target when they could be read, else ``"-"``, and no body."""

    request: Request
    response: Response


CLOSE_HEADER = (("connection", "close"),)
UNREADABLE = Request("-", "-", ())  # a request whose request line could not be read

# RFC 9112 §2.3: the versions this server speaks; h11 reads any "HTTP/<d>.<d>".
_SERVED_VERSIONS = (b"1.0", b"1.1")
# h11 quotes the offending bytes in some reasons ("illegal header line:
# bytearray(b'X-Auth-Token : <token>')"): what follows the colon is cut.
_QUOTED_BYTES = re.compile(r":\s*(?:bytearray\()?b['\"].*", re.DOTALL)


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def status_line(status: int) -> str:
    """``"401 Unauthorized"``, the reference's ``status`` field format."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def json_response(
    status: int, payload: object, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    return Response(status, dumps(payload).encode("utf-8"), tuple(headers))


def error_response(status: int, reason: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """The JSON error body every saltnado error uses: ``{"status", "return"}``."""
    return json_response(status, {"status": status_line(status), "return": reason}, headers)


class HTTPConnection:
    """One client connection's HTTP/1.1 phase.

    Verbs: ``receive_data(bytes)`` (``b""`` means EOF), ``next_request()``,
    ``send_response(response)``, ``accept_websocket(request)``,
    ``data_to_send()``, ``time_out(reason)``. After ``closed`` is true and
    output is flushed, the binding closes the socket.
    """

    def __init__(
        self,
        max_header_bytes: int = 16 * 1024,
        max_body_bytes: int = 1024 * 1024,
        max_header_count: int = 100,
        write_chunk_bytes: int = 256 * 1024,
        peer: str | None = None,
    ) -> None:
        self._peer = peer  # stamped on every request as Request.client
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self._max_header = max_header_bytes
        self._max_header_count = max_header_count
        self._max_body = max_body_bytes
        self._out: list[bytes] = []
        self._out_bytes = 0  # len(b"".join(self._out))
        self._pending: h11.Request | None = None
        self._body = bytearray()
        self._busy = False  # a request was handed out and awaits its response
        self._receiving = False  # bytes of the next request have arrived
        self.requests = 0  # complete requests handed out so far
        self._head = False  # the current request is HEAD: its response has no body
        self.closed = False
        self._rejections: list[Rejection] = []  # at most one: each closes the connection
        self._continue_decided = False  # the pending request's 100 Continue was sent or refused
        self._close_delimited = False  # a stream to an HTTP/1.0 client: no chunks, its end is the close
        self._chunk = write_chunk_bytes
        self._out_body: memoryview | None = None  # the part of a large response body not yet handed out
        self.body_sent = 0  # bytes of it handed out so far (the timeouts watch it move)

    @property
    def busy(self) -> bool:
        """A request was handed out and awaits its response."""
        return self._busy

    @property
    def backlog(self) -> int:
        """Bytes of responses not yet taken by :meth:`data_to_send` (but the rest of
        a large body, which is the response's own: see :attr:`sending_body`)."""
        return self._out_bytes

    @property
    def sending_body(self) -> bool:
        """A large response body is being handed out, a slice per :meth:`data_to_send`."""
        return self._out_body is not None

    @property
    def receiving(self) -> bool:
        """Part of a request has arrived (and no request is being answered)."""
        return self._receiving and not self._busy

    # -- input -----------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return
        self._receiving = self._receiving or bool(data)
        try:
            self._h11.receive_data(data)
        except h11.RemoteProtocolError:  # data after EOF
            self._close()

    def next_request(self) -> Request | None:
        """The next complete request, or None until more bytes arrive.

        Errors in the peer's bytes are answered here (400/413/431) and close
        the connection.
        """
        if self.closed or self._busy or self._out_body is not None:
            return None
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                reason = "request header block too large" if status == 431 else f"malformed request: {_h11_reason(exc)}"
                self._fail(status, reason)
                return None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                self._pending = event
                self._continue_decided = False
                self._head = event.method == b"HEAD"
                self._body.clear()
                # h11 bounds only an *incomplete* head; a whole one that arrived
                # in a single read is measured here.
                if _head_size(event) > self._max_header:
                    self._fail(431, "request header block too large")
                    return None
                if len(event.headers) > self._max_header_count:
                    self._fail(431, f"too many request header fields (more than {self._max_header_count})")
                    return None
                refusal = _refusal(event)
                if refusal is not None:
                    self._fail(*refusal)
                    return None
                length = _content_length(event)
                if length is not None and length > self._max_body:
                    self._fail(413, f"request body of {length} bytes exceeds the {self._max_body}-byte limit")
                    return None
            elif isinstance(event, h11.Data):
                if len(self._body) + len(event.data) > self._max_body:
                    self._fail(413, f"request body exceeds the {self._max_body}-byte limit")
                    return None
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert self._pending is not None
                request = _to_request(self._pending, bytes(self._body), self._peer)
                self._pending = None
                self._body.clear()
                self._busy = True
                self.requests += 1
                # Bytes already buffered belong to the next (pipelined) request.
                self._receiving = bool(self._h11.trailing_data[0])
                return request
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return None

    # -- output ----------------------------------------------------------
    def send_response(self, response: Response) -> None:
        """Answer the request last returned by :meth:`next_request`."""
        if self.closed:
            return
        headers = [(b"server", SERVER_NAME)]
        if response.content_type is not None:
            headers.append((b"content-type", response.content_type.encode("latin-1")))
        if _has_body(response.status):
            headers.append((b"content-length", str(len(response.body)).encode()))
        headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers)
        try:
            self._send(
                h11.Response(status_code=response.status, headers=headers, reason=_phrase(response.status))
            )
            if response.body and not self._head:  # RFC 9110 §9.3.2: HEAD gets the head alone
                if len(response.body) > self._chunk:  # handed out slice by slice: data_to_send
                    self._out_body, self.body_sent = memoryview(response.body), 0
                    self._busy = False
                    return
                self._send(h11.Data(data=response.body))
            self._send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self._close()
            return
        self._busy = False
        self._next_cycle()

    def _next_slice(self) -> list[bytes | memoryview]:
        """The next slice of a large body (and its end, after the last one)."""
        body = self._out_body
        assert body is not None
        piece = body[self.body_sent : self.body_sent + self._chunk]
        self.body_sent += len(piece)
        # h11 passes the data through untouched (typed as bytes; a memoryview is not copied)
        out: list[bytes | memoryview] = list(
            self._h11.send_with_data_passthrough(h11.Data(data=piece)) or []  # type: ignore[arg-type]
        )
        if self.body_sent >= len(body):
            self._out_body = None
            out.append(self._h11.send(h11.EndOfMessage()) or b"")
            self._next_cycle()
        return out

    def drop_body(self) -> None:
        """Hand out no more of a large body: the connection is being dropped."""
        self._out_body = None

    def start_stream(self, headers: Iterable[tuple[str, str]], first: bytes) -> None:
        """Start a 200 ``text/event-stream`` response whose body begins with ``first``;
        later messages are passed through :meth:`stream_data` until :meth:`end_stream`.

        To an HTTP/1.1 client the body is chunked. An HTTP/1.0 client (nginx speaks
        it to its backends by default) cannot read chunks: its body is
        close-delimited, RFC 9112 §6.3: "Otherwise, this is a response message
        without a declared message body length, so the message body length is
        determined by the number of octets received prior to the server closing the
        connection" (h11 then sends no Transfer-Encoding and ``Connection: close``)."""
        fields = [
            (b"server", SERVER_NAME),
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # tell nginx not to buffer the stream
        ]
        fields.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)
        self._close_delimited = self._h11.their_http_version == b"1.0"
        self._send(h11.Response(status_code=200, headers=fields, reason=b"OK"))
        self._send(h11.Data(data=first))
        self._busy = False

    def stream_data(self, chunks: bytes) -> bytes:
        """Whole HTTP chunks of stream messages (they are framed once for every
        client, see :func:`saltnado_core.messages.http_chunk`) as this client's
        stream is written: as they are, or their data alone when close-delimited."""
        return unchunk(chunks) if self._close_delimited else chunks

    def end_stream(self) -> bytes:
        """The end of a streamed response (the last chunk, or nothing when the
        close ends it); the connection then closes."""
        self.closed = True
        return b"" if self._close_delimited else b"0\r\n\r\n"

    def accept_websocket(self, request: Request, subprotocol: str | None = None) -> bytes:
        """Send the 101 for a validated upgrade request (see :func:`websocket_key`),
        naming ``subprotocol`` (one the client offered) if given.

        Returns the bytes the client sent after its request (they belong to
        the websocket). The connection is then closed for HTTP.
        """
        key = websocket_key(request)
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(key.encode("ascii"))),
        ]
        if subprotocol is not None:
            headers.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
        self._send(
            h11.InformationalResponse(
                status_code=101,
                headers=headers,
                reason=_phrase(101),  # "Switching Protocols", as Tornado sends
            )
        )
        trailing, _ = self._h11.trailing_data
        self.closed = True
        self._busy = False
        return bytes(trailing)

    @property
    def continue_wanted(self) -> Request | None:
        """The head (with no body) of a request whose client waits for ``100
        Continue`` before sending its body, until :meth:`send_continue` or
        :meth:`refuse_unread` has answered it; else None."""
        if self.closed or self._pending is None or self._continue_decided:
            return None
        if not self._h11.they_are_waiting_for_100_continue:
            return None
        return _to_request(self._pending, b"", self._peer)

    def send_continue(self) -> None:
        """The request of :attr:`continue_wanted` is accepted: ask for its body
        (RFC 9110 §10.1.1; curl sends it anyway after waiting ~1 s)."""
        self._continue_decided = True
        self._send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))

    def refuse_unread(self, response: Response) -> None:
        """Answer the request of :attr:`continue_wanted` with ``response`` before
        its body is sent, and close: the body is never read. RFC 9110 §10.1.1: the
        server must "either send an immediate response with a final status code, if
        that status can be determined by examining just the method, target URI, and
        header fields, or send an immediate 100 (Continue) response"."""
        self._continue_decided = True
        headers = response.headers + CLOSE_HEADER
        self.send_response(Response(response.status, response.body, headers, response.content_type))
        self._close()

    def take_rejections(self) -> list[Rejection]:
        """The requests answered here on their own since the last call (for the access log)."""
        rejections, self._rejections = self._rejections, []
        return rejections

    def data_to_send(self) -> bytes:
        """What is queued (heads, small responses) and, while a large body is being
        sent, its next slice of at most ``write_chunk_bytes``."""
        pieces: list[bytes | memoryview] = list(self._out)
        self._out.clear()
        self._out_bytes = 0
        if self._out_body is not None and not self.closed:
            pieces += self._next_slice()
        return b"".join(pieces)

    def time_out(self, reason: str) -> None:
        """A request did not arrive in full in time: answer 408 with ``reason``
        and close (RFC 9110 §15.5.9). Not while a request is being answered."""
        if not self.closed and not self._busy:
            self._fail(408, reason)

    # -- internals -------------------------------------------------------
    def _send(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if data:
            self._out.append(data)
            self._out_bytes += len(data)

    def _next_cycle(self) -> None:
        if self._h11.our_state is h11.MUST_CLOSE or self._h11.their_state in (h11.MUST_CLOSE, h11.CLOSED):
            self._close()
            return
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        else:  # we answered before reading the whole body: the stream is unusable
            self._close()

    def _fail(self, status: int, reason: str) -> None:
        response = error_response(status, reason, CLOSE_HEADER)
        if self._pending is not None:
            pending = _to_request(self._pending, b"", self._peer)
        else:  # still whose it was, for the access log
            pending = replace(UNREADABLE, client=self._peer)
        self._rejections.append(Rejection(pending, response))
        self._busy = False
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                self.send_response(response)
            except h11.LocalProtocolError:
                pass
            else:
                self._close()
                return
        # h11 refuses to respond after a parse error in some states; write it raw.
        raw = _raw_response(response)
        self._out.append(raw)
        self._out_bytes += len(raw)
        self._close()

    def _close(self) -> None:
        self.closed = True
        self._busy = False


def websocket_key(request: Request) -> str:
    """Validate a websocket upgrade request (RFC 6455 §4.2.1); return its key.

    Raises :class:`HTTPError` (400, or 426 for an unsupported version).
    """
    if request.method != "GET":
        raise HTTPError(400, "websocket upgrade requires GET")
    if "upgrade" not in request.header_tokens("connection"):
        raise HTTPError(400, "websocket upgrade requires 'Connection: Upgrade'")
    if request.header("sec-websocket-version") != "13":
        raise HTTPError(426, "unsupported websocket version; use 13", [("sec-websocket-version", "13")])
    key = request.header("sec-websocket-key") or ""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise HTTPError(400, "missing or invalid Sec-WebSocket-Key") from None
    return key


def _head_size(event: h11.Request) -> int:
    """Bytes of the request line and headers as sent (give or take whitespace)."""
    size = len(event.method) + len(event.target) + 12
    for name, value in event.headers:
        size += len(name) + len(value) + 4
    return size


def _refusal(event: h11.Request) -> tuple[int, str] | None:
    """Why a request head h11 accepted must still be refused, as (status, reason).

    h11 itself refuses conflicting ``Content-Length`` values and any
    ``Transfer-Encoding`` but a lone ``chunked`` (400, 501); it reads a body by
    ``Transfer-Encoding`` when both are sent, which a proxy in front may read by
    ``Content-Length``: the rest of the body would be a second, smuggled request.
    """
    if event.http_version not in _SERVED_VERSIONS:
        # RFC 9110 §15.6.6; an HTTP/2 preface ("PRI * HTTP/2.0") lands here too.
        return 505, "HTTP version not supported; use HTTP/1.1"
    names = {name for name, _ in event.headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        # RFC 9112 §6.3: "...ought to be handled as an error. ... the server MUST
        # close the connection after responding to such a request."
        return 400, "malformed request: Content-Length together with Transfer-Encoding"
    return None


def _h11_reason(error: h11.RemoteProtocolError) -> str:
    """h11's reason for refusing a request, without the peer's bytes it quotes."""
    return _QUOTED_BYTES.sub("", str(error))


def _content_length(event: h11.Request) -> int | None:
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None


def _to_request(event: h11.Request, body: bytes, client: str | None = None) -> Request:
    return Request(
        method=event.method.decode("ascii"),
        target=event.target.decode("latin-1"),
        headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers),
        body=body,
        http_version=event.http_version.decode("ascii"),
        client=client,
    )


def _has_body(status: int) -> bool:
    """RFC 9110 §8.6: no Content-Length on a 1xx or 204 response (nor a 304's own)."""
    return status >= 200 and status not in (204, 304)


def _raw_response(response: Response) -> bytes:
    head = [f"HTTP/1.1 {status_line(response.status)}"]
    head.append(f"server: {SERVER_NAME.decode()}")
    if response.content_type:
        head.append(f"content-type: {response.content_type}")
    if _has_body(response.status):
        head.append(f"content-length: {len(response.body)}")
    head.extend(f"{k}: {v}" for k, v in response.headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body
