"""``saltnado serve --loop asyncio``: serve until SIGINT/SIGTERM, then shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from saltnado_core import Settings

from .server import Server

log = logging.getLogger("saltnado")


async def run_server(settings: Settings, opts: dict[str, Any], on_ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully; ``await on_ready(server)``
    once listening (as the trio CLI's ``on_ready``)."""
    server = Server(settings, opts)
    await server.start()
    for sock in server.sockets:
        server.service.log_listening(sock.getsockname())
    if on_ready is not None:
        await on_ready(server)
    received: asyncio.Queue[int] = asyncio.Queue()  # a second signal does not cut shutdown short
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, received.put_nowait, signum)
    log.info("received %s; shutting down", signal.Signals(await received.get()).name)
    await server.shutdown()


def run(settings: Settings, opts: dict[str, Any], *, uvloop: bool = False) -> None:
    """Run the asyncio server in a new event loop (uvloop's if asked and installed)."""
    if uvloop:
        import uvloop as _uvloop  # the optional extra: pip install 'saltnado[uvloop]'

        _uvloop.run(run_server(settings, opts))
    else:
        asyncio.run(run_server(settings, opts))
