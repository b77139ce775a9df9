"""Fan-out at the limit, against the session's real salt-master: every reading client
gets every event in order; a client that does not read is handled by the configured
slow-client policy and never makes the server buffer more than its bound; several
server processes share one port.

Events are pushed straight into the master's ``master_event_pull.ipc`` (as Salt's
fire_event does), many at a time; clients are raw sockets read from one thread.
No test asserts on timing: each is only bounded in time.
"""

from __future__ import annotations

import dataclasses
import json
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from saltnado_core import Settings, encode_pull_message
from saltnado_core.bounded import GAP_TAG

from conftest import BINDINGS, LoopThread, RunningServer, http, login, parse_response

TAG = "saltnado/test/fanout"
READY = bytes([0x81, 0x80 | 22]) + b"\0\0\0\0" + b"websocket client ready"  # mask 0: payload as is
# A client that does not read still takes ~4 MB (the server's kernel send buffer grows
# to tcp_wmem's max) before the server queues anything for it: big events get past it.
PAD = "x" * 4000
SEQ = b'{"data": {"seq": '  # how our events' frames start
MISSED = b'{"data": {"missed": '  # … and gap notices


# -- a raw websocket client ------------------------------------------------------------
class Client:
    """One websocket on /all_events, parsing the server's (unmasked) frames."""

    def __init__(self, port: int, token: str, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:  # before connect, so the TCP window stays that small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(
            f"GET /all_events/{token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)  # byte by byte: nothing after the head is consumed
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.sock.sendall(READY)
        self.buf = bytearray()
        self.seqs: list[int] = []  # of TAG events, in arrival order; gap notices as ("gap", n)
        self.items: list[Any] = []
        self.close: tuple[int, str] | None = None
        self.eof = False

    def feed(self, data: bytes) -> None:
        if not data:
            self.eof = True
            return
        self.buf += data
        pos = 0
        buf = self.buf
        while len(buf) - pos >= 2:
            opcode, n, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = struct.unpack_from(">H", buf, pos + 2)[0], 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = struct.unpack_from(">Q", buf, pos + 2)[0], 10
            if len(buf) - pos < head + n:
                break
            start, pos = pos + head, pos + head + n
            if opcode == 0x8:
                payload = bytes(buf[start:pos])
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close = (code, payload[2:].decode())
            elif opcode == 0x1 and buf.startswith(SEQ, start):  # ours: parsed without copy or JSON
                seq = int(buf[start + len(SEQ) : buf.index(b",", start + len(SEQ))])
                self.seqs.append(seq)
                self.items.append(seq)
            elif opcode == 0x1 and buf.startswith(MISSED, start):
                message = json.loads(bytes(buf[start:pos]))
                assert message["tag"] == GAP_TAG
                self.items.append(("gap", message["data"]["missed"]))
        del buf[:pos]

    def read_available(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    data = self.sock.recv(1 << 18)
                except BlockingIOError:
                    return
                except OSError:
                    data = b""
                self.feed(data)
                if not data:
                    return
        finally:
            self.sock.setblocking(True)


def read_until(clients: list[Client], done: Callable[[Client], bool], timeout: float = 60) -> None:
    """Read every client (one thread, selectors) until ``done`` holds for all."""
    sel = selectors.DefaultSelector()
    for c in clients:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    deadline = time.monotonic() + timeout
    try:
        while not all(done(c) or c.eof for c in clients):
            assert time.monotonic() < deadline, (
                f"counts: {sorted(len(c.seqs) for c in clients)[:5]}…, "
                f"gaps: {sum(isinstance(i, tuple) for c in clients for i in c.items)}"
            )
            for key, _ in sel.select(0.2):
                c = key.data
                try:
                    data = c.sock.recv(1 << 18)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                c.feed(data)
                if not data:
                    sel.unregister(c.sock)
    finally:
        sel.close()
        for c in clients:
            c.sock.setblocking(True)


def fire(sock_dir: Path, first: int, count: int, pad: str = PAD, rate: float = 0) -> None:
    """Push ``count`` events (seq first..first+count-1) into the master's event bus,
    as fast as it takes them, or ``rate`` events/s."""
    start = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as pull:
        pull.connect(str(sock_dir / "master_event_pull.ipc"))
        for i, seq in enumerate(range(first, first + count)):
            if rate and (delay := start + i / rate - time.monotonic()) > 0:
                time.sleep(delay)
            pull.sendall(encode_pull_message(TAG, {"seq": seq, "pad": pad}))


def in_order(expected: int) -> Callable[[Client], bool]:
    return lambda c: len(c.seqs) >= expected


def accounted(client: Client) -> int:
    """Events delivered or announced missing, checking that they follow each other:
    the seqs in order, and every hole covered by the gap notices just before it.

    A notice counts every message dropped from the stream, and ``/all_events`` also
    carries the master's own events (auth, jobs of other tests' minion…): a hole in
    our seqs may be smaller than the notice, never bigger, and never without one.
    Returns the next seq expected, plus what notices since the last seq announced.
    """
    expected, announced = 0, 0
    for item in client.items:
        if isinstance(item, tuple):
            assert item[1] > 0
            announced += item[1]
        else:
            assert expected <= item <= expected + announced, (item, expected, announced)
            expected, announced = item + 1, 0
    return expected + announced


# -- a server of each binding with its own limits and policy ----------------------------
@pytest.fixture(params=BINDINGS)
async def make_server(
    request: pytest.FixtureRequest, salt_lab: Any, master_opts: dict[str, Any], nursery: trio.Nursery
) -> AsyncIterator[Callable[..., Any]]:
    """``await make_server(**rest_tornado_keys)``: a server of each binding whose
    master options' rest_tornado block has those keys too."""
    loops: list[tuple[LoopThread, Any]] = []

    async def make(**block: Any) -> RunningServer:
        opts = {**master_opts, "rest_tornado": {**master_opts["rest_tornado"], **block}}
        settings = dataclasses.replace(Settings.from_opts(opts), port=0, address="127.0.0.1")
        if request.param == "trio":
            from saltnado_trio.server import Server

            srv = Server(settings, opts)
            listeners = await nursery.start(srv.serve)
            running = RunningServer(srv, listeners[0].socket.getsockname()[1], salt_lab)
        else:
            from saltnado_asyncio import Server as AsyncioServer

            loop = LoopThread()
            asrv = AsyncioServer(settings, opts)
            loops.append((loop, asrv))
            await trio.to_thread.run_sync(loop.run, asrv.start())
            running = RunningServer(asrv, asrv.sockets[0].getsockname()[1], salt_lab, "asyncio", loop)
        await running.wait_feed_connected(10)
        return running

    yield make
    for loop, asrv in loops:
        await trio.to_thread.run_sync(loop.run, asrv.shutdown(0))
        loop.close()
    nursery.cancel_scope.cancel()


def outboxes(running: RunningServer) -> list[Any]:
    return [conn.outbox for conn in list(running.server.service.connections)]


async def watch_outboxes(running: RunningServer, limit_bytes: int, limit_messages: int, seen: dict[str, int]) -> None:
    """Until cancelled: record the most any outbox held, and when one overflowed."""
    while True:
        for box in outboxes(running):
            seen["bytes"] = max(seen["bytes"], box.queued_bytes)
            seen["messages"] = max(seen["messages"], len(box))
            if box.overflowed or box.missed_total:
                seen["cut"] = 1
            assert box.queued_bytes <= limit_bytes and len(box) <= limit_messages
        await trio.sleep(0.005)


async def open_clients(running: RunningServer, token: str, n: int, rcvbuf: int | None = None) -> list[Client]:
    clients = [await trio.to_thread.run_sync(Client, running.port, token, rcvbuf) for _ in range(n)]
    with trio.fail_after(10):  # every client subscribed before the first event
        while len(running.server.streams.all_events) < n:
            await trio.sleep(0.01)
    return clients


# -- the tests -------------------------------------------------------------------------------
# One read from the event bus (256 KiB) is queued to every outbox before the writes
# that follow it: the bound must leave room for that much even for a client that keeps up.
LIMIT_BYTES = 1024 * 1024
EVENTS = 2000


@pytest.mark.parametrize("policy", ["close", "gap"])
async def test_a_client_that_never_reads_among_50_that_do(make_server: Any, policy: str) -> None:
    running = await make_server(
        outbox_max_bytes=LIMIT_BYTES, slow_client_policy=policy,
        slow_client_close_code=1008, slow_client_close_reason="test: too slow",
    )
    token = (await trio.to_thread.run_sync(login, running.port))["token"]
    readers = await open_clients(running, token, 50)
    [slow] = await open_clients(running, token, 1, rcvbuf=4096)  # and never reads, for now
    await trio.sleep(0)
    seen = {"bytes": 0, "messages": 0, "cut": 0}
    sock_dir = running.lab.sock_dir

    async def slow_client() -> None:
        with trio.fail_after(60):
            while not seen["cut"]:
                await trio.sleep(0.005)
        # Cut off (or in a gap): now it reads what was sent before, then the policy.
        if policy == "close":
            await trio.to_thread.run_sync(read_until, [slow], lambda c: c.close is not None, 30)
        else:  # gap notices, and it goes on: it reads from now on
            await trio.to_thread.run_sync(read_until, [slow], lambda c: accounted(c) >= EVENTS, 60)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_outboxes, running, LIMIT_BYTES, 10_000, seen)
        # Paced, so that the 50 readers (a thread of this process) keep up on a loaded machine.
        nursery.start_soon(trio.to_thread.run_sync, fire, sock_dir, 0, EVENTS, PAD, 1000)
        async with trio.open_nursery() as clients:
            clients.start_soon(slow_client)
            clients.start_soon(trio.to_thread.run_sync, read_until, readers, in_order(EVENTS), 120)
        if policy == "gap":  # still subscribed: later events arrive after the notice
            await trio.to_thread.run_sync(fire, sock_dir, EVENTS, 10, "")
            await trio.to_thread.run_sync(read_until, [slow], lambda c: bool(c.seqs) and c.seqs[-1] >= EVENTS + 9, 30)
        nursery.cancel_scope.cancel()

    for reader in readers:  # every event, in order, none closed
        assert reader.seqs[:EVENTS] == list(range(EVENTS)), (len(reader.seqs), reader.close, reader.eof)
        assert reader.close is None and not reader.eof
    assert 0 < seen["bytes"] <= LIMIT_BYTES
    if policy == "close":
        assert slow.close == (1008, "test: too slow")
        assert slow.seqs == list(range(len(slow.seqs)))  # a prefix, then the close
        assert len(slow.seqs) < EVENTS
        assert slow.items == slow.seqs  # no gap notice under the close policy
    else:
        assert slow.close is None and not slow.eof  # still connected
        assert accounted(slow) == EVENTS + 10  # every event delivered in order or counted
        assert any(isinstance(i, tuple) for i in slow.items)
        assert slow.seqs[-1] == EVENTS + 9  # and it caught up
    for c in [*readers, slow]:
        c.sock.close()


async def test_burst_reaches_every_reading_client_in_order(make_server: Any) -> None:
    running = await make_server()
    token = (await trio.to_thread.run_sync(login, running.port))["token"]
    clients = await open_clients(running, token, 20)
    events = 5000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, fire, running.lab.sock_dir, 0, events, "")
        await trio.to_thread.run_sync(read_until, clients, in_order(events), 120)
    for c in clients:
        assert c.seqs[:events] == list(range(events))
        c.sock.close()
    assert not any(box.overflowed for box in outboxes(running))


# -- num_processes ------------------------------------------------------------------------
SALTNADO = str(Path(sys.executable).parent / "saltnado")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_num_processes_2_both_serve_and_stream(salt_lab: Any, tmp_path: Path) -> None:
    import psutil

    port = _free_port()
    master = yaml.safe_load(Path(salt_lab.master_config_path).read_text())
    master["rest_tornado"] = {**master["rest_tornado"], "port": port, "num_processes": 2}
    (tmp_path / "master").write_text(yaml.safe_dump(master))
    proc = subprocess.Popen([SALTNADO, "serve", "-c", str(tmp_path)], stderr=subprocess.PIPE, text=True)
    clients: list[Client] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, body = parse_response(http(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert status == 200 and json.loads(body)["return"] == "Welcome"
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        token = login(port)["token"]
        clients = [Client(port, token) for _ in range(24)]
        # each worker holds some of them (the kernel hashes connections over the two
        # SO_REUSEPORT sockets: all 24 on one worker has odds of 2**-23)
        held = [
            sum(1 for c in w.net_connections("tcp") if c.status == "ESTABLISHED" and c.laddr.port == port)
            for w in workers
        ]
        assert all(held) and sum(held) == 24, held
        time.sleep(1.0)  # every client's ready message handled by its worker
        fire(salt_lab.sock_dir, 0, 200, "")
        read_until(clients, in_order(200), 60)
        for c in clients:
            assert c.seqs[:200] == list(range(200))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        for c in clients:
            c.sock.close()
        if proc.poll() is None:
            proc.kill()  # its workers get SIGTERM (PR_SET_PDEATHSIG)
            proc.wait()
