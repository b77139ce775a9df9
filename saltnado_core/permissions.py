"""Who may read the event bus: a rule over the auth list Salt computes for a token.

The event bus carries every job's arguments and returns, runner and wheel
output and key events, so ``/events``, ``/all_events`` and ``/formatted_events``
are not for every user who can log in (Salt's own stream endpoints have no
such rule; see saltstack/salt#59056). A token may read the event bus when its
auth list — ``LoadAuth.get_auth_list`` for the token, i.e. the user's, its
groups' and ``*``'s ``external_auth`` entries, or an eauth module's ACL — holds

* ``@events``, the permission to watch events and nothing else, or
* a catch-all for the master's minions: the function pattern ``.*`` alone, or
  under the target ``*`` (``{'*': ['.*']}``). Such a user can run anything on
  every minion, so seeing every return tells them nothing they could not get.

Salt itself reads ``@events`` only as "the runner or wheel module named
``events``" (``CkMinions.spec_check``); Salt ships no module of that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EVENTS_PERMISSION = "@events"
CATCH_ALL_FUNCTIONS = ".*"
ALL_MINIONS = "*"
EVENTS_FORBIDDEN = (
    "your eauth permissions do not allow reading the event bus: "
    f"it needs '{EVENTS_PERMISSION}' or '{CATCH_ALL_FUNCTIONS}' in your external_auth entry"
)


def may_read_events(auth_list: Any) -> bool:
    """True if ``auth_list`` (Salt's list of permission entries, or None when the
    user's eauth is not configured) allows reading the event bus."""
    if not isinstance(auth_list, list):
        return False
    return any(_grants_events(entry) for entry in auth_list)


def _grants_events(entry: Any) -> bool:
    if entry in (EVENTS_PERMISSION, CATCH_ALL_FUNCTIONS):
        return True
    if isinstance(entry, Mapping) and len(entry) == 1:
        target, functions = next(iter(entry.items()))
        if target == ALL_MINIONS:
            if functions == CATCH_ALL_FUNCTIONS:
                return True
            return isinstance(functions, list) and CATCH_ALL_FUNCTIONS in functions
    return False
