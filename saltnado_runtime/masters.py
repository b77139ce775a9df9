"""The masters a node sends commands to: each one's Salt bridge and whether it is up.

:mod:`saltnado_core.masters` decides which master a call goes to (its ``master``
field: a name, or None for the default); here that name finds the master's
:class:`~saltnado_salt.SaltBridge` (its own options: token store, eauth,
request channel, event bus) and its health:

* a master whose ``sock_dir`` is the loaded config's is the one whose events are
  streamed: the event-bus link (:class:`~saltnado_core.buslink.EventBusLink`)
  says whether it is up, as it always has;
* any other master is watched by a :class:`~saltnado_core.liveness.MasterLiveness`
  over a connection to its own event bus, which :func:`watch_master` keeps.

A node with no master for commands still has the loaded config's bridge: stream
token checks (and the grains the formatted view asks for) run on it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from saltnado_core import ConfigError, Settings
from saltnado_core.buslink import EventBusLink
from saltnado_core.liveness import MasterLiveness
from saltnado_core.outcomes import Health
from saltnado_core.pacing import Pacing
from saltnado_salt import SaltBridge, load_master_opts

if TYPE_CHECKING:
    from .feed import BusSocket

MasterLoader = Callable[[str], Mapping[str, Any]]


def load_command_masters(
    settings: Settings, master_opts: Mapping[str, Any], load: MasterLoader = load_master_opts
) -> dict[str, Mapping[str, Any]]:
    """Each named master's options (``masters:``), read from its config file (the
    loaded config's own are reused); raises :class:`ConfigError` for a file that is
    missing or a master whose ``hash_type`` is not the loaded config's (tokens of
    one shape are checked before any master sees them)."""
    if settings.masters is None:
        return {}
    loaded = master_opts.get("conf_file")
    found: dict[str, Mapping[str, Any]] = {}
    for name, path in settings.masters.items():
        same = loaded is not None and os.path.realpath(path) == os.path.realpath(str(loaded))
        try:
            opts = master_opts if same else load(path)
        except ConfigError as exc:
            raise ConfigError(f"'{settings.dialect.value}: masters' {name}: {exc}") from None
        hash_type = str(opts.get("hash_type") or "sha256")
        if hash_type != settings.hash_type:
            raise ConfigError(
                f"'{settings.dialect.value}: masters' {name}: hash_type {hash_type} differs from the loaded "
                f"config's {settings.hash_type}: every master must make tokens of one shape"
            )
        found[name] = opts
    return found


class CommandMasters:
    """The bridges and health of the masters ``settings`` names, plus the loaded
    config's bridge (:attr:`stream_bridge`). ``settings`` comes back with each
    master's ``external_auth`` (:attr:`settings`)."""

    def __init__(
        self,
        settings: Settings,
        master_opts: Mapping[str, Any],
        link: EventBusLink,
        pacing: Pacing = Pacing(),
        on_salt_loaded: Callable[[], None] = lambda: None,
        load: MasterLoader = load_master_opts,
    ) -> None:
        self.link = link
        self.stream_bridge = SaltBridge(master_opts, on_salt_loaded=on_salt_loaded)
        self.bridges: dict[str, SaltBridge] = {}
        self.watched: dict[str, MasterLiveness] = {}  # masters with a bus connection of their own
        self.named = settings.masters is not None  # a 503 names the master only then
        options = load_command_masters(settings, master_opts, load)
        for name, opts in options.items():
            if os.path.realpath(str(opts.get("sock_dir"))) == os.path.realpath(settings.sock_dir):
                self.bridges[name] = self.stream_bridge  # the master whose events are streamed
            else:
                self.bridges[name] = SaltBridge(opts, on_salt_loaded=on_salt_loaded)
                self.watched[name] = MasterLiveness(name, str(opts["sock_dir"]), pacing)
        if settings.masters is None and settings.commands:
            self.bridges[settings.default_command_master or ""] = self.stream_bridge
        self.settings = dataclasses.replace(
            settings, master_external_auth={name: dict(opts.get("external_auth") or {}) for name, opts in options.items()}
        )
        self.default = self.settings.default_command_master

    def name(self, master: str | None) -> str | None:
        """The master a call's ``master`` means (None → the default; None again on a node without one)."""
        return master if master is not None else self.default

    def bridge(self, master: str | None) -> SaltBridge:
        name = self.name(master)
        return self.bridges[name] if name is not None else self.stream_bridge

    def available(self, master: str | None) -> bool:
        name = self.name(master)
        watched = self.watched.get(name) if name is not None else None
        return watched.master_available if watched is not None else self.link.master_available

    def shown(self, master: str | None) -> str | None:
        """The name a 503 shows for ``master`` (None when the node has one unnamed master)."""
        return self.name(master) if self.named else None

    def health(self) -> Health:
        """``GET /health``: the event-bus link's state (the streams and the master they
        follow); masters that are down are named, and make it 503 when one is the default."""
        state = self.link.health()
        down = [name for name, watched in self.watched.items() if not watched.master_available]
        if not down:
            return state
        ok = state.ok and self.default not in down
        return Health(ok, f"{state.reason}; master(s) down: {', '.join(down)} (commands to them get 503)")

    def tick(self, now: float) -> None:
        for watched in self.watched.values():
            watched.tick(now)


async def watch_master(
    liveness: MasterLiveness,
    connect: Callable[[str], Awaitable[BusSocket]],
    sleep: Callable[[float], Awaitable[object]],
    changed: Callable[[], None],
    read_bytes: int,
) -> None:
    """Stay connected to one master's event bus until cancelled, only to know it is
    up (the bytes are read and dropped); ``changed()`` after every report."""
    while True:
        try:
            bus = await connect(liveness.path)
        except OSError as exc:
            delay = liveness.unavailable(exc, time.time())
            changed()
            await sleep(delay)
            continue
        liveness.connected(time.time())
        changed()
        error: BaseException | None = None
        try:
            while await bus.receive(read_bytes):
                if not liveness.master_available:
                    liveness.received(time.time())
                    changed()
        except OSError as exc:
            error = exc
        finally:
            await bus.aclose()
        liveness.lost(error, time.time())
        changed()
