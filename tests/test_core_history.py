"""Event ids and resume: the history alone, then clients of /events and
/all_events resuming through the connection (missed events in order, then live
ones, nothing twice; a notice when the id cannot be resumed)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from saltnado_core import App, EventStreams, Limits, Outbox, SaltEvent, ServerConnection, Settings
from saltnado_core.history import (
    RESUME_TAG, Entry, EventHistory, EventId, Resume, ResumeOutcome, parse_event_id,
)
from saltnado_core.messages import event_json, sse_chunk, sse_chunk_with_id, text_frame, with_id
from saltnado_core.salt_calls import GetAuthList, GetToken
from saltnado_core.testing import Driver

from core_literals import NOW, RECORD, TOKEN
from test_core_websocket import READY, RFC_KEY, decode_server

EPOCH = "e1"
SETTINGS = Settings(websockets=True, disable_ssl=True)
ANSWERS = {GetToken: RECORD, GetAuthList: [".*"]}


def event(n: int, tag: str = "salt/job/{n}/ret/m") -> SaltEvent:
    return SaltEvent(tag.format(n=n), {"n": n})


# -- the history ----------------------------------------------------------------------


def test_ids_are_epoch_and_position() -> None:
    history = EventHistory(EPOCH, max_events=10)
    assert history.current is None
    assert [history.append("t", b"{}") for _ in range(3)] == [EventId(EPOCH, n) for n in (1, 2, 3)]
    assert str(history.current) == "e1-3" and parse_event_id("e1-3") == EventId(EPOCH, 3)


@pytest.mark.parametrize("text", ["", "e1", "e1-", "-3", "e1-03", "e 1-3", "e1-3-4", "e1--3", "é-1", "e1-1" + "0" * 19,
                                  "x" * 33 + "-1", "e1-3\n"])
def test_anything_else_is_no_id(text: str) -> None:
    assert parse_event_id(text) is None


def test_the_history_shares_the_payload_and_is_bounded_by_count_and_bytes() -> None:
    history = EventHistory(EPOCH, max_events=3, max_bytes=25)
    payloads = [b'{"n": %d, "pad": "xx"}' % n for n in range(5)]  # 21 bytes each → one fits under 25
    for payload in payloads:
        history.append("t", payload)
    assert len(history) == 1 and history.kept_bytes == 21
    [entry] = history.since(EventId(EPOCH, 4)).entries
    assert entry.payload is payloads[4]  # the same object, not a copy
    wide = EventHistory(EPOCH, max_events=3, max_bytes=1000)
    for payload in payloads:
        wide.append("t", payload)
    assert len(wide) == 3 and [e.id.position for e in wide.since(EventId(EPOCH, 2)).entries] == [3, 4, 5]


def test_resume_outcomes() -> None:
    history = EventHistory(EPOCH, max_events=3)
    for n in range(1, 6):
        history.append(f"t/{n}", b"{}")
    assert history.since(EventId(EPOCH, 5)) == Resume(ResumeOutcome.RESUMED)  # nothing missed
    assert [e.tag for e in history.since(EventId(EPOCH, 2)).entries] == ["t/3", "t/4", "t/5"]  # the oldest kept: all
    assert history.since(EventId(EPOCH, 1)).outcome is ResumeOutcome.TOO_OLD  # t/2 is gone
    assert history.since(EventId("other", 4)).outcome is ResumeOutcome.UNKNOWN  # a restart
    assert history.since(EventId(EPOCH, 6)).outcome is ResumeOutcome.UNKNOWN  # never given out
    notice = history.since(EventId(EPOCH, 1)).notice(history.current)
    assert notice is not None and notice.tag == RESUME_TAG
    assert notice.data["resumed"] is False and notice.data["outcome"] == "too_old"
    assert notice.data["last_event_id"] == "e1-5"


def test_ids_only_history_keeps_nothing_and_a_too_big_event_breaks_the_chain() -> None:
    ids_only = EventHistory(EPOCH, max_events=0)
    ids_only.append("t", b"{}")
    assert not ids_only.keeps and len(ids_only) == 0
    assert ids_only.since(EventId(EPOCH, 1)).outcome is ResumeOutcome.RESUMED  # up to date
    history = EventHistory(EPOCH, max_events=10, max_bytes=10)
    history.append("t", b"{}")
    history.append("t", b"{" + b" " * 20 + b"}")  # over max_bytes: not kept, and nothing before it either
    history.append("t", b"{}")
    assert history.since(EventId(EPOCH, 1)).outcome is ResumeOutcome.TOO_OLD
    assert [e.id.position for e in history.since(EventId(EPOCH, 2)).entries] == [3]


def test_epoch_is_checked() -> None:
    with pytest.raises(ValueError):
        EventHistory("not an epoch")


# -- framing ----------------------------------------------------------------------------


def test_framing_with_ids() -> None:
    payload = event_json(event(1))
    assert with_id("e1-1", payload) == b'{"id": "e1-1", "data": {"n": 1}, "tag": "salt/job/1/ret/m"}'
    body = b'id: e1-1\ntag: salt/job/1/ret/m\ndata: {"data": {"n": 1}, "tag": "salt/job/1/ret/m"}\n\n'
    assert sse_chunk_with_id("e1-1", "salt/job/1/ret/m", payload) == b"%x\r\n%b\r\n" % (len(body), body)


# -- /events -----------------------------------------------------------------------------


PREAMBLE = b"b\r\nretry: 400\n\r\n"  # the first chunk of every /events stream


def sse(streams: EventStreams, target: str, *headers: str) -> tuple[ServerConnection, bytes]:
    """A client on ``target``; its response head, then what the stream has sent so far
    (after the preamble) is left for ``conn.data_to_send()`` to return with what follows."""
    conn = ServerConnection(Limits(), streams)
    lines = [f"GET {target} HTTP/1.1", "Host: t", f"X-Auth-Token: {TOKEN}", *headers]
    out = Driver(conn, App(SETTINGS), ANSWERS, now=NOW).feed(("\r\n".join(lines) + "\r\n\r\n").encode())
    head, _, body = out.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200 "):
        assert body.startswith(PREAMBLE)
        SENT[conn] = body[len(PREAMBLE):]
    return conn, out


SENT: dict[ServerConnection, bytes] = {}  # what each stream sent with its head


def sent(conn: ServerConnection) -> bytes:
    """Everything the stream has sent after its preamble."""
    return SENT.pop(conn, b"") + conn.data_to_send()


def sse_with_id(e: SaltEvent, position: int) -> bytes:
    return sse_chunk_with_id(f"{EPOCH}-{position}", e.tag, event_json(e))


def test_events_with_ids_then_resumed_by_last_event_id() -> None:
    streams = EventStreams(history=EventHistory(EPOCH, max_events=100))
    first, _ = sse(streams, "/events?ids=1&tag=salt/job/*")
    events = [event(1), event(2, "salt/auth"), event(3)]
    for e in events:
        streams.dispatch(e)
    assert sent(first) == sse_with_id(events[0], 1) + sse_with_id(events[2], 3)
    first.receive_data(b"")  # the client drops; two events pass meanwhile
    missed = [event(4), event(5, "salt/key"), event(6)]
    for e in missed:
        streams.dispatch(e)
    # EventSource reconnects to the same URL with the last id it saw
    again, head = sse(streams, "/events?ids=1&tag=salt/job/*", "Last-Event-ID: e1-3")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    live = event(7)
    streams.dispatch(live)
    # the missed ones its filter wants, in order, then live: nothing twice, nothing lost
    assert sent(again) == sse_with_id(missed[0], 4) + sse_with_id(missed[2], 6) + sse_with_id(live, 7)


def test_a_client_of_the_reference_is_never_resumed_nor_sent_ids() -> None:
    streams = EventStreams(history=EventHistory(EPOCH, max_events=100))
    streams.dispatch(event(1))
    conn, _ = sse(streams, "/events", "Last-Event-ID: e1-0")
    streams.dispatch(event(2))
    assert sent(conn) == sse_chunk(event(2).tag, event_json(event(2)))  # as before: no id, no replay


def test_an_unknown_id_gets_the_notice_then_live_events() -> None:
    """A restart (another epoch): the notice, then live events; no replay."""
    streams = EventStreams(history=EventHistory(EPOCH, max_events=100))
    streams.dispatch(event(1))
    conn, _ = sse(streams, "/events?last_event_id=old-7")  # implies ids
    streams.dispatch(event(2))
    notice = SaltEvent(RESUME_TAG, {
        "resumed": False, "outcome": "unknown",
        "reason": "this id is not of this server's event stream (it restarted, or is another process); "
        "live events follow",
        "last_event_id": "e1-1",  # the newest id when it joined: resume from there next time
    })
    # under the newest id: the client's Last-Event-ID moves on to where it now is
    assert sent(conn) == sse_chunk_with_id("e1-1", RESUME_TAG, event_json(notice)) + sse_with_id(event(2), 2)


@pytest.mark.parametrize("target", ["/events?last_event_id=nope", "/events?ids=1&last_event_id=e1-01"])
def test_a_malformed_id_is_400(target: str) -> None:
    _, out = sse(EventStreams(), target)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"bad last event id" in out
    assert b"nope" not in out.partition(b"\r\n\r\n")[2]


def test_a_malformed_last_event_id_header_resumes_as_unknown() -> None:
    """An EventSource gives up for good on an error response: a header it sends
    back that this server cannot read gets the notice, not a 400."""
    streams = EventStreams(history=EventHistory(EPOCH, max_events=100))
    streams.dispatch(event(1))
    conn, out = sse(streams, "/events?ids=1", "Last-Event-ID: from-another/server")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"outcome": "unknown"' in sent(conn)


# -- /all_events ----------------------------------------------------------------------------


def websocket(streams: EventStreams, target: str) -> tuple[ServerConnection, bytes]:
    conn = ServerConnection(Limits(), streams)
    raw = (
        f"GET {target} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {TOKEN}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    return conn, Driver(conn, App(SETTINGS), ANSWERS, now=NOW).feed(raw + READY)


def test_all_events_resume_sends_the_missed_envelopes_then_live_ones() -> None:
    streams = EventStreams(history=EventHistory(EPOCH, max_events=100))
    for n in range(1, 5):
        streams.dispatch(event(n))
    conn, out = websocket(streams, "/all_events?last_event_id=e1-2")
    head, _, replayed = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    streams.dispatch(event(5))
    messages = [json.loads(payload) for _, payload in decode_server(replayed + conn.data_to_send())]
    assert [(m["id"], m["data"]["n"]) for m in messages] == [("e1-3", 3), ("e1-4", 4), ("e1-5", 5)]
    assert list(messages[0]) == ["id", "data", "tag"]


def test_all_events_with_ids_beside_a_plain_client() -> None:
    streams = EventStreams(history=EventHistory(EPOCH, max_events=0))  # ids, nothing kept
    plain, _ = websocket(streams, "/all_events")
    with_ids, _ = websocket(streams, "/all_events?ids=1")
    assert streams.subscribers == 2 and len(streams.all_events) == len(streams.all_events_ids) == 1
    streams.dispatch(event(1))
    assert plain.data_to_send() == text_frame(event_json(event(1)))  # unchanged
    assert with_ids.data_to_send() == text_frame(with_id("e1-1", event_json(event(1))))
    streams.notify(SaltEvent("saltnado/bus/down", {"reason": "x"}))  # notices: no id, to both
    assert plain.data_to_send() == with_ids.data_to_send()


def test_a_replay_bigger_than_the_outbox_meets_its_overflow_policy() -> None:
    streams = EventStreams(history=EventHistory(EPOCH, max_events=100))
    for n in range(1, 11):
        streams.dispatch(event(n))
    outbox = Outbox(3, 1 << 20)
    streams.attach("all_events", outbox, TOKEN, last_event_id=EventId(EPOCH, 0))
    assert outbox.overflowed  # cut off (close policy), as a live client that far behind


def test_formatted_events_has_no_ids() -> None:
    _, out = websocket(EventStreams(), "/formatted_events?ids=1")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"event ids are for /all_events and /events" in out


def test_entry_is_frozen() -> None:
    entry = Entry(EventId(EPOCH, 1), "t", b"{}")
    with pytest.raises(AttributeError):
        entry.tag = "u"  # type: ignore[misc]


@given(st.text(max_size=40))
def test_an_id_is_read_back_exactly_as_written(text: str) -> None:
    parsed = parse_event_id(text)
    assert parsed is None or str(parsed) == text


@given(st.from_regex(r"[0-9A-Za-z]{1,32}", fullmatch=True), st.integers(0, 10**19 - 1))
def test_every_id_the_server_gives_is_read_back(epoch: str, position: int) -> None:
    assert parse_event_id(str(EventId(epoch, position))) == EventId(epoch, position)
