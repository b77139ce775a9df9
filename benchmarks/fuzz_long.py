"""The long fuzz run: tests/test_fuzz_*.py round after round until the HTTP parser,
the websocket session and the event-bus codec have had ``--inputs`` inputs between
them (default 1,000,000).

Each round is one pytest run with ``SALTNADO_FUZZ=long`` (``--examples`` inputs per
test, 20,000 by default; hypothesis keeps a tree of every input it tried, so rounds
stay that size) and its own ``--hypothesis-seed``, so a round can be replayed
exactly. The counts are the inputs the tests actually ran (tests/fuzzing.py counts
them), not ``max_examples``. ``--jobs 2`` runs the HTTP tests and the other two
side by side. A failing round's output is kept; the run goes on and exits 1.

    nice .venv/bin/python benchmarks/fuzz_long.py                  # ≥ 10^6 inputs
    .venv/bin/python benchmarks/fuzz_long.py --inputs 50000 --examples 2000
    nice .venv/bin/python benchmarks/fuzz_long.py --minutes 60    # as many as an hour allows

Writes ``benchmarks/results/fuzz-long-<time>.md`` and ``.json`` (and ``fuzz-long-latest.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GROUPS = {  # one worker each with --jobs 2; one worker runs them in turn otherwise
    "http": ["tests/test_fuzz_http.py"],
    "websocket+eventbus": ["tests/test_fuzz_websocket.py", "tests/test_fuzz_eventbus.py"],
}


@dataclass
class Round:
    group: str
    seed: int
    started: float
    proc: subprocess.Popen[bytes]
    counts_path: str
    log_path: str


@dataclass
class Totals:
    inputs: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    failures: list[dict[str, object]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.inputs.values())


def start_round(group: str, seed: int, examples: int, workdir: str) -> Round:
    counts = os.path.join(workdir, f"counts-{group}-{seed}.json")
    log = os.path.join(workdir, f"round-{group}-{seed}.log")
    env = {**os.environ, "SALTNADO_FUZZ": "long", "SALTNADO_FUZZ_EXAMPLES": str(examples), "SALTNADO_FUZZ_COUNTS": counts}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--hypothesis-seed={seed}", *GROUPS[group]]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Round(group, seed, time.monotonic(), proc, counts, log)


def finish_round(rnd: Round, totals: Totals) -> None:
    rc = rnd.proc.wait()
    try:
        with open(rnd.counts_path) as f:
            counts = json.load(f)
    except FileNotFoundError:
        counts = {}
    for parser, n in counts.items():
        totals.inputs[parser] = totals.inputs.get(parser, 0) + n
    totals.rounds += 1
    if rc != 0:
        RESULTS.mkdir(parents=True, exist_ok=True)
        kept = RESULTS / f"fuzz-long-failure-{rnd.group}-seed{rnd.seed}.log"
        kept.write_bytes(Path(rnd.log_path).read_bytes())
        tail = Path(rnd.log_path).read_text(errors="replace").splitlines()[-15:]
        totals.failures.append({"group": rnd.group, "seed": rnd.seed, "rc": rc, "log": str(kept), "tail": tail})
    took = time.monotonic() - rnd.started
    print(f"round {rnd.group} seed {rnd.seed}: {counts} in {took:.0f}s rc={rc}; "
          f"total {totals.total:,} {totals.inputs}", flush=True)


def report(totals: Totals, elapsed: float, args: argparse.Namespace) -> str:
    lines = [
        "# Long fuzz run",
        "",
        f"`benchmarks/fuzz_long.py --inputs {args.inputs} --examples {args.examples} --jobs {args.jobs}` "
        f"(SALTNADO_FUZZ=long), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}",
        "",
        "| parser | inputs run |",
        "|---|---:|",
        *[f"| {parser} | {n:,} |" for parser, n in sorted(totals.inputs.items())],
        f"| **total** | **{totals.total:,}** |",
        "",
        f"{totals.rounds} rounds in {elapsed / 60:.1f} min wall time"
        + (f" (stopped by --minutes {args.minutes:g} before --inputs {args.inputs:,})" if totals.total < args.inputs else "")
        + "; "
        f"{len(totals.failures)} failing round(s).",
    ]
    for failure in totals.failures:
        lines += ["", f"- {failure['group']} seed {failure['seed']}: see `{failure['log']}`", "", "```",
                  *map(str, failure["tail"]), "```"]  # type: ignore[call-overload]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="stop once this many inputs ran in all")
    parser.add_argument("--examples", type=int, default=20_000, help="inputs per test per round")
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=2, help="worker processes")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="first round's seed")
    parser.add_argument("--minutes", type=float, help="start no round after this long (rounds running finish)")
    args = parser.parse_args()

    totals, seed, started = Totals(), args.seed, time.monotonic()
    order = list(GROUPS)
    with tempfile.TemporaryDirectory(prefix="saltnado-fuzz-") as workdir:
        running: list[Round] = []
        turn = 0
        while True:
            in_time = args.minutes is None or time.monotonic() - started < args.minutes * 60
            while len(running) < args.jobs and totals.total < args.inputs and in_time:
                # with two workers each keeps its own group; with one they alternate
                busy = {r.group for r in running}
                group = next(g for g in order[turn:] + order[:turn] if g not in busy)
                turn = (order.index(group) + 1) % len(order)
                running.append(start_round(group, seed, args.examples, workdir))
                seed += 1
            if not running:
                break
            while True:  # wait for any round to end
                done = [r for r in running if r.proc.poll() is not None]
                if done:
                    break
                time.sleep(1)
            for rnd in done:
                running.remove(rnd)
                finish_round(rnd, totals)
    elapsed = time.monotonic() - started
    text = report(totals, elapsed, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    summary = {"inputs": totals.inputs, "total": totals.total, "rounds": totals.rounds,
               "elapsed_s": round(elapsed, 1), "failures": totals.failures, "args": vars(args)}
    for name in (f"fuzz-long-{stamp}", "fuzz-long-latest"):
        (RESULTS / f"{name}.md").write_text(text)
        (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(text)
    return 1 if totals.failures else 0


if __name__ == "__main__":
    sys.exit(main())
