"""The timeout sweep: what one tick costs over N streaming websockets, core only.

Both bindings call ``ServerConnection.tick(now)`` on every open connection once per
``tick_interval`` (1 s) instead of keeping a timer per connection. This prints the
cost of one sweep (µs, and ns per connection) on idle streaming websockets — the
common case at fan-out scale — in three states: between pings, at the tick that
pings them all, and at the tick after (each awaiting its pong); the token re-check
that runs beside it (``TokenRecheck.calls``: which Salt calls to run — one listing of
the token store, whatever the number of tokens; ``benchmarks/token_recheck.py`` runs
them against a real token store), with one token for all streams and one token
each; and the memory of one
idle streaming connection (tracemalloc). No sockets, no event loop.

    .venv/bin/python benchmarks/core_ticks.py [--connections 1000,10000]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from saltnado_core import App, EventStreams, GetToken, Limits, ServerConnection, Settings
from saltnado_core.revocation import TokenRecheck
from saltnado_core.salt_calls import GetAuthList
from saltnado_core.testing import Driver

TOKEN = "0123456789abcdef" * 4
RECORD = {"token": TOKEN, "start": 0.0, "expire": 1e12, "name": "u", "eauth": "pam"}
READY = b"\x81\x96\x00\x00\x00\x00websocket client ready"  # masked with a zero key


def upgrade(token: str) -> bytes:
    return (
        f"GET /all_events/{token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def streaming(n: int, streams: EventStreams, distinct_tokens: bool = False) -> list[ServerConnection]:
    app = App(Settings(websockets=True, disable_ssl=True))
    conns = []
    for i in range(n):
        token = f"{i:064x}" if distinct_tokens else TOKEN
        conn = ServerConnection(Limits(), streams)
        answers = {GetToken: {**RECORD, "token": token}, GetAuthList: [".*"]}  # a valid token that may read events
        driver = Driver(conn, app, answers, now=0.0)
        driver.feed(upgrade(token) + READY)
        assert len(driver.served) == 1
        conns.append(conn)
    return conns


def sweep(conns: list[ServerConnection], now: float) -> tuple[float, int]:
    woken = 0
    t0 = time.perf_counter()
    for conn in conns:
        if conn.tick(now):
            woken += 1
    return time.perf_counter() - t0, woken


def run(n: int) -> dict[str, float]:
    conns = streaming(n, EventStreams())
    sweep(conns, 0.0)  # the first tick starts each connection's ping schedule
    idle, _ = min(sweep(conns, 1.0 + i) for i in range(5))
    pinging, woken = sweep(conns, 20.0)
    assert woken == n
    for conn in conns:
        conn.data_to_send()
    awaiting, _ = min(sweep(conns, 21.0 + i) for i in range(5))
    return {
        "connections": n,
        "idle_us": idle * 1e6,
        "idle_ns_per_conn": idle / n * 1e9,
        "pinging_ns_per_conn": pinging / n * 1e9,
        "awaiting_pong_ns_per_conn": awaiting / n * 1e9,
    }


def recheck_us(n: int, distinct_tokens: bool) -> tuple[float, int]:
    """One tick's ``TokenRecheck.calls`` over ``n`` streams (µs, best of 5) → Salt calls."""
    streams = EventStreams()
    streaming(n, streams, distinct_tokens)
    best, calls = float("inf"), 0
    for _ in range(5):
        recheck = TokenRecheck()
        t0 = time.perf_counter()
        calls = len(recheck.calls(streams.tokens))
        best = min(best, time.perf_counter() - t0)
    return best * 1e6, calls


def bytes_per_idle_websocket(n: int = 2000) -> float:
    streams = EventStreams()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    conns = streaming(n, streams)
    for conn in conns:
        conn.tick(0.0)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / len(conns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", default="1000,10000")
    args = parser.parse_args()
    for n in (int(x) for x in args.connections.split(",")):
        r = run(n)
        print(
            f"{r['connections']:>6} streaming websockets: one sweep {r['idle_us']:8.0f} µs "
            f"({r['idle_ns_per_conn']:.0f} ns/conn idle, {r['pinging_ns_per_conn']:.0f} pinging, "
            f"{r['awaiting_pong_ns_per_conn']:.0f} awaiting pongs)"
        )
        for distinct in (False, True):
            us, calls = recheck_us(n, distinct)
            print(
                f"{n:>6} streams, {'one token each' if distinct else 'one token':>14}: token re-check {us:8.0f} µs "
                f"per tick → {calls} Salt call(s) for the worker threads"
            )
    print(f"memory per idle streaming websocket (core objects): {bytes_per_idle_websocket() / 1024:.2f} KiB")


if __name__ == "__main__":
    main()
