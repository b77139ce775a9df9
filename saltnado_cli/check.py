"""``saltnado check-config``: what ``serve`` would make of a master config, without serving.

The settings come from the very code ``serve`` runs (:func:`load_settings`:
``Settings.from_opts``, then the TLS files loaded by ``load_ssl_context``), so a
config this passes is one ``serve`` starts with.
"""

from __future__ import annotations

from typing import Any, TextIO

from saltnado_core import ConfigError, Settings
from saltnado_core.config import Dialect, block_values, unknown_key_warnings
from saltnado_core.kinds import StreamKind, TokenPlace, Transport
from saltnado_runtime.files import static_warnings
from saltnado_runtime.logs import check_log_files
from saltnado_runtime.masters import load_command_masters
from saltnado_runtime.tls import load_ssl_context
from saltnado_salt import load_master_opts

# Shown on lines of their own by describe(), not among the settings that differ
_LISTENING = (
    "port", "address", "disable_ssl", "ssl_crt", "ssl_key", "websockets", "masters", "default_master", "commands",
)


def load_settings(path: str, api_block: str | None = None) -> tuple[dict[str, Any], Settings]:
    """The master options at ``path`` and the settings ``serve`` would use (from the
    ``api_block`` block: ``rest_tornado`` or ``rest_cherrypy``; None: as
    :meth:`Settings.from_opts` chooses); raises :class:`ConfigError` naming the key
    (or file) at fault."""
    opts = load_master_opts(path)
    settings = Settings.from_opts(opts, api_block)
    load_ssl_context(settings)  # unreadable certificate or key: say so before serving
    load_command_masters(settings, opts)  # every master's config file readable, tokens of one shape
    return opts, settings


def describe(settings: Settings) -> list[str]:
    """What would be served: where, TLS or not, which event streams, and every setting that
    differs from its default."""
    scheme = "http" if settings.disable_ssl else "https"
    lines = [] if settings.dialect is Dialect.TORNADO else [f"reads the '{settings.dialect.value}:' block"]
    lines.append(f"serves {scheme}://{settings.address or '*'}:{settings.port}{settings.root_prefix}")
    if settings.disable_ssl:
        lines.append("TLS: off (disable_ssl)")
    else:
        lines.append(f"TLS: ssl_crt {settings.ssl_crt}" + (f", ssl_key {settings.ssl_key}" if settings.ssl_key else ""))
    lines += stream_lines(settings)
    lines.append(commands_line(settings))
    ours, defaults = block_values(settings), block_values(Settings())
    changed = [key for key in sorted(ours) if key not in _LISTENING and ours[key] != defaults[key]]
    lines.append("settings that differ from the defaults:" if changed else "every other setting: its default")
    lines += [f"  {key}: {ours[key]!r} (default {defaults[key]!r})" for key in changed]
    return lines


def commands_line(settings: Settings) -> str:
    """Where commands go: the masters by name (the default first), the loaded one, or none."""
    if not settings.commands:
        return "commands: none (commands: false): this node serves events only, command endpoints answer 503"
    if settings.masters is None:
        return "commands: the master of this config (one master: no masters:)"
    named = [f"{name} ({path})" for name, path in settings.masters.items() if name == settings.default_master]
    named += [f"{name} ({path})" for name, path in settings.masters.items() if name != settings.default_master]
    return f"commands: masters {named[0]} [default]" + "".join(f", {entry}" for entry in named[1:])


def stream_path(kind: StreamKind, root_prefix: str) -> str:
    """Where a client opens ``kind``: ``/api/ws/<token>``, ``/events``."""
    token = "" if kind.token_place is TokenPlace.HEADER else "/<token>"
    return f"{root_prefix}/{kind.route}{token}"


def stream_lines(settings: Settings) -> list[str]:
    """The event streams ``serve`` would answer, at their paths (``root_prefix``
    included), read off the routes it would build — under a ``rest_cherrypy:``
    block ``/ws`` is served whatever ``websockets`` says — and those
    ``websockets: False`` leaves out."""
    names = settings.router().names
    kinds = [kind for kind in StreamKind if kind.routed]
    shown = {Transport.SSE: "SSE", Transport.WEBSOCKET: "websocket"}
    served = [f"{stream_path(kind, settings.root_prefix)} ({shown[kind.transport]})"
              for kind in kinds if kind.value in names]
    lines = [f"event streams: {', '.join(served)}"]
    missing = [stream_path(kind, settings.root_prefix) for kind in kinds if kind.value not in names]
    if missing:
        lines.append(f"not served (websockets: False): {', '.join(missing)}")
    return lines


def check_config(path: str, out: TextIO, err: TextIO, api_block: str | None = None) -> int:
    """Validate the config at ``path`` (its ``api_block`` block, as ``serve`` would
    choose it): 0 when ``serve`` would start with it (warnings allowed), 2 on an
    error; the report goes to ``out``, problems to ``err``."""
    log_warnings: list[str] = []
    try:
        opts, settings = load_settings(path, api_block)
        check_log_files(settings)
        if settings.event_log is not None:
            from saltnado_runtime.eventlog import event_log_problems

            errors, log_warnings = event_log_problems(settings.event_log)
            if errors:
                raise ConfigError(errors[0])
    except ConfigError as exc:
        print(f"saltnado: error: {exc}", file=err)
        return 2
    for warning in unknown_key_warnings(opts, api_block) + static_warnings(settings) + log_warnings:
        print(f"saltnado: warning: {warning}", file=err)
    print(f"{path}: valid", file=out)
    for line in describe(settings):
        print(f"  {line}", file=out)
    return 0
