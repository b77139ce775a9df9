"""The driving loop every binding runs (saltnado_core.driving) and its synchronous
runner for tests (saltnado_core.testing): what each step is, and what a Salt
failure, a cancellation and an unplanned call do."""

from __future__ import annotations

import pytest

from saltnado_core import App, EventStreams, GetToken, Limits, ServerConnection, Settings
from saltnado_core.app import AcceptEventStream, AcceptWebSocket
from saltnado_core.driving import Served, serve_requests
from saltnado_core.http import Request, Response
from saltnado_core.salt_calls import GetAuthList
from saltnado_core.testing import Driver, Unanswered

from core_literals import NOW, RECORD, TOKEN

SETTINGS = Settings(websockets=True, disable_ssl=True)
GET_ROOT = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
GET_EVENTS = f"GET /events HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {TOKEN}\r\n\r\n".encode()


class SaltDaemonNotRunning(Exception):  # named like Salt's: the core classifies it by name
    pass


class Cancelled(BaseException):  # what trio or asyncio throws into an awaiting task
    pass


def connection(data: bytes = b"") -> ServerConnection:
    """A new connection that has read ``data`` (none: not even EOF)."""
    conn = ServerConnection(Limits(), EventStreams())
    if data:
        conn.receive_data(data)
    return conn


def test_steps_are_each_salt_call_then_served_per_request() -> None:
    conn = connection(GET_ROOT + GET_EVENTS)
    clock = iter([NOW, NOW + 1])
    steps = serve_requests(conn, App(SETTINGS), lambda: next(clock))  # read as each request starts
    first = next(steps)
    assert isinstance(first, Served) and first.status == 200 and first.request.target == "/"
    assert next(steps) == GetToken(TOKEN)
    assert steps.send(RECORD) == GetAuthList(RECORD)
    served = steps.send([".*"])
    assert isinstance(served, Served) and served.status == 200 and served.error is None
    assert served.outcome == AcceptEventStream(NOW + 100, token=TOKEN)
    assert next(steps, None) is None


def test_a_salt_failure_thrown_in_becomes_the_response() -> None:
    steps = serve_requests(connection(GET_EVENTS), App(SETTINGS), lambda: NOW)
    next(steps)
    served = steps.throw(SaltDaemonNotRunning())
    assert isinstance(served, Served) and served.status == 503 and served.error is None


def test_an_unexpected_error_is_a_500_recorded_for_the_log() -> None:
    steps = serve_requests(connection(GET_EVENTS), App(SETTINGS), lambda: NOW)
    next(steps)
    bug = ValueError("a bug")
    served = steps.throw(bug)
    assert isinstance(served, Served) and served.status == 500 and served.error is bug


def test_a_cancellation_is_not_salts_answer_and_propagates() -> None:
    conn = connection(GET_EVENTS)
    steps = serve_requests(conn, App(SETTINGS), lambda: NOW)
    next(steps)
    with pytest.raises(Cancelled):
        steps.throw(Cancelled())
    assert conn.data_to_send() == b""  # nothing was answered


@pytest.mark.parametrize(
    ("outcome", "status"),
    [(Response(404, b"{}"), 404), (AcceptEventStream(NOW), 200), (AcceptWebSocket("all_events", NOW), 101)],
)
def test_served_status_is_the_status_line_sent(outcome: Response, status: int) -> None:
    assert Served(Request("GET", "/", (), b""), outcome).status == status


def test_an_unplanned_salt_call_fails_the_test_not_the_request() -> None:
    driver = Driver(connection(GET_EVENTS), App(SETTINGS), {GetToken: RECORD}, now=NOW)
    with pytest.raises(Unanswered):
        driver.serve()
    assert driver.calls == [GetToken(TOKEN), GetAuthList(RECORD)]


def test_answers_from_a_table_or_a_callable_alike() -> None:
    def salt(call: object) -> object:
        if isinstance(call, GetToken):
            raise SaltDaemonNotRunning()
        raise Unanswered(call)

    table = Driver(connection(), App(SETTINGS), {GetToken: SaltDaemonNotRunning()}, now=NOW)
    function = Driver(connection(), App(SETTINGS), salt, now=NOW)
    assert table.feed(GET_EVENTS) == function.feed(GET_EVENTS)
    assert [s.status for s in table.served] == [s.status for s in function.served] == [503]
