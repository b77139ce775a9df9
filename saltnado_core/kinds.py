"""The vocabulary every module shares: stream kinds and websocket close codes.

:class:`StreamKind` is the one table of the event streams a server offers —
each kind's route (its name is the route's name and the first path segment),
how it reaches the client (a websocket, or Server-Sent Events over an HTTP
response), where the client's token is (:class:`TokenPlace`), and how one JSON
message is framed for it (and, for a client that asked for event ids, with its id).
A route may carry more than one kind: rest_cherrypy's ``/ws`` is
:attr:`StreamKind.WS` (raw events), or :attr:`StreamKind.WS_FORMATTED` with
``?format_events``; such a kind names its route in ``route``. The router, the
event streams, the connection and the log
redaction all read it, so a new stream kind is one row here.

:class:`CloseCode` names the RFC 6455 §7.4.1 close codes saltnado sends. Both
are ``int``/``str`` enums, so they compare equal to the plain values clients
and configs use (``1008``, ``"all_events"``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from .messages import sse_chunk, sse_chunk_with_id, text_frame, with_id


class CloseCode(enum.IntEnum):
    """Websocket close codes (RFC 6455 §7.4.1) and what saltnado means by each."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down
    MESSAGE_TOO_BIG = 1009  # an incoming message over max_ws_message_bytes
    POLICY_VIOLATION = 1008  # token expired/revoked, no "websocket client ready"
    INTERNAL_ERROR = 1011  # also what a peer that stopped answering pings gets
    TRY_AGAIN_LATER = 1013  # the default for a client too slow for its stream


class Transport(enum.Enum):
    WEBSOCKET = "websocket"  # after an HTTP/1.1 upgrade; "websocket client ready" first
    SSE = "sse"  # text/event-stream, framed as HTTP chunks (unchunked at drain for HTTP/1.0)


class TokenPlace(enum.Enum):
    """Where a stream's client sends its token."""

    HEADER = "header"  # X-Auth-Token or the session_id cookie (/events)
    # a path segment of the token's exact shape (/all_events/<token>, the reference's
    # only way; another shape is 404), or without it the header, the cookie or a
    # subprotocol (/all_events): saltnado_core.rest.websocket_token
    PATH = "path"
    PATH_OR_HEADER = "path_or_header"  # /ws/<any segment: a wrong one is 401>, or /ws with the header or the cookie


def _websocket_message(tag: str, payload: bytes) -> bytes:
    return text_frame(payload)


def _websocket_message_with_id(event_id: str, tag: str, payload: bytes, master: str | None = None) -> bytes:
    return text_frame(with_id(event_id, payload, master))


def _cherrypy_message(tag: str, payload: bytes) -> bytes:
    # rest_cherrypy's /ws: handler.send(f"data: {json}\n\n"), an SSE-like line in a text frame
    return text_frame(b"data: " + payload + b"\n\n")


class StreamKind(str, enum.Enum):
    """One row per event stream: ``(name, transport, token place[, route])``.

    ``frame(tag, payload)`` turns one message's JSON (``payload``) into the bytes
    this kind's clients are sent: a websocket text frame (for ``/ws``, the line
    ``data: <json>`` and a blank line in it, as rest_cherrypy sends), or an SSE
    event as an HTTP chunk (whose ``tag:`` line is ``tag``). ``route`` is the
    route the kind is served at (its own name unless another kind's);
    ``acknowledges``: every client message is answered ``server received
    message`` (rest_cherrypy's ``SynchronizingWebsocket``).
    """

    transport: Transport
    token_place: TokenPlace
    route: str

    def __new__(cls, name: str, transport: Transport, token_place: TokenPlace, route: str = "") -> StreamKind:
        member = str.__new__(cls, name)
        member._value_ = name
        member.transport = transport
        member.token_place = token_place
        member.route = route or name
        return member

    ALL_EVENTS = ("all_events", Transport.WEBSOCKET, TokenPlace.PATH)  # /all_events[/<token>]
    FORMATTED_EVENTS = ("formatted_events", Transport.WEBSOCKET, TokenPlace.PATH)  # /formatted_events[/<token>]
    EVENTS = ("events", Transport.SSE, TokenPlace.HEADER)  # /events (token in a header or cookie)
    WS = ("ws", Transport.WEBSOCKET, TokenPlace.PATH_OR_HEADER)  # rest_cherrypy's /ws[/<token>]
    WS_FORMATTED = ("ws_formatted", Transport.WEBSOCKET, TokenPlace.PATH_OR_HEADER, "ws")  # /ws?format_events

    @property
    def token_in_path(self) -> bool:
        """The token is (or may be) a path segment after the route."""
        return self.token_place is not TokenPlace.HEADER

    @property
    def routed(self) -> bool:
        """The kind is a route of its own (not another kind's variant)."""
        return self.route == self.value

    @property
    def acknowledges(self) -> bool:
        return self.route == "ws"

    @property
    def frame(self) -> Callable[[str, bytes], bytes]:
        if self.transport is Transport.SSE:
            return sse_chunk
        return _cherrypy_message if self is StreamKind.WS else _websocket_message

    @property
    def frame_with_id(self) -> Callable[[str, str, bytes, str | None], bytes]:
        """``frame`` for a client that asked for event ids (``?ids=1``): an SSE
        ``id:`` line, or the websocket envelope ``{"id": …, "data": …, "tag": …}``;
        the last argument is the event's master (an event log's; None: none said)."""
        return sse_chunk_with_id if self.transport is Transport.SSE else _websocket_message_with_id

    def __str__(self) -> str:
        return self.value


def stream_kind(route: str) -> StreamKind:
    """The kind whose route is ``route``; ValueError if there is none."""
    return StreamKind(route)  # type: ignore[call-arg]  # Enum's lookup by value, not __new__


# Route names whose next path segment is a token (the log redaction masks it whatever its shape).
TOKEN_IN_PATH = frozenset(kind.route for kind in StreamKind if kind.token_in_path)
