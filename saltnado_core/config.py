"""Server settings, read from a Salt master's options the way salt-api reads them.

The binding loads the master config (``salt.config.api_config``/``master_config``)
and hands the resulting mapping to :meth:`Settings.from_opts`; this module only
interprets it. Every limit has a default here, so both bindings enforce the same
numbers.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .access import Addresses, ApiAcl, entries, parse_addresses
from .blocks import CHERRYPY_KEYS, Block, ConfigError, Dialect, block_notices, cherrypy_warnings, read_block
from .bounded import Overflow, SlowClientPolicy
from .eventlog import EventLogSettings
from .formatted import MAX_JOB_MINIONS, MAX_JOBS, MAX_RETURN_BYTES, MAX_VIEW_BYTES, SNAPSHOT_SLACK
from .kinds import CloseCode
from .router import Router

DEFAULT_HASH_TYPE = "sha256"
DEFAULT_SOCK_DIR = "/var/run/salt/master"

# Clients saltnado can dispatch to. Salt (since 3006) refuses any netapi client
# not listed in the master's ``netapi_enable_clients``.
SUPPORTED_CLIENTS = ("local", "local_async", "runner", "runner_async", "wheel", "wheel_async")

FAVICON_PATH = "/favicon.ico"  # where rest_cherrypy serves its favicon key

# The name of the one master a node serves when its block has no ``masters:`` (the
# master whose config was loaded): what ``X-Salt-Master`` and a chunk's ``master`` may name
IMPLICIT_MASTER = "default"
# A master's name, as ``masters:`` keys, ``X-Salt-Master`` and chunks' ``master`` spell it
MASTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# RFC 9110 §5.1: field-name = token; §5.6.2: token = 1*tchar
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The headers that carry saltnado's own session token: webhook_headers may not list them
# (every subscriber of the event bus would see the token).
SESSION_HEADERS = ("x-auth-token", "cookie")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a client may keep the server waiting, in seconds; 0 turns one off.

    Each field is a ``rest_tornado:`` key. Streaming clients (``/events``, and
    websockets once ready) are never cut by the HTTP timeouts; a websocket is
    pinged instead.
    """

    handshake_timeout: float = 10.0  # accept → TLS handshake and first request in full;
    #                                  101 → "websocket client ready" (close 1008)
    header_timeout: float = 10.0  # a request's first byte → its head and body in full (408)
    keepalive_timeout: float = 60.0  # a response sent → the next request's first byte (closed)
    ws_ping_interval: float = 20.0  # a streaming websocket is pinged this often …
    ws_pong_timeout: float = 20.0  # … and closed 1011 if it sends no frame but pings for this long after
    # SIGTERM/SIGINT (Server.shutdown): requests being answered get this long to
    # finish (then 503), websockets closed 1001 this long to answer the close
    shutdown_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on everything a peer can make the server buffer, or hold."""

    max_header_bytes: int = 16 * 1024  # request line + headers → 431 above this
    max_header_count: int = 100  # header fields in one request → 431 above this
    max_body_bytes: int = 1024 * 1024  # request body → 413 above this
    max_ws_message_bytes: int = 64 * 1024  # incoming websocket message → close 1009
    max_ws_pings_per_second: int = 10  # pings a websocket client may send (bursts of as many) → close 1008
    outbox_max_messages: int = 10_000  # per streaming subscriber
    outbox_max_bytes: int = 16 * 1024 * 1024  # per streaming subscriber
    max_event_bytes: int = 16 * 1024 * 1024  # one event-bus message (Salt's own cap is 1 MiB)
    write_chunk_bytes: int = 256 * 1024  # at most this much is coalesced into one send
    # open client connections, streaming ones included; the next one gets 503
    max_connections: int = 15_000
    # what a streaming client whose outbox is full gets (slow_client_* keys)
    overflow: Overflow = Overflow()
    timeouts: Timeouts = Timeouts()  # the *_timeout and ws_ping_interval keys


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the core and the bindings need to serve one master."""

    dialect: Dialect = Dialect.TORNADO  # the block the settings were read from
    port: int = 8000
    address: str | None = None
    disable_ssl: bool = False
    ssl_crt: str | None = None
    ssl_key: str | None = None
    websockets: bool = False
    debug: bool = False
    cors_origin: str | list[str] | None = None
    sock_dir: str = DEFAULT_SOCK_DIR
    hash_type: str = DEFAULT_HASH_TYPE
    external_auth: Mapping[str, Any] = field(default_factory=dict)
    netapi_enable_clients: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    webhook_disable_auth: bool = False
    # the only request headers (lower-cased) a /hook event carries; None: all but the
    # credential-like ones (saltnado_core.rest.hook_may_carry)
    webhook_headers: tuple[str, ...] | None = None
    formatted_max_jobs: int = MAX_JOBS  # /formatted_events keeps at most this many jobs
    formatted_max_job_age: float | None = None  # … and, if set, none older (seconds)
    formatted_max_view_bytes: int = MAX_VIEW_BYTES  # … and JSON for a new client's first view
    formatted_max_return_bytes: int = MAX_RETURN_BYTES  # a larger return (or grains): a marker
    formatted_max_job_minions: int = MAX_JOB_MINIONS  # minions shown per job, the rest counted
    num_processes: int = 1  # server processes sharing the port; <= 0: one per CPU
    # GET /metrics and GET /stats answer without a token (for a scraper on a trusted network)
    metrics_disable_auth: bool = False
    stats_disable_auth: bool = False  # rest_cherrypy's key
    # rest_cherrypy's key (CherryPy's own statistics there); saltnado always counts,
    # so it changes nothing: accepted so a rest_cherrypy block's value is not a warning
    collect_stats: bool = False
    # Web apps, as rest_cherrypy serves them (saltnado_core.static): an HTML file at
    # app_path and every path under it, a directory at static_path, a favicon …
    app: str | None = None
    app_path: str = "/app"
    static: str | None = None
    static_path: str = "/static"
    favicon: str | None = None  # … at /favicon.ico
    dashboard: bool = False  # saltnado's own page, at dashboard_path
    dashboard_path: str = "/dashboard"
    static_max_file_bytes: int = 16 * 1024 * 1024  # a larger file is not served (404 saying so)
    # file contents kept in memory, shared by every client downloading them
    static_cache_bytes: int = 64 * 1024 * 1024
    # events kept for clients resuming a stream (?ids=1, Last-Event-ID); 0: none
    event_history_max_events: int = 1000
    event_history_max_bytes: int = 4 * 1024 * 1024  # of their JSON; at most outbox_max_bytes
    # rest_cherrypy's keys, read in either block (saltnado_core.blocks)
    webhook_url: str = "/hook"  # the hook's path (and every path under it)
    root_prefix: str = ""  # the whole API and its web apps under this path ("": at /)
    enable_sessions: bool = True  # False: no /login, /logout, /minions, /jobs (404)
    api_acl: ApiAcl | None = None  # who may log in from where (saltnado_core.access)
    authorized_ips: Addresses | None = None  # None: every client; else others get 403 "Bad IP"
    log_access_file: str | None = None  # the access log, also written to this file
    log_error_file: str | None = None  # warnings and errors, also written to this file
    salt_threads: int = 8  # worker threads for Salt calls (rest_cherrypy's thread_pool)
    backlog: int | None = None  # the listening socket's queue (None: the event loop's default)
    # The masters commands go to (saltnado_core.masters): name → its master config file;
    # None (no ``masters:`` key): the one master whose config was loaded, IMPLICIT_MASTER
    masters: Mapping[str, str] | None = None
    default_master: str | None = None  # the one a request names none goes to (set with masters)
    commands: bool = True  # False: no master for commands (a node that serves events only)
    # each named master's external_auth (its config's), filled in by the runtime when it
    # loads them: /login's "perms" as the chosen master's config lists them
    master_external_auth: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # several masters and nodes on NATS JetStream (saltnado_core.eventlog); None: none
    event_log: EventLogSettings | None = None

    @property
    def token_length(self) -> int:
        """Hex digest length of ``hash_type``: the only token shape the master makes."""
        return len(hashlib.new(self.hash_type).hexdigest())

    @property
    def command_masters(self) -> tuple[str, ...]:
        """The names of the masters commands may go to; empty: none (``commands: false``)."""
        if not self.commands:
            return ()
        return tuple(self.masters) if self.masters is not None else (IMPLICIT_MASTER,)

    @property
    def default_command_master(self) -> str | None:
        """The master a request that names none goes to; None when there is no master."""
        if not self.commands:
            return None
        return self.default_master if self.masters is not None else IMPLICIT_MASTER

    def external_auth_of(self, master: str | None) -> Mapping[str, Any]:
        """``external_auth`` of ``master`` (None: the default), as its config says."""
        name = master if master is not None else self.default_master
        if name is not None and name in self.master_external_auth:
            return self.master_external_auth[name]
        return self.external_auth

    @property
    def enabled_clients(self) -> tuple[str, ...]:
        """Supported clients that the master's ``netapi_enable_clients`` allows."""
        return tuple(c for c in SUPPORTED_CLIENTS if c in self.netapi_enable_clients)

    @classmethod
    def from_opts(cls, opts: Mapping[str, Any], api_block: Dialect | str | None = None) -> Settings:
        """Build settings from master options holding a ``rest_tornado:`` or a
        ``rest_cherrypy:`` block (``api_block`` names the one to read; by default
        the only one, or ``rest_tornado:`` when both are there: see
        :mod:`saltnado_core.blocks`).

        Raises :class:`ConfigError` when the block is missing, malformed, or asks
        for TLS without a certificate (salt-api refuses to start in that case too);
        the message names the key as the block spells it.
        """
        block = read_block(opts, api_block)
        if "port" not in block:
            raise ConfigError(f"{block.where('port')} is required")
        port = _int(block, "port")
        if not 0 <= port <= 65535:
            raise ConfigError(f"{block.where('port')} must be 0-65535, got {port}")
        disable_ssl = _bool(block, "disable_ssl")
        ssl_crt = block.get("ssl_crt")
        if not disable_ssl and not ssl_crt:
            raise ConfigError(
                f"TLS is enabled but {block.where('ssl_crt')} is not set; "
                "set ssl_crt (and ssl_key) or 'disable_ssl: True'"
            )
        hash_type = str(opts.get("hash_type") or DEFAULT_HASH_TYPE)
        try:
            hashlib.new(hash_type).hexdigest()  # shake_* construct but have no fixed digest
        except (ValueError, TypeError):
            raise ConfigError(f"unknown hash_type {hash_type!r}") from None
        defaults = Limits()
        limits = Limits(
            **{
                name: _positive_int(block, name, getattr(defaults, name))
                for name in Limits.__dataclass_fields__
                if name not in ("overflow", "timeouts")
            },
            overflow=_overflow(block),
            timeouts=_timeouts(block),
        )
        cors = block.get("cors_origin")
        backlog = block.get("backlog")
        masters, default_master, commands = _masters(block)
        return cls(
            dialect=block.dialect,
            port=port,
            address=block.get("address") or None,
            disable_ssl=disable_ssl,
            ssl_crt=ssl_crt or None,
            ssl_key=block.get("ssl_key") or None,
            websockets=bool(block.get("websockets", False)),
            debug=bool(block.get("debug", False)),
            cors_origin=list(cors) if isinstance(cors, (list, tuple)) else cors,
            sock_dir=str(opts.get("sock_dir") or DEFAULT_SOCK_DIR),
            hash_type=hash_type,
            external_auth=dict(opts.get("external_auth") or {}),
            netapi_enable_clients=tuple(opts.get("netapi_enable_clients") or ()),
            limits=limits,
            webhook_disable_auth=bool(block.get("webhook_disable_auth", False)),
            webhook_headers=_webhook_headers(block),
            formatted_max_jobs=_int(block, "formatted_max_jobs", MAX_JOBS),
            formatted_max_job_age=float(_int(block, "formatted_max_job_age", 0)) or None,
            formatted_max_view_bytes=_view_bytes(block, limits),
            formatted_max_return_bytes=_positive_int(block, "formatted_max_return_bytes", MAX_RETURN_BYTES),
            formatted_max_job_minions=_positive_int(block, "formatted_max_job_minions", MAX_JOB_MINIONS),
            num_processes=_int(block, "num_processes", 1),
            metrics_disable_auth=_bool(block, "metrics_disable_auth"),
            stats_disable_auth=_bool(block, "stats_disable_auth"),
            collect_stats=_bool(block, "collect_stats"),
            app=_file_path(block, "app"),
            app_path=_url_prefix(block, "app_path", "/app"),
            static=_file_path(block, "static"),
            static_path=_url_prefix(block, "static_path", "/static"),
            favicon=_file_path(block, "favicon"),
            dashboard=_bool(block, "dashboard"),
            dashboard_path=_url_prefix(block, "dashboard_path", "/dashboard"),
            static_max_file_bytes=_positive_int(block, "static_max_file_bytes", 16 * 1024 * 1024),
            static_cache_bytes=_positive_int(block, "static_cache_bytes", 64 * 1024 * 1024),
            event_history_max_events=_history_int(block, "event_history_max_events", 1000),
            event_history_max_bytes=_history_bytes(block, limits),
            webhook_url=_url_prefix(block, "webhook_url", "/hook"),
            root_prefix=_root_prefix(block),
            enable_sessions=_bool(block, "enable_sessions", True),
            api_acl=ApiAcl.parse(block.get("api_acl"), block.where("api_acl")),
            authorized_ips=parse_addresses(block.get("authorized_ips"), block.where("authorized_ips")),
            log_access_file=_file_path(block, "log_access_file", empty_is_none=True),
            log_error_file=_file_path(block, "log_error_file", empty_is_none=True),
            salt_threads=_positive_int(block, "salt_threads", 8),
            backlog=None if backlog is None else _positive_int(block, "backlog", 1),
            masters=masters,
            default_master=default_master,
            commands=commands,
            # the master's own id (salt's default: <hostname>_master) names it unless set
            event_log=EventLogSettings.parse(block.get("event_log"), block.where("event_log"), str(opts.get("id") or "")),
        ).checked_mounts()

    def checked_mounts(self) -> Settings:
        """These settings, if no two web-app mounts share a URL prefix and none hides
        an API route (``static_path: /minions`` would); else :class:`ConfigError`."""
        mounts = {
            "app_path": self.app_path if self.app else None,
            "static_path": self.static_path if self.static else None,
            "favicon": FAVICON_PATH if self.favicon else None,
            "dashboard_path": self.dashboard_path if self.dashboard else None,
        }
        name = self.dialect.value
        if self.webhook_url != "/hook":
            route = Router(self.token_length, websockets=True).match(self.webhook_url)
            if route is not None and route.name != "hook":
                raise ConfigError(f"'{name}: webhook_url' {self.webhook_url} is the API's {route.name} route")
        router = self.router(websockets=True)
        seen: dict[str, str] = {}
        for key, prefix in mounts.items():
            if prefix is None:
                continue
            if prefix in seen:
                raise ConfigError(f"'{name}: {key}' and '{seen[prefix]}' both serve {prefix}")
            seen[prefix] = key
            for path in (prefix, f"{prefix}/x", f"{prefix}/{'0' * self.token_length}"):
                route = router.match(path)
                if route is not None:
                    raise ConfigError(f"'{name}: {key}' {prefix} would hide the API's {path} ({route.name})")
        return self

    def router(self, websockets: bool | None = None) -> Router:
        """The API's routes under these settings (``websockets``: override the setting)."""
        return Router(
            self.token_length,
            self.websockets if websockets is None else websockets,
            cherrypy=self.dialect is Dialect.CHERRYPY,
            hook_path=self.webhook_url,
            sessions=self.enable_sessions,
        )


# Settings that come from the master config's top level, not from ``rest_tornado:``
_MASTER_LEVEL = (
    "sock_dir", "hash_type", "external_auth", "netapi_enable_clients", "limits", "dialect", "master_external_auth",
)


def block_values(settings: Settings) -> dict[str, Any]:
    """``settings`` as a ``rest_tornado:`` block (a ``rest_cherrypy:`` block reads the
    same keys: :mod:`saltnado_core.blocks`): every key :meth:`Settings.from_opts`
    reads → the value that gives ``settings`` (``from_opts`` of it gives them back)."""
    limits = settings.limits
    values = {name: getattr(settings, name) for name in Settings.__dataclass_fields__ if name not in _MASTER_LEVEL}
    values["formatted_max_job_age"] = settings.formatted_max_job_age or 0  # 0: no age limit
    values["root_prefix"] = settings.root_prefix or "/"
    values["api_acl"] = settings.api_acl.as_config() if settings.api_acl is not None else None
    values["authorized_ips"] = entries(settings.authorized_ips)
    values["masters"] = dict(settings.masters) if settings.masters is not None else None
    values["event_log"] = settings.event_log.as_config() if settings.event_log is not None else None
    values.update(
        {name: getattr(limits, name) for name in Limits.__dataclass_fields__ if name not in ("overflow", "timeouts")}
    )
    values.update({name: getattr(limits.timeouts, name) for name in Timeouts.__dataclass_fields__})
    values.update(
        slow_client_policy=limits.overflow.policy.value,
        slow_client_close_code=int(limits.overflow.code),
        slow_client_close_reason=limits.overflow.reason,
    )
    return values


def unknown_key_warnings(opts: Mapping[str, Any], api_block: Dialect | str | None = None) -> list[str]:
    """What the operator should hear about the block served (``api_block``, as for
    :meth:`Settings.from_opts`): which block when there are two, obsolete
    rest_cherrypy keys, and one warning per key saltnado does not read (a typo is
    otherwise silently a default), naming the nearest known key."""
    try:
        block = read_block(opts, api_block)
    except ConfigError:
        return []  # from_opts says why
    warnings = block_notices(opts, api_block)
    known = KNOWN_KEYS
    if block.dialect is Dialect.CHERRYPY:
        warnings += cherrypy_warnings(opts[block.dialect.value])
        known = KNOWN_KEYS | CHERRYPY_KEYS.keys()
    for key in sorted(str(key) for key in block if key not in KNOWN_KEYS):
        written = block.written.get(key, key)
        if written in CHERRYPY_KEYS and block.dialect is Dialect.CHERRYPY:
            warnings.append(f"{block.where(key)} is not served by this saltnado and is ignored")
            continue
        nearest = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
        warnings.append(f"unknown key {block.where(key)} is ignored{hint}")
    return warnings


def _masters(block: Block) -> tuple[dict[str, str] | None, str | None, bool]:
    """``masters:`` (name → master config file), ``default_master:`` and ``commands:``
    → (masters or None when absent, the default's name, commands). A node without a
    master for commands says so twice (``commands: false``, no or empty ``masters:``),
    so an empty mapping written by mistake is an error, not an API that answers 503."""
    commands = _bool(block, "commands", True)
    raw: Any = block.get("masters")
    default: Any = block.get("default_master")
    if default is not None and (not isinstance(default, str) or not default):
        raise ConfigError(f"{block.where('default_master')} must be the name of one of 'masters:', got {default!r}")
    if raw is None:
        if default is not None:
            raise ConfigError(
                f"{block.where('default_master')} names one of 'masters:', and the block has no 'masters:'"
            )
        return None, None, commands
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{block.where('masters')} must map names to master config files "
            f"(masters: {{site1: /etc/salt/master}}), got {raw!r}"
        )
    masters: dict[str, str] = {}
    for name, path in raw.items():
        if not isinstance(name, str) or not MASTER_NAME.fullmatch(name):
            raise ConfigError(
                f"{block.where('masters')}: {name!r} is not a master name (a letter or digit, then letters, "
                "digits, '.', '_' or '-'; at most 64)"
            )
        if not isinstance(path, str) or not path.strip() or "\x00" in path:
            raise ConfigError(f"{block.where('masters')}: {name} must be the path of a master config file, got {path!r}")
        masters[name] = path
    if not commands:
        if masters:
            raise ConfigError(
                f"{block.where('commands')} is false (no master for commands), yet 'masters:' names "
                f"{', '.join(masters)}: remove one of the two"
            )
        if default is not None:
            raise ConfigError(f"{block.where('default_master')} is set, yet 'commands:' is false")
        return masters, None, False
    if not masters:
        raise ConfigError(
            f"{block.where('masters')} is empty: name at least one master, or set 'commands: false' for a node "
            "that serves events only"
        )
    if default is None:
        if len(masters) > 1:
            raise ConfigError(f"{block.where('default_master')} is required with several masters: one of {', '.join(masters)}")
        default = next(iter(masters))
    if default not in masters:
        raise ConfigError(f"{block.where('default_master')} {default!r} is not one of 'masters:' ({', '.join(masters)})")
    return masters, default, True


def _overflow(block: Block) -> Overflow:
    """The slow-client policy: ``slow_client_policy`` (close | gap),
    ``slow_client_close_code`` (1008 | 1013) and ``slow_client_close_reason``."""
    default = Overflow()
    name = str(block.get("slow_client_policy", default.policy.value))
    try:
        policy = SlowClientPolicy(name)
    except ValueError:
        raise ConfigError(
            f"{block.where('slow_client_policy')} must be one of {', '.join(SlowClientPolicy)}, got {name!r}"
        ) from None
    code = _int(block, "slow_client_close_code", default.code)
    if code not in (CloseCode.POLICY_VIOLATION, CloseCode.TRY_AGAIN_LATER):
        raise ConfigError(f"{block.where('slow_client_close_code')} must be 1008 or 1013, got {code}")
    reason = str(block.get("slow_client_close_reason", default.reason))
    if len(reason.encode("utf-8")) > 123:  # RFC 6455 §5.5: a control frame's payload <= 125 bytes
        raise ConfigError(f"{block.where('slow_client_close_reason')} must be at most 123 bytes of UTF-8")
    return Overflow(code, reason, policy)


def _file_path(block: Block, key: str, empty_is_none: bool = False) -> str | None:
    """A filesystem path (``app``, ``static``, ``favicon``): a non-empty string, or
    None when absent (or ``''`` when ``empty_is_none``: rest_cherrypy's default for
    its log files); whether it exists is seen when serving (and by check-config)."""
    value: Any = block.get(key)
    if value is None or (empty_is_none and value == ""):
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ConfigError(f"{block.where(key)} must be a filesystem path, got {value!r}")
    return value


# A URL prefix: segments of unreserved characters (RFC 3986 §2.3), none a dot-segment
_URL_PREFIX = re.compile(r"(?:/(?!\.)[A-Za-z0-9._~-]+)+")


def _url_prefix(block: Block, key: str, default: str) -> str:
    """A mount's URL prefix (``app_path`` …): ``/app`` (``app`` and ``/app/`` read the
    same, as rest_cherrypy reads them); never ``/``, which would hide the whole API."""
    value: Any = block.get(key, default)
    prefix = "/" + value.strip("/") if isinstance(value, str) else ""
    if not _URL_PREFIX.fullmatch(prefix):
        raise ConfigError(
            f"{block.where(key)} must be a URL path such as {default} (letters, digits, '.', '_', '~', '-' "
            f"between slashes; not /), got {value!r}"
        )
    return prefix


def _root_prefix(block: Block) -> str:
    """``root_prefix``: ``/`` (rest_cherrypy's default) or absent → ``""``; else a URL
    path under which the whole API is served (``/api``)."""
    value: Any = block.get("root_prefix")
    if value is None or value == "/":
        return ""
    return _url_prefix(block, "root_prefix", "/api")


def _webhook_headers(block: Block) -> tuple[str, ...] | None:
    """``webhook_headers``: a list of header names → lower-cased (``[]``: no headers);
    absent → None (every header but the credential-like ones)."""
    value: Any = block.get("webhook_headers")
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{block.where('webhook_headers')} must be a list of header names, got {value!r}")
    names = []
    for name in value:
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise ConfigError(f"{block.where('webhook_headers')} holds {name!r}, which is not a header name")
        if name.lower() in SESSION_HEADERS:
            raise ConfigError(
                f"{block.where('webhook_headers')} may not list {name}: it carries the caller's session token, "
                "which every event subscriber would see"
            )
        names.append(name.lower())
    return tuple(names)


def _view_bytes(block: Block, limits: Limits) -> int:
    """``formatted_max_view_bytes``: a new ``/formatted_events`` client is sent the
    whole view at once, so it must fit the outbox with room to spare (or the
    client is cut off as too slow before it has read a byte). Unset, it is
    ``MAX_VIEW_BYTES``, or a quarter of ``outbox_max_bytes`` if that is less."""
    room = limits.outbox_max_bytes - SNAPSHOT_SLACK
    if limits.outbox_max_messages < 3 or room < 1:  # the view's two messages and a bus notice
        raise ConfigError(
            f"{block.where('outbox_max_messages')} must be at least 3 and 'outbox_max_bytes' more than "
            f"{SNAPSHOT_SLACK}: a /formatted_events client's first view would not fit its outbox"
        )
    value = _positive_int(block, "formatted_max_view_bytes", min(MAX_VIEW_BYTES, limits.outbox_max_bytes // 4, room))
    if value > room:
        raise ConfigError(
            f"{block.where('formatted_max_view_bytes')} ({value}) must be at most 'outbox_max_bytes' "
            f"less {SNAPSHOT_SLACK} ({room}): a /formatted_events client's first view must fit its outbox"
        )
    return value


def _history_int(block: Block, key: str, default: int) -> int:
    value = _int(block, key, default)
    if value < 0:
        raise ConfigError(f"{block.where(key)} must be 0 (keep none) or more, got {value}")
    return value


def _history_bytes(block: Block, limits: Limits) -> int:
    """``event_history_max_bytes``: at most ``outbox_max_bytes``, so a client
    resuming from the oldest kept event can take the whole replay."""
    value = _history_int(block, "event_history_max_bytes", min(4 * 1024 * 1024, limits.outbox_max_bytes // 2))
    if value > limits.outbox_max_bytes:
        raise ConfigError(
            f"{block.where('event_history_max_bytes')} ({value}) must be at most 'outbox_max_bytes' "
            f"({limits.outbox_max_bytes}): a resuming client is sent what is kept"
        )
    return value


def _timeouts(block: Block) -> Timeouts:
    """Every :class:`Timeouts` field from the block: seconds, >= 0 (0: off)."""
    defaults = Timeouts()
    values = {}
    for name in Timeouts.__dataclass_fields__:
        value: Any = block.get(name, getattr(defaults, name))
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if isinstance(value, bool) or not 0 <= seconds < math.inf:
            raise ConfigError(f"{block.where(name)} must be a number of seconds >= 0 (0: off), got {value!r}")
        values[name] = seconds
    return Timeouts(**values)


def _positive_int(block: Block, key: str, default: int) -> int:
    value = _int(block, key, default)
    if value < 1:
        raise ConfigError(f"{block.where(key)} must be at least 1, got {value}")
    return value


def _bool(block: Block, key: str, default: bool = False) -> bool:
    """A YAML boolean; also the strings true/false, yes/no, on/off, 1/0 — never the
    truthiness of any string, so a quoted "false" does not turn TLS off."""
    value: Any = block.get(key)
    if value is None:  # absent, or an empty YAML value
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise ConfigError(f"{block.where(key)} must be True or False, got {value!r}")


_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _int(block: Block, key: str, default: int | None = None) -> int:
    value: Any = block.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{block.where(key)} must be an integer, got {value!r}") from None


# Every key of the ``rest_tornado:`` block saltnado reads
KNOWN_KEYS = frozenset(block_values(Settings()))
