"""Summarise a py-spy raw (collapsed-stack) profile: where the samples are.

    .venv/bin/python benchmarks/profile_summary.py benchmarks/results/profile-sat1000.txt [--top 25]

Prints the share of samples per leaf function ("self") and per function anywhere on
the stack ("total"), so a report can say where the server's time goes.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('func')} ({path})"


def summarise(path: str, top: int = 25) -> str:
    selfs: collections.Counter[str] = collections.Counter()
    totals: collections.Counter[str] = collections.Counter()
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [frame_name(fr) for fr in stack.split(";")]
            samples += n
            selfs[frames[-1]] += n
            for name in set(frames):
                totals[name] += n
    out = [f"{samples} samples in {path}", "", "self %   function"]
    out += [f"{100 * c / samples:6.1f}   {name}" for name, c in selfs.most_common(top)]
    out += ["", "total %  function"]
    out += [f"{100 * c / samples:6.1f}   {name}" for name, c in totals.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.path, args.top))


if __name__ == "__main__":
    sys.exit(main())
