"""Server RSS under a websocket ping flood from a client that reads nothing.

    .venv/bin/python benchmarks/ping_flood.py                       # trio, 20 s
    .venv/bin/python benchmarks/ping_flood.py --loop asyncio --seconds 30

Starts a private salt-master (no minion) and ``saltnado serve`` on it, opens one
``/all_events`` websocket with a small receive buffer, says ``websocket client
ready``, then sends 125-byte pings as fast as the server takes them for
``--seconds`` s without reading a byte. Reports the server's RSS before and
after, the bytes the client got to send, and how the flood ended (still sending,
the server stopped reading, or the connection was closed). ``--rate N`` sends
at most N pings a second (0: as fast as possible); ``--max-pings N`` sets the
server's ``max_ws_pings_per_second`` (e.g. very high, to see the read pause alone).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fanout import MasterOnly, ServerProcess, rss_bytes  # noqa: E402
from memory_per_ws import upgrade  # noqa: E402

PING = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125  # a masked ping, the largest allowed


def flood(port: int, token: str, seconds: float, rate: float) -> dict[str, object]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    upgrade(sock, token)
    sock.settimeout(1.0)
    batch = PING * 64
    sent, stalled, outcome = 0, 0.0, "still sending"
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        try:
            sent += sock.send(batch if rate == 0 else PING)
        except TimeoutError:
            stalled += 1.0  # the server stopped reading for a second
            continue
        except OSError as exc:
            outcome = f"connection ended: {type(exc).__name__}"
            break
        if rate:
            time.sleep(max(0.0, start + (sent / len(PING)) / rate - time.monotonic()))
    else:
        if stalled:
            outcome = f"the server stopped reading ({stalled:g} s of {seconds:g} s stalled)"
    sock.close()
    return {"bytes_sent": sent, "outcome": outcome}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop", default="trio", choices=["trio", "asyncio"])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=0, help="pings a second (0: as fast as possible)")
    parser.add_argument("--max-pings", type=int, help="the server's max_ws_pings_per_second (default: its own)")
    args = parser.parse_args()
    lab = MasterOnly()
    lab.start()
    server = None
    try:
        extra = {} if args.max_pings is None else {"max_ws_pings_per_second": args.max_pings}
        server = ServerProcess("saltnado", lab, extra, lambda _: None, loop=args.loop)
        server.wait_ready()
        token = server.login(lab.username)
        time.sleep(1)
        before = rss_bytes(server.pids)
        result = flood(server.port, token, args.seconds, args.rate)
        after = rss_bytes(server.pids)
        server.login(lab.username)  # the server still answers others
        print(json.dumps({
            "loop": args.loop, "seconds": args.seconds,
            "rss_before_mb": round(before / 2**20, 1), "rss_after_mb": round(after / 2**20, 1),
            "sent_mb": round(int(result["bytes_sent"]) / 2**20, 1),  # type: ignore[call-overload]
            "outcome": result["outcome"],
        }))
    finally:
        if server is not None:
            server.stop()
        lab.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
