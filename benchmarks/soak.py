"""Soak benchmark: many clients, a steady event rate, for a long time.

    .venv/bin/python benchmarks/soak.py                       # 200 clients × 500 events/s, 30 min
    .venv/bin/python benchmarks/soak.py --minutes 2 --window 20   # a short look

Against a real private salt-master (no minion), like ``fanout.py`` and with its
parts: ``saltnado serve`` in its own process, N websockets on ``/all_events`` from
the client process (``wsclients.py``), events pushed into the master's
``master_event_pull.ipc`` at a fixed rate. The soak is cut into windows (default
60 s); each window's events carry their own tag, so each window reports on its own:
delivered % (clients × events), delivered msgs/s, latency p50/p99/max (fired → read,
sampled clients), server CPU per delivered message, and the server's RSS at the
window's end. A leak shows as RSS climbing window after window; a stall as a
latency or delivery dip in one window. Writes ``benchmarks/results/soak-<time>.md``
and ``.json`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fanout import (  # noqa: E402
    Clients, MasterOnly, ServerProcess, cpu_seconds, fmt, percentile, push, raise_nofile, rss_bytes,
)


def window(i: int, args: argparse.Namespace, server: ServerProcess, clients: Clients, lab: Any,
           sample_every: int) -> dict[str, Any]:
    tag = f"saltnado/soak/{i:04d}"
    events = int(args.rate * args.window)
    pids = server.pids
    cpu0 = cpu_seconds(pids)
    clients.send(cmd="run", tag=tag, events=events, sample_every=sample_every,
                 idle=args.idle, deadline=args.window + 120)
    clients.reply()  # running
    first, last_fired = push(lab.sock_dir, tag, events, args.rate)
    result = clients.reply()
    cpu = cpu_seconds(pids) - cpu0
    lat = sorted(result["latencies_ns"])
    delivered = result["delivered"]
    span = max(result["last_ns"] - first, 1) / 1e9 if delivered else float("nan")
    return {
        "window": i, "events": events, "clients": result["clients"],
        "fire_seconds": (last_fired - first) / 1e9,
        "delivered": delivered,
        "delivered_pct": 100.0 * delivered / max(result["clients"] * events, 1),
        "delivered_per_s": delivered / span if delivered else 0.0,
        "closed_by_server": result["closed_by_server"],
        "in_order": f"{result['sampled_in_order_complete']}/{result['sampled_clients']}",
        "latency_ms": {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
                       "max": lat[-1] / 1e6 if lat else float("nan"), "samples": len(lat)},
        "server_cpu_us_per_msg": cpu / delivered * 1e6 if delivered else float("nan"),
        "rss_mb": rss_bytes(pids) / 2**20,
        "loadavg_1min": os.getloadavg()[0],
    }


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    total = sum(r["delivered"] for r in rows)
    wanted = sum(r["clients"] * r["events"] for r in rows)
    lines = [
        "# saltnado soak benchmark",
        "",
        f"{meta['when']} · {meta['machine']} · command: `{meta['command']}`",
        "",
        f"{meta['clients']} websocket clients on `/all_events`, {meta['rate']:,.0f} events/s into a real "
        f"salt-master for {meta['minutes']:g} min, in {meta['window']:g} s windows; server: "
        f"`saltnado serve --loop {meta['loop']}`. Overall: {total:,} of {wanted:,} messages delivered "
        f"({100.0 * total / max(wanted, 1):.3f} %); RSS {fmt(rows[0]['rss_mb'])} → {fmt(rows[-1]['rss_mb'])} MB."
        if rows else "no windows ran",
        "",
        "| window | events | delivered | msgs/s | p50 ms | p99 ms | max ms | CPU µs/msg | RSS MB | closed | in order | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['window']} | {r['events']:,} | {fmt(r['delivered_pct'], 3)} % | {fmt(r['delivered_per_s'], 0)} | "
            f"{fmt(r['latency_ms']['p50'], 2)} | {fmt(r['latency_ms']['p99'], 2)} | {fmt(r['latency_ms']['max'], 1)} | "
            f"{fmt(r['server_cpu_us_per_msg'], 2)} | {fmt(r['rss_mb'])} | {r['closed_by_server']} | "
            f"{r['in_order']} | {r['loadavg_1min']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=500.0, help="events/s")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    parser.add_argument("--sampled", type=int, default=20, help="latency-sampled clients")
    parser.add_argument("--idle", type=float, default=5.0, help="end a window after this long without a frame")
    parser.add_argument("--loop", default="trio", choices=("trio", "asyncio", "uvloop"))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    raise_nofile()

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    lab = MasterOnly()
    lab.start(log)
    rows: list[dict[str, Any]] = []
    server = clients = None
    try:
        server = ServerProcess("saltnado", lab, {}, log, loop=args.loop)
        server.wait_ready()
        token = server.login(lab.username)
        clients = Clients()
        got = clients.call(cmd="connect", port=server.port, path=f"/all_events/{token}", n=args.clients)
        log(f"{got['connected']} websockets open ({got['failed']} failed)")
        sample_every = max(1, args.clients // max(args.sampled, 1))
        windows = max(1, round(args.minutes * 60 / args.window))
        for i in range(windows):
            row = window(i, args, server, clients, lab, sample_every)
            rows.append(row)
            log(f"window {i + 1}/{windows}: {row['delivered_pct']:.3f} % delivered, "
                f"p50 {row['latency_ms']['p50']:.2f} ms, p99 {row['latency_ms']['p99']:.2f} ms, "
                f"max {row['latency_ms']['max']:.1f} ms, RSS {row['rss_mb']:.1f} MB")
    finally:
        if clients is not None:
            clients.close()
        if server is not None:
            server.stop()
        lab.stop()
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "command": " ".join(["benchmarks/soak.py", *sys.argv[1:]]),
        "clients": args.clients, "rate": args.rate, "minutes": args.minutes, "window": args.window,
        "loop": args.loop,
    }
    report = markdown(rows, meta)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"soak-{stamp}.md").write_text(report)
    (args.out / f"soak-{stamp}.json").write_text(json.dumps({"meta": meta, "windows": rows}, indent=1))
    print(report)
    complete = all(r["delivered_pct"] == 100.0 for r in rows)
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
