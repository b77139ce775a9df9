"""Fan-out through NATS JetStream: two masters → two ingest nodes → the stream → 3 edge nodes × N clients.

    .venv/bin/python benchmarks/fanout_jetstream.py --clients 100 --events 500 --rate 100

Starts a private 3-node NATS cluster (tests/nats_cluster.py), two private salt-masters
without minions (fanout.py's MasterOnly), one ``saltnado serve`` per master with
``event_log: {role: ingest}``, and three with ``role: edge`` (all reading master A's
config: one token store, so one login works on the three). ``wsclients.py`` opens N
websockets per edge node; each master is then fired ``--events`` events at ``--rate``
per second (both at once, in two threads). Reported, as fanout.py does: delivered %
(of 3·N clients × 2·events), delivered messages/s, latency fired → read p50/p99/max.

Beside it, the single-node baseline: one plain ``saltnado serve`` (no event log) on
master A with the same 3·N clients and the same 2·events fired into master A alone at
twice the rate. Numbers are printed as one Markdown table and written as JSON to
``benchmarks/results/fanout_jetstream.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from fanout import TAG, WARM_TAG, Clients, MasterOnly, ServerProcess, percentile, push, raise_nofile  # noqa: E402
from saltnado_salt.private_salt import _free_ports  # noqa: E402
from nats_cluster import NatsCluster  # noqa: E402


class Node(ServerProcess):
    """fanout.py's ServerProcess, with a config directory of its own (several per master)."""

    count = 0

    def __init__(self, lab: MasterOnly, extra: dict[str, Any]) -> None:
        import yaml

        Node.count += 1
        self.kind = "saltnado"
        self.port = _free_ports(1)[0]
        self.conf = conf = Path(lab.root) / f"bench-node{Node.count}"
        conf.mkdir(exist_ok=True)
        master = yaml.safe_load(Path(lab.master_config_path).read_text())
        master["rest_tornado"] = {**master["rest_tornado"], "port": self.port, **extra}
        (conf / "master").write_text(yaml.safe_dump(master, sort_keys=False))
        self.out = open(conf / "server.out", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "saltnado_cli.main", "serve", "-c", str(conf)], stdin=subprocess.DEVNULL,
            stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=raise_nofile,
            env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        )
        self.log = log


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fire_both(masters: list[MasterOnly], events: int, rate: float) -> tuple[int, int]:
    """Fire ``events`` into each master at once; (first, last) fire time in ns."""
    results: list[tuple[int, int]] = []
    threads = [threading.Thread(target=lambda m=m: results.append(push(m.sock_dir, TAG, events, rate)))
               for m in masters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return min(r[0] for r in results), max(r[1] for r in results)


def measure(ports: list[int], token: str, clients_per_node: int, fire: Any, events_total: int,
            args: argparse.Namespace) -> dict[str, Any]:
    clients = Clients()
    try:
        connected = 0
        for port in ports:
            got = clients.call(cmd="connect", port=port, path=f"/all_events/{token}", n=clients_per_node)
            connected += got["connected"]
        time.sleep(1.0)
        clients.send(cmd="run", tag=WARM_TAG, events=1, sample_every=10**9, idle=3.0, deadline=30)
        clients.reply()
        fire(WARM_TAG, 1)
        warm = clients.reply()
        log(f"  {connected} websockets; warm-up {warm['delivered']}/{connected}")
        sample_every = max(1, connected // args.sampled)
        clients.send(cmd="run", tag=TAG, events=events_total, sample_every=sample_every,
                     idle=args.idle, deadline=args.deadline)
        clients.reply()
        first, _ = fire(TAG, None)
        result = clients.reply()
    finally:
        clients.close()
    lat = sorted(result.pop("latencies_ns"))
    result.pop("bus_latencies_ns", None)
    delivered = result["delivered"]
    span = max(result["last_ns"] - first, 1) / 1e9 if delivered else float("nan")
    return {
        "clients": connected, "events": events_total, "delivered": delivered,
        "delivered_pct": 100.0 * delivered / max(connected * events_total, 1),
        "delivered_per_s": delivered / span if delivered else 0.0,
        "latency_ms": {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
                       "max": lat[-1] / 1e6 if lat else float("nan"), "samples": len(lat)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100, help="websockets per edge node")
    parser.add_argument("--events", type=int, default=500, help="events per master")
    parser.add_argument("--rate", type=float, default=100, help="events/s per master (0: a burst)")
    parser.add_argument("--sampled", type=int, default=50, help="clients whose latency is sampled")
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=300.0)
    parser.add_argument("--skip-single", action="store_true", help="no single-node baseline")
    args = parser.parse_args()

    cluster = NatsCluster()
    masters = [MasterOnly(api_port=0), MasterOnly(api_port=0)]
    servers: list[ServerProcess] = []
    results: dict[str, Any] = {"args": vars(args)}
    try:
        cluster.start()
        log(f"NATS cluster up: {', '.join(cluster.urls)}")
        for master in masters:
            master.start(progress=log)
        a = masters[0]
        section = {"servers": cluster.urls, "stream": "BENCH", "subject_prefix": "bench.events", "replicas": 3}
        for name, master in zip(("mA", "mB"), masters):
            servers.append(Node(master, {"event_log": {**section, "role": "ingest", "master": name}}))
        edges = [Node(a, {"event_log": {**section, "role": "edge"}}) for _ in range(3)]
        servers += edges
        for server in servers:
            server.wait_ready()
        time.sleep(2.0)  # the edges follow the stream
        token = edges[0].login(a.username)

        def fire_jetstream(tag: str, count: int | None) -> tuple[int, int]:
            if count is not None:
                return fire_both(masters, count, 10) if tag != TAG else fire_both(masters, count, args.rate)
            return fire_both(masters, args.events, args.rate)

        log(f"JetStream: 2 masters x {args.events} events at {args.rate}/s each → 3 edges x {args.clients}")
        results["jetstream"] = measure([e.port for e in edges], token, args.clients,
                                       fire_jetstream, 2 * args.events, args)
        for server in servers:
            server.stop()
        servers = []
        if not args.skip_single:
            single = Node(a, {})
            servers.append(single)
            single.wait_ready()
            token = single.login(a.username)

            def fire_single(tag: str, count: int | None) -> tuple[int, int]:
                if count is not None:
                    return push(a.sock_dir, tag, count, 10)
                return push(a.sock_dir, TAG, 2 * args.events, 2 * args.rate)

            log(f"single node: 1 master x {2 * args.events} events at {2 * args.rate}/s → 1 node x {3 * args.clients}")
            results["single"] = measure([single.port], token, 3 * args.clients, fire_single, 2 * args.events, args)
    finally:
        for server in servers:
            server.stop()
        for master in masters:
            master.stop()
        cluster.stop()
    lines = ["| setup | clients | events each | delivered % | msgs/s | p50 ms | p99 ms | max ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, what in (("jetstream", "2 masters → JetStream (R3) → 3 edges"), ("single", "1 master → 1 node")):
        r = results.get(name)
        if r:
            lat = r["latency_ms"]
            lines.append(f"| {what} | {r['clients']} | {r['events']} | {r['delivered_pct']:.2f} | "
                         f"{r['delivered_per_s']:,.0f} | {lat['p50']:.1f} | {lat['p99']:.1f} | {lat['max']:.1f} |")
    print("\n".join(lines))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "fanout_jetstream.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
