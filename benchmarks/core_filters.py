"""Core-only cost of tag filters: one event published to N subscribers of /all_events.

Events are a realistic mix (per job: new, 2 returns, plus auth and key events: a
quarter of them are returns). Prints, per scenario, ns per published event and
messages queued per event:

* ``unfiltered``   — every subscriber takes everything (the reference's behaviour);
* ``same-glob``    — every subscriber asks ``?tag=salt/job/*/ret/*``: one filter
                     object, one group, one regex match per event;
* ``same-exact``   — every subscriber asks ``?tag=salt/key``: a set lookup per event;
* ``distinct``     — each subscriber asks for its own minion's returns
                     (``salt/job/*/ret/minion<i>``): N groups, N matches per event,
                     the worst case (what checking each subscriber would always cost).

    .venv/bin/python benchmarks/core_filters.py [--subscribers 1000,10000] [--events 2000]
"""

from __future__ import annotations

import argparse
import time

from saltnado_core import EventStreams, Outbox, SaltEvent, glob_filter
from saltnado_core.messages import event_json


def events(count: int) -> list[SaltEvent]:
    out: list[SaltEvent] = []
    n = 0
    while len(out) < count:
        jid = f"{20260101000000000000 + n}"
        out += [
            SaltEvent(f"salt/job/{jid}/new", {"jid": jid, "fun": "test.ping"}),
            SaltEvent(f"salt/job/{jid}/ret/minion{n % 50}", {"jid": jid, "return": True, "retcode": 0}),
            SaltEvent("salt/auth", {"id": f"minion{n % 50}", "act": "accept"}),
            SaltEvent("salt/key", {"id": f"minion{n % 50}", "act": "accept"}),
        ]
        n += 1
    return out[:count]


def run(scenario: str, subscribers: int, count: int) -> tuple[float, float]:
    streams = EventStreams()
    outboxes = [Outbox(count + 1, 1 << 40) for _ in range(subscribers)]
    for i, outbox in enumerate(outboxes):
        if scenario == "unfiltered":
            wanted = None
        elif scenario == "same-glob":
            wanted = glob_filter(["salt/job/*/ret/*"])
        elif scenario == "same-exact":
            wanted = glob_filter(["salt/key"])
        else:
            wanted = glob_filter([f"salt/job/*/ret/minion{i}"])
        streams.all_events.subscribe(outbox, wanted)
    # pre-encoded, as EventStreams.dispatch encodes once: this measures the fan-out alone
    frames = [(streams.all_events.kind.frame(e.tag, event_json(e)), e.tag) for e in events(count)]
    publish = streams.all_events.publish
    t0 = time.perf_counter()
    for frame, tag in frames:
        publish(frame, tag)
    elapsed = time.perf_counter() - t0
    queued = sum(len(outbox) for outbox in outboxes)
    return elapsed / count * 1e9, queued / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", default="1000,10000")
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'scenario':>11} {'subscribers':>11} {'ns/event':>12} {'queued/event':>13} {'ns/queued msg':>14}")
    for subscribers in (int(s) for s in args.subscribers.split(",")):
        for scenario in ("unfiltered", "same-glob", "same-exact", "distinct"):
            ns, queued = run(scenario, subscribers, args.events)
            per_message = f"{ns / queued:14.0f}" if queued else f"{'-':>14}"
            print(f"{scenario:>11} {subscribers:>11} {ns:12.0f} {queued:13.1f} {per_message}")


if __name__ == "__main__":
    main()
