"""Connection churn: does the server give back what vanishing clients took?

    .venv/bin/python benchmarks/churn.py                          # 10,000 cycles, trio then asyncio
    .venv/bin/python benchmarks/churn.py --cycles 2000 --loop asyncio

Against a real private salt-master (no minion), for each loop in turn: the server
runs in its own process through the same code as ``saltnado serve --loop X``
(``run_server`` of that loop's CLI, signals included), plus a thread answering
"stats" lines on stdin with its RSS, open connections, tasks, stream subscribers,
threads and file descriptors. The client process then runs the cycles one after
another, each on a new connection, in a fixed rotation of ten:

    GET /, GET /login (401), GET /nowhere (404), OPTIONS /   read in full, closed
    /all_events websocket ×3: upgrade, "websocket client ready", reset (SO_LINGER 0)
    /events: the stream's head read, then reset
    reset mid-request (half a request line sent)
    reset right after a whole request (before its answer is read)

It prints the server's numbers at the start, every ``--every`` cycles and once the
server has settled after the last cycle, then stops the server with SIGTERM and
prints how long it took to exit and its status. Memory that comes back shows as a
flat RSS after the first thousand cycles (the allocator's warm-up); a leak as RSS,
tasks or descriptors climbing with the cycles.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from wsproto.frame_protocol import FrameProtocol  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
READY = bytes(FrameProtocol(True, []).send_data("websocket client ready", True))


# -- the server side (``--serve``): saltnado's CLI coroutine plus a stats thread ---------------
def server_stats(server: Any, tasks: int) -> dict[str, Any]:
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * PAGE
    streams = server.streams
    return {
        "rss_mb": rss / 2**20,
        "connections": len(server.service.connections),
        "tasks": tasks,
        "subscribers": streams.subscribers,
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
    }


def answer_stats(collect: Callable[[], dict[str, Any]]) -> None:
    """One JSON line on stdout per line on stdin (in a thread of the server process)."""

    def run() -> None:
        for _ in sys.stdin:
            print(json.dumps(collect()), flush=True)

    threading.Thread(target=run, name="churn-stats", daemon=True).start()


def serve(config: str, loop: str) -> int:
    from saltnado_core import Settings
    from saltnado_salt import load_master_opts
    from saltnado_cli.main import configure_logging

    opts = load_master_opts(config)
    settings = Settings.from_opts(opts)
    configure_logging(settings.debug)
    if loop == "trio":
        import trio

        from saltnado_cli.serve import run_trio as run_server

        def trio_tasks() -> int:
            def walk(task: Any) -> int:
                return 1 + sum(walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

            return walk(trio.lowlevel.current_root_task())

        async def on_ready_trio(server: Any, nursery: Any) -> None:
            token = trio.lowlevel.current_trio_token()
            answer_stats(lambda: trio.from_thread.run_sync(
                lambda: server_stats(server, trio_tasks()), trio_token=token
            ))

        trio.run(run_server, settings, opts, on_ready_trio)
    else:
        import asyncio

        from saltnado_cli.serve import run_asyncio

        async def on_ready_asyncio(server: Any) -> None:
            running = asyncio.get_running_loop()

            async def collect() -> dict[str, Any]:
                return server_stats(server, len(asyncio.all_tasks()) - 1)  # not this one

            answer_stats(lambda: asyncio.run_coroutine_threadsafe(collect(), running).result(30))

        asyncio.run(run_asyncio(settings, opts, on_ready_asyncio))
    return 0


# -- the client side: the cycles ------------------------------------------------------------
def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise RuntimeError(f"connection closed after {head!r}")
        head += data
    return head


def plain(method: str, target: str, status: bytes) -> Callable[[int, str], None]:
    def cycle(port: int, token: str) -> None:
        with connect(port) as sock:
            sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while data := sock.recv(65536):
                answer += data
        if not answer.startswith(b"HTTP/1.1 " + status):
            raise RuntimeError(f"{method} {target}: {answer[:80]!r}")

    return cycle


def websocket_reset(port: int, token: str) -> None:
    sock = connect(port)
    sock.sendall(
        f"GET /all_events/{token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    if not read_head(sock).startswith(b"HTTP/1.1 101 "):
        raise RuntimeError("no upgrade")
    sock.sendall(READY)
    reset(sock)


def events_reset(port: int, token: str) -> None:
    sock = connect(port)
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n".encode())
    if not read_head(sock).startswith(b"HTTP/1.1 200 "):
        raise RuntimeError("no event stream")
    reset(sock)


def reset_mid_request(port: int, token: str) -> None:
    sock = connect(port)
    sock.sendall(b"GET / HTTP/1.1\r\nHo")
    reset(sock)


def reset_after_request(port: int, token: str) -> None:
    sock = connect(port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    reset(sock)


ROTATION: list[Callable[[int, str], None]] = [
    plain("GET", "/", b"200"),
    websocket_reset,
    plain("GET", "/login", b"401"),
    reset_mid_request,
    websocket_reset,
    events_reset,
    plain("GET", "/nowhere", b"404"),
    reset_after_request,
    websocket_reset,
    plain("OPTIONS", "/", b"204"),
]


class ServerChild:
    def __init__(self, lab: Any, loop: str, log: Path) -> None:
        from saltnado_salt.private_salt import _free_ports

        self.port = _free_ports(1)[0]
        conf = Path(lab.root) / f"churn-{loop}"
        conf.mkdir(exist_ok=True)
        master = yaml.safe_load(Path(lab.master_config_path).read_text())
        master["rest_tornado"] = {**master["rest_tornado"], "port": self.port}
        (conf / "master").write_text(yaml.safe_dump(master, sort_keys=False))
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(conf / "master"), "--loop", loop],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                plain("GET", "/", b"200")(self.port, "")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start; see {self.log.name}") from None
                time.sleep(0.2)

    def login(self) -> str:
        body = b"username=saltdev&password=x&eauth=auto"
        with connect(self.port) as sock:
            sock.sendall(
                b"POST /login HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            answer = b""
            while data := sock.recv(65536):
                answer += data
        return str(json.loads(answer.partition(b"\r\n\r\n")[2])["return"][0]["token"])

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        stats: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return stats

    def stop(self) -> tuple[int, float]:
        """SIGTERM → (exit status, seconds to exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self.log.close()
        return status, time.monotonic() - started


def row(label: str, stats: dict[str, Any]) -> str:
    return (
        f"| {label} | {stats['rss_mb']:.1f} | {stats['connections']} | {stats['tasks']} | "
        f"{stats['subscribers']} | {stats['threads']} | {stats['fds']} |"
    )


def churn(lab: Any, loop: str, cycles: int, every: int, log: Path) -> dict[str, Any]:
    server = ServerChild(lab, loop, log)
    try:
        server.wait_ready()
        token = server.login()
        samples = [("start", server.stats())]
        print(f"\n### saltnado serve --loop {loop}: {cycles:,} cycles\n", flush=True)
        print("| after | RSS MB | connections | tasks | stream subscribers | threads | fds |")
        print("|---|---|---|---|---|---|---|")
        print(row("start", samples[0][1]), flush=True)
        started = time.monotonic()
        for i in range(cycles):
            ROTATION[i % len(ROTATION)](server.port, token)
            if (i + 1) % every == 0 or i + 1 == cycles:
                samples.append((f"{i + 1:,} cycles", server.stats()))
                print(row(*samples[-1]), flush=True)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 30  # resets are seen at once; this is a hang guard
        while (settled := server.stats())["connections"] and time.monotonic() < deadline:
            time.sleep(0.1)
        samples.append(("settled", settled))
        print(row("settled", settled))
    finally:
        status, exit_seconds = server.stop()
    warm = samples[2][1] if len(samples) > 2 else samples[0][1]
    growth = settled["rss_mb"] - warm["rss_mb"]
    print(
        f"\n{cycles / elapsed:,.0f} cycles/s; RSS {samples[0][1]['rss_mb']:.1f} → {settled['rss_mb']:.1f} MB "
        f"({growth:+.1f} MB after the first {every:,} cycles); SIGTERM → exit status {status} "
        f"in {exit_seconds:.2f} s",
        flush=True,
    )
    return {"loop": loop, "cycles": cycles, "seconds": elapsed, "samples": samples, "exit_status": status,
            "exit_seconds": exit_seconds, "rss_growth_after_warmup_mb": growth}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1_000, help="print the server's numbers this often")
    parser.add_argument("--loop", choices=("trio", "asyncio", "both"), default="both")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.loop)

    from fanout import MasterOnly

    lab = MasterOnly()
    print("starting a private salt-master…", flush=True)
    lab.start()
    results = []
    try:
        for loop in ("trio", "asyncio") if args.loop == "both" else (args.loop,):
            results.append(churn(lab, loop, args.cycles, args.every, Path(lab.root) / f"churn-{loop}.log"))
    finally:
        lab.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r["exit_status"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
