"""Event ids and the bounded history a client resumes from.

Every event relayed from the bus gets an :class:`EventId`: the stream's
``epoch`` and the event's ``position`` in it, written ``<epoch>-<position>``
(``3f9a1c2b7d40-1532``). Clients treat it as opaque: they get it with each event
(an SSE ``id:`` line, the ``id`` of a websocket envelope) and hand the last one
back to resume (``Last-Event-ID``, ``?last_event_id=``).

The epoch names one sequence of positions: here, one server process's run
(the runtime draws it at random at start-up, so a restarted server, or another
process behind the same port, never takes an old id for one of its own). The
position grows by one per relayed event within the epoch. An external event
log slots in by keeping the same two parts — a NATS JetStream stream's identity
as the epoch and its stream sequence as the position, a Redis stream's key and
its entry id's time and sequence packed into one integer — and answering
:meth:`EventHistory.since` from the log instead of from memory: nothing that
reads an id needs to change.

:class:`EventHistory` keeps the last events, bounded by count and by bytes, as
the JSON payload already encoded for the live streams (the same ``bytes``
object: the history costs a reference per event, not a copy).
:meth:`EventHistory.since` says what a client that saw ``last`` has missed:
:class:`Resume` with the missed entries in order (possibly none), or why it
cannot tell (:class:`ResumeOutcome`) — the client then gets a notice, then the
live events.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections import deque
from dataclasses import dataclass

from .eventbus import SaltEvent

RESUME_TAG = "saltnado/resume"  # the notice a client whose id cannot be resumed gets
MAX_EPOCH_CHARS = 32
_ID = re.compile(r"([0-9A-Za-z]{1,%d})-(0|[1-9][0-9]{0,18})" % MAX_EPOCH_CHARS)


@dataclass(frozen=True, slots=True)
class EventId:
    """One relayed event's place: ``position`` within ``epoch``."""

    epoch: str
    position: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.position}"


# Stands for an id no epoch of this server could have given (its epoch is empty):
# resuming from it is UNKNOWN, so the client gets the notice, then live events.
FOREIGN_ID = EventId("", 0)


def parse_event_id(text: str) -> EventId | None:
    """The id ``text`` writes (``<epoch>-<position>``: 1–32 letters and digits,
    a dash, a decimal without leading zeros below 10**19), or None for anything else."""
    found = _ID.fullmatch(text)
    return None if found is None else EventId(found[1], int(found[2]))


@dataclass(frozen=True, slots=True)
class Entry:
    """One event as the history keeps it: its id, tag and encoded JSON payload
    (:func:`~saltnado_core.messages.event_json`, the live streams' own bytes)."""

    id: EventId
    tag: str
    payload: bytes
    master: str | None = None  # the master it came from, when an event log says (saltnado_core.eventlog)


class ResumeOutcome(enum.Enum):
    RESUMED = "resumed"  # the missed events follow, in order (perhaps none), then live ones
    TOO_OLD = "too_old"  # the id is of this epoch but older than the history keeps
    UNKNOWN = "unknown"  # another epoch (a restart, another process), or not yet given out


# What a client whose id cannot be resumed is told, per outcome.
RESUME_REASONS = {
    ResumeOutcome.TOO_OLD: "the events after this id are no longer kept; live events follow",
    ResumeOutcome.UNKNOWN: "this id is not of this server's event stream (it restarted, or is another "
    "process); live events follow",
}


@dataclass(frozen=True, slots=True)
class Resume:
    outcome: ResumeOutcome
    entries: tuple[Entry, ...] = ()  # RESUMED: the missed events, oldest first

    def notice(self, current: EventId | None) -> SaltEvent | None:
        """The ``saltnado/resume`` notice for an outcome other than RESUMED (None
        for RESUMED): why, and the id of the newest event to resume from later."""
        if self.outcome is ResumeOutcome.RESUMED:
            return None
        last = None if current is None else str(current)
        return SaltEvent(
            RESUME_TAG, {"resumed": False, "outcome": self.outcome.value, "reason": RESUME_REASONS[self.outcome],
                         "last_event_id": last}
        )


class EventHistory:
    """The ids of one epoch, and its last events within ``max_events`` and
    ``max_bytes`` of payload (``max_events`` 0: ids only, nothing kept)."""

    def __init__(self, epoch: str, max_events: int = 1000, max_bytes: int = 4 * 1024 * 1024) -> None:
        if not re.fullmatch(r"[0-9A-Za-z]{1,%d}" % MAX_EPOCH_CHARS, epoch):
            raise ValueError(f"an epoch is 1-{MAX_EPOCH_CHARS} letters and digits")
        self.epoch = epoch
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.position = 0  # of the newest event; 0: none yet
        self._entries: deque[Entry] = deque()
        self._bytes = 0

    @property
    def keeps(self) -> bool:
        """True if events are kept (the history wants their payloads)."""
        return self.max_events > 0 and self.max_bytes > 0

    @property
    def current(self) -> EventId | None:
        """The newest event's id (None before the first)."""
        return EventId(self.epoch, self.position) if self.position else None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def kept_bytes(self) -> int:
        return self._bytes

    def rebase(self, epoch: str, position: int) -> None:
        """Go on in another ``epoch`` whose last position given is ``position`` (an
        event log's stream, :mod:`saltnado_core.eventlog`); nothing kept so far is kept."""
        if not re.fullmatch(r"[0-9A-Za-z]{1,%d}" % MAX_EPOCH_CHARS, epoch):
            raise ValueError(f"an epoch is 1-{MAX_EPOCH_CHARS} letters and digits")
        self.epoch, self.position = epoch, position
        self._entries.clear()
        self._bytes = 0

    def append(
        self, tag: str, payload: bytes | None, position: int | None = None, master: str | None = None
    ) -> EventId:
        """The next id (or ``position``: an event log's sequence, which may skip
        some), and ``payload`` kept under it (unless the history keeps nothing, or
        the payload alone is over ``max_bytes``); the oldest events go to make room.
        A skip forgets what is kept: what is kept stays consecutive."""
        if position is None or position == self.position + 1:
            self.position += 1
        else:
            self._entries.clear()
            self._bytes = 0
            self.position = position
        event_id = EventId(self.epoch, self.position)
        if not self.keeps:
            return event_id
        if payload is None or len(payload) > self.max_bytes:
            # never kept: a resume across it is TOO_OLD (what is kept stays consecutive)
            self._entries.clear()
            self._bytes = 0
            return event_id
        size = len(payload)
        entries = self._entries
        entries.append(Entry(event_id, tag, payload, master))
        self._bytes += size
        while len(entries) > self.max_events or self._bytes > self.max_bytes:
            self._bytes -= len(entries.popleft().payload)
        return event_id

    def since(self, last: EventId) -> Resume:
        """What a client whose newest event was ``last`` has missed."""
        if last.epoch != self.epoch or last.position > self.position:
            return Resume(ResumeOutcome.UNKNOWN)
        if last.position == self.position:
            return Resume(ResumeOutcome.RESUMED)
        entries = self._entries
        # positions in the history are consecutive: the oldest kept is newest - len + 1
        oldest = self.position - len(entries) + 1
        if not entries or last.position < oldest - 1:
            return Resume(ResumeOutcome.TOO_OLD)
        start = last.position - oldest + 1
        return Resume(ResumeOutcome.RESUMED, tuple(itertools.islice(entries, start, None)))
