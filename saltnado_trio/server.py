"""The trio server: sockets, worker threads and timers around saltnado_core.

One task pair per connection: a reader (bytes → core → Salt calls in threads)
and a writer that sends whatever the core has queued as one coalesced write.
All policy (limits, status and close codes, the slow-client rule, timeouts,
when to drop a connection, retry delays) is the core's — the binding follows
the contract in :mod:`saltnado_core.connection`; the request path, the logs and the in-process
event hub are shared with the asyncio binding (:mod:`saltnado_runtime`).

Embedding in a trio program::

    server = Server(settings, master_opts)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)            # listen=False: no sockets of its own
        async for event in server.hub.subscribe("salt/job/"):
            ...
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from functools import partial
from typing import Any

import trio

from saltnado_core import ServerConnection, Settings
from saltnado_core.outcomes import Effect
from saltnado_core.pacing import Pacing
from saltnado_core.salt_calls import needs_master
from saltnado_runtime import ServedMaster, Wakeup
from saltnado_runtime.feed import follow_events

# The peer vanished: nothing is left to tell it.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError)


class Server(ServedMaster):
    def __init__(
        self, settings: Settings, master_opts: Mapping[str, Any], *, salt_threads: int | None = None,
        pacing: Pacing = Pacing(),
    ) -> None:
        """``salt_threads``: Salt calls run at once (default: the ``salt_threads`` setting,
        rest_cherrypy's ``thread_pool``)."""
        super().__init__(settings, master_opts, trio.Event, pacing)
        self.limiter = trio.CapacityLimiter(salt_threads or settings.salt_threads)
        self._nursery: trio.Nursery | None = None
        self._accepting = trio.CancelScope()
        self.listeners: list[trio.abc.Listener[Any]] = []
        self._direct = _DirectWrites()

    # -- lifecycle -----------------------------------------------------------
    async def serve(self, *, listen: bool = True, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or :meth:`shutdown`; reports the listeners (none
        with ``listen=False``: the host hands connections to :meth:`handle_connection`)."""
        listeners: list[trio.abc.Listener[Any]] = []
        if listen:
            if self.settings.num_processes != 1:  # several processes share the port
                listeners = await _reuse_port_listeners(
                    self.settings.port, self.settings.address, self.settings.backlog
                )
            else:
                listeners = list(
                    await trio.open_tcp_listeners(
                        self.settings.port, host=self.settings.address, backlog=self.settings.backlog
                    )
                )
            context = self.service.ssl_context()
            if context is not None:
                listeners = [trio.SSLListener(lsn, context, https_compatible=True) for lsn in listeners]
        self.listeners = listeners
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(
                follow_events, self.service, _BusSocket.connect, trio.sleep, self._salt, nursery.start_soon,
                trio.lowlevel.current_trio_token().run_sync_soon,  # how the event log's thread hands events over
            )
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._direct.run)
            warm_up = partial(trio.to_thread.run_sync, self.service.warm_up, abandon_on_cancel=True)
            nursery.start_soon(warm_up)  # eauth modules load once, before the first request
            if listeners:
                await nursery.start(self._accept, listeners, nursery)
            task_status.started(listeners)

    async def _accept(
        self, listeners: list[trio.abc.Listener[Any]], nursery: trio.Nursery, *, task_status: Any
    ) -> None:
        # Connections live in the server's nursery, so stopping the accept loop
        # (shutdown) does not cut them off.
        with self._accepting:
            await trio.serve_listeners(
                self.handle_connection, listeners, handler_nursery=nursery, task_status=task_status
            )

    async def _ticker(self) -> None:
        assert self._nursery is not None
        while True:
            await trio.sleep(self.service.pacing.tick_interval)
            self.service.tick()
            self.service.recheck_tokens(self._salt, self._nursery.start_soon)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting; close websockets with 1001 and end event streams; let
        requests being answered finish for ``grace`` s (default: the
        ``shutdown_timeout`` setting), then answer those left 503; stop. Returns
        within ``grace`` + ``pacing.shutdown_flush`` s: Salt calls still running
        are abandoned (their worker threads end on their own)."""
        self._accepting.cancel()
        for listener in self.listeners:
            await listener.aclose()
        await self.service.drain(grace, trio.sleep)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- one connection ------------------------------------------------------
    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted connection until it ends (also for a host's own listener)."""
        wake = _TaskWake()
        direct = _Direct(self._direct, stream, wake)
        conn = direct.conn = self.service.open_connection(direct, _peer(stream))
        try:
            async with trio.open_nursery() as nursery:
                direct.scope = nursery.cancel_scope
                nursery.start_soon(self._reader, stream, conn, direct)
                await self._writer(stream, conn, wake, direct)
                nursery.cancel_scope.cancel()
        finally:
            direct.gone = True  # before the socket (and its fd number) is released
            self.service.forget(conn)
            with trio.move_on_after(self.service.pacing.socket_close, shield=True):
                try:
                    await stream.aclose()
                except _GONE:
                    pass

    async def _reader(self, stream: trio.abc.Stream, conn: ServerConnection, direct: _Direct) -> None:
        assert self._nursery is not None, "serve() first"
        spawn = self._nursery.start_soon
        read_bytes = self.service.pacing.read_bytes
        fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        while not conn.finished:
            if conn.input_paused:  # the client is not reading its responses: neither do we
                if direct.reading is None:
                    direct.reading = _TaskWake()
                await direct.reading.wait()  # the writer has written some
                await self.service.receive(conn, None, self._salt, spawn)
                continue
            try:
                got = await (_read_fd(fd, read_bytes) if fd >= 0 else stream.receive_some(read_bytes))
            except _GONE:
                got = b""
            data = got if isinstance(got, bytes) else bytes(got)  # trio types a read as bytes | bytearray
            await self.service.receive(conn, data, self._salt, spawn)
            if not data:  # the client has closed its side (or vanished): the core ends it
                return

    async def _writer(self, stream: trio.abc.Stream, conn: ServerConnection, wake: _TaskWake, direct: _Direct) -> None:
        while True:
            if direct.pending:  # the rest of a direct write goes first, alone: joined to
                data, direct.pending = direct.pending, b""  # the next slice of a body, it is a copy
            else:
                data = conn.data_to_send()
            if not data and conn.finished:
                return
            direct.keep_deadline()
            if data:
                direct.sending = True
                try:
                    await stream.send_all(data)
                except _GONE:
                    return
                finally:
                    direct.sending = False
                data = b""  # written: let it go before the next slice is taken
                if direct.reading is not None:
                    direct.reading()
            else:
                await wake.wait()

    async def _salt(self, call: Effect) -> Any:
        """Run ``call`` in a worker thread. Cancelled (shutdown, a vanished client),
        the thread is abandoned: it still holds its limiter slot until Salt returns."""
        run = partial(
            trio.to_thread.run_sync, self.service.execute, call, limiter=self.limiter, abandon_on_cancel=True
        )
        if not needs_master(call):
            return await run()
        with trio.CancelScope() as scope, self.service.master_call(call, scope.cancel):
            return await run()
        raise self.service.master_unavailable(call)  # its event bus went down during the call


class _BusSocket:
    """The event bus's Unix socket for :func:`follow_event_bus` (trio's broken stream is an OSError there)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.aclose = stream.aclose
        self._stream = stream

    @classmethod
    async def connect(cls, path: str) -> _BusSocket:
        return cls(await trio.open_unix_socket(path))

    async def receive(self, max_bytes: int) -> bytes:
        try:
            return await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:  # trio's wrapper of a reset
            raise exc.__cause__ if isinstance(exc.__cause__, OSError) else OSError(str(exc)) from exc


async def _read_fd(fd: int, max_bytes: int) -> bytes:
    """``SocketStream.receive_some`` for a plain socket, with a shallower stack: an idle
    connection's reader waits here, and each frame it keeps costs memory (~1 KB less
    per idle websocket than through trio's socket wrappers)."""
    while True:
        try:
            data = os.read(fd, max_bytes)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            continue
        except OSError:  # reset by the peer, or the socket is gone
            return b""
        await trio.lowlevel.checkpoint()  # a client that keeps sending does not starve the others
        return data


class _TaskWake:
    """A level-triggered wakeup for one task (calls before a wait are not lost), with
    trio's low-level parking: no Event and ParkingLot per connection (~0.6 KB each)."""

    __slots__ = ("_task", "_set")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._set = False

    def __call__(self) -> None:
        self._set = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        if self._set:  # woken since the last wait: return at once
            self._set = False
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        self._set = False  # the woken task looks at the connection's state afresh


class _DirectWrites:
    """Writes queued output of plain-TCP connections from one task.

    When the fan-out queues an event for a thousand clients, waking a thousand
    writer tasks costs a trio task switch each (more than the send itself). So a
    connection's wake marks it here instead, and this one task, once per batch of
    events, drains each marked connection with non-blocking sends. What a socket
    cannot take now goes to that connection's own writer task, which waits for
    the socket; until it is done, this task leaves the connection alone.
    """

    def __init__(self) -> None:
        self._marked: dict[_Direct, None] = {}
        self._wake = Wakeup(trio.Event)

    def mark(self, direct: _Direct) -> None:
        if not self._marked:
            self._wake()
        self._marked[direct] = None

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._flush_marked()

    def _flush_marked(self) -> None:
        # A function of its own: its locals (the batch, the last connection) are
        # gone once it returns, not kept while run() waits for the next batch (a
        # connection that ended meanwhile would stay referenced, backlog and all).
        marked, self._marked = self._marked, {}
        for direct in marked:
            direct.flush()


class _Direct:
    """One connection's wake: mark it for :class:`_DirectWrites`, or, while its
    writer task owns the socket (or for TLS), wake that task."""

    __slots__ = ("writes", "fd", "writer", "conn", "scope", "pending", "sending", "gone", "reading")

    def __init__(self, writes: _DirectWrites, stream: trio.abc.Stream, writer: _TaskWake) -> None:
        self.writes = writes
        self.fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self.writer = writer
        self.conn: ServerConnection | None = None
        self.scope: trio.CancelScope | None = None
        self.pending = b""  # what a direct write left over, for the writer task
        self.sending = False  # the writer task is in send_all
        self.gone = False
        self.reading: _TaskWake | None = None  # the reader, waiting for its responses to be written

    def __call__(self) -> None:
        if not (self.sending or self.pending or self.gone or self.fd < 0):
            self.writes.mark(self)
            return
        self.writer()
        self.keep_deadline()  # e.g. cut off while the writer is blocked on a full socket

    def keep_deadline(self) -> None:
        """Drop the connection when the core says (``drop_deadline``)."""
        if self.conn is not None and self.scope is not None:
            self.scope.deadline = self.conn.drop_deadline(trio.current_time())

    def flush(self) -> None:
        conn = self.conn
        if self.sending or self.pending or self.gone or conn is None:
            return  # the writer task owns the socket
        data = conn.data_to_send()
        while data:
            try:
                sent = os.write(self.fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:  # the peer vanished: the reader sees it too, but it may have
                self.writer()  # already, and a finished connection's writer must end
                return
            if sent < len(data):
                self.pending = data[sent:]
                break
            data = conn.data_to_send()
        if self.reading is not None:  # the reader may wait for what was written (input_paused)
            self.reading()
        if self.pending or not conn.can_write_directly:
            self.writer()  # the socket is full, or the rest (HTTP, a close) is the writer's


def _peer(stream: trio.abc.Stream) -> Any:
    """The socket's peer address (under TLS, the transport's), or None."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        try:
            return stream.socket.getpeername()
        except OSError:  # already gone
            return None
    return None


async def _reuse_port_listeners(
    port: int, host: str | None, backlog: int | None = None
) -> list[trio.abc.Listener[Any]]:
    """Like trio.open_tcp_listeners, with SO_REUSEPORT: each of ``num_processes``
    processes listens on the port and the kernel spreads connections over them."""
    listeners: list[trio.abc.Listener[Any]] = []
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, type_, proto, _, sockaddr in infos:
        sock = trio.socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind(sockaddr)
            sock.listen(backlog or socket.SOMAXCONN)
        except OSError:
            sock.close()
            raise
        listeners.append(trio.SocketListener(sock))
    return listeners
