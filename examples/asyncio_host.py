"""A plain asyncio program with saltnado inside it: no second process, no thread.

The program's own loop runs saltnado's HTTP and websocket API (``/login``,
``/all_events/<token>``, …) and, at the same time, the program's own code
follows jobs through the in-process hub — decoded Salt events, no socket —
and prints one line per minion return::

    job 20261129094435982594 test.ping minion1 -> True

By default saltnado opens its own listener on ``--port``. With
``--own-listener`` the program accepts connections itself and hands each one to
saltnado, as a host that owns its sockets (a proxy, a multiplexer) would.

    python examples/asyncio_host.py --master-config /etc/salt/master [--port 8000] [--own-listener]

Ctrl-C (or SIGTERM) closes websocket clients with 1001 and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal

from saltnado_asyncio import Server
from saltnado_core import SaltEvent, Settings
from saltnado_salt import load_master_opts


def describe(event: SaltEvent) -> str:
    data = event.data
    return f"job {data.get('jid')} {data.get('fun')} {data.get('id')} -> {data.get('return')!r}"


async def follow_jobs(server: Server) -> None:
    """Host code: the live event stream, in-process, filtered by tag prefix."""
    async for event in server.hub.subscribe("salt/job/"):
        if "/ret/" in event.tag:
            print(describe(event), flush=True)


async def main(master_config: str, port: int, own_listener: bool) -> None:
    opts = load_master_opts(master_config)
    settings = dataclasses.replace(Settings.from_opts(opts), port=port)
    server = Server(settings, opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    if own_listener:
        # The host's socket; saltnado only serves what it is handed.
        await server.start(listen=False)
        listener = await asyncio.start_server(server.handle_connection, settings.address, port)
        sockets = listener.sockets
    else:
        await server.start()
        listener = None
        sockets = server.sockets
    for sock in sockets:
        host, bound = sock.getsockname()[:2]
        print(f"listening on http://{host}:{bound}", flush=True)

    async with asyncio.TaskGroup() as tasks:
        jobs = tasks.create_task(follow_jobs(server))
        await stop.wait()
        if listener is not None:
            listener.close()
        await server.shutdown()  # also ends the hub subscription, so follow_jobs returns
        await jobs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--master-config", default="/etc/salt/master")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--own-listener", action="store_true", help="accept connections in the host")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("salt").setLevel(logging.WARNING)
    asyncio.run(main(args.master_config, args.port, args.own_listener))
