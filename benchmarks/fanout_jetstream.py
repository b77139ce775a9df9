"""Fan-out through JetStream: two masters → ingest nodes → a 3-node NATS cluster → edge nodes → clients.

    .venv/bin/python benchmarks/fanout_jetstream.py                       # 3 edges × 334 clients, 2 × 150 events at 25/s
    .venv/bin/python benchmarks/fanout_jetstream.py --clients-per-edge 300 --events-per-master 300 --rate-per-master 50

Set up once (everything private, on loopback, removed at the end):

* a 3-node NATS cluster with JetStream (:class:`saltnado_salt.private_nats.NatsCluster`),
  the stream with 3 replicas;
* two salt-masters without minions (``fanout.py``'s :class:`MasterOnly`), ``m1`` and ``m2``;
* one ``saltnado serve`` per master with ``role: ingest`` (its bus → the stream), and
  ``--edges`` ``saltnado serve`` with ``role: edge`` (the stream → its clients), each a
  process of its own;
* one ``wsclients.py`` process per edge node, each opening ``--clients-per-edge``
  websockets to ``/all_events/<token>`` there.

Then warm-up events through each master until every client has them, and the measured
events: ``--events-per-master`` into each master's ``master_event_pull.ipc`` at
``--rate-per-master`` (both masters at once, as ``fanout.py``'s ``push`` does, m2's
sequence numbers following m1's), each carrying its fire time. Reported as in
``fanout.py``: delivered % (of clients × events of both masters), delivered
messages/s (first fire → last frame read, over all edges), latency p50/p99/max
(fired → read, sampled clients of every edge), and CPU (utime + stime from /proc)
over the fire → done window, per delivered message, apart for the ingest nodes, the
edge nodes, the NATS nodes and the masters. The defaults match ``fanout.py``'s
``rate1000`` run (1,000 clients, 300 events at 50/s in all) so the two compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fanout import Clients, MasterOnly, ServerProcess, cpu_seconds, fmt, percentile, raise_nofile, tree  # noqa: E402
from fanout import push as fanout_push  # noqa: E402
from saltnado_salt.private_nats import NatsCluster  # noqa: E402
from saltnado_salt.private_salt import PrivateSalt, _free_ports  # noqa: E402

TAG = "saltnado/bench"
WARM_TAG = "saltnado/bench/warm"
STREAM = "SALT_BENCH"
JOINED = "connected to the event log"


class NodeProcess(ServerProcess):
    """One ``saltnado serve`` on the event log, with its own master config (a copy of
    ``lab``'s) and log file; logs in, counts its pids and stops as fanout.py's servers do."""

    def __init__(self, name: str, lab: PrivateSalt, root: Path, event_log: dict[str, Any]) -> None:
        self.name = name
        self.port = _free_ports(1)[0]
        self.dir = root / name
        config = lab.write_api_config(self.dir, "rest_tornado", self.port, {"event_log": event_log})
        self.log = self.dir / "saltnado.log"
        self.out = open(self.log, "ab")  # closed by stop()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "saltnado"), "serve", "--master-config", str(config)],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=raise_nofile)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until it answers ``GET /`` and has joined the stream."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as answer:
                    answer.read()
                if JOINED in self.log.read_text(errors="replace"):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {self.name} did not start; see {self.log}")
            time.sleep(0.2)


def push(sock_dir: Path, tag: str, events: int, rate: float, first_seq: int, fired: list[int]) -> None:
    """:func:`fanout.push` in a thread: appends the first and last fire times (ns) to ``fired``."""
    fired.extend(fanout_push(sock_dir, tag, events, rate, first_seq))


def push_all(labs: list[PrivateSalt], tag: str, events: int, rate: float) -> list[int]:
    """Every master at once, each in a thread; the fire times (ns) of all."""
    fired: list[int] = []
    threads = [threading.Thread(target=push, args=(lab.sock_dir, tag, events, rate, n * events, fired))
               for n, lab in enumerate(labs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return fired


def run_all(clients: list[Clients], **cmd: Any) -> None:
    for c in clients:
        c.send(cmd="run", **cmd)
    for c in clients:
        c.reply()  # running


def measure(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="sdj-"))  # short: the masters' Unix sockets are under it
    nats = NatsCluster(root=root / "nats")
    labs = [MasterOnly(root=root / name, api_port=0) for name in ("m1", "m2")]
    nodes: list[NodeProcess] = []
    clients: list[Clients] = []
    try:
        nats.start()
        log(f"NATS: {', '.join(nats.urls)}")
        for lab in labs:
            lab.start(progress=log)
        section = {"servers": nats.urls, "stream": STREAM, "replicas": 3}
        ingest = [NodeProcess(f"ingest-m{n + 1}", lab, root / "nodes", {**section, "role": "ingest", "master": f"m{n + 1}"})
                  for n, lab in enumerate(labs)]
        edges = [NodeProcess(f"edge{n}", labs[0], root / "nodes", {**section, "role": "edge"}) for n in range(args.edges)]
        nodes = ingest + edges
        for node in nodes:
            node.wait_ready()
        log(f"nodes up: {', '.join(f'{n.name}:{n.port}' for n in nodes)}")
        token = edges[0].login(labs[0].username)  # every edge reads m1's config: one token store
        for edge in edges:
            clients.append(Clients())
            got = clients[-1].call(cmd="connect", port=edge.port, path=f"/all_events/{token}", n=args.clients_per_edge)
            log(f"    {edge.name}: {got['connected']} websockets open in {got['seconds']:.1f} s"
                + (f", {got['failed']} failed: {got['errors']}" if got["failed"] else ""))
        time.sleep(1.0 + args.edges * args.clients_per_edge / 5000)
        n_clients = args.edges * args.clients_per_edge
        run_all(clients, tag=WARM_TAG, events=3 * len(labs), sample_every=10**9, idle=5.0, deadline=60)
        push_all(labs, WARM_TAG, 3, 10)
        warm = sum(c.reply()["delivered"] for c in clients)
        log(f"    warm-up: {warm}/{3 * len(labs) * n_clients} delivered")
        groups = {"ingest": [p for n in ingest for p in n.pids], "edge": [p for n in edges for p in n.pids],
                  "nats": nats.pids(), "masters": [p for lab in labs for p in tree(lab._procs["master"].pid)]}
        sample_every = max(1, args.clients_per_edge // max(1, args.sampled // args.edges))
        cpu0 = {name: cpu_seconds(pids) for name, pids in groups.items()}
        load0 = os.getloadavg()[0]
        run_all(clients, tag=TAG, events=args.events_per_master * len(labs), sample_every=sample_every,
                idle=args.idle, deadline=args.deadline)
        fired = push_all(labs, TAG, args.events_per_master, args.rate_per_master)
        results = [c.reply() for c in clients]
        cpu = {name: cpu_seconds(pids) - cpu0[name] for name, pids in groups.items()}
        load1 = os.getloadavg()[0]
    finally:
        for c in clients:
            c.close()
        for node in nodes:
            node.stop()
        for lab in labs:
            lab.stop()
        nats.stop()
        shutil.rmtree(root, ignore_errors=True)
    lat = sorted(x for r in results for x in r["latencies_ns"])
    delivered = sum(r["delivered"] for r in results)
    events = args.events_per_master * len(labs)
    wanted = n_clients * events
    last = max(r["last_ns"] for r in results)
    span = max(last - min(fired), 1) / 1e9 if delivered else float("nan")
    return {
        "edges": args.edges, "clients_per_edge": args.clients_per_edge, "clients": n_clients,
        "masters": len(labs), "events": events, "rate": args.rate_per_master * len(labs),
        "fire_seconds": (max(fired) - min(fired)) / 1e9,
        "delivered": delivered, "delivered_pct": 100.0 * delivered / wanted,
        "complete_clients": sum(r["complete_clients"] for r in results),
        "closed_by_server": sum(r["closed_by_server"] for r in results),
        "delivered_per_s": delivered / span if delivered else 0.0,
        "latency_ms": {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
                       "max": lat[-1] / 1e6 if lat else float("nan"), "samples": len(lat)},
        "cpu_s": cpu,
        # ingest and NATS work once per event; edges once per event per node and per delivered message
        "ingest_cpu_us_per_event": cpu["ingest"] / events * 1e6,
        "nats_cpu_us_per_event": cpu["nats"] / events * 1e6,
        "edge_cpu_us_per_msg": cpu["edge"] / delivered * 1e6 if delivered else float("nan"),
        "ingest_cpu_us_per_msg": cpu["ingest"] / delivered * 1e6 if delivered else float("nan"),
        "loadavg_1min": [load0, load1],
    }


def markdown(r: dict[str, Any], meta: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    cpu_split = " / ".join(f"{r['cpu_s'][k]:.1f}" for k in ("ingest", "edge", "nats", "masters"))
    return "\n".join([
        f"# Fan-out through JetStream ({meta['when']})",
        "",
        f"{meta['machine']}, salt {meta['salt']}; `{meta['command']}`",
        "",
        f"{r['masters']} masters → {r['masters']} ingest nodes → 3-node JetStream (R3) → {r['edges']} edge nodes × "
        f"{r['clients_per_edge']} clients; {r['events']} events in all at {r['rate']:g}/s",
        "",
        "| delivered | complete clients | msgs/s | p50 / p99 / max ms | edge CPU µs/msg | ingest CPU µs/event "
        "| NATS CPU µs/event | CPU s: ingest / edge / NATS / masters | load 1 min |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
        f"| {r['delivered_pct']:.1f} % | {r['complete_clients']}/{r['clients']} | {r['delivered_per_s']:,.0f} "
        f"| {fmt(lat['p50'])} / {fmt(lat['p99'])} / {fmt(lat['max'])} | {r['edge_cpu_us_per_msg']:.2f} "
        f"| {r['ingest_cpu_us_per_event']:,.0f} | {r['nats_cpu_us_per_event']:,.0f} "
        f"| {cpu_split} "
        f"| {r['loadavg_1min'][0]:.1f} → {r['loadavg_1min'][1]:.1f} |",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=3, help="edge nodes (one client process each)")
    parser.add_argument("--clients-per-edge", type=int, default=334)
    parser.add_argument("--events-per-master", type=int, default=150)
    parser.add_argument("--rate-per-master", type=float, default=25.0, help="events/s into each master (0: a burst)")
    parser.add_argument("--sampled", type=int, default=300, help="latency-sampled clients in all")
    parser.add_argument("--idle", type=float, default=10.0, help="stop after this long without a frame")
    parser.add_argument("--deadline", type=float, default=240.0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    raise_nofile()

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    started = time.monotonic()
    result = measure(args, log)
    import salt.version

    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "salt": salt.version.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seconds": round(time.monotonic() - started, 1),
    }
    report = markdown(result, meta)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"fanout-jetstream-{stamp}.md").write_text(report)
    (args.out / f"fanout-jetstream-{stamp}.json").write_text(json.dumps({"meta": meta, "run": result}, indent=1))
    print(report)
    log(f"took {meta['seconds']:.0f} s; report in {args.out}/fanout-jetstream-{stamp}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
