"""``/formatted_events``: a live view of minions (with grains) and jobs.

:class:`FormattedView` is a pure state machine fed :class:`SaltEvent` objects,
after the reference's ``SaltInfo`` (``rest_tornado/event_processor.py``), with
its faults fixed:

* a job is ``complete`` once every targeted minion has returned, successful or
  not (the reference waits forever on a failed minion); failures stay visible
  as ``success: false`` with the minion's ``retcode``;
* returns for jobs whose ``new`` event was not seen are kept, not crashed on;
* the job table is bounded (``max_jobs``, oldest first, and optionally
  ``max_job_age`` seconds) — the reference grows forever;
* a malformed event (``salt/job`` with too few or too many parts, a return
  without ``retcode``, data that is not a map) is skipped and counted;
* ``salt/presence/change`` drops only the ``lost`` minions (the reference
  drops every minion when ``lost`` is empty).

:class:`FormattedStream` shares one view between all clients: each change is
encoded once per message mode and published to every subscriber. ``full``
subscribers get the reference's messages (the whole ``minions`` or ``jobs``
map on every change, without its trailing ``"\\n\\n"``); ``delta`` subscribers
get only what changed, ``null`` for a removed minion or an evicted job. Both
get the whole view when they become ready.
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

GRAINS_FUN = "grains.items"


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
    def __init__(self, max_jobs: int = 1000, max_job_age: float | None = None) -> None:
        self.max_jobs = max_jobs
        self.max_job_age = max_job_age
        self.minions: dict[str, dict[str, Any]] = {}  # mid → {"grains": {...}} or {}
        self.jobs: dict[str, dict[str, Any]] = {}  # jid → job, oldest first
        self._first_seen: dict[str, float] = {}
        self._grains_asked: set[str] = set()  # minions whose grains were requested
        self.skipped = 0  # malformed events ignored

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
        return change

    # -- jobs ------------------------------------------------------------------
    def _new_job(self, jid: str, data: Mapping[str, Any], now: float, change: Change) -> None:
        targeted = _strings(data.get("minions"))
        minions: dict[str, dict[str, Any]] = {mid: {"success": False} for mid in targeted}
        job: dict[str, Any] = {
            "jid": jid,
            "start_time": data.get("_stamp"),
            "minions": minions,
            "fun": data.get("fun"),
            "tgt": data.get("tgt"),
            "tgt_type": data.get("tgt_type"),
            "state": "running" if targeted else "complete",
        }
        previous = self.jobs.get(jid)
        if previous is not None:  # a return overtook its job's "new" event
            minions.update(previous["minions"])
            job["state"] = _state(job)
        self._store_job(jid, job, now, change)

    def _job_return(self, jid: str, mid: str, data: Mapping[str, Any], now: float, change: Change) -> None:
        if "retcode" not in data or "return" not in data:
            raise Malformed(f"salt/job/{jid}/ret/{mid}")
        retcode = data["retcode"]
        success = data.get("success", retcode == 0)
        job = self.jobs.get(jid)
        if job is None:  # started before we were watching, or evicted
            job = {"jid": jid, "minions": {}, "fun": data.get("fun"), "state": "running"}
        job["minions"][mid] = {"return": data["return"], "retcode": retcode, "success": success}
        job["state"] = _state(job)
        self._store_job(jid, job, now, change)
        if data.get("fun") == GRAINS_FUN and success and isinstance(data["return"], Mapping):
            self.minions[mid] = {"grains": data["return"]}
            change.minions[mid] = self.minion_entry(mid)

    def _store_job(self, jid: str, job: dict[str, Any], now: float, change: Change) -> None:
        if jid not in self.jobs:
            self._first_seen[jid] = now
        self.jobs[jid] = job
        change.jobs[jid] = job
        while len(self.jobs) > self.max_jobs:
            self._evict(next(iter(self.jobs)), change)

    def _expire(self, cutoff: float, change: Change) -> None:
        while self.jobs:
            oldest = next(iter(self.jobs))
            if self._first_seen[oldest] >= cutoff:
                break
            self._evict(oldest, change)

    def _evict(self, jid: str, change: Change) -> None:
        del self.jobs[jid]
        del self._first_seen[jid]
        change.jobs[jid] = None

    # -- minions ---------------------------------------------------------------
    def _key(self, data: Mapping[str, Any], change: Change) -> None:
        mid, act = data.get("id"), data.get("act")
        if not isinstance(mid, str):
            raise Malformed("salt/key without an id")
        # salt-key in 3008 fires act "accepted" (Key.DIR_MAP), older Salt and the
        # master's auto-accept path "accept"; the reference only knows the latter.
        if act in ("accept", "accepted") and mid not in self.minions:
            self.minions[mid] = {}
            change.minions[mid] = self.minion_entry(mid)
        elif act == "delete" and mid in self.minions:
            self._remove(mid, change)

    def _presence(self, present: set[str], lost: set[str], change: Change) -> None:
        for mid in sorted(lost & set(self.minions)):
            self._remove(mid, change)
        for mid in sorted(present):
            if mid not in self.minions:
                self.minions[mid] = {}
                change.minions[mid] = self.minion_entry(mid)
            # Ask once per appearance for the grains of a connected minion that
            # has none (new, or re-added by its key being accepted).
            if "grains" not in self.minions[mid] and mid not in self._grains_asked:
                self._grains_asked.add(mid)
                change.needs_grains.append(mid)

    def _remove(self, mid: str, change: Change) -> None:
        del self.minions[mid]
        self._grains_asked.discard(mid)
        change.minions[mid] = None


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


def _frame(message: Mapping[str, Any]) -> bytes:
    return text_frame(dumps(message).encode("utf-8"))


class FormattedStream:
    """One shared :class:`FormattedView` and its two subscriber sets (full, delta)."""

    def __init__(self, view: FormattedView | None = None) -> None:
        self.view = view or FormattedView()
        self.full = Broadcast(StreamKind.FORMATTED_EVENTS)
        self.delta = Broadcast(StreamKind.FORMATTED_EVENTS)
        self._tokens: dict[Outbox, str] = {}  # subscriber → its token, newest last

    def __len__(self) -> int:
        return len(self._tokens)

    def snapshot(self) -> list[bytes]:
        """The whole view, as sent to a client that has just become ready."""
        return [_frame(self.view.minions_message()), _frame(self.view.jobs_message())]

    def attach(self, outbox: Outbox, token: str, delta: bool) -> list[SaltCall]:
        """Send ``outbox`` the view, subscribe it, and ask Salt for every minion's
        grains with the client's own token (so Salt's ACLs decide)."""
        for frame in self.snapshot():
            outbox.offer(frame)
        (self.delta if delta else self.full).subscribe(outbox)
        self._tokens[outbox] = token
        return [PublishGrains(None, token)]

    def detach(self, outbox: Outbox) -> None:
        self.full.unsubscribe(outbox)
        self.delta.unsubscribe(outbox)
        self._tokens.pop(outbox, None)

    def dispatch(self, event: SaltEvent, now: float) -> list[SaltCall]:
        change = self.view.feed(event, now)
        if not change:
            return []
        if change.minions:
            if self.full:
                self.full.publish(_frame(self.view.minions_message()))
            if self.delta:
                self.delta.publish(_frame({"minions": change.minions}))
        if change.jobs:
            if self.full:
                self.full.publish(_frame(self.view.jobs_message()))
            if self.delta:
                self.delta.publish(_frame({"jobs": change.jobs}))
        if change.needs_grains and self._tokens:
            # Presence found new minions: refresh their grains with the token of
            # the most recent client (the reference uses its own client's).
            token = next(reversed(self._tokens.values()))
            return [PublishGrains(tuple(change.needs_grains), token)]
        return []
