"""Which block of a master config is served, and a ``rest_cherrypy:`` block read as saltnado's.

A master written for salt-api has a ``rest_tornado:`` block, a ``rest_cherrypy:``
block, or both. :func:`read_block` picks one (the one asked for; else the only
one; else ``rest_tornado:``, with a notice) and hands :meth:`Settings.from_opts
<saltnado_core.config.Settings.from_opts>` a :class:`Block`: the keys saltnado
reads, whatever the block called them. A ``rest_cherrypy:`` block goes through
:data:`CHERRYPY_KEYS`, one row per rest_cherrypy key: kept as is, renamed to
saltnado's key, refused (the server does not start, and the message says why),
or obsolete (a warning). Keys not in the table are saltnado's own (limits,
``websockets``, ``cors_origin`` …) and are read as in a ``rest_tornado:`` block,
so one validator serves both and every error names the key as the operator wrote it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class Dialect(str, enum.Enum):
    """Which of Salt's API servers a master's config was written for: the name of
    the block read (``rest_tornado:`` or ``rest_cherrypy:``). Where the two servers
    answer differently, a handler answers as the one its clients expect."""

    TORNADO = "rest_tornado"
    CHERRYPY = "rest_cherrypy"


class ConfigError(ValueError):
    """The configuration cannot be served; the message says what to change."""


class Treatment(enum.Enum):
    """What becomes of one rest_cherrypy key."""

    SAME = "same"  # saltnado reads the key under the same name and meaning
    RENAMED = "renamed"  # saltnado reads it under another name (``host`` → ``address``)
    REFUSED = "refused"  # set, the server does not start: saltnado cannot do what it asks
    OBSOLETE = "obsolete"  # set, a warning: it changes nothing on any current server


@dataclass(frozen=True, slots=True)
class Key:
    treatment: Treatment
    target: str = ""  # RENAMED: saltnado's key
    why: str = ""  # REFUSED / OBSOLETE: the reason, shown to the operator


SAME = Key(Treatment.SAME)

# Every key rest_cherrypy reads (salt/netapi/rest_cherrypy/app.py ``get_conf`` and
# its tools, ``__init__.py`` ``start``), and what saltnado makes of it.
CHERRYPY_KEYS: Mapping[str, Key] = {
    "port": SAME,
    "host": Key(Treatment.RENAMED, "address"),
    "ssl_crt": SAME,
    "ssl_key": SAME,
    "ssl_chain": Key(
        Treatment.REFUSED,
        why="saltnado reads the intermediate certificates from ssl_crt: append the chain file to the "
        "certificate file (cat cert.pem chain.pem > full.pem; ssl_crt: full.pem) and remove ssl_chain",
    ),
    "disable_ssl": SAME,
    "debug": SAME,
    "webhook_disable_auth": SAME,
    "webhook_url": SAME,
    "thread_pool": Key(Treatment.RENAMED, "salt_threads"),
    "queue_size": Key(Treatment.RENAMED, "backlog"),  # what the code reads
    "socket_queue_size": Key(Treatment.RENAMED, "backlog"),  # what the docs say
    "max_request_body_size": Key(Treatment.RENAMED, "max_body_bytes"),
    # /stats: read as saltnado's keys of the same names where this build knows them
    "collect_stats": SAME,
    "stats_disable_auth": SAME,
    "static": SAME,
    "static_path": SAME,
    "app": SAME,
    "app_path": SAME,
    "root_prefix": SAME,
    "enable_sessions": SAME,
    "favicon": SAME,
    "api_acl": SAME,
    "authorized_ips": SAME,
    "log_access_file": SAME,
    "log_error_file": SAME,
    "expire_responses": Key(
        Treatment.OBSOLETE,
        why="it only switched CherryPy's timeout monitor, gone since CherryPy 12; saltnado's "
        "header_timeout and keepalive_timeout bound slow clients",
    ),
}

# rest_cherrypy's defaults where saltnado's differ (rest_cherrypy listens on every IPv4
# address and runs up to 100 requests at once)
CHERRYPY_DEFAULTS: Mapping[str, Any] = {"address": "0.0.0.0", "salt_threads": 100}


@dataclass(frozen=True)
class Block(Mapping[str, Any]):
    """The served block as saltnado's keys → values, and how to name each key in a
    message: ``block.where("max_body_bytes")`` is ``'rest_cherrypy: max_request_body_size'``
    when that is what the operator wrote."""

    dialect: Dialect
    content: Mapping[str, Any]  # saltnado key → value
    written: Mapping[str, str] = field(default_factory=dict)  # saltnado key → the key as written

    def __getitem__(self, key: str) -> Any:
        return self.content[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.content)

    def __len__(self) -> int:
        return len(self.content)

    def where(self, key: str) -> str:
        """``'<block>: <key as written>'``, for a message."""
        return f"'{self.dialect.value}: {self.written.get(key, key)}'"


def chosen_dialect(opts: Mapping[str, Any], asked: Dialect | str | None = None) -> Dialect:
    """The block to serve: ``asked`` (``--api-block``), else the only block there is,
    else ``rest_tornado:``. Raises :class:`ConfigError` if that block is missing."""
    if asked is not None:
        dialect = Dialect(asked)
        if not isinstance(opts.get(dialect.value), Mapping):
            raise ConfigError(f"the master config has no '{dialect.value}:' block")
        return dialect
    present = [dialect for dialect in Dialect if isinstance(opts.get(dialect.value), Mapping)]
    if not present:
        raise ConfigError("the master config has no 'rest_tornado:' (or 'rest_cherrypy:') block")
    return present[0]  # Dialect lists rest_tornado first


def block_notices(opts: Mapping[str, Any], asked: Dialect | str | None = None) -> list[str]:
    """What the operator should know about the choice of block (both present, none asked)."""
    if asked is None and all(isinstance(opts.get(dialect.value), Mapping) for dialect in Dialect):
        return [
            "the master config has both 'rest_tornado:' and 'rest_cherrypy:' blocks: serving rest_tornado "
            "(--api-block rest_cherrypy serves the other)"
        ]
    return []


def read_block(opts: Mapping[str, Any], asked: Dialect | str | None = None) -> Block:
    """The block to serve, as saltnado's keys; raises :class:`ConfigError` for a missing
    block, a refused rest_cherrypy key, or two keys that mean the same thing."""
    dialect = chosen_dialect(opts, asked)
    raw: Mapping[str, Any] = opts[dialect.value]
    if dialect is Dialect.TORNADO:
        return Block(dialect, dict(raw))
    values: dict[str, Any] = {}
    written: dict[str, str] = {}
    for name, value in raw.items():
        key = CHERRYPY_KEYS.get(str(name), SAME)
        if key.treatment is Treatment.REFUSED:
            raise ConfigError(f"'{dialect.value}: {name}' is not supported: {key.why}")
        if key.treatment is Treatment.OBSOLETE:
            continue  # cherrypy_warnings() says so
        target = key.target or str(name)
        if target in values:
            raise ConfigError(
                f"'{dialect.value}: {written.get(target, target)}' and '{name}' both set {target}: keep one"
            )
        values[target] = value
        if target != name:
            written[target] = str(name)
    for target, default in CHERRYPY_DEFAULTS.items():
        values.setdefault(target, default)
    return Block(dialect, values, written)


def cherrypy_warnings(raw: Mapping[str, Any]) -> list[str]:
    """One warning per obsolete key set in a ``rest_cherrypy:`` block."""
    return [
        f"'rest_cherrypy: {name}' is obsolete and ignored: {CHERRYPY_KEYS[name].why}"
        for name in sorted(str(name) for name in raw)
        if name in CHERRYPY_KEYS and CHERRYPY_KEYS[name].treatment is Treatment.OBSOLETE
    ]
