"""A node on the event log (NATS JetStream): ingest, edge, and the resume fetch.

The pure parts — settings, subjects, ids, filters — are
:mod:`saltnado_core.eventlog`; this is the I/O. ``nats-py`` is an asyncio
client, and the server runs on trio or asyncio, so on either binding the NATS
client runs in a thread of its own with its own asyncio loop
(:class:`EventLogNode`), and the two sides meet at three points, each bounded:

* **ingest** (the binding's loop → NATS): :meth:`EventLogNode.ingest` hands a
  batch of events read from the bus to the NATS loop, at most
  ``max_in_flight`` publishes awaiting JetStream's ack. At the bound the bus
  reader waits (it polls with the loop's own sleep until a slot frees): the
  master's IPC publisher then buffers, and drops on its side past its own
  high-water mark; :attr:`EventLogNode.ingest_waits` counts the waits. A
  publish that fails (no ack in time, NATS away) is retried with the same
  ``Nats-Msg-Id`` until it is acked: JetStream keeps one copy within the
  duplicate window.
* **edge** (NATS → the binding's loop): an ordered push consumer (flow
  control, heartbeats: nats-py re-creates it from the next sequence after a gap
  or a lost server) delivers every master's events; they are queued and the
  binding's loop is asked (``run_soon``, its thread-safe call) to dispatch
  them. When ``EDGE_QUEUE`` events wait, the consumer's callback waits too, so
  JetStream's flow control holds the rest on the server.
* **fetch** (a worker thread → NATS): :meth:`EventLogNode.fetch` answers a
  :class:`~saltnado_core.eventlog.FetchEvents` (a resuming client's missed
  range), blocking the worker thread, never a loop.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from saltnado_core import ConfigError
from saltnado_core.eventbus import SaltEvent
from saltnado_core.eventlog import (
    MASTER_HEADER,
    MSG_ID_HEADER,
    EventLogSettings,
    FetchEvents,
    LoggedEvent,
    Role,
    message_id,
    stream_epoch,
    subject,
)

log = logging.getLogger("saltnado.eventlog")

RunSoon = Callable[[Callable[[], None]], Any]  # the binding loop's thread-safe call_soon

EDGE_QUEUE = 10_000  # events handed to the binding's loop and not yet dispatched
PUBLISH_TIMEOUT = 5.0  # seconds for one publish's ack before it is sent again
PUBLISH_WINDOW = 256  # publishes sent before their acks are awaited
RETRY_MAX = 2.0  # seconds between attempts at most (connecting, publishing)
FETCH_TIMEOUT = 10.0  # seconds a resume fetch may take in all
FETCH_IDLE = 0.5  # seconds without a message after which a fetch asks whether more will come
GAP_FETCH_MAX = 100_000  # events an edge reads back to fill a gap in its consumer's delivery


def event_log_problems(settings: EventLogSettings) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` about ``settings`` that only the machine can tell:
    nats-py missing (an error: the node could not run), files named that are not
    readable (warnings: they may appear before the node starts)."""
    errors = []
    if importlib.util.find_spec("nats") is None:
        errors.append("event_log: needs the NATS client nats-py (pip install 'saltnado[nats]')")
    warnings = [
        f"event_log: {key} {path} is not a readable file"
        for key in ("creds", "tls_ca", "tls_cert", "tls_key")
        if (path := getattr(settings, key)) is not None and not os.access(path, os.R_OK)
    ]
    return errors, warnings


@dataclass(frozen=True, slots=True)
class EventLogCounts:
    """What a node has done on the log, read at one moment (``/metrics``, ``/stats``)."""

    role: Role
    stream: str
    master: str  # this node's master ("" on an edge-only node)
    connected: bool  # the NATS connection is up and the stream exists
    published: int  # publishes acked by JetStream, duplicates included
    duplicates: int  # acked as duplicates (another ingest node stored the event first)
    retries: int  # times publishing failed and resumed from the first unacked event
    publish_waits: int  # times the bus reader waited for a publish slot (max_in_flight)
    gaps_read_back: int  # edge: times the consumer skipped events that were then read back
    fetches: int  # resuming clients' ranges read from the log
    pending_publishes: int  # events awaiting their ack (or their first send) now


class EventLogNode:
    """One server's link to the event log: a NATS connection in its own thread.

    Its counters are plain ints, each written by one thread only — the NATS
    loop's (``published``, ``duplicates``, ``retries``, ``gaps``, ``fetches``,
    ``connected``) or the binding's loop (``ingest_waits``) — and read by the
    binding's loop for ``/metrics`` without a lock: in CPython reading an
    attribute is atomic, so a reader sees each count whole, if a moment old
    (the counts are not a consistent set among themselves, and need not be).
    """

    def __init__(self, settings: EventLogSettings) -> None:
        errors, _ = event_log_problems(settings)
        if errors:
            raise ConfigError(errors[0])
        self.settings = settings
        self.epoch: str | None = None  # the stream's, once known
        self.first_sequence = 0  # the edge's first: the stream's last sequence at start + 1
        self.ingest_waits = 0  # times the bus reader waited for a publish slot
        self.published = 0  # acked publishes
        self.duplicates = 0  # acked as duplicates (another ingest node stored it first)
        self.retries = 0  # publishes sent again
        self.gaps = 0  # edge: times the consumer skipped events that were then read back
        self.fetches = 0  # resuming clients' ranges read from the log
        self.connected = False  # the NATS connection up and the stream there
        self._next_sequence = 0  # edge: the sequence expected next
        self._room = threading.Semaphore(settings.max_in_flight)
        self._pending: collections.deque[tuple[str, bytes, str]] = collections.deque()  # NATS loop only
        # (asyncio's Events bind to the loop that first waits on them: the NATS loop's)
        self._wake_publisher = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: Any = None
        self._js: Any = None
        self._ready = threading.Event()  # connected and the stream exists
        self._closing = False
        # edge
        self._run_soon: RunSoon | None = None
        self._deliver: Callable[[list[LoggedEvent]], None] | None = None
        self._on_state: Callable[[bool, str], None] | None = None
        self._on_epoch: Callable[[str, int], None] | None = None
        self._inbox: collections.deque[LoggedEvent] = collections.deque()
        self._inbox_lock = threading.Lock()
        self._inbox_room = asyncio.Event()

    # -- lifecycle (the binding's thread) --------------------------------------------
    def start(
        self,
        run_soon: RunSoon,
        deliver: Callable[[list[LoggedEvent]], None] | None = None,
        on_state: Callable[[bool, str], None] | None = None,
        on_epoch: Callable[[str, int], None] | None = None,
    ) -> None:
        """Connect in a new thread (retrying until it works or :meth:`close`).
        ``deliver`` (edge): called on the binding's loop with events in stream
        order; ``on_state(up, reason)``: the NATS connection went down or came
        back; ``on_epoch(epoch, last_sequence)``: the stream's epoch, before the
        first event is delivered. Each is run through ``run_soon``."""
        self._run_soon, self._deliver, self._on_state, self._on_epoch = run_soon, deliver, on_state, on_epoch
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="saltnado-eventlog", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Close the connection and stop the thread (waits at most ``timeout`` s)."""
        self._closing = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout)
        except Exception:  # closing anyway
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def counts(self) -> EventLogCounts:
        """The counters now (any thread: see the class's docstring)."""
        settings = self.settings
        return EventLogCounts(
            role=settings.role, stream=settings.stream, master=settings.master,
            connected=self.connected and not self._closing,
            published=self.published, duplicates=self.duplicates, retries=self.retries,
            publish_waits=self.ingest_waits, gaps_read_back=self.gaps, fetches=self.fetches,
            pending_publishes=len(self._pending),  # len() of a deque: atomic in CPython
        )

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        loop.create_task(self._connect())
        try:
            loop.run_forever()
        finally:
            try:
                _end_tasks(loop)
            finally:
                loop.close()

    # -- ingest (the binding's loop) --------------------------------------------------
    async def ingest(self, events: list[SaltEvent], sleep: Callable[[float], Any]) -> None:
        """Publish ``events`` (from this node's master's bus), in order; waits
        (``sleep``-polling) while ``max_in_flight`` publishes await their ack."""
        settings, loop = self.settings, self._loop
        assert loop is not None
        batch: list[tuple[str, bytes, str]] = []
        for event in events:
            while not self._room.acquire(blocking=False):
                if batch:
                    loop.call_soon_threadsafe(self._publish_batch, batch)
                    batch = []
                self.ingest_waits += 1
                await sleep(0.005)
            raw = event.raw
            batch.append((subject(settings.subject_prefix, settings.master, event.tag), raw,
                          message_id(settings.master, raw)))
        if batch:
            loop.call_soon_threadsafe(self._publish_batch, batch)

    def _publish_batch(self, batch: list[tuple[str, bytes, str]]) -> None:
        """On the NATS loop: queue ``batch`` behind what awaits its ack."""
        self._pending.extend(batch)
        self._wake_publisher.set()

    async def _publisher(self) -> None:
        """Publish the queue in order, ``PUBLISH_WINDOW`` at a time awaiting their
        acks (sent in order on the one connection: JetStream stores them in it).
        When one is not acked, the window's later ones are not counted either, and
        after a pause everything from it is sent again, in order, under the same
        ``Nats-Msg-Id``: a later event never overtakes an earlier one that is
        still being retried (one sent again that had been stored is acked as a
        duplicate). What can still reorder: an event whose first send was lost
        with the connection while a later one, sent meanwhile, was kept in the
        client's buffer and stored once it reconnected."""
        headers_for = {MASTER_HEADER: self.settings.master}
        delay = 0.05
        while not self._closing:
            if not self._pending:
                self._wake_publisher.clear()
                await self._wake_publisher.wait()
                continue
            window = [self._pending[i] for i in range(min(PUBLISH_WINDOW, len(self._pending)))]
            sends = [
                asyncio.ensure_future(self._js.publish(
                    subject_, raw, timeout=PUBLISH_TIMEOUT, stream=self.settings.stream,
                    headers={**headers_for, MSG_ID_HEADER: msg_id},
                ))
                for subject_, raw, msg_id in window
            ]
            acked = 0
            failed: BaseException | None = None
            for send in sends:
                try:
                    ack = await send
                except Exception as exc:
                    failed = exc
                    break
                acked += 1
                if ack.duplicate:
                    self.duplicates += 1
            if failed is not None:  # let the rest settle: they are sent again anyway
                await asyncio.gather(*sends, return_exceptions=True)
            for _ in range(acked):
                self._pending.popleft()
                self._room.release()
            self.published += acked
            if failed is None:
                delay = 0.05
                continue
            self.retries += 1
            log.debug("publishing to the event log failed (%s); sending again from there", _why(failed))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    # -- fetch (a worker thread) ------------------------------------------------------
    def fetch(self, call: FetchEvents) -> tuple[tuple[LoggedEvent, ...], bool]:
        """The stream's events ``call.first``..``call.last`` on ``call.subjects``,
        and whether that is all of them (False: a bound or the timeout cut it
        short). Blocks: a worker thread only."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the event log is not started")
        return asyncio.run_coroutine_threadsafe(self._resume_fetch(call), loop).result(FETCH_TIMEOUT + 1)

    async def _resume_fetch(self, call: FetchEvents) -> tuple[tuple[LoggedEvent, ...], bool]:
        # counted here, on the NATS loop, not in the worker threads: several of them
        # fetch at once, and ``+=`` from two threads can lose one
        self.fetches += 1
        return await self._fetch(call)

    async def _fetch(self, call: FetchEvents) -> tuple[tuple[LoggedEvent, ...], bool]:
        from nats import errors as nats_errors
        from nats.js import api

        if not self._ready.is_set():
            return (), False
        subjects = list(call.subjects)
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=call.first,
            filter_subjects=subjects if len(subjects) > 1 else None,
        )
        sub = await self._js.subscribe(
            subjects[0], stream=self.settings.stream, ordered_consumer=True, config=config,
            pending_msgs_limit=call.max_events + 16,
        )
        events: list[LoggedEvent] = []
        size = 0
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                while True:
                    try:
                        msg = await sub.next_msg(timeout=FETCH_IDLE)
                    except (TimeoutError, asyncio.TimeoutError, nats_errors.TimeoutError):
                        # nothing for a while: done if the consumer has nothing left
                        # (asked only now: a new consumer may not count its pending yet)
                        if not (await sub.consumer_info()).num_pending:
                            return tuple(events), True
                        continue
                    meta = msg.metadata
                    sequence = meta.sequence.stream
                    if sequence > call.last:
                        return tuple(events), True
                    size += len(msg.data)
                    if len(events) >= call.max_events or size > call.max_bytes:
                        return tuple(events), False
                    events.append(_logged(msg, sequence))
                    if sequence == call.last or not meta.num_pending:
                        return tuple(events), True
        except (TimeoutError, asyncio.TimeoutError):
            return tuple(events), False
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                pass

    # -- the NATS loop ----------------------------------------------------------------
    async def _connect(self) -> None:
        import nats

        settings = self.settings
        delay = 0.1
        while not self._closing:
            try:
                self._nc = await nats.connect(
                    servers=list(settings.servers), name="saltnado", connect_timeout=2,
                    allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    ping_interval=2, max_outstanding_pings=2,
                    disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                    error_cb=self._error, **_credentials(settings),
                )
                self._js = self._nc.jetstream(timeout=PUBLISH_TIMEOUT)
                await self._ensure_stream()
                break
            except Exception as exc:
                log.warning("event log %s unavailable (%s); retrying", settings.describe(), _why(exc))
                if self._nc is not None:
                    try:
                        await self._nc.close()
                    except Exception:
                        pass
                    self._nc = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        if self._closing:
            return
        self._ready.set()
        self.connected = True
        log.info("connected to the event log %s, stream %s", settings.describe(), settings.stream)
        self._tell_state(True, "")
        if self.settings.role.ingests:
            asyncio.get_running_loop().create_task(self._publisher())
        delay = 0.1
        while self._deliver is not None and not self._closing:
            try:
                await self._follow()
                return
            except Exception as exc:
                log.warning("event log: cannot read stream %s (%s); retrying", settings.stream, _why(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _ensure_stream(self) -> None:
        """Create the stream, or bring its settings to these (idempotent: every
        node does it at start-up); then read its epoch and last sequence."""
        from nats.js import api
        from nats.js.errors import BadRequestError, NotFoundError

        s = self.settings
        config = api.StreamConfig(
            name=s.stream, subjects=[s.all_subjects], retention=api.RetentionPolicy.LIMITS,
            max_msgs=s.max_msgs, max_bytes=s.max_bytes, max_age=s.max_age, num_replicas=s.replicas,
            duplicate_window=s.duplicate_window, storage=api.StorageType.FILE, discard=api.DiscardPolicy.OLD,
        )
        jsm = self._js
        try:
            info = await jsm.stream_info(s.stream)
        except NotFoundError:
            try:
                info = await jsm.add_stream(config)
            except BadRequestError:  # another node created it meanwhile, or a real refusal
                try:
                    info = await jsm.stream_info(s.stream)
                except NotFoundError:
                    raise StreamRefused(s.stream, await _refusal(jsm, config)) from None
        else:
            if _differs(info.config, config):
                info = await jsm.update_stream(config)
        created = info.created.isoformat() if info.created is not None else ""
        self.epoch = stream_epoch(s.stream, created)

    async def _follow(self) -> None:
        """The edge: every event from the next sequence on, to the binding's loop."""
        from nats.js import api

        info = await self._js.stream_info(self.settings.stream)
        last = info.state.last_seq
        self.first_sequence = self._next_sequence = last + 1
        epoch = self.epoch
        assert epoch is not None
        self._call_soon(lambda: self._on_epoch and self._on_epoch(epoch, last))
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last + 1)
        await self._js.subscribe(
            self.settings.all_subjects, stream=self.settings.stream, ordered_consumer=True, config=config,
            idle_heartbeat=1.0, cb=self._received, pending_msgs_limit=EDGE_QUEUE * 2,
        )

    async def _received(self, msg: Any) -> None:
        sequence = msg.metadata.sequence.stream
        if sequence < self._next_sequence:
            return  # delivered again (a consumer re-created from an older sequence)
        if sequence > self._next_sequence:
            # A gap: the ordered consumer was re-created past events this node never
            # got (a server lost mid-delivery). Read them first, so the streams see
            # every sequence in order; a stream's own retention can leave real holes.
            self.gaps += 1
            missing, complete = await self._fetch(FetchEvents(
                self._next_sequence, sequence - 1, (self.settings.all_subjects,), GAP_FETCH_MAX, 1 << 30))
            if not complete:
                log.warning("event log: %d events before sequence %d could not be read; skipped",
                            sequence - self._next_sequence - len(missing), sequence)
            for logged in missing:
                await self._enqueue(logged)
        self._next_sequence = sequence + 1
        await self._enqueue(_logged(msg, sequence))

    async def _enqueue(self, logged: LoggedEvent) -> None:
        with self._inbox_lock:
            self._inbox.append(logged)
            first = len(self._inbox) == 1
            full = len(self._inbox) >= EDGE_QUEUE
        if first:
            self._call_soon(self._drain)
        if full:
            room = self._inbox_room
            room.clear()
            with self._inbox_lock:
                still_full = len(self._inbox) >= EDGE_QUEUE
            if still_full:
                await room.wait()

    def _drain(self) -> None:
        """On the binding's loop: dispatch what the consumer queued."""
        with self._inbox_lock:
            events = list(self._inbox)
            self._inbox.clear()
        if events and self._deliver is not None:
            self._deliver(events)
        loop, room = self._loop, self._inbox_room
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(room.set)

    def _call_soon(self, callback: Callable[[], Any]) -> None:
        """``callback`` on the binding's loop; what it raises is logged there, never
        let loose in the loop (an exception in trio's run_sync_soon ends the run)."""
        if self._run_soon is None:
            return

        def guarded() -> None:
            try:
                callback()
            except Exception:
                log.exception("event log: handing events over failed")

        try:
            self._run_soon(guarded)
        except Exception:  # the binding's loop has ended: shutting down
            pass

    def _tell_state(self, up: bool, reason: str) -> None:
        on_state = self._on_state
        if on_state is not None:
            self._call_soon(lambda: on_state(up, reason))

    async def _disconnected(self) -> None:
        self.connected = False
        if not self._closing:
            log.warning("event log connection lost; reconnecting")
            self._tell_state(False, "event log connection lost")

    async def _reconnected(self) -> None:
        self.connected = True
        log.info("event log reconnected (%s)", self._nc.connected_url.netloc if self._nc else "?")
        self._tell_state(True, "")

    async def _error(self, exc: Exception) -> None:
        log.debug("event log: %s", _why(exc))

    async def _close(self) -> None:
        """Drain the connection, then end every task left on this loop (none is
        left pending when the loop closes)."""
        if self._nc is not None:
            try:
                await self._nc.drain()
            except Exception:
                try:
                    await self._nc.close()
                except Exception:
                    pass
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)


def _end_tasks(loop: asyncio.AbstractEventLoop, timeout: float = 1.0) -> None:
    """Cancel every task still on ``loop`` (stopped) and run it until they have
    ended, as :func:`asyncio.run` does, before it is closed: a task left pending
    (the publisher waiting for work, a consumer's callback, a :meth:`_close` cut
    short by its timeout) would be destroyed with the loop, and asyncio says so on
    stderr. ``timeout`` bounds a task that does not end when cancelled."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=timeout))
    if pending:
        log.warning("event log: %d tasks did not end when cancelled", len(pending))
    for task in tasks - pending:  # retrieved, so asyncio does not report them at exit
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            log.debug("event log: a task ended with %s", _why(failure))
    loop.run_until_complete(loop.shutdown_asyncgens())


class StreamRefused(Exception):
    def __init__(self, stream: str, why: str) -> None:
        super().__init__(f"JetStream refuses to create stream {stream}: {why}")


async def _refusal(jsm: Any, config: Any) -> str:
    """Why JetStream refused to create the stream (its own words), asking once more."""
    try:
        await jsm.add_stream(config)
    except Exception as exc:
        return getattr(exc, "description", None) or str(exc)
    return "it was created on the second try"


def _logged(msg: Any, sequence: int) -> LoggedEvent:
    headers = msg.headers or {}
    return LoggedEvent(sequence, headers.get(MASTER_HEADER, ""), msg.data)


def _differs(current: Any, wanted: Any) -> bool:
    fields = ("subjects", "max_msgs", "max_bytes", "max_age", "num_replicas", "duplicate_window")
    return any(getattr(current, f, None) != getattr(wanted, f, None) for f in fields)


def _credentials(settings: EventLogSettings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.user is not None:
        options.update(user=settings.user, password=settings.password)
    if settings.token is not None:
        options["token"] = settings.token
    if settings.creds is not None:
        options["user_credentials"] = settings.creds
    if settings.tls_ca or settings.tls_cert:
        context = ssl.create_default_context(cafile=settings.tls_ca)
        if settings.tls_cert:
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
        options["tls"] = context
    return options


def _why(exc: BaseException) -> str:
    """An error in words for a log line (never the credentials: nats-py's
    messages name servers, not passwords)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
