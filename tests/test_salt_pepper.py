"""pepper (pip salt-pepper), unchanged, as a real client of saltnado."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from conftest import RunningServer

PEPPER = Path(sys.executable).parent / "pepper"


def _documents(text: str) -> list[object]:
    """pepper prints one JSON document per top-level key of a dict return."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return docs


def pepper(server: RunningServer, tmp: Path, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "SALTAPI_URL": server.base,
        "SALTAPI_USER": "saltdev",
        "SALTAPI_PASS": "anything",
        "SALTAPI_EAUTH": "auto",
        "HOME": str(tmp),  # pepper reads ~/.pepperrc and caches a token in ~/.peppercache
    }
    result = subprocess.run(
        [str(PEPPER), "-x", str(tmp / "cache"), *args], capture_output=True, text=True, env=env, timeout=120
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (("*", "test.ping"), lambda docs: docs == [{"minion1": True}]),
        (("--client", "local_async", "*", "test.ping"), lambda docs: docs[0]["jid"].isdigit() and docs[1] == {"minions": ["minion1"]}),
        (("--client", "runner", "jobs.list_jobs"), lambda docs: isinstance(docs[0], dict) and "runner" not in docs[0]),
        (
            ("--client", "wheel", "key.list_all"),
            lambda docs: docs[0]["minions"] == ["minion1"] and "minions_pre" in docs[0],
        ),
    ],
)
async def test_pepper_commands(server: RunningServer, tmp_path: Path, args: tuple[str, ...], check: object) -> None:
    code, out, err = await trio.to_thread.run_sync(lambda: pepper(server, tmp_path, "--out", "json", *args))
    assert code == 0, err
    assert callable(check) and check(_documents(out)), out


async def test_pepper_run_uri_gets_its_token_from_post_token(server: RunningServer, tmp_path: Path) -> None:
    # -r/--run-uri: pepper asks rest_cherrypy's /token for a raw Salt token, then sends /run
    args = ("--out", "json", "--run-uri", "*", "test.ping")
    code, out, err = await trio.to_thread.run_sync(lambda: pepper(server, tmp_path, *args))
    assert code == 0, err
    assert _documents(out) == [{"minion1": True}]
