"""End to end through one websocket client: real salt-master event bus → saltnado → client.

Starts a private salt-master (+ minion), `saltnado serve` in its own process, one raw
websocket client on /all_events, then pushes N events into the master's event bus
(``master_event_pull.ipc``, as Salt's fire_event does) as fast as the master accepts
them. Reports delivered %, delivered events/s and latency (fired → received).

    .venv/bin/python benchmarks/e2e_one_client.py [--events 20000] [--loop trio|asyncio]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

from saltnado_core import encode_pull_message
from saltnado_salt.private_salt import PrivateSalt
from wsproto.frame_protocol import FrameProtocol

TAG = "saltnado/bench/one"


def login(port: int, user: str) -> str:
    data = f"username={user}&password=x&eauth=auto".encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", data=data, timeout=10) as r:
        return json.load(r)["return"][0]["token"]


def open_ws(port: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /all_events/{token} HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    assert buf.startswith(b"HTTP/1.1 101"), buf
    sock.sendall(bytes(FrameProtocol(True, []).send_data("websocket client ready", True)))
    return sock


def read_frames(sock: socket.socket, expected: int, out: dict) -> None:
    """Parse unmasked server text frames; record receive time of bench events."""
    buf = bytearray()
    latencies = []
    received = 0
    first = last = None
    while received < expected:
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
        now = time.time()
        pos = 0
        while len(buf) - pos >= 2:
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = struct.unpack_from(">H", buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = struct.unpack_from(">Q", buf, pos + 2)[0]
                head = 10
            if len(buf) - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            if TAG.encode() in payload:
                message = json.loads(payload)
                if message["tag"] == TAG:
                    received += 1
                    latencies.append(now - message["data"]["t"])
                    first = first or now
                    last = now
        del buf[:pos]
    out.update(received=received, latencies=latencies, first=first, last=last)


def push(sock_dir: str, events: int) -> tuple[float, float]:
    pull = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pull.connect(os.path.join(sock_dir, "master_event_pull.ipc"))
    start = time.time()
    for i in range(events):
        pull.sendall(encode_pull_message(TAG, {"i": i, "t": time.time()}))
    end = time.time()
    pull.close()
    return start, end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--loop", default="trio", help="saltnado serve --loop (trio, asyncio, …)")
    args = parser.parse_args()
    lab = PrivateSalt(api_port=0)
    lab.start(progress=lambda s: print("  " + s, file=sys.stderr))
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "saltnado"), "serve", "--master-config", str(lab.master_config_path), "--loop", args.loop],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                token = login(lab.api_port, lab.username)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        sock = open_ws(lab.api_port, token)
        time.sleep(0.5)
        result: dict = {}
        reader = threading.Thread(target=read_frames, args=(sock, args.events, result))
        reader.start()
        start, end = push(str(lab.sock_dir), args.events)
        reader.join(timeout=120)
        lat = sorted(result["latencies"]) or [float("nan")]
        duration = (result["last"] or end) - start
        print(f"events fired:        {args.events} in {end - start:.2f} s ({args.events / (end - start):,.0f}/s)")
        print(f"delivered:           {result['received']} ({100 * result['received'] / args.events:.1f} %)")
        print(f"delivered events/s:  {result['received'] / duration:,.0f}")
        print(
            f"latency ms:          p50 {1000 * lat[len(lat) // 2]:.1f}  "
            f"p99 {1000 * lat[int(len(lat) * 0.99)]:.1f}  max {1000 * lat[-1]:.1f}"
        )
    finally:
        server.terminate()
        server.wait(10)
        lab.stop()


if __name__ == "__main__":
    main()
