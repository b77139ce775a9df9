"""``saltnado serve`` stopped by SIGTERM or SIGINT, on both loops, with the session's
real master: it stops accepting, closes websockets with 1001 "server shutting
down", lets a request whose Salt call is running finish and answers it, answers
503 to one that outlasts ``shutdown_timeout``, and exits 0."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import websocket
import yaml

from conftest import http, login, parse_response

SALTNADO = str(Path(sys.executable).parent / "saltnado")
GRACE = 6  # shutdown_timeout: the short Salt call ends well within it, the long one does not


def serve(config: Path, loop: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SALTNADO, "serve", "--master-config", str(config), "--loop", loop], stderr=subprocess.PIPE, text=True
    )


def wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            http(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            return
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


def run_sleep(port: int, seconds: int, answers: dict[int, tuple[int, dict[str, str], Any]]) -> None:
    """POST /run with test.sleep (credentials in the chunk); keep what comes back."""
    chunk = {
        "client": "local", "tgt": "minion1", "fun": "test.sleep", "arg": [seconds], "timeout": 60,
        "username": "saltdev", "password": "x", "eauth": "auto",
    }
    body = json.dumps([chunk]).encode()
    raw = (
        b"POST /run HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    with socket.create_connection(("127.0.0.1", port), timeout=90) as sock:
        sock.sendall(raw)  # keep-alive: the server must close it after answering
        received = b""
        while chunk_ := sock.recv(65536):
            received += chunk_
    status, headers, payload = parse_response(received)
    answers[seconds] = status, headers, json.loads(payload)


@pytest.mark.parametrize(("loop", "signum"), [
    pytest.param(loop, signum, id=f"{loop}-{signum.name}")
    for signum in (signal.SIGTERM, signal.SIGINT) for loop in ("trio", "asyncio")
])
def test_signal_drains_requests_closes_websockets_and_exits_0(
    salt_lab: Any, tmp_path: Path, loop: str, signum: signal.Signals
) -> None:
    master = yaml.safe_load(salt_lab.master_config_path.read_text())
    master["rest_tornado"]["shutdown_timeout"] = GRACE
    config = tmp_path / "master"
    config.write_text(yaml.safe_dump(master))
    port = salt_lab.api_port
    proc = serve(config, loop)
    try:
        wait_listening(port, proc)
        token = login(port)["token"]
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/all_events/{token}", timeout=60)
        ws.send("websocket client ready")
        answers: dict[int, tuple[int, dict[str, str], Any]] = {}
        requests = [threading.Thread(target=run_sleep, args=(port, n, answers)) for n in (2, 20)]
        for thread in requests:
            thread.start()
        running: set[int] = set()
        while running != {2, 20}:  # both jobs published: their Salt calls are running
            message = json.loads(ws.recv())
            if message["tag"].endswith("/new") and message["data"].get("fun") == "test.sleep":
                running.add(int(message["data"]["arg"][0]))

        proc.send_signal(signum)
        while True:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
        assert frame.data == (1001).to_bytes(2, "big") + b"server shutting down"
        with pytest.raises(ConnectionRefusedError):  # no longer accepting
            socket.create_connection(("127.0.0.1", port), timeout=10)

        for thread in requests:
            thread.join(60)
        status, headers, body = answers[2]  # finished during the grace period: its real answer
        assert (status, body) == (200, {"return": [{"minion1": True}]}) and headers["connection"] == "close"
        status, headers, body = answers[20]  # outlasted shutdown_timeout
        assert status == 503 and headers["connection"] == "close"
        assert body == {
            "status": "503 Service Unavailable",
            "return": "the server is shutting down; the request was not answered in time",
        }
        assert proc.wait(timeout=GRACE + 30) == 0  # a bound, not a speed check: see README
        stderr = proc.stderr.read() if proc.stderr else ""
        assert f"received {signum.name}; shutting down" in stderr
        assert "Traceback" not in stderr and token not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
