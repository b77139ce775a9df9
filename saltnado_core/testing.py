"""Driving the core from tests: a binding's loop, run synchronously, with Salt
answered from a table or a callable instead of worker threads.

The loop is the bindings' own (:func:`saltnado_core.driving.serve_requests`, and
:meth:`Exchange.steps <saltnado_core.app.Exchange.steps>` for one request), so a
test exercises what the server runs::

    driver = Driver(ServerConnection(Limits(), EventStreams()), App(settings),
                    {GetToken: RECORD, GetAuthList: [".*"]}, now=NOW)
    assert driver.feed(request_bytes) == expected_response_bytes
    assert driver.calls == [GetToken(TOKEN), GetAuthList(RECORD)]

``answers`` is either a mapping from a Salt call's type to its result (an
exception instance is raised by Salt instead: thrown into the handler), or a
callable from the call to its result, which may raise as Salt would. A call the
test did not plan for raises :class:`Unanswered` out to the test rather than
into the handler, where it would become a quiet 500.

A :class:`~saltnado_core.files.ReadFile` is answered by ``files`` when given (a
test passes the runtime's real reader, ``saltnado_runtime.files.StaticFiles().read``,
over files it wrote: the core itself never opens one), else from ``answers`` like
a Salt call.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeVar

from .app import App
from .connection import ServerConnection
from .driving import DriveStep, Served, serve_requests
from .eventlog import FetchEvents
from .files import FileAnswer, ReadFile
from .http import Request
from .outcomes import Effect, Outcome
from .salt_calls import call_master

__all__ = ["Answers", "Driver", "ScriptedSalt", "Unanswered", "handle", "per_master"]

Answers = Mapping[type, Any] | Callable[[Effect], Any]
FileReader = Callable[[ReadFile], FileAnswer]
R = TypeVar("R")


class Unanswered(LookupError):
    """A Salt call the test's answers do not cover (a callable may raise it too)."""


def per_master(answers: Mapping[str | None, Answers]) -> Callable[[Effect], Any]:
    """Several masters, each scripted apart: a call is answered from the answers of
    the master it names (``call.master``; None: the default), as a table or a
    callable; a master with no answers, or a call its table lacks, is :class:`Unanswered`."""

    def answer(call: Effect) -> Any:
        master = call_master(call)
        if master not in answers:
            raise Unanswered(call)
        table = answers[master]
        if not isinstance(table, Mapping):
            return table(call)
        if type(call) not in table:
            raise Unanswered(call)
        result = table[type(call)]
        if isinstance(result, Exception):
            raise result
        return result

    return answer


class ScriptedSalt:
    """Salt as a test scripts it: each call answered from ``answers`` and logged."""

    def __init__(self, answers: Answers, files: FileReader | None = None) -> None:
        self.answers = answers
        self.files = files
        self.calls: list[Effect] = []  # every call asked, in order

    def ask(self, call: Effect) -> tuple[Any, Exception | None]:
        """Log ``call`` and answer it: ``(result, None)``, or ``(None, exc)`` when
        Salt raises. Raises :class:`Unanswered` if ``answers`` has nothing for it."""
        self.calls.append(call)
        if isinstance(call, ReadFile) and self.files is not None:
            try:
                return self.files(call), None
            except Exception as exc:  # as the runtime's worker thread would hand it back
                return None, exc
        if isinstance(self.answers, Mapping):
            if type(call) not in self.answers:
                raise Unanswered(call)
            answer = self.answers[type(call)]
            return (None, answer) if isinstance(answer, Exception) else (answer, None)
        try:
            return self.answers(call), None
        except Unanswered:
            raise
        except Exception as exc:  # Salt failed: the handler or stream is told, as in a binding
            return None, exc

    def run(self, steps: Generator[DriveStep, Any, R], served: Callable[[Served], Any] = lambda _: None) -> R:
        """Drive ``steps`` (:meth:`Exchange.steps` or :func:`serve_requests`) to
        its end, answering every Salt call and passing each :class:`Served` to
        ``served``; returns what the generator returns."""
        try:
            step = next(steps)
            while True:
                if isinstance(step, Served):
                    served(step)
                    step = next(steps)
                    continue
                result, error = self.ask(step)
                step = steps.send(result) if error is None else steps.throw(error)
        except StopIteration as end:
            return end.value


class Driver:
    """A binding's loop over one connection, run synchronously: feed bytes, answer
    every complete request through ``app`` (Salt from ``answers``), take the output.

    ``now`` is the wall-clock time the app judges tokens by. With ``stream_calls``
    the Salt calls a stream needs (``conn.take_salt_calls()``) are answered too,
    right after the requests; without, they wait for the test to take them.
    Subclass it to keep per-test state, or override :meth:`serve` to check the
    connection between answering and writing.
    """

    def __init__(
        self,
        conn: ServerConnection,
        app: App,
        answers: Answers,
        *,
        now: float,
        stream_calls: bool = False,
        files: FileReader | None = None,
    ) -> None:
        self.conn = conn
        self.app = app
        self.salt = ScriptedSalt(answers, files)
        self.now = now
        self.stream_calls = stream_calls
        self.served: list[Served] = []  # every request answered, in order

    @property
    def calls(self) -> list[Effect]:
        """Every Salt call asked, in order (requests' and, with ``stream_calls``, streams')."""
        return self.salt.calls

    @property
    def requests(self) -> list[Request]:
        """Every request the app answered, in order (not those the connection refused)."""
        return [served.request for served in self.served if served.by_app]

    def feed(self, *chunks: bytes | bytearray) -> bytes:
        """Each chunk as one read from the socket (``b""``: EOF), each followed by
        :meth:`serve` and ``conn.data_to_send()``; returns all that was written.
        (``bytearray``: what wsproto's frame builders return, taken as bytes.)"""
        out = b""
        for chunk in chunks:
            self.conn.receive_data(bytes(chunk))
            self.serve()
            out += self.conn.data_to_send()
        return out

    def serve(self) -> list[Served]:
        """Answer the complete requests ``conn`` holds (and, with ``stream_calls``,
        the Salt calls its stream needs); takes no output. Returns the requests
        answered now."""
        served: list[Served] = []
        self.salt.run(serve_requests(self.conn, self.app, lambda: self.now), served.append)
        self.served += served
        if self.stream_calls:
            for call in self.conn.take_salt_calls():
                if isinstance(call, FetchEvents):  # an event log's range: not a Salt call
                    continue
                self.conn.salt_call_done(call, self.salt.ask(call)[1])
        return served


def handle(
    app: App, request: Request, answers: Answers, *, now: float, files: FileReader | None = None
) -> tuple[Outcome, list[Effect]]:
    """``request`` through ``app`` alone (no connection), Salt answered from
    ``answers`` (files read by ``files``): the outcome and the calls asked, in order."""
    salt = ScriptedSalt(answers, files)
    return salt.run(app.handle(request, now).steps()), salt.calls
