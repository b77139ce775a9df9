"""The master's event bus → the core's event streams, on trio.

Reads ``<sock_dir>/master_event_pub.ipc`` and hands the bytes to the core's
:class:`~saltnado_core.buslink.EventBusLink`, which decodes, dispatches, and
says how long to wait before reconnecting when the master is away or restarts;
the service tells streaming clients and fails calls that need the master meanwhile.
"""

from __future__ import annotations

import trio

from saltnado_core import EventBusError
from saltnado_runtime import SaltRunner, Service, Spawn


async def read_event_bus(service: Service, salt: SaltRunner, spawn: Spawn) -> None:
    """Stay subscribed to the event bus until cancelled."""
    link = service.link
    while True:
        try:
            stream = await trio.open_unix_socket(link.path)
        except OSError as exc:
            delay = service.bus_unavailable(exc)
            await trio.sleep(delay)
            continue
        service.bus_connected()
        error: BaseException | None = None
        try:
            async with stream:
                while data := await stream.receive_some(service.pacing.bus_read_bytes):
                    service.feed_data(data, salt, spawn)
        except (OSError, trio.BrokenResourceError, EventBusError) as exc:
            error = exc
        service.bus_lost(error)
