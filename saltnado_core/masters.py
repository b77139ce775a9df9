"""Which master a command goes to, on a node that serves several (or none).

The API block's ``masters:`` maps names to master config files and
``default_master:`` names the one a request that names none goes to; without
``masters:`` the node serves the one master whose config was loaded, named
:data:`~saltnado_core.config.IMPLICIT_MASTER`; with ``commands: false`` it serves
none (events only: the command endpoints answer 503, the streams still work).

A request chooses per request or per lowstate chunk:

* the ``X-Salt-Master: <name>`` header, for the whole request (its token is
  checked with that master's token store: a token belongs to the master that
  issued it);
* a chunk's ``master: <name>`` key, for that chunk alone (removed before Salt
  sees it; the chunk's token is then checked by that master's Salt when it runs).

An unknown name is a 400 naming the known ones, the name sent shown escaped and
cut short. Every Salt call a handler yields carries the name it chose
(``master``, None for the default), and the runtime runs it on that master.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import MASTER_NAME, Settings
from .http import HTTPError, Request
from .tokens import redact_tokens

MASTER_HEADER = "x-salt-master"
MASTER_KEY = "master"  # a lowstate chunk's key naming its master
MASTERS_PARAM = "masters"  # GET /?masters=1: the masters listed beside the clients

NO_MASTER = "this node serves events only: no master is configured for commands"
_SHOWN = 64  # characters of an unknown name quoted back at most


def no_master_error() -> HTTPError:
    """503 on a node with no master for commands (``commands: false``)."""
    return HTTPError(503, NO_MASTER)


def unknown_master(name: Any, settings: Settings) -> HTTPError:
    """400 naming the masters this node knows; ``name`` (client input) quoted with
    ``ascii()`` (no raw control character or newline), cut short, tokens masked."""
    text = name if isinstance(name, str) else repr(name)
    shown = ascii(redact_tokens(text[:_SHOWN])) + ("…" if len(text) > _SHOWN else "")
    known = ", ".join(settings.command_masters)
    return HTTPError(400, f"unknown Salt master {shown}; this node knows: {known}")


def checked_master(name: Any, settings: Settings) -> str:
    """``name`` if it is one of the command masters; else 400 (503: there are none)."""
    if not settings.command_masters:
        raise no_master_error()
    if not isinstance(name, str) or not MASTER_NAME.fullmatch(name) or name not in settings.command_masters:
        raise unknown_master(name, settings)
    return name


def request_master(request: Request, settings: Settings) -> str | None:
    """The master a command request goes to: its ``X-Salt-Master`` header's name,
    or None (the default master). 503 when the node has no master for commands,
    400 for a name it does not know or for two different names."""
    if not settings.command_masters:
        raise no_master_error()
    names = {value.strip() for key, value in request.headers if key == MASTER_HEADER}
    if not names:
        return None
    if len(names) > 1:
        raise HTTPError(400, "send one X-Salt-Master header (or several naming the same master)")
    return checked_master(names.pop(), settings)


def chunk_masters(
    chunks: Sequence[dict[str, Any]], settings: Settings, default: str | None
) -> list[str | None]:
    """Each chunk's master — its ``master`` key, which is removed, else ``default``
    — checked for every chunk before any runs (400 names the first unknown one)."""
    chosen: list[str | None] = []
    for chunk in chunks:
        if MASTER_KEY in chunk:
            chosen.append(checked_master(chunk.pop(MASTER_KEY), settings))
        else:
            chosen.append(default)
    return chosen


def masters_listing(settings: Settings) -> Mapping[str, Any]:
    """``GET /?masters=1``'s addition to the reference's answer: the masters a
    command may name and the default one (``[]`` and None on a node without one)."""
    return {"masters": list(settings.command_masters), "default_master": settings.default_command_master}
