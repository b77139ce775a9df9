"""The vocabulary every module shares: stream kinds and websocket close codes.

:class:`StreamKind` is the one table of the event streams a server offers —
each kind's route (its name is the route's name and the first path segment),
how it reaches the client (a websocket, or Server-Sent Events over an HTTP
response), whether the token may be a path segment (``/all_events/<token>``, the
reference's only way; the route also exists without it), and how one JSON message is
framed for it. The router, the event streams, the connection and the log
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


def _websocket_message(tag: str, payload: bytes) -> bytes:
    return text_frame(payload)


def _websocket_message_with_id(event_id: str, tag: str, payload: bytes) -> bytes:
    return text_frame(with_id(event_id, payload))


class StreamKind(str, enum.Enum):
    """One row per event stream: ``(route, transport, token in the path)``.

    ``frame(tag, payload)`` turns one message's JSON (``payload``) into the bytes
    this kind's clients are sent: a websocket text frame, or an SSE event as an
    HTTP chunk (whose ``tag:`` line is ``tag``).
    """

    transport: Transport
    token_in_path: bool

    def __new__(cls, route: str, transport: Transport, token_in_path: bool) -> StreamKind:
        member = str.__new__(cls, route)
        member._value_ = route
        member.transport = transport
        member.token_in_path = token_in_path
        return member

    ALL_EVENTS = ("all_events", Transport.WEBSOCKET, True)  # /all_events[/<token>]
    FORMATTED_EVENTS = ("formatted_events", Transport.WEBSOCKET, True)  # /formatted_events[/<token>]
    EVENTS = ("events", Transport.SSE, False)  # /events (token in a header or cookie)

    @property
    def frame(self) -> Callable[[str, bytes], bytes]:
        return sse_chunk if self.transport is Transport.SSE else _websocket_message

    @property
    def frame_with_id(self) -> Callable[[str, str, bytes], bytes]:
        """``frame`` for a client that asked for event ids (``?ids=1``): an SSE
        ``id:`` line, or the websocket envelope ``{"id": …, "data": …, "tag": …}``."""
        return sse_chunk_with_id if self.transport is Transport.SSE else _websocket_message_with_id

    def __str__(self) -> str:
        return self.value


def stream_kind(route: str) -> StreamKind:
    """The kind whose route is ``route``; ValueError if there is none."""
    return StreamKind(route)  # type: ignore[call-arg]  # Enum's lookup by value, not __new__


# Route names whose next path segment is a token (the log redaction masks it whatever its shape).
TOKEN_IN_PATH = frozenset(kind.value for kind in StreamKind if kind.token_in_path)
