"""Tokens off the URL: the websocket streams take the token from ``X-Auth-Token``,
a ``saltnado.token.<token>`` subprotocol or the ``session_id`` cookie, on the
token-less routes ``/all_events`` and ``/formatted_events`` — and the reference's
``/<route>/<token>`` URLs answer exactly as before. No token is ever taken from a
query string, and none is ever written back in a response.
"""

from __future__ import annotations

import json

import pytest

from saltnado_core import App, EventStreams, Limits, Phase, SaltEvent, ServerConnection, Settings, all_events_frame
from saltnado_core.salt_calls import GetAuthList, GetToken
from saltnado_core.testing import Driver

from core_literals import NOW, RECORD, TOKEN
from test_core_websocket import READY, RFC_KEY, SWITCHING, UNAUTHORIZED

SETTINGS = Settings(websockets=True, disable_ssl=True)
SWITCHING_SALTNADO = SWITCHING.replace(b"\r\n\r\n", b"\r\nsec-websocket-protocol: saltnado\r\n\r\n")
OTHER = "fedcba9876543210" * 4  # a token Salt does not know


def upgrade(target: str, *headers: str) -> bytes:
    lines = [
        f"GET {target} HTTP/1.1", "Host: salt.example:8000", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {RFC_KEY}", "Sec-WebSocket-Version: 13", *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Salt:
    """Salt's token store: knows TOKEN only."""

    def __call__(self, call: object) -> object:
        if isinstance(call, GetToken):
            return RECORD if call.token == TOKEN else {}
        if isinstance(call, GetAuthList):
            return [".*"]
        raise AssertionError(call)


STREAMS: list[EventStreams] = []  # each connect()'s, newest last


def connect(raw: bytes) -> tuple[Driver, bytes]:
    streams = EventStreams()
    STREAMS.append(streams)
    driver = Driver(ServerConnection(Limits(), streams), App(SETTINGS), Salt(), now=NOW)
    return driver, driver.feed(raw)


@pytest.mark.parametrize("route", ["all_events", "formatted_events"])
@pytest.mark.parametrize(
    ("headers", "answer"),
    [
        ((f"X-Auth-Token: {TOKEN}",), SWITCHING),
        ((f"Cookie: theme=dark; session_id={TOKEN}",), SWITCHING),
        ((f"Sec-WebSocket-Protocol: saltnado, saltnado.token.{TOKEN}",), SWITCHING_SALTNADO),
        ((f"Sec-WebSocket-Protocol: saltnado.token.{TOKEN}", "Sec-WebSocket-Protocol: chat, saltnado"),
         SWITCHING_SALTNADO),  # over two headers, among others
    ],
    ids=["header", "cookie", "subprotocol", "subprotocols-over-two-headers"],
)
def test_token_less_route_takes_the_token_another_way(route: str, headers: tuple[str, ...], answer: bytes) -> None:
    driver, out = connect(upgrade(f"/{route}", *headers))
    assert out == answer  # the 101 names "saltnado" (if offered), never the token
    assert driver.calls == [GetToken(TOKEN), GetAuthList(RECORD)]
    assert driver.conn.phase is Phase.AWAIT_READY and driver.conn.stream_token == TOKEN


def test_token_less_route_streams_after_ready() -> None:
    driver, out = connect(upgrade("/all_events", f"Sec-WebSocket-Protocol: saltnado, saltnado.token.{TOKEN}") + READY)
    assert out == SWITCHING_SALTNADO and driver.conn.phase is Phase.STREAMING
    event = SaltEvent("salt/key", {"id": "m"})
    STREAMS[-1].dispatch(event)
    assert driver.conn.data_to_send() == all_events_frame(event)


@pytest.mark.parametrize(
    "headers",
    [
        (),  # no token at all
        (f"X-Auth-Token: {OTHER}",),  # one Salt does not know
        ("X-Auth-Token: not-a-token",),  # not token-shaped: Salt is not asked
        ("Sec-WebSocket-Protocol: saltnado, saltnado.token.",),
        ("Cookie: session_id=",),
        ("Sec-WebSocket-Protocol: saltnado",),
    ],
)
def test_missing_or_invalid_token_is_401_before_any_upgrade(headers: tuple[str, ...]) -> None:
    driver, out = connect(upgrade("/all_events", *headers) + READY)
    assert out == UNAUTHORIZED
    assert driver.conn.phase is not Phase.STREAMING
    assert all(call == GetToken(OTHER) for call in driver.calls)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ((f"Sec-WebSocket-Protocol: saltnado.token.{TOKEN}",),
         "offer the 'saltnado' subprotocol with the token one: it is the one the server answers with"),
        ((f"Sec-WebSocket-Protocol: saltnado, saltnado.token.{TOKEN}, saltnado.token.{OTHER}",),
         "offer at most one saltnado.token.<token> subprotocol"),
    ],
)
def test_token_subprotocol_misuse_is_400_without_the_token(headers: tuple[str, ...], reason: str) -> None:
    driver, out = connect(upgrade("/all_events", *headers))
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert json.loads(out.partition(b"\r\n\r\n")[2])["return"] == reason
    assert TOKEN.encode() not in out and driver.calls == []


@pytest.mark.parametrize("key", ["token", "salt_token", "session_id", "X-Auth-Token", "password"])
def test_no_token_in_a_query_string(key: str) -> None:
    for raw in (
        upgrade(f"/all_events?{key}={TOKEN}"),
        f"GET /events?{key}={TOKEN} HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    ):
        driver, out = connect(raw)
        assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"no token in the query string" in out and TOKEN.encode() not in out
        assert driver.calls == []  # Salt never sees it


def test_the_reference_url_is_unchanged() -> None:
    """``/all_events/<token>`` answers the plain 101 (no subprotocol), ignores the
    query string as the reference does, and the path's token wins over any other."""
    driver, out = connect(upgrade(f"/all_events/{TOKEN}?x=1&token=ignored", f"X-Auth-Token: {OTHER}"))
    assert out == SWITCHING and driver.calls == [GetToken(TOKEN), GetAuthList(RECORD)]
    driver, out = connect(upgrade(f"/all_events/{OTHER}", f"X-Auth-Token: {TOKEN}"))
    assert out == UNAUTHORIZED and driver.calls == [GetToken(OTHER)]


def test_the_reference_url_with_subprotocol_saltnado_gets_it_named() -> None:
    _, out = connect(upgrade(f"/all_events/{TOKEN}", "Sec-WebSocket-Protocol: saltnado"))
    assert out == SWITCHING_SALTNADO


def test_a_foreign_origin_is_403_whatever_carries_the_token() -> None:
    # A page of another origin gets the operator's cookie sent along: the origin check comes first.
    driver, out = connect(upgrade("/all_events", "Origin: https://evil.example", f"Cookie: session_id={TOKEN}"))
    assert out.startswith(b"HTTP/1.1 403 Forbidden\r\n") and driver.calls == []


@pytest.mark.parametrize("route", ["all_events", "events", "formatted_events"])
def test_a_filter_is_compiled_only_for_a_client_allowed_to_stream(route: str) -> None:
    # 401 first: an anonymous client cannot make the server compile patterns.
    from saltnado_core.tagfilter import _compiled

    compiled = _compiled.cache_info().misses
    _, out = connect(upgrade(f"/{route}?tag=salt/{route}/*/never-seen-before/*", f"X-Auth-Token: {OTHER}"))
    assert out == UNAUTHORIZED and _compiled.cache_info().misses == compiled
    _, out = connect(upgrade(f"/{route}?tag=salt/{route}/*/never-seen-before/*", f"X-Auth-Token: {TOKEN}"))
    assert _compiled.cache_info().misses == compiled + 1  # the test can fail: a valid token compiles it
