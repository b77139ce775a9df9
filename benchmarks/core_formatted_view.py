"""Core-only: the /formatted_events view after large returns, measured in bytes.

20 `cmd.run` jobs that each print 1 MB, then a new client (full and delta) with the
default outbox bounds: the view's JSON, the snapshot queued, and whether the client
was cut off (1013). Then 4,000 fabricated returns for one job: the minions kept.
No sockets, no clock.

    .venv/bin/python benchmarks/core_formatted_view.py
"""

from __future__ import annotations

from saltnado_core import EventStreams, Limits, Outbox, SaltEvent
from saltnado_core.messages import dumps


def job(streams: EventStreams, jid: str, ret: object) -> None:
    new = {"jid": jid, "minions": ["m1"], "fun": "cmd.run", "tgt": "m1", "tgt_type": "glob", "_stamp": "s"}
    streams.dispatch(SaltEvent(f"salt/job/{jid}/new", new))
    streams.dispatch(SaltEvent(f"salt/job/{jid}/ret/m1", {"return": ret, "retcode": 0, "success": True}))


def main() -> None:
    limits = Limits()
    streams = EventStreams()
    for i in range(20):
        job(streams, f"2026120400000000{i:04d}", "x" * 1_000_000)
    view = streams.formatted.view
    size = sum(len(dumps(m).encode("utf-8")) for m in (view.minions_message(), view.jobs_message()))
    print(f"after 20 x 1 MB jobs: view JSON {size} bytes, {len(view.jobs)} jobs")
    for delta in (False, True):
        outbox = Outbox(limits.outbox_max_messages, limits.outbox_max_bytes)
        streams.attach("formatted_events", outbox, "t" * 64, delta)
        print(f"  new client delta={delta}: snapshot queued {outbox.queued_bytes} bytes "
              f"(outbox_max_bytes {limits.outbox_max_bytes}); cut off 1013: {outbox.overflowed}")
    streams = EventStreams()
    job(streams, "1", True)
    for i in range(4000):
        streams.dispatch(SaltEvent(f"salt/job/1/ret/fake{i:05d}", {"return": "y" * 1000, "retcode": 0}))
    kept = streams.formatted.view.jobs["1"]
    counted = {k: v for k, v in kept.items() if k.startswith("saltnado/")}
    print(f"4000 fabricated returns: {len(kept['minions'])} minions in the job, "
          f"job JSON {len(dumps(kept).encode('utf-8'))} bytes, counted {counted}")


if __name__ == "__main__":
    main()
