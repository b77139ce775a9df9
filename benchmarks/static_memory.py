"""Memory of slow readers downloading one large static file.

    .venv/bin/python benchmarks/static_memory.py                  # 20 readers of 10 MiB, both loops
    .venv/bin/python benchmarks/static_memory.py --readers 50 --size-mib 10 --loop trio
    .venv/bin/python benchmarks/static_memory.py --whole          # bodies handed out whole, for comparison

The server runs in this process (the binding's own ``Server``, no Salt master needed:
a file read never reaches Salt) with ``static:`` pointing at a directory holding one
file of ``--size-mib``; ``tracemalloc`` counts what Python allocates. One download
first puts the file in the server's cache (``baseline``: the file's one shared
copy). Then ``--readers`` clients (threads reading into a preallocated buffer, so
they allocate nothing themselves) each download it at ``--kib-per-s``, all at
once, and the script prints the peak of traced memory above the baseline, and
that per reader. With ``--whole``, ``write_chunk_bytes`` is set above the file's
size, so each response's body goes out in one piece, as before bodies were sliced:
the difference is what slicing saves. Kernel socket buffers are not Python memory
and not counted (RSS is printed too, for what it is worth). With both loops, the second's
baseline is lower: what the first run imported was allocated before tracing restarted.

On a 2-core machine (Python 3.11), the defaults print 337 KiB per reader on trio and 380 KiB on
asyncio; ``--whole``, 10,737 KiB and 7,323 KiB.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import trio

from saltnado_core import Settings

MIB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / MIB


def download(port: int, size: int, bytes_per_s: float, buf: bytearray) -> int:
    """One GET of the file read at ``bytes_per_s``; the body's length."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        view, got, start = memoryview(buf), 0, time.monotonic()
        while True:
            n = sock.recv_into(view[: 64 * 1024])
            if not n:
                return got
            got += n
            ahead = got / bytes_per_s - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


def readers(port: int, count: int, size: int, bytes_per_s: float) -> list[int]:
    results = [0] * count
    buffers = [bytearray(64 * 1024) for _ in range(count)]

    def one(i: int) -> None:
        results[i] = download(port, size, bytes_per_s, buffers[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def measure(port: int, args: argparse.Namespace, size: int) -> dict[str, Any]:
    """Runs in a worker thread while the server serves."""
    warm = download(port, size, 1e12, bytearray(64 * 1024))
    assert warm > size, f"warm-up download got {warm} bytes"
    time.sleep(0.2)
    baseline, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    started = time.monotonic()
    got = readers(port, args.readers, size, args.kib_per_s * 1024)
    seconds = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    complete = sum(1 for n in got if n > size)
    return {"baseline": baseline, "peak": peak, "seconds": seconds, "complete": complete, "rss": rss_mib()}


def settings_for(directory: Path, whole: bool, size: int) -> Settings:
    base = Settings(
        disable_ssl=True, port=0, address="127.0.0.1", static=str(directory), sock_dir=str(directory / "no-bus")
    )
    limits = base.limits
    if whole:
        limits = dataclasses.replace(limits, write_chunk_bytes=size + 1)
    return dataclasses.replace(base, limits=limits, static_max_file_bytes=size + 1)


def master_opts(directory: Path) -> dict[str, Any]:
    import salt.config

    opts = dict(salt.config.master_config(str(directory / "no-master")))
    opts["sock_dir"] = str(directory / "no-bus")  # nothing there: the feed just retries
    return opts


def run_trio(directory: Path, args: argparse.Namespace, size: int) -> dict[str, Any]:
    from saltnado_trio.server import Server

    async def main() -> dict[str, Any]:
        server = Server(settings_for(directory, args.whole, size), master_opts(directory))
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            result = await trio.to_thread.run_sync(measure, port, args, size)
            nursery.cancel_scope.cancel()
        return result

    return trio.run(main)


def run_asyncio(directory: Path, args: argparse.Namespace, size: int) -> dict[str, Any]:
    from saltnado_asyncio import Server

    async def main() -> dict[str, Any]:
        server = Server(settings_for(directory, args.whole, size), master_opts(directory))
        await server.start()
        try:
            port = server.sockets[0].getsockname()[1]
            return await asyncio.to_thread(measure, port, args, size)
        finally:
            await server.shutdown(0)

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--size-mib", type=float, default=10)
    parser.add_argument("--kib-per-s", type=float, default=2048, help="each reader's pace (default 2 MiB/s)")
    parser.add_argument("--loop", choices=("trio", "asyncio", "both"), default="both")
    parser.add_argument("--whole", action="store_true", help="hand bodies out whole (write_chunk_bytes > file)")
    args = parser.parse_args()
    size = int(args.size_mib * MIB)
    loops = ("trio", "asyncio") if args.loop == "both" else (args.loop,)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "big.bin").write_bytes(os.urandom(size))
        mode = "whole bodies" if args.whole else f"slices of {Settings().limits.write_chunk_bytes // 1024} KiB"
        print(f"{args.readers} readers × {size / MIB:g} MiB at {args.kib_per_s:g} KiB/s each, {mode}")
        for loop in loops:
            tracemalloc.start()
            result = (run_trio if loop == "trio" else run_asyncio)(directory, args, size)
            tracemalloc.stop()
            extra = result["peak"] - result["baseline"]
            print(
                f"  {loop:8s} baseline {result['baseline'] / MIB:6.1f} MiB (the cached file included) | "
                f"peak above it {extra / MIB:7.1f} MiB = {extra / args.readers / 1024:8.0f} KiB per reader | "
                f"{result['complete']}/{args.readers} complete in {result['seconds']:.1f} s | RSS {result['rss']:.0f} MiB"
            )


if __name__ == "__main__":
    main()
