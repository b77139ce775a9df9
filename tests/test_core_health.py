"""``GET /health``: answered from the event-bus link's state, literal bytes in and out.

No token, no Salt call: 200 once the bus is followed and the master counts as
available, 503 with the reason (never the socket's path) while starting, while
the bus is down, and while a new bus connection has not settled yet.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from saltnado_core import App, EventStreams, Limits, ServerConnection, Settings
from saltnado_core.buslink import EventBusLink
from saltnado_core.pacing import Pacing
from saltnado_core.testing import Driver

T0 = 1_700_000_000.0
SOCK_DIR = "/srv/salt/run/master"
GET = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
HEAD = b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n"


def answer(link: EventBusLink, request: bytes = GET) -> bytes:
    """What a fresh connection writes for ``request``; no Salt answer is scripted,
    so any Salt call would raise ``Unanswered``."""
    app = App(Settings(disable_ssl=True), health=link.health)
    driver = Driver(ServerConnection(Limits(), EventStreams()), app, {}, now=T0)
    out = driver.feed(request)
    assert driver.calls == []
    return out


def response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\ncache-control: no-store\r\n\r\n" + body
    )


def new_link() -> EventBusLink:
    return EventBusLink(SOCK_DIR, EventStreams(), pacing=Pacing(bus_settle=1.0))


def test_up_is_200_without_a_token() -> None:
    link = new_link()
    link.connected(T0)
    assert answer(link) == response(b"200 OK", b'{"status": "200 OK", "return": "event bus connected"}')


def test_starting_is_503() -> None:
    assert answer(new_link()) == response(
        b"503 Service Unavailable",
        b'{"status": "503 Service Unavailable", "return": "starting: not yet subscribed to the event bus"}',
    )


@pytest.mark.parametrize(
    ("fail", "reason"),
    [
        (lambda link: link.unavailable(FileNotFoundError(errno.ENOENT, "No such file or directory", SOCK_DIR), T0),
         b"event bus unavailable (No such file or directory)"),
        (lambda link: link.lost(None, T0), b"the master closed the event bus"),
    ],
)
def test_down_is_503_with_the_reason_and_no_path(fail: Callable[[EventBusLink], object], reason: bytes) -> None:
    link = new_link()
    link.connected(T0 - 10)
    link.tick(T0 - 5)
    fail(link)
    out = answer(link)
    body = b'{"status": "503 Service Unavailable", "return": "' + reason + b'"}'
    assert out == response(b"503 Service Unavailable", body)
    assert b"/srv" not in out and b".ipc" not in out


def test_reconnected_is_503_until_the_bus_settles_then_200() -> None:
    link = new_link()
    link.connected(T0 - 10)
    link.lost(None, T0 - 2)
    link.connected(T0 - 0.5)
    assert answer(link) == response(
        b"503 Service Unavailable",
        b'{"status": "503 Service Unavailable", "return": '
        b'"the master closed the event bus; reconnected, waiting for the bus to settle"}',
    )
    link.tick(T0 + 0.5)  # lasted bus_settle: the master counts as back
    assert answer(link) == response(b"200 OK", b'{"status": "200 OK", "return": "event bus connected"}')


def test_head_gets_the_head_alone() -> None:
    link = new_link()
    link.connected(T0)
    full = response(b"200 OK", b'{"status": "200 OK", "return": "event bus connected"}')
    assert answer(link, HEAD) == full[: full.index(b"\r\n\r\n") + 4]


def test_post_is_405() -> None:
    link = new_link()
    link.connected(T0)
    out = answer(link, b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405 ") and b"\r\nallow: GET, HEAD\r\n" in out


def test_an_app_without_the_link_is_never_healthy() -> None:
    driver = Driver(ServerConnection(Limits(), EventStreams()), App(Settings(disable_ssl=True)), {}, now=T0)
    assert driver.feed(GET).startswith(b"HTTP/1.1 503 ")
