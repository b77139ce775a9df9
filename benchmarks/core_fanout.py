"""Core-only hot path: event-bus bytes in → frames queued for N subscribers → drained.

Prints ns per event (decode + encode once) and ns per event per subscriber
(offer + drain), for a realistic job-return event. No sockets, no event loop.
Each row is the best of ``--repeat`` runs (default 5): the run least disturbed
by whatever else the machine is doing, as ``timeit`` reports.

    .venv/bin/python benchmarks/core_fanout.py [--subscribers 1,100,1000] [--events 20000] [--repeat 5]
        [--history 1000] [--ids]

``--history N`` keeps the last N events for resuming, as ``saltnado serve`` does
by default (``event_history_max_events: 1000``; 0, this script's default, keeps
none, as the core does alone); ``--ids`` subscribes the outboxes as
``/all_events?ids=1`` clients (each event in the ``{"id", "data", "tag"}`` envelope).

There is no switch for the counters /metrics and /stats read: on this path they
are one integer addition per outbox drain (``BoundedQueue.delivered``) and the
event count ``EventStreams.dispatched`` that was there before — nothing per
subscriber per event (what a subscriber dropped or missed its queue counts only
when it is full) — so a switch would cost as much as it saves. This measures the
hot path with them, as the server runs it.
"""

from __future__ import annotations

import argparse
import time

from saltnado_core import EventBusDecoder, EventStreams, Outbox, encode_pub_message
from saltnado_core.history import EventHistory

SAMPLE = {
    "cmd": "_return",
    "id": "minion1",
    "success": True,
    "return": True,
    "retcode": 0,
    "jid": "20261129084435982594",
    "fun": "test.ping",
    "fun_args": [],
    "user": "root",
    "_stamp": "2026-11-29T08:44:36.130650+00:00",
}


def run(subscribers: int, events: int, history: int = 0, ids: bool = False) -> dict[str, float]:
    wire = b"".join(
        encode_pub_message(f"salt/job/{i:020d}/ret/minion1", SAMPLE) for i in range(events)
    )
    streams = EventStreams(history=EventHistory("bench", max_events=history, max_bytes=1 << 30))
    outboxes = [Outbox(events + 1, 1 << 40) for _ in range(subscribers)]
    for outbox in outboxes:
        (streams.all_events_ids if ids else streams.all_events).subscribe(outbox)
    decoder = EventBusDecoder()

    t0 = time.perf_counter()
    for start in range(0, len(wire), 65536):  # as the binding reads: 64 KiB at a time
        decoder.feed(wire[start : start + 65536])
        for event in decoder.events():
            streams.dispatch(event)
    t1 = time.perf_counter()
    drained = sum(len(outbox.drain(1 << 40)) for outbox in outboxes)
    t2 = time.perf_counter()
    return {
        "subscribers": subscribers,
        "events": events,
        "total_s": t2 - t0,
        "ns_per_event": (t1 - t0) / events * 1e9,
        "ns_per_event_per_subscriber": (t2 - t0) / (events * max(subscribers, 1)) * 1e9,
        "delivered_bytes": drained,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", default="1,100,1000")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--history", type=int, default=0)
    parser.add_argument("--ids", action="store_true")
    parser.add_argument("--repeat", type=int, default=5, help="runs per row; the fastest is shown (default 5)")
    args = parser.parse_args()
    print(f"{'subscribers':>11} {'events':>7} {'ns/event':>10} {'ns/event/sub':>13} {'msgs/s':>12}")
    for n in (int(x) for x in args.subscribers.split(",")):
        r = min(
            (run(n, args.events, args.history, args.ids) for _ in range(max(1, args.repeat))),
            key=lambda r: r["total_s"],
        )
        rate = n * args.events / r["total_s"]
        print(
            f"{n:>11} {args.events:>7} {r['ns_per_event']:>10.0f} "
            f"{r['ns_per_event_per_subscriber']:>13.1f} {rate:>12,.0f}"
        )


if __name__ == "__main__":
    main()
