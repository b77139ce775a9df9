"""The asyncio server: the trio binding's contract on asyncio, and an embedding API.

Built as the trio binding is (a reader and a writer task per connection, one
task writing fan-out output for every streaming connection at once), over
asyncio's streams and transports; it decides nothing either: the contract in
:mod:`saltnado_core.connection` says what to write and when to drop, and the
request path, the logs and the hub are :mod:`saltnado_runtime`'s.

Embedding in a program that already runs an asyncio loop (all on that loop)::

    async with Server(settings, master_opts) as server:   # or: await server.start()
        async for event in server.hub.subscribe("salt/job/"):
            ...

``start(listen=False)`` opens no socket: the host hands accepted connections to
:meth:`Server.handle_connection` (a ``reader, writer`` pair).
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from saltnado_core import ServerConnection, Settings
from saltnado_core.outcomes import Effect
from saltnado_core.pacing import Pacing
from saltnado_core.salt_calls import needs_master
from saltnado_runtime import ServedMaster, Wakeup
from saltnado_runtime.feed import follow_events

from .threads import SaltThreads


class Server(ServedMaster):
    def __init__(
        self, settings: Settings, master_opts: Mapping[str, Any], *, salt_threads: int | None = None,
        pacing: Pacing = Pacing(),
    ) -> None:
        """``salt_threads``: Salt calls run at once (default: the ``salt_threads`` setting,
        rest_cherrypy's ``thread_pool``)."""
        super().__init__(settings, master_opts, asyncio.Event, pacing)
        # Salt's worker threads: bounded, and daemons (a call stuck on a vanished master
        # is abandoned at shutdown instead of holding up the process's exit).
        self._threads = SaltThreads(salt_threads or settings.salt_threads)
        self._direct = _DirectWrites()
        self._tasks: asyncio.TaskGroup | None = None
        self._main: asyncio.Task[None] | None = None
        self.listeners: list[asyncio.Server] = []

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets (empty with ``start(listen=False)``)."""
        return [sock for listener in self.listeners for sock in listener.sockets]

    # -- lifecycle -----------------------------------------------------------
    async def start(self, *, listen: bool = True) -> None:
        """Start serving on the running loop and return: the event feed, the timers
        and, unless ``listen=False``, the TCP (or TLS) listeners. Raises OSError if
        the address cannot be bound."""
        if listen:
            context = self.service.ssl_context()
            # asyncio completes the TLS handshake before a connection is handed over:
            # the core's handshake timeout covers the rest (the first request).
            handshake = self.settings.limits.timeouts.handshake_timeout or None
            self.listeners = [
                await asyncio.start_server(
                    self._accept, self.settings.address, self.settings.port,
                    ssl=context, start_serving=False,
                    ssl_handshake_timeout=handshake if context is not None else None,
                    reuse_port=self.settings.num_processes != 1,  # several processes share the port
                    **({"backlog": self.settings.backlog} if self.settings.backlog else {}),
                )
            ]
        ready = asyncio.Event()
        self._main = asyncio.create_task(self._run(ready), name="saltnado")
        await ready.wait()

    async def _run(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:  # owns every task but host-handed connections
            self._tasks = tasks
            tasks.create_task(follow_events(
                self.service, _BusSocket.connect, asyncio.sleep, self._salt, self._spawn,
                asyncio.get_running_loop().call_soon_threadsafe,  # how the event log's thread hands events over
            ))
            tasks.create_task(self._ticker())
            tasks.create_task(self._threads.run(self.service.warm_up))  # warm up eauth
            for listener in self.listeners:
                await listener.start_serving()
            ready.set()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.service.pacing.tick_interval)
            self.service.tick()
            self.service.recheck_tokens(self._salt, self._spawn)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting; close websockets with 1001 and end event streams; let
        requests being answered finish for ``grace`` s (default: the
        ``shutdown_timeout`` setting), then answer those left 503; stop. Returns
        within ``grace`` + ``pacing.shutdown_flush`` s: Salt calls still running
        are abandoned (their daemon threads end on their own)."""
        for listener in self.listeners:
            listener.close()
        await self.service.drain(grace, asyncio.sleep)
        if self._main is not None:
            self._main.cancel()
            await asyncio.wait([self._main])
        self._threads.shutdown()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # -- one connection ------------------------------------------------------
    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._spawn(partial(self.handle_connection, reader, writer))

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one accepted connection until it ends (also for a host's own listener)."""
        wake = _Wake(self._direct, writer)
        conn = wake.conn = self.service.open_connection(wake, writer.get_extra_info("peername"))
        try:
            async with asyncio.timeout(None) as deadline:
                wake.deadline = deadline
                async with asyncio.TaskGroup() as tasks:
                    reading = tasks.create_task(self._reader(reader, conn, wake))
                    await self._writer(writer, conn, wake)
                    reading.cancel()
        except TimeoutError:
            pass  # the peer never answered our close frame
        finally:
            self.service.forget(conn)
            writer.close()
            try:
                async with asyncio.timeout(self.service.pacing.socket_close):
                    await writer.wait_closed()
            except (TimeoutError, OSError):
                pass

    async def _reader(self, reader: asyncio.StreamReader, conn: ServerConnection, wake: _Wake) -> None:
        while not conn.finished:
            if conn.input_paused:  # the client is not reading its responses: neither do we
                if wake.reading is None:
                    wake.reading = Wakeup(asyncio.Event)
                await wake.reading.wait()  # the writer has written some
                await self.service.receive(conn, None, self._salt, self._spawn)
                continue
            try:
                data = await reader.read(self.service.pacing.read_bytes)
            except OSError:  # reset, TLS error: the peer vanished
                data = b""
            await self.service.receive(conn, data, self._salt, self._spawn)
            if not data:  # the client has closed its side (or vanished): the core ends it
                return

    async def _writer(self, writer: asyncio.StreamWriter, conn: ServerConnection, wake: _Wake) -> None:
        while True:
            data = conn.data_to_send()
            if not data and conn.finished:
                return
            wake.keep_deadline()
            if data:
                try:
                    writer.write(data)
                    data = b""  # the transport has it: let it go before the next slice is taken
                    await writer.drain()
                except OSError:
                    return
                if wake.reading is not None:
                    wake.reading()
            else:
                await wake.task.wait()

    # -- tasks and threads -------------------------------------------------------
    def _spawn(self, start: Callable[[], Awaitable[None]]) -> None:
        assert self._tasks is not None, "start() first"
        self._tasks.create_task(start())  # type: ignore[arg-type]

    async def _salt(self, call: Effect) -> Any:
        """Run ``call`` in a worker thread; cancelled, the thread is abandoned."""
        if not needs_master(call):
            return await self._threads.run(self.service.execute, call)

        def abandon() -> None:  # called from the event feed, while this awaits ``future``
            if not future.done():
                future.set_exception(self.service.master_unavailable(call))

        with self.service.master_call(call, abandon):
            future = self._threads.start(self.service.execute, call)
            return await future


class _DirectWrites:
    """Writes fan-out output straight into the transports, once per batch of events.

    Waking one writer task per client for every event costs a task switch each,
    more than the write itself. An asyncio transport takes bytes without blocking,
    so a streaming connection's wake marks it here, and one loop callback, after
    the batch, writes each marked connection's output. A transport above its
    high-water mark is left to the connection's writer task, which waits for it
    to drain, so a slow reader's backlog stays in its bounded outbox.
    """

    def __init__(self) -> None:
        self._marked: dict[_Wake, None] = {}

    def mark(self, wake: _Wake) -> None:
        if not self._marked:
            asyncio.get_running_loop().call_soon(self._write)
        self._marked[wake] = None

    def _write(self) -> None:
        marked, self._marked = self._marked, {}
        for wake in marked:
            wake.write()


class _Wake:
    """One connection's wake (see :class:`_DirectWrites`); ``task`` wakes its writer task."""

    __slots__ = ("direct", "writer", "task", "conn", "deadline", "reading")

    def __init__(self, direct: _DirectWrites, writer: asyncio.StreamWriter) -> None:
        self.direct = direct
        self.writer = writer
        self.task = Wakeup(asyncio.Event)
        self.conn: ServerConnection | None = None
        self.deadline: asyncio.Timeout | None = None
        self.reading: Wakeup | None = None  # the reader, waiting for its responses to be written

    def __call__(self) -> None:
        conn = self.conn
        if conn is not None and conn.can_write_directly:
            self.direct.mark(self)
            return
        self.keep_deadline()  # e.g. cut off while the writer waits on a full socket
        self.task()

    def keep_deadline(self) -> None:
        """Drop the connection when the core says (``drop_deadline``)."""
        conn, deadline = self.conn, self.deadline
        if conn is not None and deadline is not None and deadline.when() is None:
            at = conn.drop_deadline(asyncio.get_running_loop().time())
            if at != math.inf:
                deadline.reschedule(at)

    def write(self) -> None:
        conn, transport = self.conn, self.writer.transport
        if conn is not None and conn.can_write_directly and not transport.is_closing():
            if transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]:
                if data := conn.data_to_send():
                    transport.write(data)
                    if self.reading is not None:  # the reader may wait for what was written (input_paused)
                        self.reading()
                if conn.can_write_directly and not conn.wants_write:
                    return  # all written: no task switch
        self.task()


class _BusSocket:
    """The event bus's Unix socket for :func:`follow_event_bus`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.receive = reader.read
        self._writer = writer

    @classmethod
    async def connect(cls, path: str) -> _BusSocket:
        return cls(*await asyncio.open_unix_connection(path))

    async def aclose(self) -> None:
        self._writer.close()
