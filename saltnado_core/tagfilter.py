"""Which events a subscriber wants: a :class:`TagFilter`, checked before queueing.

Any subscriber — a streaming client's outbox or an in-process subscription —
may be subscribed with one (:meth:`~saltnado_core.broadcast.Fanout.subscribe`).
The fan-out keeps it beside the subscriber and checks it against the event's
tag before offering the event, so an event a subscriber does not want costs it
one check, never a place in its queue. What the server says itself
(the event bus going down and coming back, keep-alives) is published without a
tag and reaches every subscriber, whatever its filter.

A filter is a set of tag prefixes today — Salt's own default tag match
(``salt.utils.event``, ``event_match_type: startswith``). Glob patterns such as
``salt/job/*/ret/*`` (Salt's ``fnmatch`` match type) belong in
:func:`tag_filter` and :meth:`TagFilter.matches`, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TagFilter:
    """Tags starting with any of ``prefixes`` (none: no tag at all)."""

    prefixes: tuple[str, ...]

    def matches(self, tag: str) -> bool:
        return tag.startswith(self.prefixes)


def tag_filter(prefixes: str | tuple[str, ...]) -> TagFilter | None:
    """The filter for one prefix or a tuple of them; None if it lets every tag
    through (``""`` among them), so a subscriber that wants everything is not
    checked at all."""
    wanted = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
    return None if "" in wanted else TagFilter(wanted)
