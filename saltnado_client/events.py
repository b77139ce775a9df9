"""What a client following the event bus is given: Salt's events, and notices.

Every item has a ``tag`` and a ``data`` dict, so ``print(event.tag, event.data)``
works for all of them; ``isinstance`` tells them apart:

* :class:`Event` — one of Salt's events, with its ``id`` (``<epoch>-<position>``);
* the server's notices, in the stream with the events (their tags are the
  server's, ``saltnado/...``): :class:`Gap` (events dropped for this client
  under the ``gap`` slow-client policy), :class:`Dropped` (one event too large
  for any client), :class:`BusDown` / :class:`BusUp` (the master's event bus
  went away / came back: events fired meanwhile were never seen by the server),
  :class:`ResumeFailed` (a reconnect could not resume from the last id: events
  between it and the live ones are lost);
* the client's own notices (tags ``saltnado/client/...``): :class:`Connected`
  (a stream is open, resuming from an id or not) and :class:`Disconnected`
  (it ended, why, and when the client tries again).

:func:`parse_message` turns one websocket text message of ``/all_events?ids=1``
into one of these; a message that is not the server's JSON shape raises
:class:`ProtocolError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

GAP_TAG = "saltnado/gap"
DROPPED_TAG = "saltnado/dropped"
BUS_DOWN_TAG = "saltnado/bus/down"
BUS_UP_TAG = "saltnado/bus/up"
RESUME_TAG = "saltnado/resume"
CONNECTED_TAG = "saltnado/client/connected"
DISCONNECTED_TAG = "saltnado/client/disconnected"


class ProtocolError(Exception):
    """The server sent something this client cannot read (not a saltnado server?)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One of Salt's events as the master fired it, and the id it was relayed under."""

    tag: str
    data: dict[str, Any] = field(compare=True, hash=False)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """The server dropped ``missed`` events for this client (it read too slowly,
    under ``slow_client_policy: gap``); delivery goes on after the hole."""

    tag: ClassVar[str] = GAP_TAG
    missed: int

    @property
    def data(self) -> dict[str, Any]:
        return {"missed": self.missed}


@dataclass(frozen=True, slots=True)
class Dropped:
    """One event (``dropped_tag``) was larger than any client's outbox: nobody got it."""

    tag: ClassVar[str] = DROPPED_TAG
    dropped_tag: str
    bytes: int

    @property
    def data(self) -> dict[str, Any]:
        return {"tag": self.dropped_tag, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class BusDown:
    """The server lost the master's event bus: events fired until :class:`BusUp`
    are lost (the bus keeps no history)."""

    tag: ClassVar[str] = BUS_DOWN_TAG
    reason: str
    stamp: str

    @property
    def data(self) -> dict[str, Any]:
        return {"reason": self.reason, "_stamp": self.stamp}


@dataclass(frozen=True, slots=True)
class BusUp:
    """The server follows the master's event bus again (it was down since ``down_since``)."""

    tag: ClassVar[str] = BUS_UP_TAG
    down_since: str
    stamp: str

    @property
    def data(self) -> dict[str, Any]:
        return {"down_since": self.down_since, "_stamp": self.stamp}


@dataclass(frozen=True, slots=True)
class ResumeFailed:
    """The stream was reopened after an id the server could not resume from:
    ``outcome`` ``too_old`` (its history no longer holds the events after it) or
    ``unknown`` (another server run: it restarted); the events in between are lost
    and live events follow. ``last_event_id`` is the server's newest id (the
    client resumes from it next time)."""

    tag: ClassVar[str] = RESUME_TAG
    outcome: str
    reason: str
    last_event_id: str | None

    @property
    def data(self) -> dict[str, Any]:
        return {"resumed": False, "outcome": self.outcome, "reason": self.reason,
                "last_event_id": self.last_event_id}


@dataclass(frozen=True, slots=True)
class Connected:
    """A stream is open. ``resuming_from`` is the last id seen (None for a first
    connection, or when none was seen): the server sends what came after it, or
    a :class:`ResumeFailed` first. ``attempt`` counts connections opened."""

    tag: ClassVar[str] = CONNECTED_TAG
    resuming_from: str | None
    attempt: int

    @property
    def data(self) -> dict[str, Any]:
        return {"resuming_from": self.resuming_from, "attempt": self.attempt}


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The stream ended (or could not be opened) for ``reason``; the client tries
    again in ``retry_in`` seconds, resuming from ``last_event_id``. ``code`` is
    the websocket close code or HTTP status when there was one."""

    tag: ClassVar[str] = DISCONNECTED_TAG
    reason: str
    retry_in: float
    last_event_id: str | None
    code: int | None = None

    @property
    def data(self) -> dict[str, Any]:
        return {"reason": self.reason, "retry_in": self.retry_in, "last_event_id": self.last_event_id,
                "code": self.code}


Notice = Gap | Dropped | BusDown | BusUp | ResumeFailed | Connected | Disconnected
Item = Event | Notice


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def parse_message(text: str) -> tuple[Item, str | None]:
    """One ``/all_events`` message → (what it is, the id it carries or None).

    Events carry an id; so does a resume notice while the server has one (its
    newest). A notice of a kind this client does not know is passed on as an
    :class:`Event` (its tag says what it is)."""
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"a message is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("tag"), str):
        raise ProtocolError("a message is not {\"tag\": …, \"data\": …}")
    tag: str = message["tag"]
    data = message.get("data")
    if not isinstance(data, dict):
        data = {"value": data}
    raw_id = message.get("id")
    event_id = raw_id if isinstance(raw_id, str) else None
    if event_id is None:  # the server's notices carry no id (but the resume notice)
        if tag == GAP_TAG and isinstance(data.get("missed"), int):
            return Gap(data["missed"]), None
        if tag == DROPPED_TAG and isinstance(data.get("bytes"), int):
            return Dropped(_text(data, "tag"), data["bytes"]), None
        if tag == BUS_DOWN_TAG:
            return BusDown(_text(data, "reason"), _text(data, "_stamp")), None
        if tag == BUS_UP_TAG:
            return BusUp(_text(data, "down_since"), _text(data, "_stamp")), None
    if tag == RESUME_TAG and data.get("resumed") is False:
        last = data.get("last_event_id")
        return ResumeFailed(_text(data, "outcome"), _text(data, "reason"), last if isinstance(last, str) else None), \
            event_id
    return Event(tag, data, event_id), event_id
