"""The loop every binding runs over a connection's requests, written once.

After feeding bytes to a :class:`ServerConnection`, a binding takes each complete
request, runs it through the :class:`App`, answers the Salt calls it yields and
hands the outcome back with ``conn.respond()``. :func:`serve_requests` is that
loop as a generator, so the trio and asyncio bindings (through
``saltnado_runtime.Service``) and the core's tests (through
:mod:`saltnado_core.testing`) run the very same steps; only how a Salt call is
run differs — awaited in a worker thread, or answered from a table::

    steps = serve_requests(conn, app, wall_clock)
    step = next(steps, None)
    while step is not None:
        if isinstance(step, Served):        # a request answered: log it
            step = next(steps, None)
        else:                               # a Salt call: run it
            step = steps.send(result)       # or steps.throw(exc); StopIteration: the end

The Salt calls a stream needs (``conn.take_salt_calls()``) are not part of it:
they outlive the request that opened the stream, so a binding starts them beside
its loop and reports each with ``conn.salt_call_done()``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from .app import App
from .connection import ServerConnection
from .http import Request, Response
from .outcomes import AcceptEventStream, Effect, Outcome

__all__ = ["DriveStep", "Served", "serve_requests"]


@dataclass(frozen=True, slots=True)
class Served:
    """One request answered (its outcome already handed to ``conn.respond()``):
    what a binding logs about it."""

    request: Request
    outcome: Outcome
    error: BaseException | None = None  # the Exchange's unexpected error (the 500), for the error log
    by_app: bool = True  # False: refused by the connection before the app saw it (a Rejection)
    # the matched route's name (None: none matched, or refused by the connection):
    # what metrics label a request with, never its path (which can hold a token)
    route: str | None = None

    @property
    def status(self) -> int:
        """The status line sent: a response's own, 200 for an event stream, 101 for a websocket."""
        if isinstance(self.outcome, Response):
            return self.outcome.status
        return 200 if isinstance(self.outcome, AcceptEventStream) else 101


DriveStep = Effect | Served


def serve_requests(
    conn: ServerConnection, app: App, wall_clock: Callable[[], float]
) -> Generator[DriveStep, Any, None]:
    """Answer every complete request ``conn`` holds now, in order.

    Yields an :data:`~saltnado_core.outcomes.Effect` (a Salt call, a file to read) for the binding to run: send its result in with
    ``send(result)``, or its exception with ``throw(exc)`` (the handler decides
    what the client is told; an ``Exception`` it does not catch becomes an error
    response, recorded in :attr:`Served.error` when unexpected). After a Salt
    call the next step is another Salt call, a :class:`Served`, or the end (once
    a ``100 Continue`` head's token check is done). Yields a :class:`Served`
    after each ``conn.respond()``: advance with ``next()``; the generator ends
    when ``conn.next_request()`` has nothing more (no complete request, or
    ``conn.input_paused``: run it again once the writer has taken
    ``conn.data_to_send()``). Requests the connection refused on its
    own (a malformed one's 400, 413, 431, 505; the 503 at the connection limit)
    are yielded as :class:`Served` too, after the others, so they are logged.
    A request whose client waits for ``100 Continue`` gets it only if the app
    does not refuse its head (:meth:`App.refusal`); a refused one is answered
    at once, its body unread, and yielded as :class:`Served`.

    ``wall_clock`` is the binding's wall clock (``time.time``), read as each
    request starts: a request that waited behind a slow one is still judged
    (token expiry) by the time it is handled, not the time its bytes arrived.
    A request is handled from the step after the previous :class:`Served` (or the
    first step) to its own :class:`Served`: that is the span a binding times.
    """
    while (request := conn.next_request()) is not None:
        exchange = app.handle(request, wall_clock())
        outcome = yield from exchange.steps()
        conn.respond(outcome)
        yield Served(request, outcome, exchange.error, route=exchange.route)
    head = conn.continue_wanted
    if head is not None:  # the client waits for 100 Continue: only an acceptable request gets it
        refusal = yield from app.refusal(head, wall_clock())
        conn.answer_head(refusal)
        if refusal is not None:
            route = app.route(head)
            yield Served(head, refusal, route=route.name if route is not None else None)
    for rejection in conn.take_rejections():  # answered by the connection itself
        yield Served(rejection.request, rejection.response, by_app=False)
