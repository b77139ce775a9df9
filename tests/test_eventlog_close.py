"""Closing a node on the event log ends every task of its loop, with no NATS server
at all (the node keeps retrying an address nobody listens on): asyncio destroys
a task still pending when its loop is closed, and says so on stderr ("Task was
destroyed but it is pending!"); a clean close never lets that happen, even when
the orderly close (drain the connection, cancel the tasks) is cut short by its
timeout."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from saltnado_core.eventlog import EventLogSettings, Role
from saltnado_runtime.eventlog import EventLogNode

pytest.importorskip("nats")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def started_node() -> EventLogNode:
    settings = EventLogSettings(servers=(f"nats://127.0.0.1:{closed_port()}",), master="salt1", role=Role.BOTH)
    node = EventLogNode(settings)
    node.start(lambda callback: None)
    deadline = time.monotonic() + 5
    while not (node._loop is not None and node._loop.is_running()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)  # inside its connect-and-retry loop
    return node


class Reports(logging.Handler):
    """What asyncio logs (its own handler: the test needs no logging plugin)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def destroyed(self) -> list[str]:
        gc.collect()  # a task left pending is reported when it is collected
        return [message for message in self.messages if "destroyed" in message]


@pytest.fixture
def asyncio_log() -> Iterator[Reports]:
    reports = Reports()
    logger = logging.getLogger("asyncio")
    logger.addHandler(reports)
    try:
        yield reports
    finally:
        logger.removeHandler(reports)


def test_close_ends_every_task(asyncio_log: Reports) -> None:
    node = started_node()
    node.close()
    assert node._thread is not None and not node._thread.is_alive()
    assert node._loop is not None and node._loop.is_closed()
    assert asyncio_log.destroyed() == []


def test_a_close_cut_short_by_its_timeout_still_ends_every_task(asyncio_log: Reports) -> None:
    node = started_node()

    async def stuck_close() -> None:  # a drain that outlasts close()'s timeout
        await asyncio.sleep(60)

    node._close = stuck_close  # type: ignore[method-assign]
    node.close(timeout=0.3)
    assert node._thread is not None and not node._thread.is_alive()
    assert node._loop is not None and node._loop.is_closed()
    assert asyncio_log.destroyed() == []
