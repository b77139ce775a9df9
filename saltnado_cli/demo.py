"""``saltnado demo``: a real private Salt master + minion, and the server in front.

Everything lives in a temporary directory on loopback ports; Ctrl-C stops every
process it started and removes the directory.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from typing import Any

import trio

from saltnado_core import Settings
from saltnado_salt import load_master_opts
from saltnado_salt.private_salt import PrivateSalt

from .serve import run_trio

log = logging.getLogger("saltnado.demo")


def _say(message: str) -> None:
    print(f"saltnado demo: {message}", file=sys.stderr, flush=True)


# The demo's rest_tornado: block turns on the built-in live page (served at /dashboard/).
DEMO_API_OPTS = {"dashboard": True}
DASHBOARD_PATH = "/dashboard/"


def instructions(port: int, username: str) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"""
Dashboard: {base}{DASHBOARD_PATH}   (user '{username}', any password, eauth 'auto')

saltnado is serving a private Salt master with minion 'minion1' at {base}

1. Log in (eauth 'auto' accepts any password for user '{username}'):

   curl -s {base}/login -H 'Accept: application/json' \\
        -d username={username} -d password=demo -d eauth=auto

   and copy the "token" value from the answer:
   TOKEN=$(curl -s {base}/login -d username={username} -d password=demo -d eauth=auto \\
           | python3 -c 'import json,sys; print(json.load(sys.stdin)["return"][0]["token"])')

2. Watch every event of the master's event bus over a websocket:

   ws://127.0.0.1:{port}/all_events/$TOKEN    (send "websocket client ready" first)

   Python: .venv/bin/python -c "import websocket,sys; ws=websocket.create_connection('ws://127.0.0.1:{port}/all_events/'+sys.argv[1]); ws.send('websocket client ready'); [print(ws.recv()) for _ in iter(int, 1)]" $TOKEN
   JS (from a browser page of any origin: the demo sets cors_origin: '*'):
           ws = new WebSocket('ws://127.0.0.1:{port}/all_events/' + TOKEN); ws.onopen = () => ws.send('websocket client ready'); ws.onmessage = e => console.log(JSON.parse(e.data));

A test.ping is fired every few seconds so the stream is never empty (--no-ping turns it off).
Press Ctrl-C to stop the server, the master and the minion, and remove the temporary directory.
"""


def _ping_forever(lab: PrivateSalt, interval: float, stop: threading.Event) -> None:
    """Publish test.ping to every minion every ``interval`` s (Salt's LocalClient)."""
    import salt.client

    client = salt.client.LocalClient(mopts=lab.master_opts())
    try:
        while not stop.wait(interval):
            try:
                client.cmd_async("*", "test.ping")
            except Exception as exc:  # the master may be restarting; keep trying
                log.warning("test.ping not sent: %s", exc)
    finally:
        client.destroy()


def run_demo(port: int = 8000, ping_interval: float | None = 5.0) -> int:
    lab = PrivateSalt(api_port=port, api_opts=DEMO_API_OPTS)
    stop = threading.Event()
    try:
        _say("starting a private Salt master and minion (this takes tens of seconds)…")
        started = time.monotonic()
        lab.start(progress=_say)
        _say(f"Salt is up after {time.monotonic() - started:.1f} s (config in {lab.config_dir})")
        opts = load_master_opts(str(lab.master_config_path))
        # Browser pages of any origin may connect (the JS line below): a private loopback demo.
        settings = dataclasses.replace(Settings.from_opts(opts), cors_origin="*")

        async def on_ready(server: Any, nursery: Any) -> None:
            print(instructions(lab.api_port, lab.username), flush=True)

        if ping_interval:
            threading.Thread(
                target=_ping_forever, args=(lab, ping_interval, stop), daemon=True, name="demo-ping"
            ).start()
        trio.run(run_trio, settings, opts, on_ready)
        return 0
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        _say(f"failed: {exc}")
        return 1
    finally:
        stop.set()
        _say("stopping Salt and removing the temporary directory…")
        lab.stop()
