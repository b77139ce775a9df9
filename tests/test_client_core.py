"""The client's sans-IO core, bytes in and steps out: no socket, no loop.

The server's side is played by wsproto's and h11's own server connections, so
the bytes the follower reads are what a real websocket server writes."""

from __future__ import annotations

import json
from typing import Any

import h11
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Pong, RejectConnection, RejectData, Request
from wsproto.events import TextMessage

from saltnado_client import events as ev
from saltnado_client.follower import (
    Backoff,
    Close,
    Credentials,
    Deliver,
    Endpoint,
    Fail,
    Follower,
    FollowerMisuse,
    Open,
    Phase,
    Receive,
    Refused,
    Sleep,
    stream_target,
)

ENDPOINT = Endpoint.from_url("http://127.0.0.1:8000")
TOKEN = "ab" * 20


class FakeServer:
    """One websocket connection's server side (wsproto), for one follower connection."""

    def __init__(self) -> None:
        self.ws = WSConnection(ConnectionType.SERVER)
        self.request: Request | None = None
        self.received: list[Any] = []

    def take(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Request):
                self.request = event
            else:
                self.received.append(event)

    def accept(self) -> bytes:
        return self.ws.send(AcceptConnection())

    def message(self, tag: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
        body: dict[str, Any] = {"id": event_id} if event_id else {}
        body.update(data=data, tag=tag)
        return self.ws.send(TextMessage(data=json.dumps(body)))

    def reject(self, status: int, reason: str) -> bytes:
        body = json.dumps({"status": f"{status} X", "return": reason}).encode()
        return self.ws.send(RejectConnection(status_code=status, headers=[(b"content-length", str(len(body)).encode())],
                                             has_body=True)) + self.ws.send(RejectData(data=body))


def login_answer(status: int = 200, token: str = TOKEN) -> bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST /login HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    conn.next_event(), conn.next_event()
    body = json.dumps({"return": [{"token": token, "expire": 1.0}]} if status == 200 else
                      {"status": f"{status} X", "return": "Authentication failure"}).encode()
    return (conn.send(h11.Response(status_code=status, headers=[("Content-Length", str(len(body)))]))
            + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))


def steps_until_io(f: Follower) -> tuple[list[Any], Any]:
    """Delivered items, and the first step that is not a delivery."""
    items = []
    while isinstance(step := f.next_step(), Deliver):
        items.append(step.item)
    return items, step


def open_stream(f: Follower, server: FakeServer) -> list[Any]:
    """Open → connected → handshake answered: the items delivered."""
    assert f.next_step() == Open(ENDPOINT)
    f.connected()
    server.take(f.data_to_send())
    f.receive_data(server.accept())
    items, step = steps_until_io(f)
    assert isinstance(step, Receive)
    server.take(f.data_to_send())
    return items


def follower(**kwargs: Any) -> Follower:
    kwargs.setdefault("token", TOKEN)
    kwargs.setdefault("backoff", Backoff(0.1, 2.0, rand=lambda: 1.0))
    return Follower(ENDPOINT, **kwargs)


def test_endpoint_and_target() -> None:
    assert Endpoint.from_url("https://salt.example/api/") == Endpoint("salt.example", 443, True, "/api")
    assert Endpoint.from_url("ws://[::1]:81").host_header == "[::1]:81"
    with pytest.raises(ValueError):
        Endpoint.from_url("ftp://x")
    assert stream_target("", ["salt/job/*/ret/*", "a[b]"], "e1-5") == (
        "/all_events?ids=1&tag=salt/job/*/ret/*&tag=a%5Bb%5D&last_event_id=e1-5")


def test_follows_events_with_ids_and_the_token_in_a_header() -> None:
    f, server = follower(tags=["salt/job/*"]), FakeServer()
    assert open_stream(f, server) == [ev.Connected(None, 1)]
    assert server.request is not None and server.request.target == "/all_events?ids=1&tag=salt/job/*"
    headers = dict(server.request.extra_headers)
    assert headers[b"x-auth-token"] == TOKEN.encode() and TOKEN not in server.request.target
    assert server.received == [TextMessage(data="websocket client ready")]
    f.receive_data(server.message("salt/job/1/new", {"n": 1}, "e1-1") + server.message("salt/job/1/ret/m", {"n": 2},
                                                                                        "e1-2"))
    items, step = steps_until_io(f)
    assert items == [ev.Event("salt/job/1/new", {"n": 1}, "e1-1"), ev.Event("salt/job/1/ret/m", {"n": 2}, "e1-2")]
    assert isinstance(step, Receive) and f.last_event_id == "e1-2"


def test_nothing_is_read_while_parsed_items_wait_for_the_consumer() -> None:
    f, server = follower(), FakeServer()
    open_stream(f, server)
    f.receive_data(b"".join(server.message("t", {"n": n}, f"e1-{n + 1}") for n in range(50)))
    for n in range(50):  # every parsed item goes out before another read is asked for
        step = f.next_step()
        assert isinstance(step, Deliver) and step.item.data == {"n": n}
    assert isinstance(f.next_step(), Receive)


def test_fed_one_byte_at_a_time() -> None:
    f, server = follower(), FakeServer()
    f.next_step()
    f.connected()
    server.take(f.data_to_send())
    wire = server.accept() + server.message("t", {"x": 1}, "e1-1") + server.ws.send(Ping(b"p"))
    items: list[Any] = []
    for byte in wire:
        f.receive_data(bytes([byte]))
        more, _ = steps_until_io(f)
        items += more
    assert items == [ev.Connected(None, 1), ev.Event("t", {"x": 1}, "e1-1")]
    server.take(f.data_to_send())
    assert server.received[-1] == Pong(b"p")  # pings are answered


def test_a_close_frame_then_backoff_then_resume_from_the_last_id() -> None:
    f, server = follower(), FakeServer()
    open_stream(f, server)
    f.receive_data(server.message("t", {}, "e1-7") + server.ws.send(CloseConnection(1001, "server shutting down")))
    items, step = steps_until_io(f)
    assert items == [ev.Event("t", {}, "e1-7"),
                     ev.Disconnected("the server closed the stream: server shutting down", 0.1, "e1-7", 1001)]
    server.take(f.data_to_send())
    assert isinstance(server.received[-1], CloseConnection)  # the close is answered before the socket goes
    assert step == Close()
    f.closed()
    assert f.next_step() == Sleep(0.1)
    f.slept()
    again = FakeServer()
    assert open_stream(f, again) == [ev.Connected("e1-7", 2)]
    assert again.request is not None and again.request.target == "/all_events?ids=1&last_event_id=e1-7"


def test_eof_timeouts_and_failed_connects_all_retry_with_growing_delays() -> None:
    f = follower()
    assert f.next_step() == Open(ENDPOINT)
    f.connection_lost("Connection refused")  # nothing to close: straight to the sleep
    assert f.next_step() == Deliver(ev.Disconnected("Connection refused", 0.1, None))
    assert f.next_step() == Sleep(0.1)
    f.slept()
    open_stream(f, FakeServer())
    f.timed_out()
    assert f.next_step() == Deliver(ev.Disconnected("nothing received in 60 s", 0.1, None))  # reset once open
    assert f.next_step() == Close()
    f.closed()
    f.next_step()
    f.slept()
    f.next_step()
    f.connected()
    f.receive_data(b"")  # EOF before the handshake's answer
    items, _ = steps_until_io(f)
    assert [type(i) for i in items] == [ev.Disconnected]
    f.closed()
    assert f.next_step() == Sleep(0.2)  # not reset: no stream was opened


def test_backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() -> None:
    draws = iter([0.0, 1.0] * 10)
    backoff = Backoff(0.1, 1.0, rand=lambda: next(draws))
    assert [round(backoff.delay(), 3) for _ in range(8)] == [0.05, 0.2, 0.2, 0.8, 0.5, 1.0, 0.5, 1.0]
    backoff.reset()
    assert backoff.delay() == 0.05
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_logs_in_then_again_when_the_token_is_refused_on_a_reconnect() -> None:
    f = follower(token=None, credentials=Credentials("saltdev", "secret", "pam"))
    assert "secret" not in repr(f.credentials)
    assert f.next_step() == Open(ENDPOINT)
    f.connected()
    request = f.data_to_send()
    assert request.startswith(b"POST /login HTTP/1.1\r\n")
    assert json.loads(request.split(b"\r\n\r\n", 1)[1]) == {"username": "saltdev", "password": "secret",
                                                            "eauth": "pam"}
    f.receive_data(login_answer())
    assert f.next_step() == Close()
    f.closed()
    open_stream(f, FakeServer())
    assert f.token == TOKEN
    f.receive_data(b"")  # the stream ends (the token expired)
    steps_until_io(f)
    f.closed()
    f.next_step()
    f.slept()
    f.next_step()
    f.connected()
    server = FakeServer()
    server.take(f.data_to_send())
    f.receive_data(server.reject(401, "token expired"))
    assert f.next_step() == Close()  # no Disconnected, no wait: log in again at once
    f.closed()
    assert f.phase is Phase.LOGIN and f.next_step() == Open(ENDPOINT)
    f.connected()
    f.data_to_send()
    f.receive_data(login_answer(token="cd" * 20))
    f.next_step()
    f.closed()
    fresh = FakeServer()
    open_stream(f, fresh)
    assert fresh.request is not None and dict(fresh.request.extra_headers)[b"x-auth-token"] == b"cd" * 20


def test_a_401_for_a_fresh_token_or_without_credentials_is_final() -> None:
    f = follower(token=None, credentials=Credentials("u", "p"))
    f.next_step()
    f.connected()
    f.data_to_send()
    f.receive_data(login_answer())
    f.next_step()
    f.closed()
    f.next_step()
    f.connected()
    server = FakeServer()
    server.take(f.data_to_send())
    f.receive_data(server.reject(401, "no"))
    assert f.next_step() == Close()
    f.closed()
    step = f.next_step()
    assert isinstance(step, Fail) and isinstance(step.error, Refused) and step.error.status == 401

    g = follower()
    g.next_step()
    g.connected()
    server = FakeServer()
    server.take(g.data_to_send())
    g.receive_data(server.reject(401, "Please log in"))
    g.next_step()
    g.closed()
    step = g.next_step()
    assert isinstance(step, Fail) and str(step.error) == "401: Please log in"


def test_bad_credentials_403_and_a_bad_filter_are_final_a_503_is_retried() -> None:
    f = follower(token=None, credentials=Credentials("u", "p"))
    f.next_step()
    f.connected()
    f.data_to_send()
    f.receive_data(login_answer(401))
    f.next_step()
    f.closed()
    step = f.next_step()
    assert isinstance(step, Fail) and step.error.args == ("401: Authentication failure",)
    for status, final in [(403, True), (400, True), (503, False)]:
        g = follower()
        g.next_step()
        g.connected()
        server = FakeServer()
        server.take(g.data_to_send())
        g.receive_data(server.reject(status, "why"))
        items, step = steps_until_io(g)
        g.closed()
        if final:
            assert items == [] and Fail(Refused(status, "why")).error.args == g.next_step().error.args  # type: ignore[union-attr]
        else:
            assert items == [ev.Disconnected("the server answered 503: why", 0.1, None, 503)]
            assert g.next_step() == Sleep(0.1)


def test_notices_are_typed_and_the_resume_notice_moves_the_last_id() -> None:
    f, server = follower(last_event_id="old-3"), FakeServer()
    open_stream(f, server)
    assert server.request is not None and server.request.target.endswith("&last_event_id=old-3")
    resume = {"resumed": False, "outcome": "unknown", "reason": "another run", "last_event_id": "new-9"}
    f.receive_data(
        server.message("saltnado/resume", resume, "new-9")
        + server.message("saltnado/bus/down", {"reason": "gone", "_stamp": "s1"})
        + server.message("saltnado/bus/up", {"down_since": "s1", "_stamp": "s2"})
        + server.message("saltnado/gap", {"missed": 12})
        + server.message("saltnado/dropped", {"tag": "big", "bytes": 99})
        + server.message("salt/auth", {"id": "m"}, "new-10")
    )
    items, _ = steps_until_io(f)
    assert items == [ev.ResumeFailed("unknown", "another run", "new-9"), ev.BusDown("gone", "s1"),
                     ev.BusUp("s1", "s2"), ev.Gap(12), ev.Dropped("big", 99), ev.Event("salt/auth", {"id": "m"}, "new-10")]
    assert [i.tag for i in items][:3] == ["saltnado/resume", "saltnado/bus/down", "saltnado/bus/up"]
    assert items[0].data == resume and items[3].data == {"missed": 12}
    assert f.last_event_id == "new-10"


def test_a_message_that_is_not_the_servers_json_or_too_large_fails() -> None:
    for wire in [TextMessage(data="not json"), TextMessage(data="[1]"), TextMessage(data="x" * 2000)]:
        f, server = follower(max_message_bytes=1000), FakeServer()
        open_stream(f, server)
        f.receive_data(server.ws.send(wire))
        assert f.next_step() == Close()
        f.closed()
        step = f.next_step()
        assert isinstance(step, Fail) and isinstance(step.error, ev.ProtocolError)


def test_stop_sends_a_close_frame_and_misuse_is_refused() -> None:
    f, server = follower(), FakeServer()
    open_stream(f, server)
    with pytest.raises(FollowerMisuse):
        f.slept()
    f.stop()
    server.take(f.data_to_send())
    assert server.received[-1] == CloseConnection(1000, "client done")
    assert f.phase is Phase.STOPPED
    with pytest.raises(FollowerMisuse):
        f.connected()


def test_tags_match_the_servers() -> None:
    from saltnado_core import bounded, history, streams

    assert (ev.GAP_TAG, ev.DROPPED_TAG, ev.RESUME_TAG) == (bounded.GAP_TAG, bounded.DROPPED_TAG, history.RESUME_TAG)
    assert (ev.BUS_DOWN_TAG, ev.BUS_UP_TAG) == (streams.BUS_DOWN_TAG, streams.BUS_UP_TAG)
