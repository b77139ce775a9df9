"""`saltnado demo --cluster` as an operator runs it: two masters, three nodes, one JetStream stream."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
import websocket

from conftest import http, login, parse_response
from saltnado_cli.cluster_demo import READY_MARK, Node, cluster_instructions, node_block, plan_nodes, ready_line
from saltnado_core.eventlog import Role

MAIN = "import sys; from saltnado_cli.main import main; sys.exit(main(sys.argv[1:]))"


def test_the_plan_is_a_node_per_master_then_an_edge_node_on_consecutive_ports() -> None:
    nodes = plan_nodes(8000)
    assert nodes == (Node("m1", "m1", Role.BOTH, 8000), Node("m2", "m2", Role.BOTH, 8001),
                     Node("edge", "m1", Role.EDGE, 8002))
    assert len({node.port for node in plan_nodes(0)}) == 3
    servers = ["nats://127.0.0.1:1", "nats://127.0.0.1:2"]
    assert node_block(nodes[1], servers)["event_log"] == {
        "servers": servers, "role": "both", "stream": "SALT_EVENTS", "replicas": 3, "master": "m2"}
    assert "master" not in node_block(nodes[2], servers)["event_log"]  # an edge-only node ingests nothing


def test_the_instructions_point_at_the_edge_node_and_a_webhook_per_master() -> None:
    text = cluster_instructions(plan_nodes(8000), ["nats://127.0.0.1:4222"], "saltdev")
    assert text.strip().splitlines()[0].startswith("Dashboard (edge node, every master's events): "
                                                   "http://127.0.0.1:8002/dashboard/ ")
    assert "ws://127.0.0.1:8002/all_events?ids=1" in text
    assert "curl -s http://127.0.0.1:8000/hook/demo -d from=m1" in text
    assert "curl -s http://127.0.0.1:8001/hook/demo -d from=m2" in text
    assert ready_line(plan_nodes(8000), Path("/tmp/x")) == (
        f"{READY_MARK}: m1=http://127.0.0.1:8000 m2=http://127.0.0.1:8001 edge=http://127.0.0.1:8002 root=/tmp/x")


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def _hook(port: int, name: str) -> int:
    body = f"from={name}".encode()
    raw = (b"POST /hook/cluster HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\n"
           + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return parse_response(http(port, raw))[0]


@pytest.mark.salt
def test_demo_cluster_serves_both_masters_events_on_the_edge_node_and_cleans_up(tmp_path: Path) -> None:
    """Costs about 20 s here (NATS ~1 s, two masters with a minion each ~9 s side by
    side, three nodes ~2 s, the stop ~5 s), and both cores for most of it."""
    import psutil

    errors = tmp_path / "demo.err"
    with open(errors, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", MAIN, "demo", "--cluster", "--port", "0", "--no-ping"],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
    try:
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + 180
        printed: list[str] = []
        while not (printed and printed[-1].startswith(READY_MARK)):
            assert proc.poll() is None, errors.read_text()
            assert time.monotonic() < deadline, errors.read_text()
            try:
                printed.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        fields = dict(part.split("=", 1) for part in printed[-1].removeprefix(f"{READY_MARK}: ").split())
        ports = {name: int(url.rsplit(":", 1)[1]) for name, url in fields.items() if name != "root"}
        root = Path(fields["root"])
        assert root.is_dir() and any(f"ws://127.0.0.1:{ports['edge']}/all_events?ids=1" in line for line in printed)

        token = login(ports["edge"])["token"]
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{ports['edge']}/all_events?ids=1&tag=salt/netapi/hook/cluster", timeout=20,
            header=[f"X-Auth-Token: {token}"])
        ws.send("websocket client ready")
        time.sleep(0.3)
        assert _hook(ports["m1"], "m1") == 200 and _hook(ports["m2"], "m2") == 200
        got = [json.loads(ws.recv()) for _ in range(2)]
        ws.close()
        assert sorted((m["master"], m["data"]["post"]["from"]) for m in got) == [("m1", "m1"), ("m2", "m2")]
        assert len({m["id"] for m in got}) == 2  # one stream: ids of one epoch, one sequence each

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0, errors.read_text()
        assert not root.exists()
        left = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                if any(str(root) in part for part in p.info["cmdline"] or ())]
        assert left == []
        assert "Traceback" not in errors.read_text()
    finally:
        if proc.poll() is None:  # a failed assertion: the demo still cleans up after itself
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
