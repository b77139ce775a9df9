"""Several masters and server nodes on one event log (NATS JetStream), minus the I/O.

An ``event_log:`` section in the API block puts the server on a JetStream
stream. A node has one or both of two roles (:class:`Role`):

* **ingest** — every event read from its master's bus is published to the
  stream under :func:`subject` with a ``Nats-Msg-Id`` header (:func:`message_id`,
  JetStream's de-duplication) and a header naming the master;
* **edge** — its streaming clients are fed from the stream, every master's
  events, each event's id being ``<epoch>-<stream sequence>``
  (:func:`stream_epoch`): every edge node gives the same id to the same event,
  so a client resumes on any of them.

Subjects: ``<prefix>.<master>.<tag segments>``, a tag's ``/`` becoming ``.``.
A NATS subject token cannot hold ``.``, ``*``, ``>`` or whitespace and cannot
be empty, so each segment is escaped reversibly (:func:`escape_token`): every
byte of its UTF-8 outside printable ASCII, and ``.``, ``*``, ``>`` and ``%``
themselves, become ``%XX`` (upper-case hex), and an empty segment is the token
``%`` alone (which escaping never writes otherwise). ``salt/minion/web.1/start``
on master ``m1`` is ``salt.events.m1.salt.minion.web%2E1.start``; the tag
``salt//x`` is ``salt.events.m1.salt.%.x``.

A client's ``?tag=`` globs become subject filters where that is exact
(:func:`subject_filters`): fnmatch's ``*`` crosses ``/`` and NATS's ``*`` does
not, so only a literal tag maps to a literal subject and only a trailing
``/*`` maps to ``.>``; any other glob widens to its literal leading segments
followed by ``>``, and the server filters the rest itself.

The effect :class:`FetchEvents` asks the runtime for a range of the stream a
resuming client missed that the node's own history no longer holds.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .blocks import ConfigError
from .history import MAX_EPOCH_CHARS

MSG_ID_HEADER = "Nats-Msg-Id"  # JetStream drops a message whose id it saw within the duplicate window
MASTER_HEADER = "Salt-Master"  # the master whose bus the event was read from
DEFAULT_STREAM = "SALT_EVENTS"
DEFAULT_PREFIX = "salt.events"
MAX_MASTER_CHARS = 128

_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - set(".*>%")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PREFIX = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


class Role(str, enum.Enum):
    INGEST = "ingest"  # the master's bus → the stream
    EDGE = "edge"  # the stream → this node's streaming clients
    BOTH = "both"

    @property
    def ingests(self) -> bool:
        return self is not Role.EDGE

    @property
    def serves(self) -> bool:
        """True if the node's clients are fed from the stream (not from its bus)."""
        return self is not Role.INGEST


@dataclass(frozen=True, slots=True)
class EventLogSettings:
    """The ``event_log:`` section (see the README: "Several masters and nodes")."""

    servers: tuple[str, ...]
    master: str = ""  # this node's master (ingest): the subject's second part
    role: Role = Role.BOTH
    stream: str = DEFAULT_STREAM
    subject_prefix: str = DEFAULT_PREFIX
    max_msgs: int = -1  # the stream's retention; -1: unlimited
    max_bytes: int = 1024 * 1024 * 1024
    max_age: float = 24 * 3600.0  # seconds
    replicas: int = 1  # 1 or 3
    duplicate_window: float = 120.0  # seconds: two ingest nodes' copies of one event fall within it
    max_in_flight: int = 1024  # ingest: publishes awaiting their ack; at the bound the bus reader waits
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds: str | None = None  # a NATS credentials file
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def parse(cls, value: Any, where: str, default_master: str = "") -> EventLogSettings | None:
        """``value`` (the section's mapping, or None: no event log) → settings;
        :class:`ConfigError` naming ``where`` and the key at fault."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping (servers, master, role, …), got {value!r}")
        unknown = sorted(str(key) for key in value if key not in _KEYS)
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
        servers = value.get("servers")
        if isinstance(servers, str):
            servers = [servers]
        if not isinstance(servers, (list, tuple)) or not servers:
            raise ConfigError(f"{where} servers must be a list of nats:// (or tls://) URLs")
        for url in servers:
            if isinstance(url, str) and "@" in url:  # never quoted: it holds a secret
                raise ConfigError(f"{where} servers holds a URL with credentials; put them in user/password or token")
            if not isinstance(url, str) or not re.fullmatch(r"(nats|tls)://[^\s/]+", url):
                raise ConfigError(f"{where} servers holds {url!r}, not a nats://host:port URL")
        role_name = str(value.get("role", Role.BOTH.value))
        try:
            role = Role(role_name)
        except ValueError:
            raise ConfigError(f"{where} role must be ingest, edge or both, got {role_name!r}") from None
        master = value.get("master", default_master)
        master = "" if master is None else str(master)
        if role.ingests and not master:
            raise ConfigError(f"{where} master is required for role {role.value} (the name events are filed under)")
        if len(master) > MAX_MASTER_CHARS or not master.isprintable():
            raise ConfigError(f"{where} master must be at most {MAX_MASTER_CHARS} printable characters")
        stream = str(value.get("stream", DEFAULT_STREAM))
        if not _STREAM_NAME.fullmatch(stream):
            raise ConfigError(f"{where} stream must be 1-64 letters, digits, '_' or '-', got {stream!r}")
        prefix = str(value.get("subject_prefix", DEFAULT_PREFIX))
        if not _PREFIX.fullmatch(prefix):
            raise ConfigError(f"{where} subject_prefix must be dot-separated tokens of letters, digits, '_', '-', got {prefix!r}")
        replicas = _number(value, "replicas", 1, where, int)
        if replicas not in (1, 3):
            raise ConfigError(f"{where} replicas must be 1 or 3, got {replicas}")
        max_msgs = _number(value, "max_msgs", -1, where, int)
        if max_msgs == 0 or max_msgs < -1:
            raise ConfigError(f"{where} max_msgs must be -1 (unlimited) or at least 1, got {max_msgs}")
        secrets = {key: value.get(key) for key in ("user", "password", "token", "creds", "tls_ca", "tls_cert", "tls_key")}
        for key, text in secrets.items():
            if text is not None and (not isinstance(text, str) or not text):
                raise ConfigError(f"{where} {key} must be a non-empty string")
        if (secrets["user"] is None) != (secrets["password"] is None):
            raise ConfigError(f"{where} user and password go together")
        if sum(x is not None for x in (secrets["user"], secrets["token"], secrets["creds"])) > 1:
            raise ConfigError(f"{where} takes one of user/password, token or creds")
        if (secrets["tls_cert"] is None) != (secrets["tls_key"] is None):
            raise ConfigError(f"{where} tls_cert and tls_key go together")
        defaults = cls(servers=())
        return cls(
            servers=tuple(servers), master=master, role=role, stream=stream, subject_prefix=prefix,
            max_msgs=max_msgs,
            max_bytes=_positive(value, "max_bytes", defaults.max_bytes, where),
            max_age=float(_positive(value, "max_age", defaults.max_age, where, float)),
            replicas=replicas,
            duplicate_window=float(_positive(value, "duplicate_window", defaults.duplicate_window, where, float)),
            max_in_flight=_positive(value, "max_in_flight", defaults.max_in_flight, where),
            **secrets,
        )

    def as_config(self) -> dict[str, Any]:
        """The section as written (secrets masked: check-config prints it)."""
        values: dict[str, Any] = {
            "servers": list(self.servers), "master": self.master, "role": self.role.value, "stream": self.stream,
            "subject_prefix": self.subject_prefix, "max_msgs": self.max_msgs, "max_bytes": self.max_bytes,
            "max_age": self.max_age, "replicas": self.replicas, "duplicate_window": self.duplicate_window,
            "max_in_flight": self.max_in_flight,
        }
        for key in ("user", "creds", "tls_ca", "tls_cert", "tls_key"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        for key in ("password", "token"):
            if getattr(self, key) is not None:
                values[key] = "********"
        return values

    @property
    def all_subjects(self) -> str:
        """Every subject the stream holds."""
        return f"{self.subject_prefix}.>"

    def describe(self) -> str:
        """Where the log is, for logs and notices (no credentials: URLs only, user parts cut)."""
        return ", ".join(re.sub(r"//[^@/]*@", "//", url) for url in self.servers)


_KEYS = frozenset(
    name for name in EventLogSettings.__dataclass_fields__
)


def _number(value: Mapping[str, Any], key: str, default: Any, where: str, kind: type = int) -> Any:
    raw = value.get(key, default)
    try:
        if isinstance(raw, bool):
            raise ValueError
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} {key} must be a number, got {raw!r}") from None


def _positive(value: Mapping[str, Any], key: str, default: Any, where: str, kind: type = int) -> Any:
    number = _number(value, key, default, where, kind)
    if not number > 0:
        raise ConfigError(f"{where} {key} must be more than 0, got {number}")
    return number


# -- subjects ------------------------------------------------------------------------
def escape_token(segment: str) -> str:
    """One tag segment (or a master's name) as a NATS subject token: reversible
    (:func:`unescape_token`), never empty, never holding ``.``, ``*``, ``>`` or whitespace."""
    if not segment:
        return "%"
    if all(char in _SAFE for char in segment):
        return segment
    out = []
    for char in segment:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def unescape_token(token: str) -> str:
    """:func:`escape_token` undone; ValueError for a token it cannot have written."""
    if token == "%":
        return ""
    if "%" not in token:
        return token
    data = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "%":
            pair = token[i + 1:i + 3]
            if len(pair) != 2 or not all(c in "0123456789ABCDEF" for c in pair):
                raise ValueError("not an escape this module writes")
            data += bytes.fromhex(pair)
            i += 3
        else:
            data += token[i].encode("utf-8")
            i += 1
    return data.decode("utf-8", "surrogatepass")


def subject(prefix: str, master: str, tag: str) -> str:
    """The subject an event of ``master`` tagged ``tag`` is stored under."""
    return ".".join((prefix, escape_token(master), *map(escape_token, tag.split("/"))))


def parse_subject(prefix: str, text: str) -> tuple[str, str]:
    """``(master, tag)`` of a subject :func:`subject` wrote; ValueError otherwise."""
    if not text.startswith(prefix + "."):
        raise ValueError("not under the prefix")
    tokens = text[len(prefix) + 1:].split(".")
    if len(tokens) < 2:
        raise ValueError("no tag")
    return unescape_token(tokens[0]), "/".join(map(unescape_token, tokens[1:]))


def message_id(master: str, raw: bytes) -> str:
    """The de-duplication id of an event read from ``master``'s bus as ``raw``
    (the message body, ``<tag>\\n\\n<msgpack data>``).

    Two ingest nodes on one master read the very same bytes: the master packs
    each event once and its publisher writes that buffer to every subscriber of
    ``master_event_pub.ipc``. Two events Salt fires with the same tag and data
    still differ, because Salt stamps each with ``_stamp`` (microseconds) when
    it fires it. The master's name is part of the id so two masters' events never
    collide."""
    digest = hashlib.sha256()
    digest.update(master.encode("utf-8"))
    digest.update(b"\x00")
    digest.update(raw)
    return digest.hexdigest()


def stream_epoch(stream: str, created: str) -> str:
    """The epoch of the ids of ``stream`` created at ``created`` (the stream's own
    creation time, as JetStream reports it): every node reading the stream gives
    the same, and a stream deleted and created again is another epoch, so an id
    of the old one is never taken for one of the new."""
    return hashlib.sha256(f"{stream}\x00{created}".encode("utf-8")).hexdigest()[:min(16, MAX_EPOCH_CHARS)]


_GLOB = frozenset("*?[")


def subject_filters(prefix: str, masters: Iterable[str] | None, patterns: Iterable[str] | None) -> tuple[str, ...]:
    """NATS subject filters that hold every event of ``masters`` (None: any)
    whose tag matches one of ``patterns`` (fnmatch globs; None: any tag). Exact
    where a glob maps exactly; wider otherwise (the server still applies the
    glob itself); never overlapping (JetStream refuses overlapping filters), so
    a filter another one holds is left out."""
    master_tokens = ["*"] if masters is None else sorted({escape_token(m) for m in masters})
    tag_parts = [">"] if patterns is None else sorted({_pattern_subject(p) for p in patterns})
    if ">" in tag_parts:
        tag_parts = [">"]
    filters = [f"{prefix}.{m}.{t}" for m in master_tokens for t in tag_parts]
    kept = [f for f in filters if not any(o != f and _holds(o, f) for o in filters)]
    if any(_overlap(a, b) for i, a in enumerate(kept) for b in kept[i + 1:]):
        return tuple(sorted({f"{prefix}.{m}.>" for m in master_tokens}))
    return tuple(kept)


def _pattern_subject(pattern: str) -> str:
    """The tag part of the filter for one glob (see :func:`subject_filters`)."""
    segments = pattern.split("/")
    literal: list[str] = []
    for index, segment in enumerate(segments):
        if _GLOB.intersection(segment):
            if segment == "*" and index == len(segments) - 1 and literal:
                return ".".join(literal + [">"])  # "a/b/*" is exactly "a.b.>"
            return ".".join(literal + [">"]) if literal else ">"
        literal.append(escape_token(segment))
    return ".".join(literal)


def _holds(wide: str, narrow: str) -> bool:
    """True if every subject ``narrow`` matches, ``wide`` matches too."""
    w, n = wide.split("."), narrow.split(".")
    for i, part in enumerate(w):
        if part == ">":
            return len(n) > i
        if i >= len(n):
            return False
        if part != "*" and part != n[i]:
            return False
        if part == "*" and n[i] == ">":
            return False
    return len(w) == len(n)


def _overlap(a: str, b: str) -> bool:
    """True if some subject matches both filters."""
    x, y = a.split("."), b.split(".")
    for i in range(max(len(x), len(y))):
        if i >= len(x) or i >= len(y):
            return False
        if x[i] == ">" or y[i] == ">":
            return True
        if x[i] != y[i] and "*" not in (x[i], y[i]):
            return False
    return True


# -- what the runtime fetches for a resuming client --------------------------------------
@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One message of the stream: its sequence, master and body as read from the
    bus (``<tag>\n\n<msgpack data>``, decoded by the core)."""

    sequence: int
    master: str
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, eq=False)
class FetchEvents:
    """Read the stream from sequence ``first`` to ``last`` (both included), only
    ``subjects``, at most ``max_events`` events and ``max_bytes`` of bodies →
    ``(events, complete)``, ``complete`` False if a bound cut it short. Compared
    by identity: each is one client's."""

    first: int
    last: int
    subjects: tuple[str, ...]
    max_events: int
    max_bytes: int
