"""Faults in the core, bytes in and out: the event bus going down and coming back
(notices to every stream, the master taken as unavailable meanwhile), and a
connection closed while its request is being answered (shutdown)."""

from __future__ import annotations

import errno
import json

import pytest

from saltnado_core import App, EventStreams, Limits, Outbox, SaltEvent, ServerConnection, Settings, encode_pub_message
from saltnado_core.app import Context, Handler
from saltnado_core.buslink import EventBusLink, salt_stamp
from saltnado_core.http import Response
from saltnado_core.messages import http_chunk, text_frame
from saltnado_core.pacing import Pacing
from saltnado_core.salt_calls import (
    MASTER_DOWN,
    FireEvent,
    GetToken,
    MakeToken,
    MasterUnavailable,
    PublishGrains,
    RemoveToken,
    RunLowstate,
    classify_salt_error,
    needs_master,
)
from saltnado_core.subscriptions import Subscriptions
from saltnado_core.testing import Driver

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20 UTC
STAMP = "2023-11-14T22:13:20"
REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


def down_json(stamp: str = STAMP, reason: str = "the master closed the event bus") -> bytes:
    data = {"data": {"reason": reason, "_stamp": stamp}, "tag": "saltnado/bus/down"}
    return json.dumps(data, ensure_ascii=False).encode()


def up_json(stamp: str) -> bytes:
    return json.dumps({"data": {"down_since": STAMP, "_stamp": stamp}, "tag": "saltnado/bus/up"}).encode()


def sse(tag: str, payload: bytes) -> bytes:
    return http_chunk(b"tag: " + tag.encode() + b"\ndata: " + payload + b"\n\n")


class Clients:
    """One outbox on each stream, plus an in-process subscriber to salt/job/ only."""

    def __init__(self, streams: EventStreams, subscriptions: Subscriptions) -> None:
        self.ws, self.ws2, self.sse, self.formatted = (Outbox(100, 1 << 20) for _ in range(4))
        streams.attach("all_events", self.ws, "")
        streams.attach("all_events", self.ws2, "")
        streams.attach("events", self.sse, "")
        streams.attach("formatted_events", self.formatted, "t")
        self.formatted.drain(1 << 20)  # the view every formatted client gets first
        self.hub = subscriptions.subscribe("salt/job/")

    def take(self) -> tuple[bytes, bytes, bytes, bytes]:
        ws, ws2, sse, formatted = (box.drain(1 << 20) for box in (self.ws, self.ws2, self.sse, self.formatted))
        return ws, ws2, sse, formatted


def linked() -> tuple[EventBusLink, Clients]:
    streams, subscriptions = EventStreams(), Subscriptions()
    link = EventBusLink("/srv/salt", streams, subscriptions, pacing=Pacing(bus_settle=1.0))
    clients = Clients(streams, subscriptions)
    link.connected(T0 - 60)
    link.receive_data(encode_pub_message("salt/job/1/new", {"jid": "1"}), T0 - 59)
    clients.take()
    assert clients.hub.next_event() is not None
    return link, clients


def test_bus_down_then_up_is_one_notice_each_on_every_stream() -> None:
    link, clients = linked()
    assert link.master_available
    link.lost(None, T0)
    ws, ws2, events, formatted = clients.take()
    assert ws == text_frame(down_json()) and formatted == ws
    assert ws2 is ws  # encoded once, the same bytes for every websocket
    assert events == sse("saltnado/bus/down", down_json())
    assert clients.hub.next_event() == SaltEvent(
        "saltnado/bus/down", {"reason": "the master closed the event bus", "_stamp": STAMP}
    )  # whatever its prefix
    assert not link.master_available

    # Retries failing, a connection reset at once: still one outage, no more notices.
    assert link.unavailable(REFUSED, T0 + 1) > 0
    link.connected(T0 + 2)
    link.lost(ConnectionResetError(errno.ECONNRESET, "reset"), T0 + 2.01)
    link.unavailable(REFUSED, T0 + 2.1)
    link.connected(T0 + 3)
    link.tick(T0 + 3.5)  # not settled yet
    assert clients.take() == (b"", b"", b"", b"") and clients.hub.next_event() is None
    assert not link.master_available

    link.tick(T0 + 4)  # lasted bus_settle seconds: the master is back
    up = up_json("2023-11-14T22:13:24")
    assert clients.take() == (text_frame(up), text_frame(up), sse("saltnado/bus/up", up), text_frame(up))
    assert clients.hub.next_event() == SaltEvent(
        "saltnado/bus/up", {"down_since": STAMP, "_stamp": "2023-11-14T22:13:24"}
    )
    assert link.master_available
    link.tick(T0 + 10)
    assert clients.take() == (b"", b"", b"", b"")


def test_bytes_on_a_new_connection_mean_the_master_is_back_at_once() -> None:
    link, clients = linked()
    link.lost(None, T0)
    clients.take()
    link.connected(T0 + 5)
    link.receive_data(encode_pub_message("salt/auth", {}), T0 + 5.25)
    up = up_json("2023-11-14T22:13:25.250000")
    ws, _, _, _ = clients.take()
    assert ws == text_frame(up) + text_frame(b'{"data": {}, "tag": "salt/auth"}')  # the notice first


def test_a_client_joining_while_down_is_told_first_thing() -> None:
    streams = EventStreams()
    link = EventBusLink("/srv/salt", streams)
    assert link.master_available  # before the first attempt: let Salt decide
    link.unavailable(REFUSED, T0)  # the master is down at start-up
    assert not link.master_available
    reason = "event bus unavailable (Connection refused)"  # never the socket's path
    late_ws, late_sse, late_formatted = Outbox(10, 1 << 20), Outbox(10, 1 << 20), Outbox(10, 1 << 20)
    streams.attach("all_events", late_ws, "")
    streams.attach("events", late_sse, "")
    streams.attach("formatted_events", late_formatted, "t", delta=True)
    assert late_ws.drain(1 << 20) == text_frame(down_json(reason=reason))
    assert late_sse.drain(1 << 20) == sse("saltnado/bus/down", down_json(reason=reason))
    view = late_formatted.drain(1 << 20)
    assert view.startswith(text_frame(b'{"minions": {}}')) and view.endswith(text_frame(down_json(reason=reason)))
    link.connected(T0 + 1)
    link.tick(T0 + 2)
    late_ws.drain(1 << 20)
    late = Outbox(10, 1 << 20)
    streams.attach("all_events", late, "")
    assert late.drain(1 << 20) == b""  # back up: nothing to tell


def test_the_first_connection_is_no_news() -> None:
    streams = EventStreams()
    box = Outbox(10, 1 << 20)
    streams.attach("all_events", box, "")
    link = EventBusLink("/srv/salt", streams)
    link.connected(T0)
    link.tick(T0 + 5)
    assert box.drain(1 << 20) == b"" and link.master_available


def test_salt_stamp() -> None:
    assert salt_stamp(T0) == STAMP
    assert salt_stamp(T0 + 0.5) == "2023-11-14T22:13:20.500000"


def test_which_calls_need_the_master_and_what_its_absence_is() -> None:
    needing = [PublishGrains(None, "t"), RunLowstate({"client": "local"}), FireEvent("t", {})]
    local = [MakeToken("u", "p", "auto"), GetToken("t"), RemoveToken("t")]  # the token store is on disk
    assert [needs_master(c) for c in needing + local] == [True] * 3 + [False] * 3
    assert classify_salt_error(MasterUnavailable()) == (503, MASTER_DOWN)


# -- closing a connection whose request is being answered (shutdown) ---------------------

REQUEST = b"POST /run HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"


def answering() -> ServerConnection:
    conn = ServerConnection(Limits(), EventStreams())
    conn.receive_data(REQUEST + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # and one pipelined
    assert conn.next_request() is not None
    return conn


def test_close_lets_the_request_being_answered_finish_then_closes() -> None:
    conn = answering()
    conn.close()
    assert not conn.finished and conn.data_to_send() == b""
    conn.respond(Response(200, b'{"return": []}'))
    assert conn.data_to_send() == (
        b"HTTP/1.1 200 OK\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b"content-length: 14\r\nconnection: close\r\n\r\n"
        b'{"return": []}'
    )
    assert conn.finished and conn.next_request() is None  # the pipelined request is not served


@pytest.mark.parametrize("target", [b"/all_events/" + b"a" * 64, b"/events"])
def test_close_refuses_a_stream_asked_for_meanwhile(target: bytes) -> None:
    from saltnado_core.app import AcceptEventStream, AcceptWebSocket

    conn = ServerConnection(Limits(), EventStreams())
    conn.receive_data(
        b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert conn.next_request() is not None
    conn.close()
    outcome = AcceptEventStream(T0) if target == b"/events" else AcceptWebSocket("all_events", T0, "a" * 64)
    conn.respond(outcome)
    status_line, _, body = conn.data_to_send().partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"connection: close" in status_line
    assert json.loads(body) == {"status": "503 Service Unavailable", "return": "the server is shutting down"}
    assert conn.finished


def test_abandon_request_answers_503_now_and_drops_the_late_answer() -> None:
    conn = answering()
    conn.close()
    assert conn.abandon_request("the server is shutting down; the request was not answered in time")
    head, _, body = conn.data_to_send().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"connection: close" in head
    assert json.loads(body)["return"] == "the server is shutting down; the request was not answered in time"
    assert conn.finished
    conn.respond(Response(200, b"{}"))  # Salt answered after all: too late
    assert conn.data_to_send() == b""
    assert not conn.abandon_request("again")


def test_close_of_an_idle_or_half_received_connection_is_at_once() -> None:
    idle = ServerConnection(Limits(), EventStreams())
    assert not idle.abandon_request("nothing to answer")
    idle.close()
    assert idle.finished and idle.data_to_send() == b""
    half = ServerConnection(Limits(), EventStreams())
    half.receive_data(REQUEST[:20])
    assert half.next_request() is None
    half.close()
    assert half.finished and half.data_to_send() == b""


# -- a client that does not read its responses --------------------------------------------


def hundred_bytes(_: Context) -> Handler:
    return Response(200, b"x" * 100)  # ~190 bytes with the head
    yield  # pragma: no cover - a handler is a generator


def test_requests_wait_while_the_client_has_not_taken_its_responses() -> None:
    conn = ServerConnection(Limits(write_chunk_bytes=300), EventStreams())
    driver = Driver(conn, App(Settings(), {"root": hundred_bytes}), {}, now=T0)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 10)  # pipelined, nothing read yet
    driver.serve()
    assert len(driver.served) == 2 and conn.input_paused  # past 300 bytes waiting: no more requests
    assert len(conn.data_to_send()) > 300  # the writer takes them …
    assert not conn.input_paused
    driver.serve()  # … and the binding asks again
    assert len(driver.served) == 4 and conn.input_paused


def test_a_timed_out_client_is_cut_off() -> None:
    from saltnado_core import Timeouts

    conn = ServerConnection(Limits(timeouts=Timeouts(header_timeout=5)), EventStreams())
    conn.receive_data(b"GET / HTTP/1.1\r\n")
    conn.tick(100.0)
    assert not conn.cut_off
    assert conn.tick(106.0)
    assert conn.cut_off and conn.finished and conn.data_to_send().startswith(b"HTTP/1.1 408 ")


# -- memory that churn would leak ------------------------------------------------------------


def test_no_module_holds_an_exception_instance() -> None:
    """An exception instance raised again and again chains every traceback (and the
    frames they hold) onto itself: 3 KB per unauthenticated request, found by
    benchmarks/churn.py. Raise a new one each time (a class works: ``raise Cls``)."""
    import importlib
    import pkgutil

    import saltnado_core

    shared = [
        f"{info.name}.{name}"
        for info in pkgutil.iter_modules(saltnado_core.__path__, "saltnado_core.")
        for name, value in vars(importlib.import_module(info.name)).items()
        if isinstance(value, BaseException)
    ]
    assert shared == []

