"""The server process: its open-files limit, and the ``num_processes`` supervisor."""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import signal
import socket
from collections.abc import Callable
from typing import Any

from saltnado_core import Settings

log = logging.getLogger("saltnado")


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
            "LimitNOFILE=) or lower max_connections in the API block",
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
