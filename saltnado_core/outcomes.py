"""What a request handler sees and what it decides.

A handler (:mod:`saltnado_core.rest`) is a generator over a :class:`Context`: it
yields Salt calls and returns an :data:`Outcome` — a :class:`Response`, an
:class:`AcceptWebSocket` or an :class:`AcceptEventStream` — which the binding
hands to :meth:`ServerConnection.respond <saltnado_core.connection.ServerConnection.respond>`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from .config import Settings
from .history import EventId
from .http import Request, Response
from .kinds import StreamKind
from .negotiation import serialize
from .router import Route
from .files import ReadFile
from .salt_calls import SaltCall
from .tagfilter import TagFilter

AUTH_TOKEN_HEADER = "x-auth-token"
AUTH_COOKIE_NAME = "session_id"


@dataclass(frozen=True, slots=True)
class AcceptWebSocket:
    """Upgrade the connection; stream ``stream`` after the client says it is ready."""

    stream: StreamKind  # a websocket kind (a plain route name compares equal)
    token_expire: float
    token: str = field(default="", repr=False)
    delta: bool = False  # /formatted_events?delta=1: only changes after the first view
    tags: TagFilter | None = None  # ?tag=<glob>: the events the client wants (None: all)
    subprotocol: str | None = None  # Sec-WebSocket-Protocol of the 101 (never one holding a token)
    ids: bool = False  # ?ids=1: each event in the envelope {"id", "data", "tag"}
    last_event_id: EventId | None = None  # ?last_event_id=: resume after it


@dataclass(frozen=True, slots=True)
class AcceptEventStream:
    """Answer 200 ``text/event-stream`` and stream Server-Sent Events until the
    token expires or the client leaves."""

    token_expire: float
    headers: tuple[tuple[str, str], ...] = ()
    token: str = field(default="", repr=False)  # re-checked with Salt while the stream is open
    tags: TagFilter | None = None  # ?tag=<glob>: the events the client wants (None: all)
    ids: bool = False  # ?ids=1: an "id:" line per event
    last_event_id: EventId | None = None  # Last-Event-ID (with ?ids=1) or ?last_event_id=: resume after it


@dataclass(frozen=True, slots=True)
class Health:
    """What ``GET /health`` answers: ``ok`` → 200, else 503 with ``reason``
    (for any client to read: never a filesystem path)."""

    ok: bool
    reason: str


# An App built without the event-bus link's state (a test, a host with no feed)
NOT_FOLLOWING = Health(False, "not following the event bus")


def not_following() -> Health:
    return NOT_FOLLOWING


@dataclass(frozen=True, slots=True)
class Exposition:
    """What ``GET /metrics`` answers: the server's metrics as ``content_type``
    (the Prometheus text format or OpenMetrics, as negotiated)."""

    body: bytes
    content_type: str


def no_metrics(media: str) -> Exposition:
    """An App built without a metrics provider: no metrics (a valid exposition)."""
    return Exposition(b"", "text/plain; version=0.0.4; charset=utf-8")


def no_stats(now: float) -> Mapping[str, Any]:
    """An App built without a stats provider: no sections (rest_cherrypy's
    ``/stats`` answers ``{}`` when CherryPy keeps no statistics)."""
    return {}


Outcome = Union[Response, AcceptWebSocket, AcceptEventStream]
# What a handler yields for the binding to run in a worker thread: a Salt call, or
# reading a file to serve (saltnado_core.files)
Effect = SaltCall | ReadFile
Step = Union[Effect, Outcome]
Handler = Generator[Effect, Any, Outcome]


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler knows about its request."""

    request: Request
    route: Route
    now: float  # the binding's wall-clock time
    settings: Settings
    media: str  # the negotiated output type
    health: Callable[[], Health] = not_following  # the event-bus link's state, read by GET /health
    # the server's figures: GET /metrics' exposition in the negotiated media type,
    # GET /stats' sections at the binding's wall-clock time
    metrics: Callable[[str], Exposition] = no_metrics
    stats: Callable[[float], Mapping[str, Any]] = no_stats

    def reply(self, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return Response(status, serialize(payload, self.media), headers, self.media)
