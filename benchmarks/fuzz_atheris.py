"""Coverage-guided fuzzing with atheris (libFuzzer for Python), beside the hypothesis
fuzz tests: the same drivers and the same checks (tests/test_fuzz_*.py), but inputs
are mutated towards code not yet reached in saltnado_core, h11 and wsproto.

Targets: ``http`` (ServerConnection + App, Salt's answers picked by the input),
``session`` (WebSocketSession alone), ``websocket`` (an /all_events connection
after the upgrade), ``eventbus`` (the decoder feeding every stream). Each input's
first bytes choose the reads' split points and the drawn answers; the rest is the
stream. A broken invariant is an uncaught exception: atheris stops and writes
the input to ``crash-<sha1>`` (re-run it by passing that file instead of a corpus).
The seed corpus is built from the hypothesis strategies.

    pip install atheris      # or: pip install -e '.[fuzz]'
    .venv/bin/python benchmarks/fuzz_atheris.py http -atheris_runs=200000
    .venv/bin/python benchmarks/fuzz_atheris.py eventbus -max_total_time=600 CORPUS_DIR

libFuzzer reports the inputs it ran at the end (``Done N runs``; with
``-print_final_stats=1`` also ``stat::number_of_executed_units``).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

with atheris.instrument_imports(include=["saltnado_core", "h11", "wsproto"]):
    import saltnado_core  # noqa: F401  (instrumented first, then used by the drivers)
    from saltnado_core import EventBusDecoder, EventBusError

import test_fuzz_eventbus as eventbus_tests  # noqa: E402
import test_fuzz_http as http_tests  # noqa: E402
import test_fuzz_websocket as websocket_tests  # noqa: E402

def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` in reads of random sizes (never empty: ``b""`` is EOF)."""
    out, at = [], 0
    while at < len(data):
        size = rng.choice((1, 2, 7, 64, 512, 65536))
        out.append(data[at : at + size])
        at += size
    return out


def prepare(data: bytes) -> tuple[random.Random, bytes]:
    """The first 4 bytes seed every choice; the rest is the stream."""
    return random.Random(data[:4]), data[4:]


def chooser(rng: random.Random) -> Callable[[Any], Any]:
    return lambda options: options[rng.randrange(len(options))]


def http(data: bytes) -> None:
    rng, stream = prepare(data)
    limits = rng.choice(http_tests.LIMITS)
    http_tests.drive(pieces(rng, stream), limits, chooser(rng), eof=rng.random() < 0.8)


def session(data: bytes) -> None:
    rng, stream = prepare(data)
    websocket_tests.session_run(stream, pieces(rng, stream), chooser(rng))


def websocket(data: bytes) -> None:
    rng, stream = prepare(data)
    websocket_tests.connection_run(pieces(rng, websocket_tests.UPGRADE + stream), chooser(rng))


def eventbus(data: bytes) -> None:
    rng, stream = prepare(data)
    limit = rng.choice((200, 2000, 1 << 20))
    decoder = EventBusDecoder(max_event_bytes=limit)
    try:
        eventbus_tests.decode_all(decoder, pieces(rng, stream), limit, eventbus_tests.FanOut())
    except EventBusError:
        try:
            list(decoder.events())
        except EventBusError:
            return
        raise AssertionError("the decoder recovered after an error") from None


TARGETS: dict[str, Callable[[bytes], None]] = {"http": http, "session": session, "websocket": websocket,
                                               "eventbus": eventbus}


def seeds(target: str, n: int = 200) -> list[bytes]:
    """Starting inputs from the hypothesis strategies the fuzz tests use."""
    import warnings

    from hypothesis.errors import NonInteractiveExampleWarning

    from fuzzing import client_frames

    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    strategy: Any
    if target == "http":
        strategy = http_tests.request_bytes()
    elif target == "eventbus":
        strategy = eventbus_tests.bus_message().map(lambda m: m[0])
    else:
        strategy = client_frames
    prefix = os.urandom  # the choice bytes
    return [prefix(4) + strategy.example() for _ in range(n)]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [corpus dir]")
    target = sys.argv.pop(1)
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):  # no corpus given: seed a fresh one
        corpus = tempfile.mkdtemp(prefix=f"saltnado-atheris-{target}-")
        for i, seed in enumerate(seeds(target)):
            Path(corpus, f"seed-{i}").write_bytes(seed)
        args.append(corpus)
    atheris.Setup(args, TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
