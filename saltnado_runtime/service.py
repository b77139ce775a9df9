"""What every binding serves, minus the I/O: one master's core objects, the Salt
bridge and the logs.

A binding owns sockets, tasks and timers and calls in here; nothing here opens
a socket or starts a task. The coroutines are framework-neutral: they await only
what the binding passes in — ``salt``, which runs one effect (a Salt call, or a
file to serve: :meth:`Service.execute`) in a bounded worker thread, and ``spawn``, which starts a task in a task group the binding
owns — so the trio and asyncio bindings run the very same request path.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from saltnado_core import App, EventStreams, SaltCall, ServerConnection, Settings
from saltnado_core.buslink import EventBusLink
from saltnado_core.driving import Served, serve_requests
from saltnado_core.eventbus import BodyFault, EventBusError, decode_body
from saltnado_core.eventlog import EventLogSettings, FetchEvents, LoggedEvent
from saltnado_core.files import ReadFile
from saltnado_core.formatted import FormattedView
from saltnado_core.history import EventHistory
from saltnado_core.outcomes import Effect
from saltnado_core.pacing import Pacing
from saltnado_core.revocation import RecheckCall, TokenRecheck
from saltnado_core.salt_calls import MasterUnavailable, call_master
from saltnado_core.static import Site
from saltnado_core.subscriptions import Subscriptions
from saltnado_core.tokens import redact_path
from saltnado_dashboard import DIRECTORY as DASHBOARD_DIRECTORY
from saltnado_salt import load_master_opts

from .files import StaticFiles
from .hub import EventHub
from .logs import redact_salt_logs, redact_saltnado_logs
from .masters import CommandMasters, MasterLoader
from .metrics import ServiceMetrics
from .tls import load_ssl_context

if TYPE_CHECKING:
    from .eventlog import EventLogNode

log = logging.getLogger("saltnado.server")
access_log = logging.getLogger("saltnado.access")
feed_log = logging.getLogger("saltnado.feed")

SaltRunner = Callable[[Effect], Awaitable[Any]]  # runs a call (Service.execute) in a worker thread
Spawn = Callable[[Callable[[], Awaitable[None]]], Any]  # starts a task the binding owns


def peer_address(peer: Any) -> str | None:
    """The IP address in a ``getpeername()`` result; None for anything else."""
    if isinstance(peer, (tuple, list)) and peer and isinstance(peer[0], str):
        return peer[0]
    return None


class Service:
    def __init__(
        self, settings: Settings, master_opts: Mapping[str, Any], pacing: Pacing = Pacing(),
        load_master: MasterLoader = load_master_opts,
    ) -> None:
        """``master_opts``: the loaded config's options (its event bus is streamed);
        ``load_master``: reads the config file of each other master ``masters:`` names
        (raises ConfigError: a file that is missing)."""
        self.pacing = pacing
        self.streams = EventStreams(
            FormattedView(
                settings.formatted_max_jobs, settings.formatted_max_job_age, settings.formatted_max_view_bytes,
                settings.formatted_max_return_bytes, settings.formatted_max_job_minions,
            ),
            # a new epoch per process run: a restarted server, or another process behind
            # the same port, never takes an old event id for one of its own
            EventHistory(secrets.token_hex(6), settings.event_history_max_events, settings.event_history_max_bytes),
        )
        self.subscriptions = Subscriptions(settings.limits)
        self.link = EventBusLink(
            settings.sock_dir, self.streams, self.subscriptions, settings.limits.max_event_bytes, pacing
        )
        redact_saltnado_logs()  # tokens never reach a log (idempotent)
        # the masters commands go to (saltnado_core.masters), and the loaded config's bridge
        self.masters = CommandMasters(settings, master_opts, self.link, pacing, redact_salt_logs, load_master)
        self.settings = settings = self.masters.settings
        self.bridge = self.masters.stream_bridge
        self.connections: dict[ServerConnection, Callable[[], None]] = {}  # → its writer's wake
        # GET /metrics and /stats: the core's figures read when asked, and this
        # service's own counts of requests and Salt calls
        self.metrics = ServiceMetrics(self.streams, self.link, self.subscriptions, self.connections, time.time())
        self.app = App(
            settings, health=self.masters.health, metrics=self.metrics.exposition, stats=self.metrics.stats,
            site=Site.from_settings(settings, str(DASHBOARD_DIRECTORY)),
        )
        self.files = StaticFiles(settings.static_cache_bytes)
        self.recheck = TokenRecheck()
        # Salt calls in progress that need their master: how to give up on each → its master
        self._master_calls: dict[Callable[[], None], str | None] = {}
        # several masters and nodes on an event log (saltnado_runtime.eventlog); the
        # link of the log's feed is ``link`` itself on an edge-only node
        self.event_log: EventLogNode | None = None
        self.log_link: EventBusLink | None = None
        if settings.event_log is not None:
            self._join_event_log(settings.event_log)

    def _join_event_log(self, log_settings: EventLogSettings) -> None:
        """Roles (saltnado_core.eventlog.Role): ingest keeps the bus's events for
        the log; edge feeds the streams from the log instead of the bus."""
        from .eventlog import EventLogNode  # imports nats only when it connects

        self.event_log = EventLogNode(log_settings)
        self.metrics.event_log = self.event_log
        role = log_settings.role
        self.link.ingest = role.ingests
        self.link.master = log_settings.master or None  # ingest-only: its own clients see it too
        if role.serves:
            self.streams.log_prefix = log_settings.subject_prefix
            if role.ingests:  # both: the bus's events come back through the log
                self.link.relay = False
                self.log_link = EventBusLink("", self.streams, self.subscriptions, self.settings.limits.max_event_bytes, self.pacing)
            else:
                self.log_link = self.link
            self.log_link.path = f"the event log ({log_settings.describe()})"

    def start_event_log(self, run_soon: Callable[[Callable[[], None]], Any], salt: SaltRunner, spawn: Spawn) -> None:
        """Connect to the event log (its own thread); ``run_soon``: the binding
        loop's thread-safe call_soon, by which the log hands events over."""
        assert self.event_log is not None
        serves = self.log_link is not None
        self.event_log.start(
            run_soon,
            deliver=partial(self.log_events, salt=salt, spawn=spawn) if serves else None,
            on_state=self.log_state if serves else None,
            on_epoch=self.log_epoch if serves else None,
        )

    def log_epoch(self, epoch: str, last: int) -> None:
        """The log's stream: ids from here on are its epoch and sequences."""
        history = self.streams.history
        if history.epoch != epoch:
            history.rebase(epoch, last)

    def log_events(self, events: list[LoggedEvent], salt: SaltRunner, spawn: Spawn) -> None:
        """Events from the log, in stream order (an edge node): each dispatched
        under its sequence; one seen already (a consumer re-created after a
        lost server) is not sent twice."""
        link, history, now = self.log_link, self.streams.history, time.time()
        assert link is not None
        for logged in events:
            if logged.sequence <= history.position:
                continue
            try:
                event = decode_body(logged.raw)
            except EventBusError:
                link.skipped[BodyFault.NOT_MSGPACK] = link.skipped.get(BodyFault.NOT_MSGPACK, 0) + 1
                continue
            for call in link.receive_event(event, now, logged.sequence, logged.master):
                spawn(partial(self.background_salt_call, call, salt))

    def log_state(self, up: bool, reason: str) -> None:
        """The log's connection went down (``reason``) or came back."""
        link = self.log_link
        assert link is not None
        if up:
            link.connected(time.time())
        else:
            link.lost(ConnectionError(reason), time.time())
        self._bus_changed()

    # -- connections -----------------------------------------------------------
    def open_connection(self, wake: Callable[[], None], peer: Any = None) -> ServerConnection:
        """A connection for a new client; ``peer``: the socket's ``getpeername()``
        (an ``(address, port, …)`` tuple; a Unix socket's path, or None: no address)."""
        conn = ServerConnection(
            self.settings.limits, self.streams, wake=wake, open_connections=len(self.connections),
            pacing=self.pacing, peer=peer_address(peer),
        )
        self.connections[conn] = wake
        return conn

    def forget(self, conn: ServerConnection) -> None:
        """The connection's socket is gone: unsubscribe it from every stream."""
        self.connections.pop(conn, None)
        conn.close()

    async def receive(self, conn: ServerConnection, data: bytes | None, salt: SaltRunner, spawn: Spawn) -> None:
        """Feed ``data`` (``b""`` at EOF; None: nothing new, after ``conn.input_paused``)
        to ``conn``, answer its requests, start the Salt calls its stream needs, and
        wake its writer."""
        if data is not None:
            self.metrics.client_bytes_read += len(data)
            conn.receive_data(data)
        await self.respond(conn, salt)
        for call in conn.take_salt_calls():
            spawn(partial(self._stream_salt_call, conn, call, salt))
        self.connections.get(conn, _nothing)()

    def close_all(self) -> None:
        """Shutdown: websockets get 1001, event streams their last chunk, requests
        being answered ``Connection: close`` on their response, idle connections
        are closed now; the hub ends."""
        for conn, wake in list(self.connections.items()):
            conn.close()
            wake()
        self.subscriptions.end_all()

    def abandon_requests(self) -> None:
        """Shutdown past its timeout: requests still waiting for Salt get 503."""
        for conn, wake in list(self.connections.items()):
            if conn.abandon_request("the server is shutting down; the request was not answered in time"):
                wake()

    async def drain(self, grace: float | None, sleep: Callable[[float], Awaitable[object]]) -> None:
        """Shutdown, once the binding has stopped accepting: :meth:`close_all`; let
        requests being answered finish for ``grace`` s (default: the
        ``shutdown_timeout`` setting); answer those left 503; give their answers
        ``pacing.shutdown_flush`` s to be written. ``sleep`` is the loop's own."""
        self.close_all()
        if grace is None:
            grace = self.settings.limits.timeouts.shutdown_timeout
        await self._until_no_connections(grace, sleep)
        self.abandon_requests()
        await self._until_no_connections(self.pacing.shutdown_flush, sleep)

    async def _until_no_connections(self, timeout: float, sleep: Callable[[float], Awaitable[object]]) -> None:
        end = time.monotonic() + timeout
        while self.connections and time.monotonic() < end:
            await sleep(self.pacing.shutdown_poll)

    def tick(self) -> None:
        """Every ``pacing.tick_interval``: end streams whose token expired; now and
        then, keep idle ``/events`` streams alive through proxies; time out idle
        and slow connections."""
        now, monotonic = time.time(), time.monotonic()
        self.link.tick(now)  # the master counts as back once a new bus connection settles
        self.masters.tick(now)  # … and so does any other master commands go to
        self.masters_changed()
        if self.log_link is not None and self.log_link is not self.link:
            self.log_link.tick(now)
        for conn, wake in list(self.connections.items()):  # one pass: 10,000 streams cost ~2 ms
            expired = conn.expire(now)
            if conn.tick(monotonic) or expired:  # timeouts and pings (limits.timeouts)
                for rejection in conn.take_rejections():  # a 408 for a request sent too slowly
                    self._log_request(Served(rejection.request, rejection.response, by_app=False), 0.0)
                wake()
        self.streams.tick(monotonic)  # /events keep-alive comments

    def recheck_tokens(self, salt: SaltRunner, spawn: Spawn) -> None:
        """Every tick, beside :meth:`tick`: the re-check of open streams' tokens the
        core asks for (:mod:`saltnado_core.revocation`: one listing of Salt's token
        store, a few ``get_tok``), in worker threads; streams whose token was
        revoked are closed with 1008 (``/events``: ended)."""
        for call in self.recheck.calls(self.streams.tokens):
            spawn(partial(self._recheck_token, call, salt))

    async def _recheck_token(self, call: RecheckCall, salt: SaltRunner) -> None:
        try:
            answer = await self._salt(call, salt)
        except Exception as exc:
            self.recheck.failed(call)
            self.metrics.token_recheck(call, ok=False)
            log.warning("re-checking streams' tokens failed (the streams stay open): %s", type(exc).__name__)
            return
        closed = self.recheck.done(call, answer, time.time(), self.connections)
        self.metrics.token_recheck(call, ok=True, closed=len(closed))
        for conn in closed:
            self.connections.get(conn, _nothing)()

    # -- Salt calls --------------------------------------------------------------
    def execute(self, call: Effect) -> Any:
        """Run one effect a handler yielded; blocks, so only in a worker thread (the
        binding's ``salt`` runner). A file to serve is read here, never through the
        Salt bridge: it needs no master (``needs_master`` is False for it)."""
        if isinstance(call, ReadFile):
            return self.files.read(call)
        if isinstance(call, FetchEvents):
            assert self.event_log is not None
            return self.event_log.fetch(call)
        return self.masters.bridge(call_master(call)).execute(call)

    def warm_up(self) -> None:
        """Load every master's eauth modules (blocking: in a worker thread), so the
        first request does not wait for it."""
        for bridge in {id(bridge): bridge for bridge in [self.bridge, *self.masters.bridges.values()]}.values():
            bridge.load_auth()

    async def respond(self, conn: ServerConnection, salt: SaltRunner) -> None:
        """Answer every complete request ``conn`` holds, in order: the core's loop
        (:func:`~saltnado_core.driving.serve_requests`), each Salt call awaited
        through ``salt`` (its exception is the handler's to answer); log each request."""
        steps = serve_requests(conn, self.app, time.time)
        started = time.monotonic()  # a request is handled from here to its Served
        try:  # the generator ends with StopIteration, after a Served or a Salt call
            step = next(steps)
            while True:
                if isinstance(step, Served):
                    self._log_request(step, time.monotonic() - started)
                    started = time.monotonic()
                    step = next(steps)
                    continue
                try:
                    result = await self._salt(step, salt)
                except Exception as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(result)
        except StopIteration:
            pass

    def _log_request(self, served: Served, seconds: float) -> None:
        self.metrics.request(served, seconds)
        request = served.request
        target = redact_path(request.target, self.settings.token_length)
        if served.error is not None:
            log.error("error handling %s %s", request.method, target, exc_info=served.error)
        # The client's address is the socket's peer (never a header a client or proxy sets);
        # "-" when the binding has none (a Unix socket, an embedding host that gave none).
        access_log.info("%s %s %s %d %.1fms", request.client or "-", request.method, target, served.status,
                        seconds * 1000)

    async def _salt(self, call: Effect, salt: SaltRunner) -> Any:
        """``await salt(call)``; a Salt call is counted and timed for /metrics (the
        worker-thread queue included: the time the caller waits), a file read is not."""
        if isinstance(call, (ReadFile, FetchEvents)):
            return await salt(call)
        started = time.perf_counter()
        try:
            result = await salt(call)
        except Exception:
            self.metrics.salt_call(call, time.perf_counter() - started, ok=False)
            raise
        self.metrics.salt_call(call, time.perf_counter() - started, ok=True)
        return result

    async def _stream_salt_call(self, conn: ServerConnection, call: SaltCall | FetchEvents, salt: SaltRunner) -> None:
        if isinstance(call, FetchEvents):  # a resuming client's range of the event log
            try:
                events, complete = await salt(call)
            except Exception as exc:
                log.warning("reading the event log for a resuming client failed: %s", type(exc).__name__)
                events, complete = None, False
            self.streams.fetched(call, events, complete)
            self.connections.get(conn, _nothing)()
            return
        try:
            await self._salt(call, salt)
        except Exception as exc:
            log.warning("%r for a streaming client failed: %s: %s", call, type(exc).__name__, exc)
            conn.salt_call_done(call, exc)
            self.connections.get(conn, _nothing)()
        else:
            conn.salt_call_done(call)

    async def background_salt_call(self, call: SaltCall, salt: SaltRunner) -> None:
        """A call the event streams need (grains of new minions); failures are logged."""
        try:
            await self._salt(call, salt)
        except Exception as exc:
            log.warning("%r failed: %s: %s", call, type(exc).__name__, exc)

    @contextlib.contextmanager
    def master_call(self, call: Effect, abandon: Callable[[], None]) -> Iterator[None]:
        """Around a Salt call that needs its master (``needs_master``): raises
        MasterUnavailable at once while that master is down (its event bus), and calls
        ``abandon`` if it goes down during the call (which must then raise
        :meth:`master_unavailable` instead of waiting out Salt's own timeouts,
        minutes for a vanished master)."""
        master = call_master(call)
        if not self.masters.available(master):
            raise self.master_unavailable(call)
        self._master_calls[abandon] = master
        try:
            yield
        finally:
            self._master_calls.pop(abandon, None)

    def master_unavailable(self, call: Effect) -> MasterUnavailable:
        """The exception for ``call`` when its master is down (it names the master on
        a node with ``masters:``)."""
        return MasterUnavailable(self.masters.shown(call_master(call)))

    def masters_changed(self) -> None:
        """A master's health may have changed: log it, and give up on the calls
        waiting for a master that is down."""
        for liveness in self.masters.watched.values():
            for notice in liveness.notices():
                feed_log.log(notice.level, notice.message)
        for abandon, master in list(self._master_calls.items()):
            if not self.masters.available(master):
                abandon()

    # -- the event feed, TLS, logs -------------------------------------------------
    def bus_unavailable(self, error: OSError) -> float:
        """Connecting to the event bus failed → seconds to wait before retrying."""
        delay = self.link.unavailable(error, time.time())
        self._bus_changed()
        return delay

    def bus_connected(self) -> None:
        self.link.connected(time.time())
        self._bus_changed()

    def bus_lost(self, error: BaseException | None) -> None:
        """The event-bus connection ended (``None``: closed by the master)."""
        self.link.lost(error, time.time())
        self._bus_changed()

    def _bus_changed(self) -> None:
        self.log_feed()
        self.masters_changed()

    def feed_data(self, data: bytes, salt: SaltRunner, spawn: Spawn) -> None:
        """Bytes read from the event bus; raises EventBusError if they are garbled."""
        for call in self.link.receive_data(data, time.time()):
            spawn(partial(self.background_salt_call, call, salt))

    def log_feed(self) -> None:
        links = [self.link] if self.log_link in (None, self.link) else [self.link, self.log_link]
        for link in links:
            for notice in link.notices():
                feed_log.log(notice.level, notice.message)

    def ssl_context(self) -> ssl.SSLContext | None:
        return load_ssl_context(self.settings)

    def log_listening(self, sockname: Any) -> None:
        scheme = "http" if self.settings.disable_ssl else "https"
        log.info("listening on %s://%s:%s", scheme, sockname[0], sockname[1])


def _nothing() -> None:
    pass


class ServedMaster:
    """What a binding's ``Server`` holds, whatever its loop: the :class:`Service`
    for one master and the handles a host reads — ``settings``, ``streams``,
    ``feed`` (the event-bus link: ``.state``, ``.connections``) and ``hub``
    (in-process subscribers, woken through ``new_event``: ``trio.Event`` or
    ``asyncio.Event``)."""

    def __init__(
        self, settings: Settings, master_opts: Mapping[str, Any], new_event: Callable[[], Any], pacing: Pacing
    ) -> None:
        self.settings = settings
        self.service = Service(settings, master_opts, pacing)
        self.streams = self.service.streams
        self.feed = self.service.link
        self.hub = EventHub(self.service.subscriptions, new_event)
