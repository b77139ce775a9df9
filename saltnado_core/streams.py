"""The event streams a server offers, and how one Salt event reaches them.

:meth:`EventStreams.dispatch` encodes an event once per stream that has
subscribers (never per subscriber) and publishes the shared bytes. A
connection joins a stream with :meth:`attach` once its client is ready and
leaves with :meth:`detach` (which adds what its outbox did to the stream's
:attr:`EventStreams.departed` counts, :mod:`saltnado_core.counts`); both are by stream name, as routed: a
:class:`~saltnado_core.kinds.StreamKind`, which frames what its clients are
sent (events, gap notices, the server's notices). The tokens of
attached connections are counted (:attr:`EventStreams.tokens`), so the periodic
re-check of stream tokens with Salt (:mod:`~saltnado_core.revocation`) works on
distinct tokens, not connections. :meth:`EventStreams.notify` sends the
server's own notices (the event bus going down and coming back) to every
stream, ``/formatted_events`` included. An event too big for a client's whole
outbox once encoded is dropped for that client with a ``saltnado/dropped``
notice in its place (:mod:`saltnado_core.broadcast`), counted in
:attr:`EventStreams.dropped`. Each event gets an id and is kept for resuming
(:mod:`saltnado_core.history`); clients that ask for ids (``?ids=1``) are
subscribed to a second broadcast per kind, whose bytes carry them.

With an event log (:mod:`saltnado_core.eventlog`, an edge node) each event is
dispatched with its stream sequence as position and its master, and a client
resuming from an id of the stream older than the history holds is not told
``too_old`` at once: :meth:`attach` returns a :class:`FetchEvents` for the
range it missed, the runtime reads it from the log and hands it to
:meth:`fetched`, which queues it, then what the history holds since, then
subscribes the client — so nothing is sent twice and nothing falls between.
"""

from __future__ import annotations

from .broadcast import Broadcast, Outbox
from .counts import StreamCounts
from .eventbus import EventBusError, SaltEvent, decode_body
from .eventlog import FetchEvents, LoggedEvent, subject_filters
from .formatted import FormattedStream, FormattedView
from .history import EventHistory, EventId, Resume, ResumeOutcome
from .kinds import StreamKind
from .messages import SSE_KEEPALIVE, SSE_KEEPALIVE_INTERVAL, event_json
from .salt_calls import SaltCall
from .tagfilter import TagFilter

# each stream's route name → its kind (``name in STREAM_NAMES``; a name no stream has is a KeyError)
STREAM_NAMES = {kind.value: kind for kind in StreamKind}
# the kinds served from the shared formatted view (saltnado_core.formatted)
FORMATTED_KINDS = frozenset({StreamKind.FORMATTED_EVENTS, StreamKind.WS_FORMATTED})
# the server's own notices when the event bus goes down and comes back (buslink.py)
BUS_DOWN_TAG = "saltnado/bus/down"
BUS_UP_TAG = "saltnado/bus/up"


class EventStreams:
    def __init__(self, view: FormattedView | None = None, history: EventHistory | None = None) -> None:
        """``view``: the ``/formatted_events`` view with its bounds (None: the
        defaults); ``history``: the event ids' epoch and the events kept for
        resuming (None: epoch ``"0"`` and nothing kept, so nothing is encoded
        without a subscriber; the runtime draws a random epoch per process and
        keeps ``event_history_max_*``)."""
        self.all_events = Broadcast(StreamKind.ALL_EVENTS)
        self.events = Broadcast(StreamKind.EVENTS)  # SSE, as HTTP chunks
        # the same streams for clients that asked for event ids (?ids=1): other bytes
        self.all_events_ids = Broadcast(StreamKind.ALL_EVENTS)
        self.events_ids = Broadcast(StreamKind.EVENTS)
        self.ws = Broadcast(StreamKind.WS)  # rest_cherrypy's /ws: "data: <json>\n\n" text frames
        self.formatted = FormattedStream(view)
        self.history = history if history is not None else EventHistory("0", max_events=0)
        # the kinds sent every event as it comes, by kind, with each kind's framing
        # looked up once (/formatted_events and /ws?format_events are sent their
        # view's changes instead)
        self._live = {broadcast.kind: broadcast for broadcast in (self.all_events, self.events, self.ws)}
        self._framed = tuple((broadcast.kind.frame, broadcast) for broadcast in self._live.values())
        self._with_ids = {broadcast.kind: broadcast for broadcast in (self.all_events_ids, self.events_ids)}
        self._framed_ids = tuple((broadcast.kind.frame_with_id, broadcast) for broadcast in self._with_ids.values())
        self._every = (
            self.all_events, self.events, self.all_events_ids, self.events_ids, self.ws, *self.formatted.broadcasts,
        )
        self.dispatched = 0  # events seen, for logs and metrics
        # what subscribers that left each stream had done (saltnado_core.counts)
        self.departed = {kind: StreamCounts() for kind in StreamKind}
        self.tokens: dict[str, int] = {}  # token → attached connections holding it
        self._bus_down: dict[StreamKind, bytes] | None = None  # the down notice per kind, while down
        self._next_keepalive: float | None = None  # see tick
        # an edge node's event log: its subject prefix (None: no log to fetch from)
        self.log_prefix: str | None = None
        # resuming clients waiting for a range of the log: call → (kind, outbox, filter)
        self._fetching: dict[FetchEvents, tuple[StreamKind, Outbox, TagFilter | None]] = {}

    def attach(
        self,
        name: str,
        outbox: Outbox,
        token: str,
        delta: bool = False,
        tags: TagFilter | None = None,
        ids: bool = False,
        last_event_id: EventId | None = None,
    ) -> list[SaltCall | FetchEvents]:
        """Subscribe ``outbox`` to stream ``name`` (a :class:`StreamKind` or its
        route name; KeyError for any other) for a client holding ``token``, sent
        only what ``tags`` lets through (None: everything; on ``/formatted_events``,
        the view's changes that events it lets through made); returns Salt calls
        to run for it. While the event bus is down, the client is told so first thing.

        ``ids`` (``/all_events``, ``/events``): each event carries its id. With
        ``last_event_id`` the client first gets what it missed after that id, in
        order, from the history — or a ``saltnado/resume`` notice saying why it
        cannot — then the live events: the replay and the subscription happen in
        this one call, so nothing is sent twice and nothing falls between (or,
        with an event log, a :class:`FetchEvents` first: see the module docstring)."""
        kind = STREAM_NAMES[name]
        if token:
            self.tokens[token] = self.tokens.get(token, 0) + 1
        calls: list[SaltCall | FetchEvents] = []
        if kind in FORMATTED_KINDS:
            calls += self.formatted.attach(outbox, token, delta, tags, listed=kind is StreamKind.WS_FORMATTED)
        else:
            fetch = None if last_event_id is None else self._fetch_for(last_event_id, tags)
            if fetch is not None:
                self._fetching[fetch] = (kind, outbox, tags)
                calls.append(fetch)
            else:
                if last_event_id is not None:
                    self._replay(kind, outbox, tags, last_event_id)
                (self._with_ids if ids or last_event_id is not None else self._live)[kind].subscribe(outbox, tags)
        if self._bus_down is not None:
            outbox.offer(self._bus_down[kind])
        return calls

    def detach(self, name: str, outbox: Outbox, token: str = "") -> None:
        """Unsubscribe ``outbox`` (attached with ``token``) from stream ``name``."""
        kind = STREAM_NAMES[name]
        self.departed[kind].add(outbox, attached=False)
        if token and token in self.tokens:
            held = self.tokens.pop(token) - 1
            if held:
                self.tokens[token] = held
        if kind in FORMATTED_KINDS:
            self.formatted.detach(outbox)
        else:
            for call in [call for call, (_, waiting, _) in self._fetching.items() if waiting is outbox]:
                del self._fetching[call]
            self._live[kind].unsubscribe(outbox)
            if kind in self._with_ids:  # /ws has no ids
                self._with_ids[kind].unsubscribe(outbox)

    def _fetch_for(self, last: EventId, tags: TagFilter | None) -> FetchEvents | None:
        """The range of the log a client resuming after ``last`` must be sent
        before the history's events, if the history no longer holds it and it is
        within the history's own bounds (further back is ``too_old``, as without a log)."""
        history = self.history
        if self.log_prefix is None or history.since(last).outcome is not ResumeOutcome.TOO_OLD:
            return None
        first, upto = last.position + 1, history.position
        if upto - first + 1 > history.max_events:
            return None
        if tags is None:
            subjects = subject_filters(self.log_prefix, None, None)
        else:
            patterns = None if tags.globs is not None else [*tags.exact, *(p + "*" for p in tags.prefixes)]
            subjects = subject_filters(self.log_prefix, tags.masters, patterns)
        return FetchEvents(first, upto, subjects, history.max_events, history.max_bytes)

    def fetched(self, call: FetchEvents, events: tuple[LoggedEvent, ...] | None, complete: bool = True) -> None:
        """The log's answer to ``call`` (``events`` None: reading it failed): the
        client is sent those its filter lets through, or the ``too_old`` notice if
        the range could not be read whole; then what the history holds since; then
        it is subscribed to the live events. A client gone meanwhile is forgotten."""
        waiting = self._fetching.pop(call, None)
        if waiting is None:
            return
        kind, outbox, tags = waiting
        epoch = self.history.epoch
        if events is None or not complete:
            notice = Resume(ResumeOutcome.TOO_OLD).notice(self.history.current)
            assert notice is not None
            self._offer_notice(kind, outbox, notice)
        else:
            frame = kind.frame_with_id
            for logged in events:
                if not call.first <= logged.sequence <= call.last:
                    continue
                try:
                    event = decode_body(logged.raw)
                except EventBusError:
                    continue  # not an event: skipped, as the bus reader skips it
                if tags is not None and not tags.matches(event.tag, logged.master):
                    continue
                text_id = str(EventId(epoch, logged.sequence))
                if not outbox.offer(frame(text_id, event.tag, event_json(event), logged.master)):
                    return  # cut off: it closes when it next writes
            self._replay(kind, outbox, tags, EventId(epoch, call.last))
        self._with_ids[kind].subscribe(outbox, tags)

    def _offer_notice(self, kind: StreamKind, outbox: Outbox, notice: SaltEvent) -> None:
        # under the newest id, so a client that keeps the last id it saw (an
        # EventSource's Last-Event-ID) resumes from here next time
        current = self.history.current
        if current is None:
            outbox.offer(kind.frame(notice.tag, event_json(notice)))
        else:
            outbox.offer(kind.frame_with_id(str(current), notice.tag, event_json(notice), None))

    def _replay(self, kind: StreamKind, outbox: Outbox, tags: TagFilter | None, last: EventId) -> None:
        """Queue for ``outbox`` what a ``kind`` client whose newest event was
        ``last`` missed (those ``tags`` lets through), or the notice why it cannot.
        A replay bigger than the outbox meets its overflow policy, as live events do."""
        resume = self.history.since(last)
        notice = resume.notice(self.history.current)
        if notice is not None:
            self._offer_notice(kind, outbox, notice)
            return
        frame = kind.frame_with_id
        for entry in resume.entries:
            if (tags is None or tags.matches(entry.tag, entry.master)) and not outbox.offer(
                frame(str(entry.id), entry.tag, entry.payload, entry.master)
            ):
                return  # cut off: it closes when it next writes

    def dispatch(
        self, event: SaltEvent, now: float = 0.0, position: int | None = None, master: str | None = None
    ) -> list[SaltCall]:
        """Publish ``event`` to every stream; ``now`` dates jobs in the formatted view;
        ``position`` and ``master``: its sequence in an event log and the master it
        came from (None: the next position; no master said).

        Returns Salt calls the formatted view needs (grains of new minions).
        """
        self.dispatched += 1
        history = self.history
        # one JSON encode for every kind and the history, and none if nobody wants it
        payload = event_json(event) if history.keeps else None
        event_id = history.append(event.tag, payload, position, master)
        for frame, broadcast in self._framed:
            if broadcast:
                if payload is None:
                    payload = event_json(event)
                broadcast.publish(frame(event.tag, payload), event.tag, master)
        text_id = None
        for frame_with_id, broadcast in self._framed_ids:
            if broadcast:
                if payload is None:
                    payload = event_json(event)
                if text_id is None:
                    text_id = str(event_id)
                broadcast.publish(frame_with_id(text_id, event.tag, payload, master), event.tag, master)
        return self.formatted.dispatch(event, now)

    @property
    def subscribers(self) -> int:
        """Streaming clients attached, on every stream (with and without ids)."""
        live = len(self.all_events) + len(self.events) + len(self.all_events_ids) + len(self.events_ids)
        return live + len(self.formatted)

    @property
    def broadcasts(self) -> tuple[Broadcast, ...]:
        """Every subscriber set, each with its ``kind`` (``/formatted_events`` has two)."""
        return self._every

    @property
    def dropped(self) -> int:
        """Messages dropped for being too big for an outbox, summed over the
        streams (an event too big on ``/all_events`` and ``/events`` counts twice)."""
        return sum(broadcast.dropped for broadcast in self._every)

    def notify(self, notice: SaltEvent) -> None:
        """A server notice (``saltnado/bus/down``, ``saltnado/bus/up``) to every
        subscriber of every stream, whatever its filter, in the shape of an
        ``/all_events`` message: encoded once, framed once per stream kind. A down
        notice is kept and sent to clients that join until the up notice."""
        payload = event_json(notice)
        # every kind, subscribed or not: a down notice is kept for clients that join
        framed = {kind: kind.frame(notice.tag, payload) for kind in StreamKind}
        self._bus_down = framed if notice.tag == BUS_DOWN_TAG else None
        for broadcast in self._every:
            broadcast.publish(framed[broadcast.kind])

    def tick(self, now: float) -> None:
        """Call about once a second with the binding's monotonic ``now``: every
        ``SSE_KEEPALIVE_INTERVAL`` s, :meth:`keepalive` (timed from the first tick)."""
        if self._next_keepalive is None:
            self._next_keepalive = now + SSE_KEEPALIVE_INTERVAL
        elif now >= self._next_keepalive:
            self._next_keepalive = now + SSE_KEEPALIVE_INTERVAL
            self.keepalive()

    def keepalive(self) -> None:
        """Send ``/events`` clients a comment, so idle streams survive proxies."""
        for events in (self.events, self.events_ids):
            if events:
                events.publish(SSE_KEEPALIVE)
