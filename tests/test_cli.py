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


# -- check-config ------------------------------------------------------------------


def master_config(tmp_path: Path, block: str) -> Path:
    """A master config file holding ``block`` (indented YAML) as its ``rest_tornado:``."""
    path = tmp_path / "master"
    path.write_text(f"root_dir: {tmp_path}\nrest_tornado:\n{block}")
    return path


def check_config(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from saltnado_cli.main import main

    status = main(["check-config", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_check_config_says_what_it_would_serve_and_warns_of_typos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master_config(tmp_path, (
        "  port: 8123\n  address: 127.0.0.1\n  disable_ssl: True\n  websockets: True\n"
        "  max_body_byte: 2048\n  slow_client_policy: gap\n  backlog: 128\n"
    ))
    status, out, err = check_config(capsys, "-c", str(tmp_path))
    assert status == 0
    assert out.splitlines() == [
        f"{tmp_path / 'master'}: valid",
        "  serves http://127.0.0.1:8123",
        "  TLS: off (disable_ssl)",
        "  event streams: /all_events/<token> (websocket), /formatted_events/<token> (websocket), "
        "/events (SSE), /ws/<token> (websocket)",
        "  commands: the master of this config (one master: no masters:)",
        "  settings that differ from the defaults:",
        "    backlog: 128 (default None)",  # rest_tornado's listen backlog, honoured
        "    slow_client_policy: 'gap' (default 'close')",
    ]
    assert err.splitlines() == [
        "saltnado: warning: unknown key 'rest_tornado: max_body_byte' is ignored; did you mean 'max_body_bytes'?",
    ]


def test_check_config_with_tls_and_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tls_certs import make_tls_files

    files = make_tls_files(tmp_path)
    crt, key = files.cert, files.key
    config = master_config(tmp_path, (
        f"  port: 8443\n  ssl_crt: {crt}\n  ssl_key: {key}\n  max_body_bytes: 2048\n  keepalive_timeout: 0\n"
    ))
    status, out, err = check_config(capsys, "--master-config", str(config))
    assert (status, err) == (0, "")
    assert out.splitlines()[1:] == [
        "  serves https://*:8443",
        f"  TLS: ssl_crt {crt}, ssl_key {key}",
        "  event streams: /events (SSE)",
        "  not served (websockets: False): /all_events/<token>, /formatted_events/<token>, /ws/<token>",
        "  commands: the master of this config (one master: no masters:)",
        "  settings that differ from the defaults:",
        "    keepalive_timeout: 0.0 (default 60.0)",
        "    max_body_bytes: 2048 (default 1048576)",
    ]


def test_check_config_names_the_masters_and_reads_each_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site2 = tmp_path / "site2"
    site2.mkdir()
    (site2 / "master").write_text(f"root_dir: {site2}\n")
    block = f"  port: 8000\n  disable_ssl: True\n  masters:\n    site1: {tmp_path / 'master'}\n    site2: {site2 / 'master'}\n"
    master_config(tmp_path, block + "  default_master: site2\n")
    status, out, err = check_config(capsys, "-c", str(tmp_path))
    assert (status, err) == (0, "")
    assert f"  commands: masters site2 ({site2 / 'master'}) [default], site1 ({tmp_path / 'master'})" in out.splitlines()
    (site2 / "master").unlink()
    status, out, err = check_config(capsys, "-c", str(tmp_path))
    assert status == 2 and err == (
        f"saltnado: error: 'rest_tornado: masters' site2: master config {site2 / 'master'} does not exist\n"
    )
    master_config(tmp_path, "  port: 8000\n  disable_ssl: True\n  commands: false\n")
    status, out, err = check_config(capsys, "-c", str(tmp_path))
    assert status == 0 and "  commands: none (commands: false): this node serves events only, command endpoints " \
        "answer 503" in out.splitlines()


def test_check_config_warns_of_web_app_files_it_cannot_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ui").mkdir()
    master_config(tmp_path, (
        f"  port: 8000\n  disable_ssl: True\n  static: {tmp_path / 'ui'}\n  app: {tmp_path / 'ui' / 'index.html'}\n"
    ))
    status, out, err = check_config(capsys, "-c", str(tmp_path))
    assert status == 0 and f"    static: '{tmp_path / 'ui'}' (default None)" in out.splitlines()
    assert err == f"saltnado: warning: 'rest_tornado: app' {tmp_path / 'ui' / 'index.html'} is not a readable file: /app answers 404\n"


def test_check_config_shows_the_event_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    master_config(tmp_path, (
        "  port: 8000\n  disable_ssl: True\n  event_log:\n    servers: [nats://10.0.0.1:4222]\n    role: edge\n"
        f"    token: s3cret\n    tls_ca: {tmp_path / 'ca.pem'}\n"
    ))
    status, out, err = check_config(capsys, "-c", str(tmp_path))
    assert status == 0 and "s3cret" not in out + err
    [line] = [line for line in out.splitlines() if line.startswith("    event_log:")]
    assert "'servers': ['nats://10.0.0.1:4222']" in line and "'role': 'edge'" in line and "'token': '********'" in line
    assert err == f"saltnado: warning: event_log: tls_ca {tmp_path / 'ca.pem'} is not a readable file\n"


@pytest.mark.parametrize(
    ("block", "error"),
    [
        ("  port: 8000\n  disable_ssl: True\n  event_log:\n    servers: [nats://x:1]\n    role: hub\n",
         "'rest_tornado: event_log' role must be ingest, edge or both, got 'hub'"),
        ("  port: 8000\n  disable_ssl: True\n  slow_client_policy: drop\n",
         "'rest_tornado: slow_client_policy' must be one of close, gap, got 'drop'"),
        ("  port: 8000\n  disable_ssl: maybe\n", "'rest_tornado: disable_ssl' must be True or False, got 'maybe'"),
        ("  port: 8000\n  disable_ssl: True\n  max_body_bytes: lots\n",
         "'rest_tornado: max_body_bytes' must be an integer, got 'lots'"),
        ("  port: 8000\n  ssl_crt: /nonexistent/api.crt\n",
         "'rest_tornado: ssl_crt' /nonexistent/api.crt does not exist (or is not a file)"),
        ("  disable_ssl: True\n", "'rest_tornado: port' is required"),
    ],
)
def test_check_config_error_names_the_key_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], block: str, error: str
) -> None:
    master_config(tmp_path, block)
    status, out, err = check_config(capsys, "-c", str(tmp_path))
    assert (status, out, err) == (2, "", f"saltnado: error: {error}\n")


def test_check_config_of_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = check_config(capsys, "--master-config", str(tmp_path / "nope"))
    assert status == 2 and "does not exist" in err


@pytest.mark.parametrize("command", ["serve", "check-config", "demo"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from saltnado_cli.main import main

    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: saltnado {command} ")


def test_serve_logs_unknown_keys_at_start_up(tmp_path: Path) -> None:
    """No master needed: the server starts and waits for its event bus."""
    config = master_config(tmp_path, "  port: 0\n  disable_ssl: True\n  websocket: True\n")
    proc = subprocess.Popen([SALTNADO, "serve", "--master-config", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:  # ends if the server exits
            lines.append(line)
            if "listening on" in line:
                break
        assert any(
            "WARNING saltnado: unknown key 'rest_tornado: websocket' is ignored; did you mean 'websockets'?" in line
            for line in lines
        ), lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_turns_the_dashboard_on_and_prints_its_url_first() -> None:
    import shutil
    import tempfile

    import yaml

    from saltnado_cli.demo import DEMO_API_OPTS, instructions
    from saltnado_salt.private_salt import PrivateSalt

    first = instructions(8123, "saltdev").strip().splitlines()[0]
    assert first.startswith("Dashboard: http://127.0.0.1:8123/dashboard/ "), first
    root = tempfile.mkdtemp(prefix="sd-")  # short: Unix socket paths under it are limited
    try:
        lab = PrivateSalt(root=Path(root), api_opts=DEMO_API_OPTS)
        lab._write_configs()  # what start() writes, without starting anything
        block = yaml.safe_load(lab.master_config_path.read_text())["rest_tornado"]
        assert block["dashboard"] is True and block["websockets"] is True and block["disable_ssl"] is True
    finally:
        shutil.rmtree(root)


def test_check_config_reads_a_rest_cherrypy_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "master").write_text(
        f"root_dir: {tmp_path}\nrest_cherrypy:\n  port: 8123\n  host: 127.0.0.1\n  disable_ssl: True\n"
        "  thread_pool: 30\n  root_prefix: /api\n  expire_responses: False\n"
    )
    status, out, err = check_config(capsys, "-c", str(tmp_path))
    assert status == 0
    assert out.splitlines()[1:3] == ["  reads the 'rest_cherrypy:' block", "  serves http://127.0.0.1:8123/api"]
    # rest_cherrypy's /ws is served without websockets: True; saltnado's own websockets are not
    assert out.splitlines()[4:6] == [
        "  event streams: /api/events (SSE), /api/ws/<token> (websocket)",
        "  not served (websockets: False): /api/all_events/<token>, /api/formatted_events/<token>",
    ]
    assert "    salt_threads: 30 (default 8)" in out.splitlines()
    assert err.startswith("saltnado: warning: 'rest_cherrypy: expire_responses' is obsolete and ignored")


def test_api_block_chooses_between_two_blocks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "master").write_text(
        f"root_dir: {tmp_path}\nrest_tornado:\n  port: 8001\n  disable_ssl: True\n"
        "rest_cherrypy:\n  port: 8002\n  disable_ssl: True\n  max_request_body_size: -1\n"
    )
    status, out, err = check_config(capsys, "-c", str(tmp_path))
    assert status == 0 and "  serves http://*:8001" in out.splitlines()
    assert "both 'rest_tornado:' and 'rest_cherrypy:' blocks: serving rest_tornado" in err
    status, out, err = check_config(capsys, "-c", str(tmp_path), "--api-block", "rest_cherrypy")
    assert status == 2
    assert err == "saltnado: error: 'rest_cherrypy: max_request_body_size' must be at least 1, got -1\n"
