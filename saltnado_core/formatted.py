"""``/formatted_events``: a live view of minions (with grains) and jobs.

:class:`FormattedView` is a pure state machine fed :class:`SaltEvent` objects,
after the reference's ``SaltInfo`` (``rest_tornado/event_processor.py``), with
its faults fixed:

* a job is ``complete`` once every targeted minion has returned, successful or
  not (the reference waits forever on a failed minion); failures stay visible
  as ``success: false`` with the minion's ``retcode``;
* returns for jobs whose ``new`` event was not seen are kept, not crashed on;
* the view is bounded — the reference grows forever: at most ``max_jobs`` jobs
  (and optionally none older than ``max_job_age`` seconds), at most
  ``max_bytes`` of JSON for both messages together (oldest jobs dropped first,
  so a new client's first view always fits its outbox), at most
  ``max_job_minions`` minions per job; a return (or grains) of more than
  ``max_return_bytes`` of JSON is replaced by a :func:`truncated` marker naming
  its size and where the whole of it is. Minions left out of a job are counted
  in the job (:data:`OMITTED`), minions left out of the view in ``unlisted``;
  see :mod:`saltnado_core.viewsize`;
* a malformed event (``salt/job`` with too few or too many parts, a return
  without ``retcode``, data that is not a map) is skipped and counted;
* ``salt/presence/change`` drops only the ``lost`` minions (the reference
  drops every minion when ``lost`` is empty).

:class:`FormattedStream` shares one view between all clients: each change is
encoded once per message mode and published to every subscriber. ``full``
subscribers get the reference's messages (the whole ``minions`` or ``jobs``
map on every change, without its trailing ``"\\n\\n"``); ``delta`` subscribers
get only what changed, ``null`` for a removed minion or an evicted job;
``listed`` subscribers (rest_cherrypy's ``/ws?format_events``) get the full
messages with the minions as a list of entries, as rest_cherrypy's ``SaltInfo``
sends them. All get the whole view when they become ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .broadcast import Broadcast, Outbox
from .eventbus import SaltEvent
from .kinds import StreamKind
from .messages import dumps, text_frame
from .salt_calls import PublishGrains, SaltCall
from .tagfilter import TagFilter
from .viewsize import (
    EMPTY_JOBS_BYTES, NOT_PLAIN, OMITTED, JobSize, MapSize, json_bytes, omitted, pair_bytes, pending_bytes, plain,
    truncated,
)

GRAINS_FUN = "grains.items"
# Defaults (``rest_tornado: formatted_max_*``). 4 MiB leaves the default 16 MiB
# outbox room for three more whole-view messages (full mode) after the first view.
MAX_JOBS = 1000
MAX_VIEW_BYTES = 4 * 1024 * 1024
MAX_RETURN_BYTES = 64 * 1024
MAX_JOB_MINIONS = 1000
# What a new client's outbox holds beyond the view's JSON: two frame heads and
# a bus-down notice (streams.py); config.py checks outbox_max_bytes leaves it.
SNAPSHOT_SLACK = 4096


@dataclass(slots=True)
class Change:
    """What one event changed: ids mapped to their new entry, or None if removed."""

    minions: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    needs_grains: list[str] = field(default_factory=list)  # new minions, by presence

    def __bool__(self) -> bool:
        return bool(self.minions or self.jobs or self.needs_grains)


class Malformed(Exception):
    """An event of a family the view handles, in a shape it cannot use."""


class FormattedView:
    """The minions and jobs, fed with :meth:`feed`; :attr:`encoded_bytes` of
    JSON at most ``max_bytes`` (see the module docstring for every bound)."""

    def __init__(
        self,
        max_jobs: int = MAX_JOBS,
        max_job_age: float | None = None,
        max_bytes: int = MAX_VIEW_BYTES,
        max_return_bytes: int = MAX_RETURN_BYTES,
        max_job_minions: int = MAX_JOB_MINIONS,
    ) -> None:
        self.max_jobs = max_jobs
        self.max_job_age = max_job_age
        self.max_bytes = max_bytes
        self.max_return_bytes = max_return_bytes
        self.max_job_minions = max_job_minions
        self.minions: dict[str, dict[str, Any]] = {}  # mid → {"grains": {...}} or {}
        self.jobs: dict[str, dict[str, Any]] = {}  # jid → job, oldest first
        self._job_sizes: dict[str, JobSize] = {}  # jid → its JSON size and first-seen time
        self._minion_sizes = MapSize("minions")
        self._jobs_size = MapSize("jobs")
        self._grains_asked: set[str] = set()  # minions whose grains were requested
        self.skipped = 0  # malformed events ignored
        self.unlisted = 0  # minions left out of a view too full for them

    @property
    def encoded_bytes(self) -> int:
        """UTF-8 bytes of :meth:`minions_message` and :meth:`jobs_message` as JSON."""
        return self._minion_sizes.bytes + self._jobs_size.bytes

    # -- the message shapes --------------------------------------------------
    def minion_entry(self, mid: str) -> dict[str, Any]:
        return {**self.minions[mid], "id": mid}

    def minions_message(self) -> dict[str, Any]:
        return {"minions": {mid: self.minion_entry(mid) for mid in self.minions}}

    def jobs_message(self) -> dict[str, Any]:
        return {"jobs": self.jobs}

    # -- input -----------------------------------------------------------------
    def feed(self, event: SaltEvent, now: float) -> Change:
        """Apply ``event`` at time ``now``; return what changed (falsy if nothing)."""
        change = Change()
        data = event.data
        try:
            match event.tag.split("/"):
                case ["salt", "job", jid, "new"]:
                    self._new_job(jid, _mapping(data), now, change)
                case ["salt", "job", jid, "ret", mid]:
                    self._job_return(jid, mid, _mapping(data), now, change)
                case ["salt", "job", _, "ret", *_] | ["salt", "job"] | ["salt", "job", _]:
                    raise Malformed(event.tag)
                case ["salt", "key"]:
                    self._key(_mapping(data), change)
                case ["salt", "presence", "present"]:
                    present = set(_strings(_mapping(data).get("present")))
                    self._presence(present, set(self.minions) - present, change)
                case ["salt", "presence", "change"]:
                    data = _mapping(data)
                    self._presence(set(_strings(data.get("new"))), set(_strings(data.get("lost"))), change)
                case _:
                    pass  # salt/job/<jid>/publish, /prog/..., salt/auth, …: not part of the view
        except Malformed:
            self.skipped += 1
            return Change()
        if self.max_job_age is not None:
            self._expire(now - self.max_job_age, change)
        while self.encoded_bytes > self.max_bytes and self.jobs:
            self._evict(next(iter(self.jobs)), change)
        return change

    # -- jobs ------------------------------------------------------------------
    def _new_job(self, jid: str, data: Mapping[str, Any], now: float, change: Change) -> None:
        targeted = _strings(data.get("minions"))
        job: dict[str, Any] = {
            "jid": jid,
            "start_time": data.get("_stamp"),
            "minions": {},
            "fun": data.get("fun"),
            "tgt": data.get("tgt"),
            "tgt_type": data.get("tgt_type"),
            "state": "running",  # until _store_job looks (complete if nobody was targeted)
        }
        previous = self.jobs.get(jid)
        if previous is not None:  # a return overtook its job's "new" event: keep what it brought
            job["minions"] = previous["minions"]
            if OMITTED in previous:
                job[OMITTED] = previous[OMITTED]
        size = self._job_size(jid, job, now)
        for mid in targeted:
            if mid not in job["minions"] and not self._admit(job, size, mid, {"success": False}, pending_bytes(mid)):
                self._omit(jid, job, size)
        self._store_job(jid, job, size, change)

    def _job_return(self, jid: str, mid: str, data: Mapping[str, Any], now: float, change: Change) -> None:
        if "retcode" not in data or "return" not in data:
            raise Malformed(f"salt/job/{jid}/ret/{mid}")
        retcode, ret = data["retcode"], data["return"]
        success = data.get("success", retcode == 0)
        job = self.jobs.get(jid)
        if job is None:  # started before we were watching, or evicted
            job = {"jid": jid, "minions": {}, "fun": data.get("fun"), "state": "running"}
            size = self._job_size(jid, job, now)
        else:
            size = self._job_sizes[jid]
        whole = {"return": ret, "retcode": retcode, "success": success}
        try:
            whole_bytes = pair_bytes(mid, whole)  # as a rule, the one encode of the return
        except NOT_PLAIN:
            whole = plain(whole)
            ret, whole_bytes = whole["return"], pair_bytes(mid, whole)
        small = whole_bytes <= self.max_return_bytes or json_bytes(ret) <= self.max_return_bytes
        # the whole return if it is small enough and the job has room for it, else the marker
        if not (small and self._admit(job, size, mid, whole, whole_bytes)):
            marker = {**whole, "return": truncated(json_bytes(ret), "jobs", jid)}
            if not self._admit(job, size, mid, marker, pair_bytes(mid, marker)):
                self._omit(jid, job, size)
        self._store_job(jid, job, size, change)
        if data.get("fun") == GRAINS_FUN and success and isinstance(ret, Mapping):
            self._list_minion(mid, ret, change)

    def _job_size(self, jid: str, job: dict[str, Any], now: float) -> JobSize:
        """``job``'s size record (kept if it had one), its head measured anew;
        Malformed if that alone leaves the view no room (a jid or target of megabytes)."""
        try:
            header = _head_bytes(jid, job)
        except NOT_PLAIN:  # fun, tgt, … from the event: anything
            job.update(plain({key: value for key, value in job.items() if key != "minions"}))
            header = _head_bytes(jid, job)
        if header > self._job_room():
            raise Malformed(f"job {jid[:40]!r} too large for the view")
        size = self._job_sizes.get(jid) or JobSize(now)
        size.header = header
        return size

    def _job_room(self) -> int:
        """The most JSON one job may take: the view bound less the minions."""
        return self.max_bytes - self._minion_sizes.bytes - EMPTY_JOBS_BYTES

    def _admit(self, job: dict[str, Any], size: JobSize, mid: str, entry: dict[str, Any], entry_bytes: int) -> bool:
        """Put ``entry`` (``entry_bytes`` of JSON as a pair) in ``job``'s minions
        if the job stays within ``max_job_minions`` and the view's room."""
        minions = job["minions"]
        if (mid in minions or len(minions) < self.max_job_minions) and size.fits(mid, entry_bytes, self._job_room()):
            minions[mid] = entry
            size.minions.put(mid, entry_bytes)
            return True
        return False

    def _omit(self, jid: str, job: dict[str, Any], size: JobSize) -> None:
        """One more minion left out of ``job``, counted under :data:`OMITTED` (a
        pending minion whose return has no room is not: it stays pending)."""
        job[OMITTED] = omitted(job.get(OMITTED, {}).get("minions", 0) + 1, jid)
        size.header = _head_bytes(jid, job)

    def _store_job(self, jid: str, job: dict[str, Any], size: JobSize, change: Change) -> None:
        state = _state(job)
        if job["state"] != state:  # "running" ↔ "complete": plain ASCII, so its length is its JSON's
            size.header += len(state) - len(job["state"])
            job["state"] = state
        self._jobs_size.put(jid, size.bytes)
        self._job_sizes[jid] = size
        self.jobs[jid] = job
        change.jobs[jid] = job
        while len(self.jobs) > self.max_jobs:
            self._evict(next(iter(self.jobs)), change)

    def _expire(self, cutoff: float, change: Change) -> None:
        while self.jobs:
            oldest = next(iter(self.jobs))
            if self._job_sizes[oldest].first_seen >= cutoff:
                break
            self._evict(oldest, change)

    def _evict(self, jid: str, change: Change) -> None:
        del self.jobs[jid]
        del self._job_sizes[jid]
        self._jobs_size.remove(jid)
        change.jobs[jid] = None

    # -- minions ---------------------------------------------------------------
    def _key(self, data: Mapping[str, Any], change: Change) -> None:
        mid, act = data.get("id"), data.get("act")
        if not isinstance(mid, str):
            raise Malformed("salt/key without an id")
        # salt-key in 3008 fires act "accepted" (Key.DIR_MAP), older Salt and the
        # master's auto-accept path "accept"; the reference only knows the latter.
        if act in ("accept", "accepted") and mid not in self.minions:
            self._list_minion(mid, None, change)
        elif act == "delete" and mid in self.minions:
            self._remove(mid, change)

    def _presence(self, present: set[str], lost: set[str], change: Change) -> None:
        for mid in sorted(lost & set(self.minions)):
            self._remove(mid, change)
        for mid in sorted(present):
            if mid not in self.minions and not self._list_minion(mid, None, change):
                continue
            # Ask once per appearance for the grains of a connected minion that
            # has none (new, or re-added by its key being accepted).
            if "grains" not in self.minions[mid] and mid not in self._grains_asked:
                self._grains_asked.add(mid)
                change.needs_grains.append(mid)

    def _list_minion(self, mid: str, grains: Mapping[str, Any] | None, change: Change) -> bool:
        """Add or update ``mid`` (with ``grains``, None: none yet); grains larger
        than ``max_return_bytes``, or than the view has room for, become a
        marker. Jobs make room (oldest first, in :meth:`feed`); a minion the
        view cannot hold even then is left out and counted in ``unlisted``."""
        entries: list[dict[str, Any]] = [{}]
        if grains is not None:
            grains_bytes = json_bytes(grains)
            marker = {"grains": truncated(grains_bytes, "minions", mid)}
            entries = [marker] if grains_bytes > self.max_return_bytes else [{"grains": grains}, marker]
        room = self.max_bytes - EMPTY_JOBS_BYTES
        for entry in entries:
            entry_bytes = pair_bytes(mid, {**entry, "id": mid})
            if self._minion_sizes.after(mid, entry_bytes) <= room:
                self.minions[mid] = entry
                self._minion_sizes.put(mid, entry_bytes)
                change.minions[mid] = self.minion_entry(mid)
                return True
        if mid not in self.minions:
            self.unlisted += 1
        return False

    def _remove(self, mid: str, change: Change) -> None:
        del self.minions[mid]
        self._minion_sizes.remove(mid)
        self._grains_asked.discard(mid)
        change.minions[mid] = None


def _head_bytes(jid: str, job: Mapping[str, Any]) -> int:
    """JSON bytes of ``"<jid>": <job>`` in the jobs map, its minions left empty."""
    return pair_bytes(jid, {**job, "minions": {}})


def _state(job: Mapping[str, Any]) -> str:
    returned = all("retcode" in entry for entry in job["minions"].values())
    return "complete" if returned else "running"


def _mapping(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise Malformed("event data is not a map")
    return data


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise Malformed("expected a list of minion ids")
    return list(value)


def listed_minions(view: FormattedView) -> dict[str, Any]:
    """rest_cherrypy's minions message (``event_processor.SaltInfo.publish_minions``):
    ``{"minions": [{..., "id": mid}, ...]}``, a list in the view's order."""
    return {"minions": [view.minion_entry(mid) for mid in view.minions]}


def _frame(message: Mapping[str, Any]) -> bytes:
    return text_frame(dumps(message).encode("utf-8"))


class FormattedStream:
    """One shared :class:`FormattedView` and its two subscriber sets (full, delta)."""

    def __init__(self, view: FormattedView | None = None) -> None:
        self.view = view or FormattedView()
        self.full = Broadcast(StreamKind.FORMATTED_EVENTS)
        self.delta = Broadcast(StreamKind.FORMATTED_EVENTS)
        # rest_cherrypy's /ws?format_events: full messages, minions as a list
        self.listed = Broadcast(StreamKind.WS_FORMATTED)
        self.broadcasts = (self.full, self.delta, self.listed)
        self._tokens: dict[Outbox, str] = {}  # subscriber → its token, newest last

    def __len__(self) -> int:
        return len(self._tokens)

    def snapshot(self, listed: bool = False) -> list[bytes]:
        """The whole view, as sent to a client that has just become ready
        (``listed``: the minions as a list, as rest_cherrypy sends them)."""
        minions = listed_minions(self.view) if listed else self.view.minions_message()
        return [_frame(minions), _frame(self.view.jobs_message())]

    def attach(
        self, outbox: Outbox, token: str, delta: bool, tags: TagFilter | None = None, listed: bool = False
    ) -> list[SaltCall]:
        """Send ``outbox`` the view, subscribe it, and ask Salt for every minion's
        grains with the client's own token (so Salt's ACLs decide). ``delta``: only
        changes after the view; ``listed``: rest_cherrypy's shape (not with ``delta``).

        With ``tags``, the client is sent only the changes that events it lets
        through made (each change is published with its event's tag); the first
        view is always whole. The view itself is shared and fed every event."""
        for frame in self.snapshot(listed):
            outbox.offer(frame)
        (self.listed if listed else self.delta if delta else self.full).subscribe(outbox, tags)
        self._tokens[outbox] = token
        return [PublishGrains(None, token)]

    def detach(self, outbox: Outbox) -> None:
        for broadcast in self.broadcasts:
            broadcast.unsubscribe(outbox)
        self._tokens.pop(outbox, None)

    def dispatch(self, event: SaltEvent, now: float) -> list[SaltCall]:
        change = self.view.feed(event, now)
        if not change:
            return []
        tag = event.tag  # a client's tag filter picks the changes it is sent
        if change.minions:
            if self.full:
                self.full.publish(_frame(self.view.minions_message()), tag)
            if self.delta:
                self.delta.publish(_frame({"minions": change.minions}), tag)
            if self.listed:
                self.listed.publish(_frame(listed_minions(self.view)), tag)
        if change.jobs:
            jobs = _frame(self.view.jobs_message()) if self.full or self.listed else b""
            if self.full:
                self.full.publish(jobs, tag)
            if self.listed:  # the same message in both shapes: the same bytes
                self.listed.publish(jobs, tag)
            if self.delta:
                self.delta.publish(_frame({"jobs": change.jobs}), tag)
        if change.needs_grains and self._tokens:
            # Presence found new minions: refresh their grains with the token of
            # the most recent client (the reference uses its own client's).
            token = next(reversed(self._tokens.values()))
            return [PublishGrains(tuple(change.needs_grains), token)]
        return []
