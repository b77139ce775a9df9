"""The contract between the core and a binding (saltnado_core.connection's docstring):
the questions a binding asks — ``drop_deadline``, ``can_write_directly``,
``wants_write``, ``finished`` — and the core's answers to EOF and to misuse."""

from __future__ import annotations

import math

import pytest

from saltnado_core import App, EventStreams, Limits, ServerConnection, Settings
from saltnado_core.config import Dialect
from saltnado_core.connection import (
    _TRANSITIONS, ConnectionMisuse, Event, Phase, next_phase,
)
from saltnado_core.http import error_response
from saltnado_core.kinds import StreamKind
from saltnado_core.messages import text_frame
from saltnado_core.pacing import Pacing
from saltnado_core.salt_calls import GetAuthList, GetToken
from saltnado_core.testing import Driver
from test_core_websocket import READY, RECORD, SETTINGS, masked_text, upgrade_request

NOW = 1_700_000_000.0
HANDSHAKE = Pacing().close_handshake
GET_ROOT = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def driver(limits: Limits = Limits(), settings: Settings = SETTINGS) -> Driver:
    conn = ServerConnection(limits, EventStreams(), pacing=Pacing(close_handshake=HANDSHAKE))
    return Driver(conn, App(settings), {GetToken: RECORD, GetAuthList: [".*"]}, now=NOW)


def streaming() -> Driver:
    d = driver()
    d.feed(upgrade_request() + READY)
    assert d.conn.phase is Phase.STREAMING
    return d


# -- drop_deadline: when the binding drops the socket ------------------------------------


def test_no_deadline_while_the_client_is_owed_patience() -> None:
    d = driver()
    assert d.conn.drop_deadline(5.0) == math.inf  # a new connection
    d.feed(GET_ROOT)
    assert d.conn.drop_deadline(6.0) == math.inf  # kept alive after a response
    s = streaming()
    assert s.conn.drop_deadline(7.0) == math.inf  # a stream that keeps up


def test_our_close_frame_gives_the_peer_the_close_handshake_time_once() -> None:
    d = streaming()
    d.conn.close(1001, "bye")
    assert d.conn.phase is Phase.CLOSING
    assert d.conn.drop_deadline(100.0) == 100.0 + HANDSHAKE
    assert d.conn.drop_deadline(103.0) == 100.0 + HANDSHAKE  # armed once, not pushed back


def test_a_cut_off_client_gets_the_close_handshake_time() -> None:
    d = driver(Limits(outbox_max_messages=1))
    d.feed(upgrade_request() + READY)
    d.conn.data_to_send()
    d.conn.outbox.offer(text_frame(b"1"))
    d.conn.outbox.offer(text_frame(b"2"))  # over the bound: close policy
    assert d.conn.cut_off and not d.conn.can_write_directly
    assert d.conn.drop_deadline(10.0) == 10.0 + HANDSHAKE


def test_eof_with_output_left_gets_the_close_handshake_time() -> None:
    d = streaming()
    d.conn.outbox.offer(text_frame(b"queued"))
    d.conn.receive_data(b"")  # the client closed its side (and so the websocket)
    assert d.conn.finished
    assert d.conn.drop_deadline(20.0) == 20.0 + HANDSHAKE


# -- EOF: the core ends what is open -----------------------------------------------------


def test_eof_after_a_whole_request_answers_it_then_ends() -> None:
    d = driver()
    out = d.feed(GET_ROOT, b"")
    assert out.startswith(b"HTTP/1.1 200 ") and d.conn.finished


def test_eof_on_an_idle_connection_ends_it() -> None:
    d = driver()
    d.feed(GET_ROOT)
    d.feed(b"")
    assert d.conn.finished and d.conn.data_to_send() == b""


def test_eof_before_ready_and_on_an_event_stream_end_them() -> None:
    d = driver()
    d.feed(upgrade_request())
    assert d.conn.phase is Phase.AWAIT_READY
    d.feed(b"")
    assert d.conn.finished
    sse = driver()
    sse.feed(b"GET /events HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + RECORD["token"].encode() + b"\r\n\r\n")
    assert sse.conn.stream is not None and sse.conn.stream.kind is StreamKind.EVENTS
    sse.feed(b"")
    assert sse.conn.finished


def test_bytes_after_eof_are_not_read() -> None:
    d = driver()
    d.conn.receive_data(b"")
    d.conn.receive_data(GET_ROOT)  # a binding bug, not a crash: h11 would refuse it
    assert d.conn.next_request() is None and d.conn.finished


# -- direct writes ------------------------------------------------------------------------


def test_only_stream_messages_may_be_written_directly() -> None:
    d = driver()
    assert not d.conn.can_write_directly  # HTTP: the connection's own writer
    d.feed(upgrade_request())
    assert not d.conn.can_write_directly  # the 101 and the handshake
    d.feed(READY)
    assert d.conn.can_write_directly and not d.conn.wants_write
    d.conn.outbox.offer(text_frame(b"x"))
    assert d.conn.wants_write
    d.conn.data_to_send()
    assert not d.conn.wants_write
    d.feed(masked_text("anything"))
    d.conn.close(1001, "bye")
    assert not d.conn.can_write_directly  # a close is the writer's


# -- misuse and the transition table ------------------------------------------------------


def test_respond_with_no_request_awaiting_is_a_misuse() -> None:
    d = driver()
    with pytest.raises(ConnectionMisuse):
        d.conn.respond(error_response(500, "x"))
    s = streaming()
    with pytest.raises(ConnectionMisuse):
        s.conn.respond(error_response(500, "x"))


def test_a_response_after_the_connection_ended_is_dropped() -> None:
    conn = ServerConnection(Limits(), EventStreams())
    conn.receive_data(GET_ROOT)
    assert conn.next_request() is not None
    assert conn.abandon_request("shutting down")
    conn.respond(error_response(500, "late"))  # the app's late answer: dropped, no error
    assert conn.data_to_send().startswith(b"HTTP/1.1 503 ")


def test_every_transition_not_in_the_table_is_a_misuse() -> None:
    for phase in Phase:
        for event in Event:
            if (phase, event) in _TRANSITIONS:
                assert next_phase(phase, event) is _TRANSITIONS[(phase, event)]
            else:
                with pytest.raises(ConnectionMisuse, match=event.value):
                    next_phase(phase, event)


def test_stream_kinds_route_and_frame_as_the_table_says() -> None:
    assert {kind.route for kind in StreamKind} <= set(App(SETTINGS).router.names)
    assert "ws_formatted" not in App(SETTINGS).router.names  # /ws?format_events: a variant of /ws
    assert set(App(Settings(websockets=False)).router.names) & set(StreamKind) == {"events"}
    # a rest_cherrypy: block has no websockets key: its /ws is always served
    cherrypy = Settings(websockets=False, dialect=Dialect.CHERRYPY)
    assert set(App(cherrypy).router.names) & set(StreamKind) == {"events", "ws"}
    assert StreamKind.WS.frame("t", b"{}") == text_frame(b"data: {}\n\n")
    assert StreamKind.WS_FORMATTED.frame("t", b"{}") == text_frame(b"{}")
    assert StreamKind("all_events") is StreamKind.ALL_EVENTS  # the route name is the kind
    assert StreamKind.ALL_EVENTS.frame("t", b"{}") == text_frame(b"{}")
    assert StreamKind.EVENTS.frame("t", b"{}").endswith(b"tag: t\ndata: {}\n\n\r\n")
