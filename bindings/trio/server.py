"""The trio server: sockets, worker threads and timers around saltnado_core.

One task pair per connection: a reader (bytes → core → Salt calls in threads)
and a writer that sends whatever the core has queued as one coalesced write.
All policy (limits, status and close codes, the slow-client rule) is the core's.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any

import trio

from saltnado_core import (
    App,
    EventStreams,
    Request,
    Response,
    SaltCall,
    ServerConnection,
    Settings,
)
from saltnado_core.app import AcceptEventStream, Outcome
from saltnado_core.messages import SSE_KEEPALIVE_INTERVAL
from saltnado_core.connection import Phase
from saltnado_core.tokens import redact_path

from .feed import EventFeed
from saltnado_salt import SaltBridge

log = logging.getLogger("saltnado.server")
access_log = logging.getLogger("saltnado.access")

READ_SIZE = 64 * 1024
CLOSE_HANDSHAKE_TIMEOUT = 5.0  # seconds to wait for the peer's close frame
SHUTDOWN_GRACE = 3.0  # seconds for open connections to flush their close


class _Wakeup:
    """A level-triggered wakeup for one writer task."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def __call__(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class Server:
    def __init__(
        self,
        settings: Settings,
        master_opts: Mapping[str, Any],
        *,
        salt_threads: int = 8,
    ) -> None:
        self.settings = settings
        self.app = App(settings)
        self.streams = EventStreams(settings.formatted_max_jobs, settings.formatted_max_job_age)
        self.bridge = SaltBridge(master_opts)
        self.limiter = trio.CapacityLimiter(salt_threads)
        self.feed = EventFeed(
            settings.sock_dir, self.streams, settings.limits.max_event_bytes, self._background_salt_call
        )
        self._connections: dict[ServerConnection, _Wakeup] = {}
        self._nursery: trio.Nursery | None = None
        self._accepting = trio.CancelScope()
        self.listeners: list[trio.abc.Listener[Any]] = []

    # -- lifecycle -----------------------------------------------------------
    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled or :meth:`shutdown`. Reports the listeners."""
        listeners: list[trio.abc.Listener[Any]] = list(
            await trio.open_tcp_listeners(self.settings.port, host=self.settings.address)
        )
        if not self.settings.disable_ssl:
            context = self._ssl_context()
            listeners = [
                trio.SSLListener(listener, context, https_compatible=True) for listener in listeners
            ]
        self.listeners = listeners
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.feed.run)
            nursery.start_soon(self._ticker)
            nursery.start_soon(trio.to_thread.run_sync, self.bridge.load_auth)  # warm up eauth
            await nursery.start(self._accept, listeners, nursery)
            task_status.started(listeners)

    async def _accept(
        self, listeners: list[trio.abc.Listener[Any]], nursery: trio.Nursery, *, task_status: Any
    ) -> None:
        # Connections live in the server's nursery, so stopping the accept loop
        # (shutdown) does not cut them off.
        with self._accepting:
            await trio.serve_listeners(
                self._serve_connection, listeners, handler_nursery=nursery, task_status=task_status
            )

    async def _ticker(self) -> None:
        """Once a second: end streams whose token expired; now and then, keep /events alive."""
        last_keepalive = trio.current_time()
        while True:
            await trio.sleep(1.0)
            now = time.time()
            for conn, wake in list(self._connections.items()):
                if conn.expire(now):
                    wake()
            if trio.current_time() - last_keepalive >= SSE_KEEPALIVE_INTERVAL:
                last_keepalive = trio.current_time()
                self.streams.keepalive()

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        assert self.settings.ssl_crt is not None
        context.load_cert_chain(self.settings.ssl_crt, self.settings.ssl_key)
        return context

    async def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, close websockets with 1001, give them ``grace`` s to flush."""
        self._accepting.cancel()
        for listener in self.listeners:
            await listener.aclose()
        for conn, wake in list(self._connections.items()):
            conn.close()
            wake()
        with trio.move_on_after(grace):
            while self._connections:
                await trio.sleep(0.02)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- one connection ------------------------------------------------------
    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        wake = _Wakeup()
        conn = ServerConnection(self.settings.limits, self.streams, wake=wake)
        self._connections[conn] = wake
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, stream, conn, wake, nursery.cancel_scope)
                await self._reader(stream, conn, wake, nursery)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError):
            pass  # the peer vanished; nothing is left to tell it
        finally:
            self._connections.pop(conn, None)
            conn.close()  # unsubscribes from every stream
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await _close_quietly(stream)

    async def _reader(
        self, stream: trio.abc.Stream, conn: ServerConnection, wake: _Wakeup, nursery: trio.Nursery
    ) -> None:
        while not conn.finished:
            try:
                data = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
                data = b""
            conn.receive_data(data)
            while (request := conn.next_request()) is not None:
                conn.respond(await self._run(request))
            for call in conn.take_salt_calls():
                nursery.start_soon(self._connection_salt_call, conn, call, wake)
            if not data and not conn.finished:
                conn.close()  # EOF mid-exchange: close what is still open
            wake()
            if not data:
                return
        # finished: let the writer flush and close
        await trio.sleep_forever()

    async def _writer(
        self,
        stream: trio.abc.Stream,
        conn: ServerConnection,
        wake: _Wakeup,
        cancel_scope: trio.CancelScope,
    ) -> None:
        while True:
            await wake.wait()
            data = conn.data_to_send()
            while data:
                await stream.send_all(data)
                data = conn.data_to_send()
            if conn.finished:
                cancel_scope.cancel()
                return
            if conn.phase is Phase.CLOSING:
                cancel_scope.deadline = min(
                    cancel_scope.deadline, trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT
                )

    async def _salt(self, call: SaltCall) -> Any:
        return await trio.to_thread.run_sync(self.bridge.execute, call, limiter=self.limiter)

    async def _connection_salt_call(self, conn: ServerConnection, call: SaltCall, wake: _Wakeup) -> None:
        try:
            await self._salt(call)
        except Exception as exc:
            log.warning("%r for a streaming client failed: %s: %s", call, type(exc).__name__, exc)
            conn.salt_call_done(call, exc)
            wake()
        else:
            conn.salt_call_done(call)

    def _background_salt_call(self, call: SaltCall) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._logged_salt_call, call)

    async def _logged_salt_call(self, call: SaltCall) -> None:
        try:
            await self._salt(call)
        except Exception as exc:
            log.warning("%r failed: %s: %s", call, type(exc).__name__, exc)

    async def _run(self, request: Request) -> Outcome:
        started = time.monotonic()
        exchange = self.app.handle(request, now=time.time())
        step = exchange.start()
        while isinstance(step, SaltCall):
            try:
                result = await self._salt(step)
            except Exception as exc:
                step = exchange.fail(exc)
            else:
                step = exchange.resume(result)
        if exchange.error is not None:
            log.error("error handling %s %s", request.method, self._loggable(request), exc_info=exchange.error)
        status = step.status if isinstance(step, Response) else 200 if isinstance(step, AcceptEventStream) else 101
        access_log.info(
            "%s %s %d %.1fms", request.method, self._loggable(request), status, (time.monotonic() - started) * 1000
        )
        return step

    def _loggable(self, request: Request) -> str:
        return redact_path(request.target, self.settings.token_length)


async def _close_quietly(stream: trio.abc.Stream) -> None:
    try:
        await stream.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError):
        pass
