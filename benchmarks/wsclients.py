"""N websocket clients in one process: cheap enough that the server, not they, is measured.

Run as a child of the harness (``python benchmarks/wsclients.py``); it reads one JSON
command per line on stdin and answers one JSON line on stdout:

``{"cmd": "connect", "port": P, "path": "/all_events/<token>", "n": N}``
    open N websockets (raw sockets, a bounded window of concurrent handshakes), send
    ``websocket client ready`` on each → ``{"connected": N, "failed": K, "seconds": S}``
``{"cmd": "run", "tag": T, "events": E, "sample_every": K, "idle": S, "deadline": S}``
    answers ``{"running": true}`` at once, then reads every socket (epoll) until each
    client has E frames of tag T, or no such frame arrived for ``idle`` seconds, or
    ``deadline`` passed → the counts, latencies and closes (see :func:`receive`).
``{"cmd": "bus", "path": "<sock_dir>/master_event_pub.ipc"}``
    also subscribe to the master's event bus directly: each run then reports the
    master's own latency (fired → on the bus) for the same events, the floor under
    any API server's latency.
``{"cmd": "quit"}``
    close everything and exit.

Counting is cheap: a frame of tag T is recognised by the bytes ``"tag": "T"}`` (the end
of every ``{"data": {...}, "tag": "T"}`` payload, ours and the reference's), counted
with ``bytes.count`` on each received chunk; no frame is parsed. For every K-th client
("sampled") the sequence number and fire time the pusher embedded
(``{"seq": i, "t": <CLOCK_MONOTONIC ns>}``) are pulled out with one regular expression
per chunk, for latency and an in-order check.
"""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import select
import socket
import sys
import time
from typing import Any

RECV_SIZE = 256 * 1024
HANDSHAKE_WINDOW = 100  # handshakes in flight; below the reference's listen backlog (128)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def masked_text_frame(text: str) -> bytes:
    """A client (masked) websocket text frame, RFC 6455 §5.2/§5.3 (payload < 126 bytes)."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + masked


READY = masked_text_frame("websocket client ready")
# An empty masked pong. RFC 6455 §5.5.3: "A Pong frame MAY be sent unsolicited. This
# serves as a unidirectional heartbeat." saltnado pings every ws_ping_interval (20 s) and
# takes any frame as an answer, so a heartbeat every 15 s keeps these clients (which
# never parse frames, so never see the pings) from being closed 1011.
HEARTBEAT = bytes((0x8A, 0x80)) + bytes(4)
HEARTBEAT_INTERVAL = 15.0
_last_beat = time.monotonic()


def heartbeat(socks: list[socket.socket]) -> None:
    """Send every socket a heartbeat if the last one was HEARTBEAT_INTERVAL ago."""
    global _last_beat
    if time.monotonic() - _last_beat < HEARTBEAT_INTERVAL:
        return
    _last_beat = time.monotonic()
    for sock in socks:
        try:
            sock.send(HEARTBEAT)
        except OSError:
            pass


def connect(port: int, path: str, n: int, host: str = "127.0.0.1", timeout: float = 120) -> tuple[list[socket.socket], int, list[str]]:
    """Open ``n`` websockets to ``path``; returns (sockets, failures, first errors)."""
    socks: list[socket.socket] = []
    failed = 0
    errors: list[str] = []
    deadline = time.monotonic() + timeout
    ep = select.epoll()
    pending: dict[int, tuple[socket.socket, bytearray]] = {}
    started = 0
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()

    def fail(sock: socket.socket, why: str) -> None:
        nonlocal failed
        failed += 1
        if len(errors) < 5:
            errors.append(why)
        ep.unregister(sock.fileno())
        del pending[sock.fileno()]
        sock.close()

    while (started < n or pending) and time.monotonic() < deadline:
        heartbeat(socks)  # the first clients wait for the last ones
        while started < n and len(pending) < HANDSHAKE_WINDOW:
            started += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.settimeout(10)
                sock.connect((host, port))
                sock.sendall(request)
            except OSError as exc:
                failed += 1
                if len(errors) < 5:
                    errors.append(f"connect: {exc}")
                sock.close()
                continue
            sock.setblocking(False)
            pending[sock.fileno()] = (sock, bytearray())
            ep.register(sock.fileno(), select.EPOLLIN)
        for fd, _ in ep.poll(1.0):
            sock, buf = pending[fd]
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                fail(sock, f"recv: {exc}")
                continue
            if not chunk:
                fail(sock, f"closed during handshake: {bytes(buf[:200])!r}")
                continue
            buf += chunk
            if b"\r\n\r\n" not in buf:
                continue
            if not buf.startswith(b"HTTP/1.1 101"):
                fail(sock, f"refused: {bytes(buf[:200])!r}")
                continue
            ep.unregister(fd)
            del pending[fd]
            sock.setblocking(True)
            sock.sendall(READY)
            sock.setblocking(False)
            socks.append(sock)
    for sock, _ in pending.values():
        failed += 1
        sock.close()
    ep.close()
    return socks, failed, errors


def receive(
    socks: list[socket.socket], tag: str, events: int, sample_every: int, idle: float, deadline: float,
    bus: socket.socket | None = None,
) -> dict[str, Any]:
    """Read every socket until each has ``events`` frames of ``tag`` (or idle/deadline).

    Returns per-client counts (summarised), latency samples (ns, fired → read) of the
    sampled clients, whether each sampled client saw 0..events-1 in order, and how
    many sockets the server closed.
    """
    needle = f'"tag": "{tag}"}}'.encode()
    overlap = len(needle) - 1
    # The bench payload: {"data": {"seq": 12, "t": 345}, "tag": "<tag>"}
    pattern = re.compile(rb'"seq": (\d+), "t": (\d+)\}, "tag": "' + re.escape(tag.encode()) + rb'"\}')
    n = len(socks)
    counts = [0] * n
    tails = [b""] * n
    sampled = [i % sample_every == 0 for i in range(n)]
    last_seq = [-1] * n
    in_order = [True] * n
    latencies: list[int] = []
    closed = 0
    byfd = {s.fileno(): i for i, s in enumerate(socks)}
    recvs = [s.recv for s in socks]
    ep = select.epoll(sizehint=n)
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    bus_latencies: list[int] = []
    if bus is not None:
        from saltnado_core import EventBusDecoder

        decoder = EventBusDecoder()
        ep.register(bus.fileno(), select.EPOLLIN)
    want = n * events
    total = 0
    first_ns = last_ns = 0
    last_progress = time.monotonic()
    end = last_progress + deadline
    open_fds = n
    while total < want and open_fds:
        heartbeat(socks)
        ready = ep.poll(0.2)
        now_ns = time.monotonic_ns()
        got = 0
        for fd, _ in ready:
            if bus is not None and fd == bus.fileno():
                try:
                    decoder.feed(bus.recv(RECV_SIZE))
                except BlockingIOError:
                    continue
                bus_latencies += [now_ns - e.data["t"] for e in decoder.events() if e.tag == tag]
                continue
            i = byfd[fd]
            try:
                data = recvs[i](RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed += 1
                open_fds -= 1
                ep.unregister(fd)
                continue
            if sampled[i]:
                buf = tails[i] + data
                last_end = 0
                c = 0
                for m in pattern.finditer(buf):
                    c += 1
                    last_end = m.end()
                    seq = int(m.group(1))
                    latencies.append(now_ns - int(m.group(2)))
                    if seq != last_seq[i] + 1:
                        in_order[i] = False
                    last_seq[i] = seq
                tails[i] = buf[max(last_end, len(buf) - 200):]
            else:
                c = data.count(needle)
                tail = tails[i]
                if tail:
                    c += (tail + data[:overlap]).count(needle)
                tails[i] = data[-overlap:] if len(data) >= overlap else (tail + data)[-overlap:]
            if c:
                counts[i] += c
                got += c
        if got:
            total += got
            if not first_ns:
                first_ns = now_ns
            last_ns = now_ns
            last_progress = time.monotonic()
        elif total and time.monotonic() - last_progress > idle:
            break
        elif time.monotonic() > end:
            break
    ep.close()
    sampled_ok = [in_order[i] and last_seq[i] == events - 1 for i in range(n) if sampled[i]]
    return {
        "clients": n,
        "events": events,
        "delivered": total,
        "complete_clients": sum(1 for c in counts if c >= events),
        "min_count": min(counts) if counts else 0,
        "max_count": max(counts) if counts else 0,
        "closed_by_server": closed,
        "first_ns": first_ns,
        "last_ns": last_ns,
        "sampled_clients": len(sampled_ok),
        "sampled_in_order_complete": sum(sampled_ok),
        "latencies_ns": latencies,
        "bus_latencies_ns": bus_latencies,
    }


def main() -> None:
    raise_nofile()
    socks: list[socket.socket] = []
    bus: socket.socket | None = None
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "connect":
            t = time.monotonic()
            new, failed, errors = connect(cmd["port"], cmd["path"], cmd["n"])
            socks += new
            reply: dict[str, Any] = {"connected": len(new), "failed": failed, "errors": errors, "seconds": time.monotonic() - t}
        elif cmd["cmd"] == "bus":
            bus = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            bus.connect(cmd["path"])
            bus.setblocking(False)
            reply = {"bus": True}
        elif cmd["cmd"] == "run":
            out.write(json.dumps({"running": True}) + "\n")
            out.flush()
            reply = receive(socks, cmd["tag"], cmd["events"], cmd.get("sample_every", 1),
                            cmd.get("idle", 5.0), cmd.get("deadline", 300.0), bus)
        elif cmd["cmd"] == "quit":
            break
        else:
            reply = {"error": f"unknown command {cmd['cmd']!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
