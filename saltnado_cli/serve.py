"""Serve one master's API until SIGINT/SIGTERM, on trio or asyncio, then shut down gracefully.

Both ways stop the same way (see the README's "Stopping"): a second signal during
the shutdown does not cut it short.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import trio

from saltnado_core import Settings

log = logging.getLogger("saltnado")


def run(loop: str, settings: Settings, opts: dict[str, Any]) -> None:
    """Serve on ``loop`` (trio, asyncio or uvloop) until SIGINT/SIGTERM."""
    try:
        if loop in ("asyncio", "uvloop"):
            run_on_asyncio(settings, opts, uvloop=loop == "uvloop")
        else:
            trio.run(run_trio, settings, opts)
    except KeyboardInterrupt:
        pass


async def run_trio(settings: Settings, opts: dict[str, Any], on_ready: Any = None) -> None:
    """Serve on trio until SIGINT/SIGTERM, then shut down gracefully; ``await
    on_ready(server, nursery)`` once listening."""
    from saltnado_trio import Server

    server = Server(settings, opts)
    # Signals are caught before "listening on" is logged: a SIGTERM sent as soon as
    # the server says it listens gets the graceful shutdown, not the default death.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            for listener in listeners:
                sock = getattr(listener, "socket", None) or listener.transport_listener.socket
                server.service.log_listening(sock.getsockname())
            if on_ready is not None:
                await on_ready(server, nursery)
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                break
            await server.shutdown()  # a second signal meanwhile does not cut it short
            nursery.cancel_scope.cancel()


async def run_asyncio(settings: Settings, opts: dict[str, Any], on_ready: Any = None) -> None:
    """Serve on asyncio until SIGINT/SIGTERM, then shut down gracefully; ``await
    on_ready(server)`` once listening."""
    from saltnado_asyncio import Server

    received: asyncio.Queue[int] = asyncio.Queue()  # a second signal does not cut shutdown short
    for signum in (signal.SIGINT, signal.SIGTERM):  # caught before "listening on" is logged
        asyncio.get_running_loop().add_signal_handler(signum, received.put_nowait, signum)
    server = Server(settings, opts)
    await server.start()
    for sock in server.sockets:
        server.service.log_listening(sock.getsockname())
    if on_ready is not None:
        await on_ready(server)
    log.info("received %s; shutting down", signal.Signals(await received.get()).name)
    await server.shutdown()


def run_on_asyncio(settings: Settings, opts: dict[str, Any], *, uvloop: bool = False) -> None:
    """Run the asyncio server in a new event loop (uvloop's if asked and installed)."""
    if uvloop:
        import uvloop as _uvloop  # the optional extra: pip install 'saltnado[uvloop]'

        _uvloop.run(run_asyncio(settings, opts))
    else:
        asyncio.run(run_asyncio(settings, opts))
