"""Server memory per idle websocket, and where it goes.

    .venv/bin/python benchmarks/memory_per_ws.py                    # both bindings, 2,000 websockets
    .venv/bin/python benchmarks/memory_per_ws.py --binding trio --top 15

Starts a private salt-master (no minion), runs the server in this process, opens
``--websockets`` connections to ``/all_events`` from a client thread (each sends
``websocket client ready``, then stays idle) and reports, per binding, the Python
memory the server holds per websocket (``tracemalloc``: allocations made while
they were opened that are still alive, over the count) and the process RSS growth
per websocket, measured without tracemalloc (this process also holds the clients'
sockets: a few hundred bytes each). ``--top N`` lists the N biggest allocation sites per websocket.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import resource
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import trio  # noqa: E402

from fanout import MasterOnly, raise_nofile  # noqa: E402
from saltnado_core import Settings  # noqa: E402
from saltnado_salt import load_master_opts  # noqa: E402

READY = bytes([0x81, 0x80 | 22]) + b"\0\0\0\0" + b"websocket client ready"  # mask 0: payload as is


def upgrade(s: socket.socket, token: str) -> socket.socket:
    """Make the connected socket ``s`` an ``/all_events`` websocket that said it is ready."""
    s.sendall(
        f"GET /all_events/{token} HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    s.sendall(READY)
    return s


def open_websockets(port: int, token: str, n: int) -> list[socket.socket]:
    return [upgrade(socket.create_connection(("127.0.0.1", port)), token) for _ in range(n)]


def login(port: int, username: str) -> str:
    data = f"username={username}&password=x&eauth=auto".encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", data=data, timeout=30) as r:
        return str(json.load(r)["return"][0]["token"])


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class Measure:
    """Open the websockets from a thread while the server's loop runs, twice: first
    for RSS (tracemalloc off: its own bookkeeping would show as RSS), then, with
    the first batch closed, for tracemalloc."""

    def __init__(self, port: int, token: str, n: int, streams: Any) -> None:
        self.port, self.token, self.n, self.streams = port, token, n, streams
        self.socks: list[socket.socket] = []

    def _open(self, n: int) -> None:
        self.socks += open_websockets(self.port, self.token, n)
        deadline = time.monotonic() + 60
        while len(self.streams.all_events) < len(self.socks) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        gc.collect()

    def _close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []
        deadline = time.monotonic() + 60
        while len(self.streams.all_events) and time.monotonic() < deadline:
            time.sleep(0.05)

    def run(self, top: int) -> dict[str, Any]:
        self._open(50)  # warm: first-use allocations
        rss0 = rss()
        self._open(self.n)
        rss1 = rss()
        streaming = len(self.streams.all_events) - 50
        self._close()
        self._open(50)
        tracemalloc.start(25)
        snap0 = tracemalloc.take_snapshot()
        self._open(self.n)
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        self._close()
        diff = snap1.compare_to(snap0, "traceback")
        per = sum(d.size_diff for d in diff) / self.n
        sites = [
            {"bytes": d.size_diff / self.n, "where": [str(f) for f in d.traceback][-4:]} for d in diff[:top]
        ]
        return {"websockets": self.n, "streaming": streaming, "tracemalloc_bytes": per,
                "rss_bytes": (rss1 - rss0) / self.n, "sites": sites}


def run_trio(opts: dict[str, Any], username: str, n: int, top: int) -> dict[str, Any]:
    from saltnado_trio.server import Server

    settings = dataclasses.replace(Settings.from_opts(opts), port=0, address="127.0.0.1")

    async def main() -> dict[str, Any]:
        server = Server(settings, opts)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            token = await trio.to_thread.run_sync(login, port, username)
            m = Measure(port, token, n, server.streams)
            result = await trio.to_thread.run_sync(m.run, top)
            nursery.cancel_scope.cancel()
        return result

    return trio.run(main)


def run_asyncio(opts: dict[str, Any], username: str, n: int, top: int) -> dict[str, Any]:
    from saltnado_asyncio import Server

    settings = dataclasses.replace(Settings.from_opts(opts), port=0, address="127.0.0.1")

    async def main() -> dict[str, Any]:
        async with Server(settings, opts) as server:
            port = server.sockets[0].getsockname()[1]
            token = await asyncio.to_thread(login, port, username)
            m = Measure(port, token, n, server.streams)
            return await asyncio.to_thread(m.run, top)

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binding", default="trio,asyncio")
    parser.add_argument("--websockets", type=int, default=2000)
    parser.add_argument("--top", type=int, default=0, help="list the N biggest allocation sites")
    parser.add_argument("--master-config", help=argparse.SUPPRESS)  # a running master (child runs)
    args = parser.parse_args()
    raise_nofile()
    if args.master_config:  # one binding, in this fresh process
        opts = load_master_opts(args.master_config)
        username = json.loads(sys.stdin.read())["username"]
        run = run_trio if args.binding == "trio" else run_asyncio
        r = run(opts, username, args.websockets, args.top)
        print(f"{args.binding}: {r['websockets']:,} idle websockets ({r['streaming']:,} of them streaming): "
              f"{r['tracemalloc_bytes'] / 1024:.2f} KB each (tracemalloc), "
              f"{r['rss_bytes'] / 1024:.2f} KB each (RSS growth)", flush=True)
        for site in r["sites"]:
            print(f"  {site['bytes']:7.0f} B  " + "  <  ".join(reversed(site["where"])))
        return 0
    lab = MasterOnly()
    lab.start()
    try:
        for binding in args.binding.split(","):  # each in its own process: no memory reused between them
            subprocess.run(
                [sys.executable, __file__, "--binding", binding, "--websockets", str(args.websockets),
                 "--top", str(args.top), "--master-config", str(lab.master_config_path)],
                input=json.dumps({"username": lab.username}), text=True, check=True,
            )
    finally:
        lab.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
