"""``saltnado`` command line: ``serve`` a master's API, or run the ``demo``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import trio

from saltnado_core import ConfigError, Settings
from saltnado_salt import load_master_opts
from saltnado_salt.logs import redact_handlers
from saltnado_salt.service import load_ssl_context

log = logging.getLogger("saltnado")


def configure_logging(debug: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,  # salt installs its own root handler on import
    )
    # Salt's own loggers are chatty at INFO and some print request payloads.
    logging.getLogger("salt").setLevel(logging.WARNING)
    redact_handlers(logging.getLogger())  # tokens are masked in every record, Salt's too


async def run_server(settings: Settings, opts: dict[str, Any], on_ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully."""
    from .server import Server

    server = Server(settings, opts)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve)
        for listener in listeners:
            sock = getattr(listener, "socket", None) or listener.transport_listener.socket
            server.service.log_listening(sock.getsockname())
        if on_ready is not None:
            await on_ready(server, nursery)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                break
            await server.shutdown()  # a second signal meanwhile does not cut it short
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saltnado", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API for a Salt master")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("-c", "--config-dir", default="/etc/salt", help="directory holding the master config")
    where.add_argument("--master-config", help="path of the master config file")
    serve.add_argument(
        "--loop", choices=("trio", "asyncio", "uvloop"), default="trio",
        help="the event loop to serve on (default trio; asyncio needs Python 3.11+, "
        "uvloop the optional extra saltnado[uvloop])",
    )
    demo = sub.add_parser("demo", help="start a private Salt master + minion and serve them")
    demo.add_argument("--port", type=int, default=8000, help="API port (0 picks a free one)")
    demo.add_argument("--no-ping", action="store_true", help="do not fire test.ping every few seconds")
    demo.add_argument("--ping-interval", type=float, default=5.0)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        configure_logging(False)
        return run_demo(port=args.port, ping_interval=None if args.no_ping else args.ping_interval)

    path = args.master_config or os.path.join(args.config_dir, "master")
    try:
        opts = load_master_opts(path)
        settings = Settings.from_opts(opts)
        load_ssl_context(settings)  # unreadable certificate or key: say so before serving
    except ConfigError as exc:
        print(f"saltnado: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.debug)
    raise_open_files_limit(settings.limits.max_connections)
    workers = settings.num_processes if settings.num_processes > 0 else os.cpu_count() or 1
    if workers > 1:
        settings = dataclasses.replace(settings, num_processes=workers)
        return supervise(workers, settings, lambda s: run_once(args.loop, s, opts))
    run_once(args.loop, settings, opts)
    return 0


def run_once(loop: str, settings: Settings, opts: dict[str, Any]) -> None:
    """Serve on ``loop`` (trio, asyncio or uvloop) until SIGINT/SIGTERM."""
    try:
        if loop in ("asyncio", "uvloop"):
            from saltnado_asyncio.cli import run

            run(settings, opts, uvloop=loop == "uvloop")
        else:
            trio.run(run_server, settings, opts)
    except KeyboardInterrupt:
        pass


# Descriptors a server process needs besides its clients: listeners, the event
# bus, Salt's sockets in the worker threads, log files.
RESERVED_FILES = 256


def raise_open_files_limit(max_connections: int) -> None:
    """One descriptor per client: raise the soft RLIMIT_NOFILE to the hard limit,
    and warn if that is too low for ``max_connections`` (clients beyond it would
    fail in accept() without an answer instead of getting 503)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            limit = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
    if limit < max_connections + RESERVED_FILES:
        log.warning(
            "the open-files limit (%d) is below max_connections (%d) + %d: raise it (ulimit -n, systemd "
            "LimitNOFILE=) or lower 'rest_tornado: max_connections'",
            limit, max_connections, RESERVED_FILES,
        )
    log.debug("open-files limit: %d", limit)


def supervise(workers: int, settings: Settings, serve: Callable[[Settings], None]) -> int:
    """``num_processes``: fork ``workers`` server processes that listen on the same
    port (SO_REUSEPORT) and each subscribe to the event bus; forward SIGINT/SIGTERM
    to them. When one exits on its own, stop the others and exit with its status."""
    placeholder = None
    if settings.port == 0:  # every worker must listen on the same port: pick it here
        placeholder = socket.socket(socket.AF_INET6 if ":" in (settings.address or "") else socket.AF_INET)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        placeholder.bind((settings.address or "", 0))  # held, never listening, until exit
        settings = dataclasses.replace(settings, port=placeholder.getsockname()[1])
    children: dict[int, int] = {}
    for number in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker
            code = 1
            try:
                os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the supervisor only, which forwards it once
                _exit_with_parent()
                log.info("worker %d of %d (pid %d) starting", number + 1, workers, os.getpid())
                serve(settings)
                code = 0
            except BaseException:
                log.exception("worker %d failed", number + 1)
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = number
    stopping = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    status = 0
    while children:
        pid, wait_status = os.wait()
        code = os.waitstatus_to_exitcode(wait_status)
        number = children.pop(pid)
        if not stopping:
            log.error("worker %d (pid %d) exited with %d; stopping the others", number + 1, pid, code)
            forward(signal.SIGTERM, None)
            status = code or 1
        elif code and not status:
            status = code if code > 0 else 1
    if placeholder is not None:
        placeholder.close()
    return status


def _exit_with_parent() -> None:
    """Linux: SIGTERM this worker if the supervisor dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
