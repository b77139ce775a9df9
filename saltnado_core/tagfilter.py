"""Which events a subscriber wants: a :class:`TagFilter`, checked before queueing.

Any subscriber — a streaming client's outbox or an in-process subscription —
may be subscribed with one (:meth:`~saltnado_core.broadcast.Fanout.subscribe`).
The fan-out groups subscribers by filter and checks each distinct filter once
per event, before any queue is touched, so an event a subscriber does not want
costs it nothing. What the server says itself (the event bus going down and
coming back, keep-alives) is published without a tag and reaches every
subscriber, whatever its filter.

Two ways to say what is wanted, OR-ed together in one filter:

* tag prefixes (:func:`tag_filter`) — Salt's own default tag match
  (``salt.utils.event``, ``event_match_type: startswith``), what in-process
  subscribers have always used;
* shell-style globs (:func:`glob_filter`) — Salt's ``fnmatch`` match type, what
  streaming clients ask for with ``?tag=salt/job/*/ret/*&tag=salt/key``. A glob
  matches the whole tag, case-sensitively; ``*`` matches any run of characters,
  ``/`` included (as ``fnmatch.fnmatchcase``); ``?`` one character; ``[seq]`` and
  ``[!seq]`` one character of (not of) ``seq``.

Matching is as cheap as the patterns allow: a glob without wildcards is an exact
tag (a set lookup), one whose only wildcard is a trailing ``*`` is a prefix (one
``str.startswith`` over all of them), and only the rest become one compiled
regular expression (``fnmatch.translate``, alternated). Equal pattern sets give
the same :class:`TagFilter` object (compiled once, cached), and equal filters
share one group in the fan-out, so ten thousand clients asking for
``salt/job/*/ret/*`` cost one match per event, not ten thousand.

Patterns come from clients, so each is bounded and checked
(:func:`check_pattern`), and so is what a whole filter may cost to compile
(:data:`MAX_FILTER_CHARS`, :data:`MAX_WILDCARDS`): a bad one is
:class:`BadTagPattern`, whose message says what is wrong without quoting the pattern.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_PATTERNS = 32  # globs in one filter (``?tag=`` given this many times at most)
MAX_PATTERN_CHARS = 256  # characters in one glob (Salt's own tags are far shorter)
# What compiling a filter may cost: Python's ``re`` compiles in time that grows with
# the pattern's length and its wildcards (each ``*`` is a lookahead group), on the
# event loop, once per distinct pattern set. Within these, about 2 ms at worst
# (32 patterns of 32 characters with a ``*`` each); unbounded, 32 patterns of 256
# characters full of ``*`` took 170 ms.
MAX_FILTER_CHARS = 1024  # characters in all of a filter's globs together
MAX_WILDCARDS = 32  # ``*``, ``?`` and ``[`` in all of a filter's globs together
_WILDCARDS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class TagFilter:
    """Tags starting with any of ``prefixes``, equal to one of ``exact``, or
    matched by ``globs`` (a compiled alternation); an empty filter matches nothing."""

    prefixes: tuple[str, ...]
    exact: frozenset[str] = frozenset()
    globs: re.Pattern[str] | None = None
    # only events of these masters (``?master=``, with an event log: saltnado_core.eventlog)
    masters: frozenset[str] | None = None

    def matches(self, tag: str, master: str | None = None) -> bool:
        if self.masters is not None and master not in self.masters:
            return False
        if tag.startswith(self.prefixes) or tag in self.exact:
            return True
        return self.globs is not None and self.globs.match(tag) is not None


class BadTagPattern(ValueError):
    """A tag glob a filter cannot take; the message names the problem, never the
    pattern itself (it came from a client: it is not echoed back)."""


def tag_filter(prefixes: str | tuple[str, ...]) -> TagFilter | None:
    """The filter for one prefix or a tuple of them; None if it lets every tag
    through (``""`` among them), so a subscriber that wants everything is not
    checked at all."""
    wanted = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
    return None if "" in wanted else TagFilter(wanted)


def master_filter(tags: TagFilter | None, masters: Iterable[str]) -> TagFilter:
    """``tags`` (None: every tag) narrowed to the events of ``masters``."""
    wanted = frozenset(masters)
    if tags is None:
        return TagFilter(("",), masters=wanted)
    return dataclasses.replace(tags, masters=wanted)


def check_pattern(pattern: str) -> None:
    """Raise :class:`BadTagPattern` unless ``pattern`` is a glob a filter takes:
    not empty, at most :data:`MAX_PATTERN_CHARS` characters, printable (no
    control characters, no line breaks), every ``[`` closed by a ``]``."""
    if not pattern:
        raise BadTagPattern("is empty")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise BadTagPattern(f"is longer than {MAX_PATTERN_CHARS} characters")
    if not pattern.isprintable():
        raise BadTagPattern("holds a control character")
    if _unclosed_bracket(pattern):
        raise BadTagPattern("has a '[' without its ']'")


def _unclosed_bracket(pattern: str) -> bool:
    """True if a ``[`` opens a set that no ``]`` closes. ``fnmatch`` would quietly
    match such a ``[`` literally; a client who wrote it meant a set, so it is
    refused. As in ``fnmatch``, a ``]`` right after ``[`` or ``[!`` is part of the set."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            j = pattern.find("]", j)
            if j < 0:
                return True
            i = j
        i += 1
    return False


def glob_filter(patterns: Iterable[str], prefixes: tuple[str, ...] = ()) -> TagFilter | None:
    """The filter for tags matched by any of the globs ``patterns`` (or starting
    with any of ``prefixes``); None if it lets every tag through (a bare ``*``,
    or a ``""`` prefix).

    Raises :class:`BadTagPattern` for a bad pattern (:func:`check_pattern`; the
    message says which, counting from 1), more than :data:`MAX_PATTERNS`, or
    patterns over :data:`MAX_FILTER_CHARS` or :data:`MAX_WILDCARDS` together.
    Equal sets of patterns give the same object: the compiled filter is cached.
    """
    globs = tuple(patterns)
    if len(globs) > MAX_PATTERNS:
        raise BadTagPattern(f"at most {MAX_PATTERNS} tag patterns, got {len(globs)}")
    for number, pattern in enumerate(globs, 1):
        try:
            check_pattern(pattern)
        except BadTagPattern as exc:
            raise BadTagPattern(f"tag pattern {number} of {len(globs)} {exc}") from None
    if sum(map(len, globs)) > MAX_FILTER_CHARS:
        raise BadTagPattern(f"tag patterns longer than {MAX_FILTER_CHARS} characters together")
    if sum(glob.count("*") + glob.count("?") + glob.count("[") for glob in globs) > MAX_WILDCARDS:
        raise BadTagPattern(f"more than {MAX_WILDCARDS} wildcards ('*', '?', '[') in the tag patterns together")
    if "" in prefixes:
        return None
    return _compiled(tuple(sorted(set(globs))), tuple(sorted(set(prefixes))))


@functools.lru_cache(maxsize=1024)
def _compiled(globs: tuple[str, ...], prefixes: tuple[str, ...]) -> TagFilter | None:
    """The filter for checked, sorted, distinct ``globs`` and ``prefixes``, by kind
    of pattern: exact tags, prefixes, and the rest as one regular expression."""
    exact: set[str] = set()
    starts = list(prefixes)
    regexes: list[str] = []
    for glob in globs:
        if not _WILDCARDS.intersection(glob):
            exact.add(glob)
        elif glob.endswith("*") and not _WILDCARDS.intersection(glob[:-1]):
            starts.append(glob[:-1])
        else:
            regexes.append(fnmatch.translate(glob))
    if "" in starts:  # "*": every tag
        return None
    # fnmatch.translate gives "(?s:...)\Z": alternated whole, one match() tries each
    globs_re = re.compile("|".join(regexes)) if regexes else None
    return TagFilter(tuple(starts), frozenset(exact), globs_re)
