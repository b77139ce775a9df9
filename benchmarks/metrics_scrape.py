"""What one ``GET /metrics`` and one ``GET /stats`` cost with N open streams.

The core's figures are read at scrape time (one pass over the open connections,
:mod:`saltnado_core.counts`), so a scrape costs more with more clients; this
prints how much, for websockets on ``/all_events`` that each took some events.
No sockets, no event loop: the connections are the core's, driven with bytes.

    .venv/bin/python benchmarks/metrics_scrape.py [--connections 100,1000,10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

from wsproto.frame_protocol import FrameProtocol

from saltnado_core import App, EventStreams, Limits, ServerConnection, Settings
from saltnado_core.buslink import EventBusLink
from saltnado_core.eventbus import encode_pub_message
from saltnado_core.salt_calls import GetAuthList, GetToken
from saltnado_core.subscriptions import Subscriptions
from saltnado_core.testing import Driver
from saltnado_runtime.metrics import ServiceMetrics

NOW = 1_700_000_000.0
TOKEN = "0123456789abcdef" * 4
RECORD = {"token": TOKEN, "start": NOW, "expire": NOW + 3600, "name": "u", "eauth": "pam"}
UPGRADE = (
    f"GET /all_events/{TOKEN} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()
READY = bytes(FrameProtocol(client=True, extensions=[]).send_data("websocket client ready", True))


def run(connections: int, repeat: int) -> tuple[float, float, int]:
    settings = Settings(websockets=True, disable_ssl=True)
    streams, subscriptions = EventStreams(), Subscriptions()
    link = EventBusLink("/run/salt/master", streams, subscriptions)
    conns: dict[ServerConnection, None] = {}
    metrics = ServiceMetrics(streams, link, subscriptions, conns, NOW)
    app = App(settings)
    for _ in range(connections):
        conn = ServerConnection(Limits(), streams)
        Driver(conn, app, {GetToken: RECORD, GetAuthList: [".*"]}, now=NOW).feed(UPGRADE, READY)
        conns[conn] = None
    link.receive_data(b"".join(encode_pub_message(f"salt/job/{i}/new", {"i": i}) for i in range(10)), NOW)
    for conn in conns:
        conn.data_to_send()

    def best(work: object) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            work()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return min(times)

    size = len(metrics.exposition("text/plain").body)
    return best(lambda: metrics.exposition("text/plain")), best(lambda: metrics.stats(NOW)), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", default="100,1000,10000")
    parser.add_argument("--repeat", type=int, default=5, help="scrapes per row; the fastest is shown (default 5)")
    args = parser.parse_args()
    print(f"{'streams':>8} {'/metrics ms':>12} {'/stats ms':>10} {'exposition bytes':>17}")
    for n in (int(x) for x in args.connections.split(",")):
        metrics_s, stats_s, size = run(n, max(1, args.repeat))
        print(f"{n:>8} {metrics_s * 1000:>12.2f} {stats_s * 1000:>10.2f} {size:>17,}")


if __name__ == "__main__":
    main()
