"""The ``/formatted_events`` view's size in JSON, kept as it changes, and its markers.

A new client is sent the whole view (:meth:`FormattedStream.snapshot`); if that
does not fit the client's outbox it is cut off (1013) right after it is ready.
So the view is kept within a number of bytes of JSON, and that number is kept
exactly, without encoding the view again: :func:`~saltnado_core.messages.dumps`
writes a map as ``{`` + its ``"key": value`` pairs joined by ``", "`` + ``}``,
so a map's size is the sum of its pairs' sizes plus the separators
(:class:`MapSize`), and a job's is its head (every field, its minions left
empty) plus its minions map (:class:`JobSize`). Each pair is encoded once, when
it is put: a return is encoded when it arrives, never again per later change.

What does not fit is replaced by a marker, never dropped without a word:

* :func:`truncated` replaces a return (or a minion's grains) too large for the
  view: ``{"saltnado/truncated": {"bytes": N, "full": "/jobs/<jid>"}}`` — the
  size of its JSON and where the whole of it stays (Salt's job cache, or
  ``/minions/<id>`` for grains);
* :data:`OMITTED` counts a job's minions left out of it:
  ``"saltnado/omitted": {"minions": N, "full": "/jobs/<jid>"}``.

Both keys hold a ``/``, as the server's own event tags do (``saltnado/gap``),
so they cannot be taken for one of Salt's job fields.

Data JSON cannot hold as it is is made :func:`plain` before it is measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any
from urllib.parse import quote

from .messages import MAX_JSON_DEPTH, _json_default, _jsonable, dumps

TRUNCATED = "saltnado/truncated"
OMITTED = "saltnado/omitted"
EMPTY_JOBS_BYTES = len('{"jobs": {}}')  # the jobs message with no job in it


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def json_bytes(value: Any) -> int:
    """UTF-8 bytes of ``value`` as :func:`dumps` writes it."""
    return _utf8_len(dumps(value))


# What json.dumps raises for data dumps has to rewrite (see plain).
NOT_PLAIN = (TypeError, ValueError, RecursionError)


def pair_bytes(key: str, value: Any) -> int:
    """UTF-8 bytes of ``"key": value`` as :func:`dumps` writes it inside a map.
    Raises one of :data:`NOT_PLAIN` for data :func:`plain` must rewrite first."""
    text = json.dumps({key: value}, ensure_ascii=False, default=_json_default)
    return _utf8_len(text) - 2  # less the map's braces


def plain(value: Any) -> Any:
    """``value`` rewritten as :func:`dumps` rewrites data JSON cannot hold as it
    is (keys that are not strings or numbers, nesting past its depth). dumps
    rewrites a whole message from its top, so such data would be written one
    way alone and another way nested in the view (cut at another depth, a short
    list becoming a longer marker): rewritten once, here, it is written the same
    everywhere and the view's sizes add up."""
    return _jsonable(value, MAX_JSON_DEPTH)


_PENDING_BYTES = pair_bytes("", {"success": False}) - 2  # the value and ': '


def pending_bytes(mid: str) -> int:
    """:func:`pair_bytes` of a pending minion, ``"mid": {"success": false}``,
    without encoding a map: the one entry every targeted minion gets."""
    return _utf8_len(encode_basestring(mid)) + _PENDING_BYTES


def _full(kind: str, key: str) -> str:
    # a jid or minion id from the event bus may hold anything: quoted, it stays one path segment
    return f"/{kind}/{quote(key, safe='')}"


def truncated(size: int, kind: str, key: str) -> dict[str, Any]:
    """The marker for a value of ``size`` bytes of JSON whose whole is at ``/kind/key``."""
    return {TRUNCATED: {"bytes": size, "full": _full(kind, key)}}


def omitted(minions: int, jid: str) -> dict[str, Any]:
    """The count, under :data:`OMITTED`, of ``minions`` left out of job ``jid``."""
    return {"minions": minions, "full": _full("jobs", jid)}


class MapSize:
    """The JSON size of one map (wrapped as ``{"name": {…}}`` if named), kept as
    its pairs are put and removed."""

    __slots__ = ("_pairs", "bytes")

    def __init__(self, name: str | None = None) -> None:
        self._pairs: dict[str, int] = {}  # key → bytes of its pair
        # '{"name": ' and '}' around the map are as many bytes as the pair '"name": {}'
        self.bytes = 2 + (pair_bytes(name, {}) if name is not None else 0)  # and the map's braces

    def after(self, key: str, pair: int) -> int:
        """What :attr:`bytes` would be once ``key``'s pair takes ``pair`` bytes."""
        old = self._pairs.get(key)
        if old is not None:
            return self.bytes - old + pair
        return self.bytes + pair + (2 if self._pairs else 0)  # ", " before all but the first

    def put(self, key: str, pair: int) -> None:
        self.bytes = self.after(key, pair)
        self._pairs[key] = pair

    def remove(self, key: str) -> None:
        self.bytes -= self._pairs.pop(key) + (2 if self._pairs else 0)


@dataclass(slots=True)
class JobSize:
    """One job's JSON size in the jobs map, and when the view first saw it."""

    first_seen: float
    header: int = 0  # bytes of ``"<jid>": {…, "minions": {}, …}``
    minions: MapSize = field(default_factory=MapSize)

    @property
    def bytes(self) -> int:
        """Bytes of ``"<jid>": <job>``."""
        return self.header - 2 + self.minions.bytes  # the head's "{}" holds the minions map

    def fits(self, mid: str, pair: int, room: int) -> bool:
        """Whether the job stays within ``room`` bytes once ``mid``'s entry takes ``pair``."""
        return self.header - 2 + self.minions.after(mid, pair) <= room
