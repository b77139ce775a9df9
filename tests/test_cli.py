"""The `saltnado` command as an operator runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import websocket

from conftest import http, login, parse_response

SALTNADO = str(Path(sys.executable).parent / "saltnado")


def test_refuses_tls_without_certificate(tmp_path: Path) -> None:
    (tmp_path / "master").write_text(
        f"root_dir: {tmp_path}\nrest_tornado:\n  port: 0\n  websockets: True\n"
    )
    result = subprocess.run(
        [SALTNADO, "serve", "-c", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "ssl_crt" in result.stderr and "disable_ssl" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [SALTNADO, "serve", "--master-config", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("loop", ["trio", "asyncio", "uvloop"])
def test_serve_config_dir_then_sigterm_closes_websockets(salt_lab: Any, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="the optional extra saltnado[uvloop]")
    proc = subprocess.Popen(
        [SALTNADO, "serve", "-c", str(salt_lab.config_dir), "--loop", loop],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, body = parse_response(
                    http(salt_lab.api_port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                )
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert status == 200 and json.loads(body)["return"] == "Welcome"
        token = login(salt_lab.api_port)["token"]
        ws = websocket.create_connection(f"ws://127.0.0.1:{salt_lab.api_port}/all_events/{token}", timeout=20)
        ws.send("websocket client ready")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        while True:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
        assert frame.data[:2] == (1001).to_bytes(2, "big")
        assert proc.wait(timeout=15) == 0
        stderr = proc.stderr.read()
        assert "shutting down" in stderr
        assert f"listening on http://127.0.0.1:{salt_lab.api_port}" in stderr
        assert token not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_open_files_limit_is_raised_and_checked_against_max_connections(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import resource

    from saltnado_cli.processes import RESERVED_FILES, raise_open_files_limit

    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 20_000))
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: set_to.append(limits))
    raise_open_files_limit(20_000 - RESERVED_FILES)
    assert set_to == [(20_000, 20_000)]
    assert "open-files limit" not in caplog.text
    raise_open_files_limit(20_000)
    assert "the open-files limit (20000) is below max_connections (20000)" in caplog.text
