"""examples/asyncio_host.py, run as the plain asyncio program it is: saltnado
inside the host's loop, host code reading events in-process while websocket
clients are served, by saltnado's listener or by the host's own."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import websocket

from conftest import login

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "asyncio_host.py"


class Host:
    """The example program in a subprocess, its stdout collected line by line."""

    def __init__(self, salt_lab: Any, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--master-config", str(salt_lab.master_config_path), "--port", "0", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, limit: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in {limit}s; got {self.lines}")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, self.proc.stderr.read() if self.proc.stderr else ""


@pytest.mark.parametrize("flags", [(), ("--own-listener",)], ids=["saltnado-listener", "own-listener"])
def test_host_reads_events_in_process_while_serving_websockets(salt_lab: Any, flags: tuple[str, ...]) -> None:
    host = Host(salt_lab, *flags)
    try:
        port = int(host.wait_line(r"listening on http://127\.0\.0\.1:(\d+)").group(1))
        token = login(port)["token"]
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/all_events/{token}", timeout=30)
        ws.send("websocket client ready")
        time.sleep(0.3)
        result = salt_lab.salt_cmd("minion1", "test.ping", "--async")
        jid = result.stdout.strip().split()[-1]
        assert jid.isdigit(), result.stdout + result.stderr
        # The host's own code saw the return, in-process…
        host.wait_line(rf"^job {jid} test\.ping minion1 -> True$")
        # …and the websocket client got it too, from the same loop.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = json.loads(ws.recv())
            if message["tag"] == f"salt/job/{jid}/ret/minion1":
                break
        assert message["data"]["return"] is True
        # SIGTERM: the host shuts saltnado down; the websocket is closed with 1001.
        host.proc.send_signal(signal.SIGTERM)
        while True:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
        assert frame.data[:2] == (1001).to_bytes(2, "big")
        code, stderr = host.stop()
        assert code == 0, stderr
        assert "Traceback" not in stderr and token not in stderr
    finally:
        host.stop()
