"""The reference rest_cherrypy: salt-api serving a ``rest_cherrypy:`` block in front of a
private lab's master, for differential tests.

``cherrypy_api(lab)`` copies the lab's master config into a directory of its own,
swaps its ``rest_tornado:`` block for a ``rest_cherrypy:`` one on a free loopback
port (``disable_ssl: True``), starts ``salt-api -c <that dir>`` and yields the
port once ``GET /`` answers; on exit salt-api is stopped. The master, its
sockets, keys and token store are the lab's: tokens made by either server work
on the other. salt-api mounts ``/ws`` only when ws4py is importable
(:data:`HAS_WS4PY`).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HAS_WS4PY = importlib.util.find_spec("ws4py") is not None


def require_ws4py() -> None:
    """Skip a test of salt-api's ``/ws`` without ws4py (a developer's machine), fail
    under ``CI``: it is in the ``test`` extra, so a CI run without it is misconfigured."""
    if HAS_WS4PY:
        return
    reason = "salt-api serves /ws only with ws4py installed (pip install -e '.[test]')"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set: the /ws differential tests must run)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cherrypy_config(lab: Any, port: int, directory: Path, **block: Any) -> Path:
    """Write ``<directory>/master``: the lab's master config with a ``rest_cherrypy:``
    block (``block`` adds keys) instead of its ``rest_tornado:`` one, and salt-api's
    own pid and log files in ``directory`` (:meth:`PrivateSalt.write_api_config`)."""
    return Path(lab.write_api_config(directory, "rest_cherrypy", port, block))


@contextlib.contextmanager
def cherrypy_api(lab: Any, timeout: float = 60, **block: Any) -> Iterator[int]:
    """salt-api with rest_cherrypy for ``lab``'s master; yields its port."""
    port = free_port()
    directory = Path(lab.root) / f"cherrypy-{port}"
    cherrypy_config(lab, port, directory, **block)
    log = directory / "salt-api.out"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "salt-api"), "-c", str(directory), "-l", "warning"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(port):
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "salt-api (rest_cherrypy) did not start"
            time.sleep(0.3)
        yield port
    finally:
        # salt-api forks its netapi process: stop the whole group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/", headers={"Accept": "application/json"})
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False
