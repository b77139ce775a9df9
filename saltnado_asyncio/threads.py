"""Blocking Salt calls in a bounded pool of daemon threads, for the asyncio binding.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter
exits, so one Salt call stuck on a vanished master (Salt's own timeouts run to
minutes) would hold up the exit of a server that has finished shutting down.
These threads are daemons: a stopped server abandons such a call, as the trio
binding does. Each result comes back as a future of the caller's loop; a future
already done by then (cancelled, or failed by the caller) ignores it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class SaltThreads:
    """At most ``size`` threads, started as calls need them."""

    def __init__(self, size: int, name: str = "saltnado-salt") -> None:
        self.size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)  # released by a thread each time it is free again
        self._closed = False

    def start(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` in a pool thread → a future of the running loop."""
        if self._closed:
            raise RuntimeError("the Salt worker threads are shut down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((fn, args, loop, future))
        if not self._idle.acquire(blocking=False) and len(self._threads) < self.size:
            thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.start(fn, *args)

    def shutdown(self) -> None:
        """Idle threads end now, busy ones once their call returns; calls still
        queued are cancelled. Call it on the loop."""
        self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[3].cancel()
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, loop, future = job
            try:
                result, error = fn(*args), None
            except Exception as exc:
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for this any more
                pass
            del job, result, error  # hold nothing while idle
            self._idle.release()


def _settle(future: asyncio.Future[Any], result: Any, error: Exception | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
