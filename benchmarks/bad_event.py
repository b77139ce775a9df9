"""Events lost after one undecodable event (issue 12, item 2).

    .venv/bin/python benchmarks/bad_event.py                     # this checkout, trio then asyncio
    .venv/bin/python benchmarks/bad_event.py --tree /tmp/old     # another checkout's code

Against a real private salt-master and minion: ``saltnado serve --loop X`` runs the
code of ``--tree`` (first on its ``PYTHONPATH``); a websocket client on
``/all_events`` is ready; then one write to the master's pull socket carries an
event whose tag holds ``"\\n\\n"`` (what ``event.fire_master`` sends for such a tag)
followed by ``--good`` good events. Prints, per loop, how many good events the
client received (it stops after 5 s without a message) and the other tags it saw
(``saltnado/bus/down`` and ``bus/up`` when the bus link reconnected).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import websocket

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "tests"))
from conftest import login, private_lab  # noqa: E402
from saltnado_core import encode_pull_message  # noqa: E402

GOOD_TAG = "saltnado/test/good"


def run(tree: str, lab: Any, loop: str, good: int) -> str:
    serve = [str(Path(sys.executable).parent / "saltnado"), "serve", "-c", str(lab.config_dir), "--loop", loop]
    proc = subprocess.Popen(serve, env=dict(os.environ, PYTHONPATH=tree), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                token = login(lab.api_port)["token"]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)
        client = websocket.create_connection(f"ws://127.0.0.1:{lab.api_port}/all_events/{token}", timeout=10)
        client.send("websocket client ready")
        time.sleep(1.0)  # subscribed
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as pull:
            pull.connect(os.path.join(str(lab.sock_dir), "master_event_pull.ipc"))
            pull.sendall(encode_pull_message("saltnado/test/bad\n\ntag", {"x": 1})
                         + b"".join(encode_pull_message(GOOD_TAG, {"i": i}) for i in range(good)))
        received, other = 0, set()
        client.settimeout(5)
        try:
            while received < good:
                message = json.loads(client.recv())
                if message["tag"] == GOOD_TAG:
                    received += 1
                else:
                    other.add(message["tag"])
        except websocket.WebSocketTimeoutException:
            pass
        client.close()
        return f"{loop}: received {received}/{good}, lost {good - received}; other tags: {sorted(other)}"
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", default=str(HERE), help="the checkout whose code `saltnado serve` runs")
    parser.add_argument("--good", type=int, default=400, help="good events fired after the bad one")
    parser.add_argument("--loop", choices=["trio", "asyncio"], action="append", help="default: both")
    args = parser.parse_args()
    with private_lab() as lab:
        for loop in args.loop or ["trio", "asyncio"]:
            print(run(args.tree, lab, loop, args.good), flush=True)


if __name__ == "__main__":
    main()
