"""The master's event bus → the core's event streams, on whichever loop the binding runs.

:func:`follow_event_bus` keeps one subscription to ``<sock_dir>/master_event_pub.ipc``
until cancelled and hands the bytes to the core's
:class:`~saltnado_core.buslink.EventBusLink` (through the :class:`Service`),
which decodes and dispatches them and says how long to wait before reconnecting
when the master is away or restarts; the service tells streaming clients and fails
calls that need the master meanwhile. The binding supplies only the I/O:
``connect(path)`` opens the Unix socket and returns a :class:`BusSocket`, and
``sleep(seconds)`` is its loop's sleep.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

from saltnado_core import EventBusError

from .service import SaltRunner, Service, Spawn


class BusSocket(Protocol):
    """One connection to the event bus, as a binding opens it."""

    async def receive(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` (``b""`` at EOF); raises OSError if the connection breaks."""

    async def aclose(self) -> None: ...


async def follow_events(
    service: Service,
    connect: Callable[[str], Awaitable[BusSocket]],
    sleep: Callable[[float], Awaitable[object]],
    salt: SaltRunner,
    spawn: Spawn,
    run_soon: Callable[[Callable[[], None]], object],
) -> None:
    """What the binding runs until cancelled: :func:`follow_event_bus`, and with an
    event log (``event_log:``) the log's client too — ingest publishes the bus's
    events, an edge node's streams are fed from the log (an edge-only node reads
    no bus). ``run_soon``: the binding loop's thread-safe call_soon, by which the
    log's thread hands events over."""
    node = service.event_log
    if node is None:
        await follow_event_bus(service, connect, sleep, salt, spawn)
        return
    service.start_event_log(run_soon, salt, spawn)
    try:
        if node.settings.role.ingests:
            await follow_event_bus(service, connect, sleep, salt, spawn)
        else:
            while True:
                await sleep(3600)
    finally:
        node.close()


async def follow_event_bus(
    service: Service,
    connect: Callable[[str], Awaitable[BusSocket]],
    sleep: Callable[[float], Awaitable[object]],
    salt: SaltRunner,
    spawn: Spawn,
) -> None:
    """Stay subscribed to the event bus until cancelled; start (through ``spawn``)
    one watch of each other master commands go to (:mod:`saltnado_runtime.masters`)."""
    from .masters import watch_master

    for liveness in service.masters.watched.values():
        spawn(partial(watch_master, liveness, connect, sleep, service.masters_changed, service.pacing.bus_read_bytes))
    link = service.link
    while True:
        try:
            bus = await connect(link.path)
        except OSError as exc:
            await sleep(service.bus_unavailable(exc))
            continue
        service.bus_connected()
        error: BaseException | None = None
        try:
            while data := await bus.receive(service.pacing.bus_read_bytes):
                service.feed_data(data, salt, spawn)
                if link.ingest and service.event_log is not None:  # this master's events → the event log
                    await service.event_log.ingest(link.take_ingest(), sleep)
        except (OSError, EventBusError) as exc:
            error = exc
        finally:
            await bus.aclose()
        service.bus_lost(error)
