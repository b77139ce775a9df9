"""An event whose body does not decode inside intact framing (a tag holding
``"\\n\\n"``, a str that is not UTF-8, data cut short, nested too deeply, an
array as a map key…), bytes in and out: that one event is skipped and counted,
one log line per kind of fault; the bus link stays up, nobody is told
``saltnado/bus/down``, the next event is delivered."""

from __future__ import annotations

import logging

import msgpack
import pytest

from saltnado_core import EventStreams, Outbox, SaltEvent, encode_pub_message
from saltnado_core.buslink import BusState, EventBusLink, Notice
from saltnado_core.eventbus import BodyFault
from saltnado_core.messages import http_chunk, text_frame
from saltnado_core.subscriptions import Subscriptions
from test_core_eventbus import UNDECODABLE, body_message

NEXT = encode_pub_message("salt/job/2/new", {"jid": "2"})
NEXT_JSON = b'{"data": {"jid": "2"}, "tag": "salt/job/2/new"}'


class Linked:
    """A connected link with a client on /all_events and on /events, and an in-process subscriber."""

    def __init__(self) -> None:
        self.streams, self.subscriptions = EventStreams(), Subscriptions()
        self.link = EventBusLink("/srv/salt", self.streams, self.subscriptions)
        self.ws, self.sse = Outbox(100, 1 << 20), Outbox(100, 1 << 20)
        self.streams.attach("all_events", self.ws, "")
        self.streams.attach("events", self.sse, "")
        self.hub = self.subscriptions.subscribe("")
        self.link.connected(0.0)
        self.link.tick(10.0)  # settled
        self.link.notices()


@pytest.mark.parametrize("case", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_an_undecodable_body_is_skipped_and_the_link_stays_up(case: tuple[object, BodyFault, str]) -> None:
    body, fault, tag = case
    bad = body_message(body)
    linked = Linked()
    link = linked.link
    assert link.receive_data(bad + NEXT, 11.0) == []  # no EventBusError: the framing is intact
    assert link.state is BusState.CONNECTED and link.master_available
    assert linked.ws.drain(1 << 20) == text_frame(NEXT_JSON)  # the next event, and no bus/down
    assert linked.sse.drain(1 << 20) == http_chunk(b"tag: salt/job/2/new\ndata: " + NEXT_JSON + b"\n\n")
    assert linked.hub.next_event() == SaltEvent("salt/job/2/new", {"jid": "2"})
    assert linked.hub.next_event() is None
    assert link.skipped == {fault: 1} and linked.streams.dispatched == 1
    assert link.notices() == [Notice(logging.WARNING, (
        f"skipped an event-bus event that does not decode: {fault.value} (tag {tag!r}, {len(bad)} bytes); "
        "the bus stays connected, and further events like it are counted, not logged"
    ))]


def test_a_tag_holding_the_separator_as_fired_through_the_master() -> None:
    # what `event.fire_master` with tag "my\n\ntag" puts on the bus: Salt's own pack
    linked = Linked()
    linked.link.receive_data(encode_pub_message("my\n\ntag", {"x": 1}) + NEXT, 11.0)
    assert linked.ws.drain(1 << 20) == text_frame(NEXT_JSON)
    assert linked.link.skipped == {BodyFault.TRAILING: 1}


def test_one_log_line_per_kind_of_fault_however_many_events_and_reconnects() -> None:
    linked = Linked()
    link = linked.link
    not_utf8 = body_message(b"t\n\n\xa1\xff")
    too_deep = body_message(b"t\n\n" + b"\x91" * 1100 + b"\xc0")
    link.receive_data(not_utf8 * 3 + NEXT + too_deep + not_utf8, 11.0)
    link.receive_data(too_deep, 12.0)
    link.lost(None, 13.0)
    link.connected(14.0)
    link.receive_data(not_utf8 + NEXT, 14.5)
    assert link.skipped == {BodyFault.NOT_UTF8: 5, BodyFault.TOO_DEEP: 2}
    assert linked.streams.dispatched == 2
    skips = [n.message for n in link.notices() if "does not decode" in n.message]
    assert len(skips) == 2
    for line, fault in zip(skips, [BodyFault.NOT_UTF8, BodyFault.TOO_DEEP]):
        assert line.startswith(f"skipped an event-bus event that does not decode: {fault.value} (tag 't', ")


def test_the_log_line_escapes_the_tag() -> None:
    linked = Linked()
    tag = "evil\r\n2024-01-01 INFO forged line\x1b[2J" + "x" * 500
    linked.link.receive_data(body_message(tag.encode() + b"\n\n\xc1"), 11.0)
    (notice,) = linked.link.notices()
    assert "\n" not in notice.message and "\r" not in notice.message and "\x1b" not in notice.message
    assert repr(tag[:200]) in notice.message and "x" * 201 not in notice.message


def test_broken_framing_still_reconnects() -> None:
    # a message that is not a {head, body} map: where the next one starts is unknown
    linked = Linked()
    with pytest.raises(Exception, match="not a {head, body} map"):
        linked.link.receive_data(msgpack.packb(42) + NEXT, 11.0)
    assert linked.link.skipped == {}
