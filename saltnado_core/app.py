"""Request handling: route a :class:`Request` to a handler and drive it.

A handler is a generator: it yields Salt calls (:mod:`saltnado_core.salt_calls`)
that the binding executes off the event loop and sends results back into, and
finally returns a :class:`Response`, an :class:`AcceptWebSocket` or an
:class:`AcceptEventStream`. The :class:`Exchange` wraps that generator: one step
at a time (``start``, then ``resume(result)`` or ``fail(exc)`` after each Salt
call), or as one generator (:meth:`Exchange.steps`), which is how
:func:`saltnado_core.driving.serve_requests` runs every request of a connection.

Cross-cutting rules live here: output media by ``Accept``, per route (a
missing resource is 404 whatever the ``Accept``; 406 only when the route exists
and nothing it offers is acceptable; ``/events`` offers ``text/event-stream``), CORS headers on every response (and event stream), ``OPTIONS`` preflight,
and JSON/YAML error bodies for every error a handler raises. Static files and a
browser's navigation to the web app (:mod:`saltnado_core.static`) are answered
before the API's routes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import replace
from typing import Any

from . import rest
from .config import Dialect, Settings
from .http import HTTPError, Request, Response, error_response, status_line
from .kinds import StreamKind, Transport
from .negotiation import EXPOSITION_OFFERED, JSON, OFFERED, STREAM_OFFERED, allowed_origin, choose_media, serialize
from .outcomes import (
    AUTH_COOKIE_NAME, AUTH_TOKEN_HEADER, AcceptEventStream, AcceptWebSocket, Context, Effect, Exposition, Handler,
    Health, Outcome, Step, no_metrics, no_stats, not_following,
)
from .router import Route, Router
from .salt_calls import GetAuthList, GetToken, classify_salt_error
from .static import VARY_ACCEPT, Site
from .tokens import redact_path, redact_tokens

__all__ = [
    "AUTH_COOKIE_NAME", "AUTH_TOKEN_HEADER", "AcceptEventStream", "AcceptWebSocket", "App", "Context",
    "Exchange", "Handler", "Outcome", "PREFLIGHT", "Step",
]

ALLOWED_METHODS = "OPTIONS, GET, POST"
# The request headers the API reads that a page must ask leave to send (Fetch standard,
# "CORS-preflight fetch": a header that is not CORS-safelisted passes only if named in
# Access-Control-Allow-Headers);
# X-Requested-With is in the reference's list (jQuery sends it); SaltGUI sends
# Cache-Control: no-cache on every request, so without it a SaltGUI of another origin
# could not make a single call (the reference allows it by echoing what was asked).
# A fixed list, never the preflight's Access-Control-Request-Headers echoed back: that
# is client bytes in our head.
ALLOWED_HEADERS = "Accept, Cache-Control, Content-Type, X-Auth-Token, X-Requested-With, X-Salt-Master"

# The CORS preflight: 204 naming ALLOWED_HEADERS whatever the request's
# Access-Control-Request-Headers says (the reference echoes it, and answers 500
# without it). A browser compares the names itself and refuses to send a header
# that is not listed.
PREFLIGHT = Response(
    204,
    b"",
    (
        ("access-control-allow-headers", ALLOWED_HEADERS),
        ("access-control-allow-methods", ALLOWED_METHODS),
        ("access-control-expose-headers", "X-Auth-Token"),
        ("access-control-max-age", "1400"),
    ),
    None,
)


class Exchange:
    """One request's handler, driven by the binding one Salt call at a time."""

    def __init__(
        self,
        handler: Handler,
        media: str = JSON,
        headers: tuple[tuple[str, str], ...] = (),
        route: str | None = None,
    ) -> None:
        self._handler = handler
        self._media = media
        self._headers = headers  # added to every response (CORS)
        self.error: BaseException | None = None  # an unexpected exception, for the binding's log
        # the name of the route the request matched (None: no route), never its path:
        # what a metric may be labelled with (a path can hold a token)
        self.route = route

    def steps(self) -> Generator[Effect, Any, Outcome]:
        """The whole exchange as one generator: yields each Salt call; send its
        result in, or throw its exception in (an ``Exception``; anything else,
        e.g. a cancellation, is not Salt's answer and propagates); returns the
        outcome for :meth:`ServerConnection.respond`. After a Salt call is
        answered the exchange never ends in an exception: errors become responses."""
        step = yield from self.steps_while(lambda call: True)
        assert not isinstance(step, Effect)
        return step

    def steps_while(self, allowed: Callable[[Effect], bool]) -> Generator[Effect, Any, Step]:
        """:meth:`steps` as long as each Salt call is ``allowed``; returns the
        outcome, or the first call not allowed (not yielded: the exchange stops there)."""
        step = self.start()
        while isinstance(step, Effect) and allowed(step):
            try:
                result = yield step
            except Exception as exc:
                step = self.fail(exc)
            else:
                step = self.resume(result)
        return step

    def start(self) -> Step:
        return self._step(lambda: next(self._handler))

    def resume(self, result: Any) -> Step:
        return self._step(lambda: self._handler.send(result))

    def fail(self, exc: BaseException) -> Step:
        """Feed a Salt call's exception in; uncaught, it becomes an error response."""

        def throw() -> Step:
            try:
                return self._handler.throw(exc)
            except type(exc):
                status, reason = classify_salt_error(exc)
                if status == 500:
                    self.error = exc
                # RFC 9110 §15.5.2: a 401 names its scheme, as every other 401 here does
                challenge = (("www-authenticate", "Session"),) if status == 401 else ()
                return self._error(status, reason, challenge)

        return self._step(throw)

    def _step(self, advance: Callable[[], Step]) -> Step:
        try:
            step = advance()
        except StopIteration as stop:
            step = stop.value
        except HTTPError as exc:
            step = self._error(exc.status, exc.reason, exc.headers)
        except Exception as exc:  # a bug: answer 500, never a traceback to the client
            self.error = exc
            step = self._error(500, "internal server error")
        if self._headers:
            if isinstance(step, Response):
                step = Response(step.status, step.body, step.headers + self._headers, step.content_type)
            elif isinstance(step, AcceptEventStream):  # a browser's cross-origin EventSource needs them too
                step = replace(step, headers=step.headers + self._headers)
        return step

    def _error(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        body = {"status": status_line(status), "return": reason}
        return Response(status, serialize(body, self._media), headers, self._media)


class App:
    """Routes requests to the handlers for one master's settings."""

    def __init__(
        self,
        settings: Settings,
        handlers: Mapping[str, Callable[[Context], Handler]] = rest.HANDLERS,
        health: Callable[[], Health] = not_following,
        metrics: Callable[[str], Exposition] = no_metrics,
        stats: Callable[[float], Mapping[str, Any]] = no_stats,
        site: Site | None = None,
    ) -> None:
        """``handlers``: route name → handler (default: the REST endpoints);
        ``health``: the event-bus link's state, for ``GET /health``
        (:meth:`saltnado_core.buslink.EventBusLink.health`; default: never ok);
        ``metrics``: the exposition for ``GET /metrics`` in a media type of
        :data:`~saltnado_core.negotiation.EXPOSITION_OFFERED`, and ``stats``: the
        sections for ``GET /stats`` at a wall-clock time (both made by the
        runtime, ``saltnado_runtime.metrics``; default: nothing);
        ``site``: the web apps served beside the API (default: those ``settings``
        configure, without saltnado's own page, whose directory the runtime knows)."""
        self.settings = settings
        self.site = site if site is not None else Site.from_settings(settings)
        self.router = settings.router()
        self._handlers = handlers
        self._health = health
        self._metrics = metrics
        self._stats = stats

    def handle(self, request: Request, now: float) -> Exchange:
        """Start handling ``request``; ``now`` is the binding's wall-clock time."""
        cors: tuple[tuple[str, str], ...] = ()
        origin = allowed_origin(request.header("origin"), self.settings.cors_origin)
        if origin is not None:
            cors = (("access-control-allow-origin", origin), ("vary", "Origin"))
            if origin != "*":
                cors += (("access-control-allow-credentials", "true"),)
        shown = request.path  # a 404 names the path as sent
        refused = self._refusal(request)
        if refused is not None:
            return Exchange(_raise(refused), choose_media(request.header("accept")) or JSON, cors)
        if self.settings.root_prefix:
            request = under_prefix(request, self.settings.root_prefix)
        route = self.router.match(request.path)
        name = route.name if route is not None else None
        if request.method == "OPTIONS":
            return Exchange(_answer(PREFLIGHT), JSON, cors, name)
        accept = request.header("accept")
        files = self.site.handler(request, name)
        if files is not None:  # a path under a mount, or a browser navigation to the app
            return Exchange(files, choose_media(accept) or JSON, cors, FILES_ROUTE)
        if self.site.overridable(request, name):
            cors += VARY_ACCEPT  # a browser navigation here would have got the app
        if route is None:
            # RFC 9110 §15.5.5: no such resource is 404 whatever the Accept (SaltGUI
            # asks for optional /static/salt-motd.txt with Accept: text/plain and
            # takes anything but 404 as an error); the body in JSON unless YAML is asked.
            media = choose_media(accept) or JSON
            # The path as sent, tokens masked: a mistyped stream URL holds one.
            shown = redact_tokens(redact_path(shown, self.settings.token_length))
            return Exchange(_raise(HTTPError(404, f"no such resource: {shown}")), media, cors)
        offered = _ROUTE_OFFERED.get(route.name, OFFERED)
        chosen = choose_media(accept, offered)
        if chosen is None:
            reason = f"cannot answer with any type in Accept; use {' or '.join(offered)}"
            return Exchange(_answer(error_response(406, reason)), JSON, cors, name)
        media = chosen if chosen in OFFERED else JSON  # a stream's errors (401 …) are JSON, /metrics' too
        context = Context(request, route, now, self.settings, media, self._health, self._metrics, self._stats)
        return Exchange(self._handlers[route.name](context), media, cors, name)

    def route(self, request: Request) -> Route | None:
        """The route ``request`` matches, or None."""
        return self.router.match(request.path)

    def _refusal(self, request: Request) -> HTTPError | None:
        """The error for a request refused whatever it asks: a client address
        ``authorized_ips`` does not list (403 "Bad IP", rest_cherrypy's words), a
        path outside ``root_prefix`` (404)."""
        allowed = self.settings.authorized_ips
        if allowed is not None and not allowed.allows(request.client):
            return HTTPError(403, "Bad IP")
        prefix = self.settings.root_prefix
        if prefix and under_prefix(request, prefix) is request:
            shown = redact_tokens(redact_path(request.path, self.settings.token_length))
            return HTTPError(404, f"no such resource: {shown} (the API is under {prefix})")
        return None


    def refusal(self, head: Request, now: float) -> Generator[Effect, Any, Response | None]:
        """The answer to a request known from its head alone, before its body is
        sent (for ``Expect: 100-continue``), or None to ask for the body.

        The handler runs on the head as far as its token check (Salt calls that
        only read: :data:`HEAD_CALLS`, yielded like :meth:`Exchange.steps`'); an
        answer it gives by then with a status the body cannot change
        (:data:`HEAD_STATUSES`: no such resource, method not allowed,
        unacceptable ``Accept``, no valid token) refuses the request.
        """
        step = yield from self.handle(head, now).steps_while(lambda call: isinstance(call, HEAD_CALLS))
        # A Salt call that acts, or reads the body's lowstate, stops it: the body is needed.
        return step if isinstance(step, Response) and step.status in HEAD_STATUSES else None


# Routes answered with other media types than JSON and YAML, and what they offer:
# text/event-stream (EventSource sends "Accept: text/event-stream"), a metrics exposition.
_ROUTE_OFFERED: dict[str, tuple[str, ...]] = {
    **{kind.value: STREAM_OFFERED for kind in StreamKind if kind.transport is Transport.SSE},
    "metrics": EXPOSITION_OFFERED,
}

# The route name of a request answered by a web-app mount (saltnado_core.static):
# one label for every file, whatever its path
FILES_ROUTE = "files"

# What a handler may do and decide before the request's body is read.
HEAD_CALLS = (GetToken, GetAuthList)
HEAD_STATUSES = frozenset({401, 403, 404, 405, 406})


def under_prefix(request: Request, prefix: str) -> Request:
    """``request`` as the API sees it under ``root_prefix`` ``prefix``: ``/api/login``
    → ``/login``, ``/api`` and ``/api/`` → ``/``; ``request`` itself when its path is
    not under ``prefix``."""
    path = request.path
    if path != prefix and not path.startswith(prefix + "/"):
        return request
    rest = path[len(prefix):] or "/"
    return replace(request, target=rest + request.target[len(path):])


def _answer(response: Response) -> Handler:
    return response
    yield  # pragma: no cover - makes this a generator


def _raise(error: HTTPError) -> Handler:
    raise error
    yield  # pragma: no cover
