"""Fan-out benchmark suite: saltnado beside the reference (salt-api's rest_tornado).

One command runs everything and writes a Markdown + JSON report to
``benchmarks/results/`` (and prints the Markdown)::

    .venv/bin/python benchmarks/fanout.py                 # every run, both servers
    .venv/bin/python benchmarks/fanout.py --runs rate100,burst100 --servers saltnado
    .venv/bin/python benchmarks/fanout.py --runs rate1000 --servers saltnado --variants plain,ids,ids+filter

Per run, against a real private salt-master (no minion), for each server in turn:

1. start the server fresh (``saltnado serve`` / ``salt-api``) on its own port, answer
   ``GET /`` (the reference closes websockets until a plain request was served),
   ``POST /login``;
2. note the server's RSS, then open N websockets to ``/all_events/<token>`` from a
   separate client process (``wsclients.py``: raw sockets + epoll, frames counted by
   their tag bytes, not parsed) and note the RSS again (→ RSS per idle connection);
3. fire a few warm-up events, then the measured ones straight into the master's
   ``master_event_pull.ipc`` (length-prefixed, as Salt's ``fire_event`` does) at a
   fixed rate or as one burst, each carrying its sequence number and fire time
   (CLOCK_MONOTONIC ns);
4. wait until every client has every event, or none arrived for ``--idle`` seconds.

Reported: delivered % (of clients × events), delivered messages/s (from the first
fire to the last frame read), latency p50/p99/max (fired → read by the client, over
the sampled clients), server CPU (utime+stime of the server's process tree from
/proc/<pid>/stat, over the fire→done window) per delivered message, server RSS and
RSS per idle websocket. Ratios compare saltnado with the reference on the same run.
The core-only hot-path microbenchmark (``core_fanout.py``) is included.

Variants (``--variants``, saltnado only but ``plain``): ``ids`` (``?ids=1``),
``filter`` (a share of the clients ask ``?tag=`` globs that match the events),
``filtered-out`` (a share ask globs the events never match, ``--filter-out``: they
must receive none, and the server's CPU per delivered message shows what they
cost), ``resume-storm`` (every client, with ids, leaves; the run's events are fired;
every client reconnects at once with ``?last_event_id=`` and must be replayed
exactly those events: the storm's length is reported).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import core_fanout  # noqa: E402
from saltnado_core import encode_pull_message  # noqa: E402
from saltnado_salt.private_salt import PrivateSalt, _free_ports  # noqa: E402

TAG = "saltnado/bench"
WARM_TAG = "saltnado/bench/warm"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    clients: int
    events: int
    rate: float  # events/s; 0 = one burst, as fast as the master accepts
    what: str
    saltnado_opts: dict = dataclasses.field(default_factory=dict)  # extra rest_tornado keys
    reference: bool = True  # also run the reference


RUNS = [
    Run("rate100", 100, 1000, 200, "100 clients, 1,000 events at 200/s"),
    Run("burst100", 100, 2000, 0, "100 clients, 2,000-event burst"),
    Run("rate1000", 1000, 300, 50, "1,000 clients, 300 events at 50/s"),
    Run("rate1000-np2", 1000, 300, 50, "as rate1000, saltnado with num_processes: 2",
        {"num_processes": 2}, reference=False),
    Run("sat1000", 1000, 5000, 0, "1,000 clients, 5,000-event burst (saturated)"),
    Run("sat1000-np2", 1000, 5000, 0, "as sat1000, saltnado with num_processes: 2",
        {"num_processes": 2}, reference=False),
    Run("hold10000", 10000, 20, 10, "10,000 websockets held, 20 events at 10/s"),
]


# -- processes -----------------------------------------------------------------------
def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (fields 14 and 15 of /proc/<pid>/stat)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            continue
    return total


class MasterOnly(PrivateSalt):
    """A private salt-master without starting the minion: events are pushed by hand.

    One MWorker (``worker_threads: 1``): every MWorker subscribes to the event bus and
    decodes each event, so the default five would spend a core of this 2-core machine
    on work neither server under test depends on.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(extra_master_opts={"worker_threads": 1}, **kwargs)

    def start(self, progress: Any = lambda s: None, timeout: float = 120) -> None:
        try:
            self._write_configs()
            progress(f"starting salt-master (config in {self.config_dir})")
            self._spawn("master", "salt-master", self.config_dir)
            self._wait_event_bus(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise


class ServerProcess:
    """saltnado or the reference salt-api, fresh per run, on its own port and config."""

    def __init__(self, kind: str, lab: PrivateSalt, extra: dict[str, Any], log: Any, loop: str = "trio") -> None:
        self.kind = kind
        self.port = _free_ports(1)[0]
        conf = Path(lab.root) / f"bench-{kind}"
        conf.mkdir(exist_ok=True)
        master = yaml.safe_load(Path(lab.master_config_path).read_text())
        master["rest_tornado"] = {**master["rest_tornado"], "port": self.port, **extra}
        (conf / "master").write_text(yaml.safe_dump(master, sort_keys=False))
        if kind == "saltnado":
            cmd = [str(Path(sys.executable).parent / "saltnado"), "serve", "-c", str(conf), "--loop", loop]
        else:
            cmd = [str(Path(sys.executable).parent / "salt-api"), "-c", str(conf), "-l", "warning"]
        self.out = open(conf / "server.out", "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=raise_nofile)
        self.log = log
        self.conf = conf

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as r:
                    r.read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.kind} did not start; see {self.conf}/server.out")
                time.sleep(0.2)

    def login(self, user: str) -> str:
        data = f"username={user}&password=x&eauth=auto".encode()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/login", data=data, timeout=30) as r:
            return json.load(r)["return"][0]["token"]

    @property
    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        self.out.close()


class Clients:
    """The client process (wsclients.py), driven one JSON line at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "wsclients.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=raise_nofile)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the client process died")
        return json.loads(line)

    def call(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.reply()

    def close(self) -> None:
        try:
            self.send(cmd="quit")
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def push(sock_dir: Path, tag: str, events: int, rate: float, first_seq: int = 0) -> tuple[int, int]:
    """Fire ``events`` events into the master, sequence numbers from ``first_seq``;
    returns (first, last) fire time in ns."""
    pull = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pull.connect(str(sock_dir / "master_event_pull.ipc"))
    try:
        start = time.monotonic()
        first = time.monotonic_ns()
        for i in range(events):
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pull.sendall(encode_pull_message(tag, {"seq": first_seq + i, "t": time.monotonic_ns()}))
        return first, time.monotonic_ns()
    finally:
        pull.close()


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))] / 1e6


# -- one run -------------------------------------------------------------------------------
VARIANTS = ("plain", "ids", "filter", "ids+filter", "filtered-out", "resume-storm")


def connect_clients(clients: Clients, port: int, token: str, n: int, variant: str,
                    args: argparse.Namespace) -> dict[str, Any]:
    """Open ``n`` websockets of ``variant``: ``plain`` (the reference's URL), ``ids``
    (``?ids=1``: each message carries its event id), ``filter`` (``--filtered-share``
    of them ask ``?tag=`` for each ``--filter`` glob, the others nothing), or both."""
    path = f"/all_events/{token}"
    ids = "ids" in variant.split("+")
    base = path + ("?ids=1" if ids else "")
    filtered = int(n * args.filtered_share) if "filter" in variant.split("+") else 0
    groups = []
    if filtered:
        tags = "&".join("tag=" + quote(glob, safe="/*?") for glob in args.filter.split(","))
        groups.append((base + ("&" if ids else "?") + tags, filtered))
    groups.append((base, n - filtered))
    total: dict[str, Any] = {"connected": 0, "failed": 0, "errors": [], "seconds": 0.0}
    for group_path, count in groups:
        if count:
            got = clients.call(cmd="connect", port=port, path=group_path, n=count)
            for key in ("connected", "failed", "errors", "seconds"):
                total[key] += got[key]
    return total


def connect_bystanders(port: int, token: str, n: int, args: argparse.Namespace) -> tuple[Clients, int]:
    """``filtered-out``: ``n`` clients (their own client process) whose ``?tag=`` globs
    (``--filter-out``) the benchmark's events never match: they cost the server only
    the filter check, and must receive none of them."""
    bystanders = Clients()
    tags = "&".join("tag=" + quote(glob, safe="/*?") for glob in args.filter_out.split(","))
    got = bystanders.call(cmd="connect", port=port, path=f"/all_events/{token}?{tags}", n=n)
    return bystanders, got["connected"]


def last_event_id(port: int, token: str, sock_dir: Path) -> str:
    """The id of a marker event fired now, as an ``?ids=1`` client reads it: the
    point a resume storm's clients resume after."""
    import websocket  # websocket-client, in the test extras

    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/all_events/{token}?ids=1", timeout=30)
    try:
        ws.send("websocket client ready")
        time.sleep(0.5)
        push(sock_dir, WARM_TAG + "/marker", 1, 0)
        while True:
            message = json.loads(ws.recv())
            if message.get("tag") == WARM_TAG + "/marker":
                return str(message["id"])
    finally:
        ws.close()


def storm(clients: Clients, server: ServerProcess, lab: PrivateSalt, token: str, run: Run,
          args: argparse.Namespace, log: Any) -> tuple[Clients, dict[str, Any], int, int]:
    """``resume-storm``: every client leaves, ``run.events`` events are fired while
    none is connected (kept in the history), then every client reconnects at once
    with the last id it saw and must get exactly those events, in order. Returns the
    new client process, the connect answer, and the storm's start (ns) as ``first``."""
    marker = last_event_id(server.port, token, lab.sock_dir)
    clients.close()  # every websocket gone
    time.sleep(0.5)
    push(lab.sock_dir, TAG, run.events, 0)
    time.sleep(1.0)  # relayed into the history
    log(f"    {run.events} events fired while away; {run.clients} clients resume after {marker}")
    clients = Clients()
    start = time.monotonic_ns()
    got = clients.call(cmd="connect", port=server.port,
                       path=f"/all_events/{token}?last_event_id={quote(marker)}", n=run.clients)
    return clients, got, start, time.monotonic_ns()


def measure(run: Run, kind: str, lab: PrivateSalt, args: argparse.Namespace, log: Any,
            variant: str = "plain") -> dict[str, Any]:
    extra = dict(run.saltnado_opts) if kind == "saltnado" else {}
    server = ServerProcess(kind, lab, extra, log)
    clients = Clients()
    bystanders: Clients | None = None
    filtered_out = filtered_out_received = 0
    profiler = None
    try:
        server.wait_ready()
        token = server.login(lab.username)
        time.sleep(0.5)
        rss_before = rss_bytes(server.pids)
        measured = run.clients
        if variant == "filtered-out":
            filtered_out = int(run.clients * args.filtered_share)
            measured = run.clients - filtered_out
            bystanders, filtered_out = connect_bystanders(server.port, token, filtered_out, args)
        plain_or_ids = "ids" if variant == "resume-storm" else variant
        got = connect_clients(clients, server.port, token, measured,
                              plain_or_ids if kind == "saltnado" and variant != "filtered-out" else "plain", args)
        log(f"    {got['connected']} websockets open in {got['seconds']:.1f} s"
            + (f", {got['failed']} failed: {got['errors']}" if got["failed"] else ""))
        time.sleep(1.0 + run.clients / 5000)
        rss_idle = rss_bytes(server.pids)
        clients.call(cmd="bus", path=str(lab.sock_dir / "master_event_pub.ipc"))
        # warm-up: makes sure every server is subscribed and every client streaming
        clients.send(cmd="run", tag=WARM_TAG, events=3, sample_every=10**9, idle=2.0, deadline=30)
        clients.reply()
        push(lab.sock_dir, WARM_TAG, 3, 10)
        warm = clients.reply()
        log(f"    warm-up: {warm['delivered']}/{3 * got['connected']} delivered")
        sample_every = max(1, run.clients // args.sampled) if (run.rate == 0 or run.clients > 1000) else 1
        pids = server.pids
        if args.profile and kind == "saltnado":
            profiler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses", "--nonblocking",
                 "-r", "200", "-f", "raw", "-o", str(args.out / f"profile-{run.name}.txt"),
                 "--pid", str(server.proc.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        master_pids = tree(lab._procs["master"].pid)
        load0 = os.getloadavg()[0]
        cpu0, master0 = cpu_seconds(pids), cpu_seconds(master_pids)
        if variant == "resume-storm":
            clients, got, first, last_fired = storm(clients, server, lab, token, run, args, log)
            log(f"    {got['connected']} resumed websockets open in {got['seconds']:.1f} s")
        client0 = cpu_seconds([clients.proc.pid])
        clients.send(cmd="run", tag=TAG, events=run.events, sample_every=sample_every,
                     idle=args.idle, deadline=args.deadline)
        clients.reply()  # running
        if variant != "resume-storm":
            first, last_fired = push(lab.sock_dir, TAG, run.events, run.rate)
        result = clients.reply()
        cpu1, master1, client1 = cpu_seconds(pids), cpu_seconds(master_pids), cpu_seconds([clients.proc.pid])
        if bystanders is not None:  # none of the benchmark's events may have reached them
            bystanders.send(cmd="run", tag=TAG, events=1, sample_every=10**9, idle=1.0, deadline=5)
            bystanders.reply()
            filtered_out_received = bystanders.reply()["delivered"]
        rss_after = rss_bytes(server.pids)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
    finally:
        clients.close()
        if bystanders is not None:
            bystanders.close()
        server.stop()
        if profiler is not None and profiler.poll() is None:
            profiler.kill()
    n = got["connected"]
    # a storm's events were fired before its clients came back: no latency to speak of
    lat = sorted(result.pop("latencies_ns"))
    if variant == "resume-storm":
        lat = []
    bus = sorted(result.pop("bus_latencies_ns"))
    delivered = result["delivered"]
    wanted = measured * run.events
    span = max(result["last_ns"] - first, 1) / 1e9 if delivered else float("nan")
    cpu = cpu1 - cpu0
    return {
        "run": run.name if variant == "plain" else f"{run.name}+{variant}", "server": kind,
        "what": run.what if variant == "plain" else f"{run.what}; {variant}", "variant": variant,
        "clients": run.clients, "connected": n + filtered_out, "events": run.events, "rate": run.rate,
        "filtered_out_clients": filtered_out, "filtered_out_received": filtered_out_received,
        # resume-storm: reconnect of every client → the last replayed frame read
        "storm_seconds": (result["last_ns"] - first) / 1e9 if variant == "resume-storm" and delivered else None,
        "fire_seconds": (last_fired - first) / 1e9,
        "delivered": delivered, "delivered_pct": 100.0 * delivered / wanted,
        "complete_clients": result["complete_clients"], "closed_by_server": result["closed_by_server"],
        "sampled_clients": result["sampled_clients"],
        "sampled_in_order_complete": result["sampled_in_order_complete"],
        "delivered_per_s": delivered / span if delivered else 0.0,
        "latency_ms": {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
                       "max": lat[-1] / 1e6 if lat else float("nan"), "samples": len(lat)},
        "bus_latency_ms": {"p50": percentile(bus, 0.5), "p99": percentile(bus, 0.99),
                           "max": bus[-1] / 1e6 if bus else float("nan"), "samples": len(bus)},
        "loadavg_1min": [load0, os.getloadavg()[0]],
        "server_cpu_s": cpu,
        "server_cpu_us_per_msg": cpu / delivered * 1e6 if delivered else float("nan"),
        "master_cpu_s": master1 - master0,
        "client_cpu_s": client1 - client0,
        "server_processes": len(pids),
        "rss_before_mb": rss_before / 2**20,
        "rss_idle_mb": rss_idle / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "rss_per_conn_kb": (rss_idle - rss_before) / max(n + filtered_out, 1) / 1024,
    }


# -- report ----------------------------------------------------------------------------
def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "–"
    return f"{value:,.{digits}f}"


def ratio(ours: float, ref: float, higher_is_better: bool) -> str:
    if not ours or not ref or ours != ours or ref != ref:
        return "–"
    r = ours / ref if higher_is_better else ref / ours
    return f"{r:,.1f}×"


def markdown(results: list[dict[str, Any]], core: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# saltnado fan-out benchmark",
        "",
        f"{meta['when']} · {meta['machine']} · salt {meta['salt']} · command: `{meta['command']}`",
        "",
        "Delivered % counts frames of the benchmark tag that reached the clients "
        "(clients × events). Latency is fired → read by the client (sampled clients). "
        "CPU is the server process tree's utime+stime over the run, per delivered message. "
        "Ratios: how many times better saltnado is than the reference on that run.",
        "",
        "| run | server | clients | events | delivered | msgs/s | p50 ms | p99 ms | max ms | CPU µs/msg | RSS MB | KB/conn |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r["run"], r["server"]): r for r in results}
    for r in results:
        lines.append(
            f"| {r['run']} | {r['server']} | {r['connected']:,} | {r['events']:,} | "
            f"{fmt(r['delivered_pct'])} % | {fmt(r['delivered_per_s'], 0)} | "
            f"{fmt(r['latency_ms']['p50'], 2)} | {fmt(r['latency_ms']['p99'], 2)} | {fmt(r['latency_ms']['max'], 1)} | "
            f"{fmt(r['server_cpu_us_per_msg'], 2)} | {fmt(r['rss_idle_mb'])} | {fmt(r['rss_per_conn_kb'], 2)} |"
        )
        ref = by.get((r["run"], "reference"))
        if r["server"] == "saltnado" and ref is not None:
            lines.append(
                f"| {r['run']} | *ratio* | | | {ratio(r['delivered_pct'], ref['delivered_pct'], True)} | "
                f"{ratio(r['delivered_per_s'], ref['delivered_per_s'], True)} | "
                f"{ratio(r['latency_ms']['p50'], ref['latency_ms']['p50'], False)} | "
                f"{ratio(r['latency_ms']['p99'], ref['latency_ms']['p99'], False)} | "
                f"{ratio(r['latency_ms']['max'], ref['latency_ms']['max'], False)} | "
                f"{ratio(r['server_cpu_us_per_msg'], ref['server_cpu_us_per_msg'], False)} | | "
                f"{ratio(r['rss_per_conn_kb'], ref['rss_per_conn_kb'], False)} |"
            )
    lines += [
        "",
        "Details: server, master and client-process CPU s over the run; server processes; "
        "clients closed by the server; sampled clients that got every event in order; the "
        "master's own latency (fired → read by a direct event-bus subscriber, same events) — "
        "the floor under any API server's latency; the machine's 1-minute load average "
        "before → after the run (other work on the machine shows here).",
        "",
        "| run | server | fired in s | server CPU s | master CPU s | client CPU s | procs | closed | in order "
        "| bus p50/p99 ms | load 1 min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['run']} | {r['server']} | {fmt(r['fire_seconds'], 2)} | {fmt(r['server_cpu_s'], 2)} | "
            f"{fmt(r['master_cpu_s'], 2)} | {fmt(r['client_cpu_s'], 2)} | {r['server_processes']} | "
            f"{r['closed_by_server']} | {r['sampled_in_order_complete']}/{r['sampled_clients']} | "
            f"{fmt(r['bus_latency_ms']['p50'], 2)} / {fmt(r['bus_latency_ms']['p99'], 2)} | "
            f"{r['loadavg_1min'][0]:.1f} → {r['loadavg_1min'][1]:.1f} |"
        )
    extras = [r for r in results if r.get("filtered_out_clients") or r.get("storm_seconds") is not None]
    if extras:
        lines += [
            "",
            "Filtered-out clients (connected, asking `?tag=` globs the events never match: delivered % "
            "and CPU count the others) and resume storms (every client reconnects at once with "
            "`?last_event_id=` and is replayed what it missed; msgs/s over the storm):",
            "",
            "| run | filtered-out clients | events they received | storm s (reconnect → last replayed frame) |",
            "|---|---:|---:|---:|",
        ]
        for r in extras:
            storm_s = fmt(r["storm_seconds"], 2) if r.get("storm_seconds") is not None else "–"
            lines.append(f"| {r['run']} | {r['filtered_out_clients']:,} | {r['filtered_out_received']:,} | {storm_s} |")
    if core:
        lines += [
            "",
            "Core only (`benchmarks/core_fanout.py`: decode → encode once → offer to N outboxes → drain; no I/O):",
            "",
            "| subscribers | events | ns/event | ns/event/subscriber | msgs/s |",
            "|---:|---:|---:|---:|---:|",
        ]
        for c in core:
            lines.append(
                f"| {c['subscribers']:,} | {c['events']:,} | {c['ns_per_event']:,.0f} | "
                f"{c['ns_per_event_per_subscriber']:,.1f} | {c['subscribers'] * c['events'] / c['total_s']:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=",".join(r.name for r in RUNS),
                        help=f"comma-separated, of: {', '.join(r.name for r in RUNS)}")
    parser.add_argument("--servers", default="saltnado,reference")
    parser.add_argument("--sampled", type=int, default=100, help="latency-sampled clients in big runs")
    parser.add_argument("--idle", type=float, default=5.0, help="stop a run after this long without a frame")
    parser.add_argument("--deadline", type=float, default=240.0, help="stop a run after this long in any case")
    parser.add_argument("--no-core", action="store_true", help="skip the core-only microbenchmark")
    parser.add_argument("--profile", action="store_true", help="py-spy the saltnado server (raw stacks)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--variants", default="plain",
                        help="comma-separated, of: plain, ids (?ids=1), filter (a share of the clients ask "
                             "?tag= globs), ids+filter, filtered-out (a share ask globs the events never "
                             "match), resume-storm (every client reconnects at once with ?last_event_id= "
                             "after the events were fired); all but plain are saltnado only")
    parser.add_argument("--filter", default="salt/job/*/ret/*,saltnado/be?ch*",
                        help="the globs filtered clients ask for (comma-separated; the default matches the "
                             "benchmark's events, so every client still gets every event, through a regex)")
    parser.add_argument("--filtered-share", type=float, default=0.5, help="the share of filtered clients")
    parser.add_argument("--clients", type=int, default=0, help="override the runs' number of clients")
    parser.add_argument("--filter-out", default="salt/job/*/ret/*",
                        help="filtered-out: the globs the share of bystander clients asks for, which the "
                             "benchmark's events never match (delivered %% counts the other clients)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    wanted = args.runs.split(",")
    runs = [r for r in RUNS if r.name in wanted]
    if args.clients:  # the same runs with another number of clients (e.g. a plain run beside filtered-out)
        runs = [dataclasses.replace(r, name=f"{r.name}@{args.clients}", clients=args.clients,
                                    what=f"{args.clients:,} clients; " + r.what.split(", ", 1)[-1]) for r in runs]
    servers = args.servers.split(",")

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    started = time.monotonic()
    core = []
    if not args.no_core:
        for n in (1, 100, 1000):
            core.append(core_fanout.run(n, 20000))
            log(f"core: {n} subscribers: {core[-1]['ns_per_event_per_subscriber']:.1f} ns/event/subscriber")
    lab = MasterOnly(api_port=0)
    lab.start(progress=log)
    results = []
    try:
        for run, variant, kind in ((r, v, k) for r in runs for v in variants for k in servers):
            if kind == "reference" and (not run.reference or variant != "plain"):
                continue
            log(f"{run.name} ({run.what}) · {variant} · {kind}")
            r = measure(run, kind, lab, args, log, variant)
            results.append(r)
            log(f"    delivered {r['delivered_pct']:.1f} %  {r['delivered_per_s']:,.0f} msgs/s  "
                f"p99 {r['latency_ms']['p99']:.2f} ms  {r['server_cpu_us_per_msg']:.2f} µs/msg  "
                f"{r['rss_per_conn_kb']:.2f} KB/conn")
    finally:
        lab.stop()
    import salt.version

    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "salt": salt.version.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "suite_seconds": round(time.monotonic() - started, 1),
    }
    report = markdown(results, core, meta)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"fanout-{stamp}.md").write_text(report)
    (args.out / f"fanout-{stamp}.json").write_text(json.dumps({"meta": meta, "runs": results, "core": core}, indent=1))
    shutil.copy(args.out / f"fanout-{stamp}.md", args.out / "latest.md")
    shutil.copy(args.out / f"fanout-{stamp}.json", args.out / "latest.json")
    print(report)
    log(f"suite took {meta['suite_seconds']:.0f} s; report in {args.out}/fanout-{stamp}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
