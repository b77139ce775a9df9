"""Web apps served as rest_cherrypy serves them: ``static``, ``app``, ``favicon``, and
saltnado's own page (``dashboard``), all through one idea, the :class:`Mount`.

A mount maps a URL prefix to a directory, with an optional index file and a rule
for what a path below the prefix means (:class:`Below`): a file of the directory
(``static``, ``dashboard``), the index whatever follows (``app``: a single-page app's
HTML5-history routes, as rest_cherrypy's ``App`` ignores the rest of the path), or
nothing (``/favicon.ico``). :class:`Site` holds a master's mounts and answers the
requests they cover, plus rest_cherrypy's ``html_override``: with ``app`` set, a
browser navigation (a ``GET`` whose ``Accept`` prefers ``text/html`` to
``application/json``) to any other path but an event stream gets the app's HTML,
so a client-side route (``/minions``, ``/login``…) survives a reload. API clients
(``Accept: application/json``, ``*/*``, none, YAML) get what they always got.

**How a path names a file.** The router matches paths still percent-encoded (see
:mod:`saltnado_core.router`), and so do mounts: the prefix is compared as sent.
What follows it is decoded exactly once, and a name is refused (404) when the
encoded part holds a non-ASCII byte, ``%2F`` or ``%5C`` (an encoded separator
is never part of a name) or ``%00``, when the decoded name is not UTF-8, or holds a
backslash, a ``%`` (what was encoded twice), a control character, or an empty,
``.`` or ``..`` segment; dot-files (``.git/``, ``.env``) are refused too. The
runtime then refuses a file whose real path leaves the mount's directory
(symlinks resolved), or that is not a regular file: no directory is ever listed.

**Answers.** ``GET`` and ``HEAD`` (else 405); the file's type by its extension
(:func:`content_type`), a strong ``ETag`` and ``Last-Modified``, ``304 Not
Modified`` on ``If-None-Match`` (which, when present, decides alone; RFC 9110
§13.1.3) or ``If-Modified-Since``, ``Cache-Control: no-cache`` (a browser
revalidates, so an upgraded UI is seen at once, and a 304 costs a stat) and
``X-Content-Type-Options: nosniff``. A missing file is the usual JSON 404; a
file over ``static_max_file_bytes`` is a 404 saying so (413 is about what a
client sends, not what it asks for).
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Generator
from dataclasses import dataclass
from datetime import timezone
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

from .config import FAVICON_PATH, Settings
from .files import FileContent, FileRefusal, ReadFile
from .http import HTTPError, Request, Response
from .kinds import StreamKind
from .negotiation import prefers_html

__all__ = ["Below", "CONTENT_TYPES", "Mount", "Site", "content_type", "decode_name", "not_modified"]

DASHBOARD_INDEX = "index.html"
FILE_METHODS = ("GET", "HEAD")

# What a UI ships, by extension. A fixed table rather than the ``mimetypes`` module,
# which reads the host's /etc/mime.types: answers would differ between hosts, and
# some still map .js or .mjs to application/x-javascript or nothing, and a browser
# refuses an ES module (``<script type="module">``, SaltGUI's) of any type but a
# JavaScript one (HTML "fetch a single module script": a JavaScript MIME type).
CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html",
    ".htm": "text/html",
    ".js": "text/javascript",  # RFC 9239: text/javascript, for modules and classic scripts alike
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".xml": "text/xml",
    ".json": "application/json",
    ".map": "application/json",  # source maps are JSON
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".avif": "image/avif",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
}
OCTET_STREAM = "application/octet-stream"

# Stream routes are never answered with the app's HTML (an EventSource or a
# websocket handshake is no navigation, whatever its Accept says).
_STREAM_ROUTES = frozenset(kind.route for kind in StreamKind)
VARY_ACCEPT = (("vary", "Accept"),)
# An encoded separator or NUL, in the still-encoded part of a path
_ENCODED_FORBIDDEN = re.compile(r"%(?:2f|5c|00)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def content_type(name: str) -> str:
    """The ``Content-Type`` of a file called ``name``; text types say ``charset=utf-8``."""
    media = CONTENT_TYPES.get(posixpath.splitext(name)[1].lower(), OCTET_STREAM)
    return f"{media}; charset=utf-8" if media.startswith("text/") else media


def decode_name(encoded: str) -> str | None:
    """The file name (relative, ``/``-separated) that ``encoded``, the part of a
    path below a mount's prefix as sent, asks for; None when it names none (the
    rules are in the module docstring)."""
    if not encoded or not encoded.isascii() or _ENCODED_FORBIDDEN.search(encoded):
        return None
    try:
        name = unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        return None
    if "\\" in name or "%" in name or _CONTROL.search(name):
        return None
    if any(not segment or segment.startswith(".") for segment in name.split("/")):
        return None  # empty (``//``, a trailing ``/``), ``.``, ``..`` or a dot-file
    return name


class Below(enum.Enum):
    """What a path below a mount's prefix asks for."""

    FILES = "files"  # the file of that name in the directory (static, dashboard)
    INDEX = "index"  # the index file, whatever follows (app: client-side routes)
    NOTHING = "nothing"  # nothing: only the prefix itself is served (favicon)


@dataclass(frozen=True, slots=True)
class Mount:
    """A URL ``prefix`` (``/static``; no trailing slash) served from ``directory``.
    ``index`` is the file for the prefix itself (and the prefix with a ``/``)."""

    prefix: str
    directory: str
    index: str | None = None
    below: Below = Below.FILES

    def covers(self, path: str) -> bool:
        """Is ``path`` (as sent) the prefix or under it? Then only this mount answers it."""
        return path == self.prefix or path.startswith(self.prefix + "/")

    def wants_slash(self, path: str) -> bool:
        """A directory with an index asked for without its ``/`` (``/dashboard``): the
        index's relative links (``style.css``) would resolve against the parent, so
        the client is sent to ``/dashboard/``, as a file server does for a directory."""
        return path == self.prefix and self.below is Below.FILES and self.index is not None

    def read_for(self, path: str, max_bytes: int) -> ReadFile | None:
        """The read a covered ``path`` asks for; None when it names no file (404)."""
        if path == self.prefix or (path == self.prefix + "/" and self.below is not Below.NOTHING):
            name = self.index
        elif self.below is Below.INDEX:
            name = self.index
        elif self.below is Below.NOTHING:
            name = None
        else:
            name = decode_name(path[len(self.prefix) + 1 :])
        if name is None:
            return None
        # A name from the client stays inside the directory; the operator's own file
        # (app, favicon) may be a symlink to anywhere.
        return ReadFile(self.directory, name, max_bytes, confined=self.below is Below.FILES)

    @classmethod
    def single_file(cls, prefix: str, path: str, below: Below) -> Mount:
        """A mount serving the one file at ``path`` (the ``app`` or ``favicon`` key)."""
        directory, name = posixpath.split(path)
        return cls(prefix, directory, name, below)


@dataclass(frozen=True, slots=True)
class Site:
    """A master's mounts (longest prefix first) and the ``app`` mount whose HTML a
    browser navigation gets (``html_override``), if any."""

    mounts: tuple[Mount, ...] = ()
    app: Mount | None = None
    max_file_bytes: int = 16 * 1024 * 1024
    root_prefix: str = ""  # where the whole site is (``root_prefix``): a redirect's location starts with it

    @classmethod
    def from_settings(cls, settings: Settings, dashboard_directory: str | None = None) -> Site:
        """The mounts ``settings`` configure. ``dashboard_directory`` is where saltnado's
        own page lives (the runtime passes ``saltnado_dashboard.DIRECTORY``; the core
        imports no other package): without it ``dashboard: True`` mounts nothing."""
        mounts: list[Mount] = []
        app = None
        if settings.static:
            mounts.append(Mount(settings.static_path, settings.static))
        if settings.app:
            app = Mount.single_file(settings.app_path, settings.app, Below.INDEX)
            mounts.append(app)
        if settings.favicon:
            mounts.append(Mount.single_file(FAVICON_PATH, settings.favicon, Below.NOTHING))
        if settings.dashboard and dashboard_directory is not None:
            mounts.append(Mount(settings.dashboard_path, dashboard_directory, DASHBOARD_INDEX))
        mounts.sort(key=lambda mount: len(mount.prefix), reverse=True)  # a nested mount wins
        return cls(tuple(mounts), app, settings.static_max_file_bytes, settings.root_prefix)

    def mount_for(self, path: str) -> Mount | None:
        return next((mount for mount in self.mounts if mount.covers(path)), None)

    def handler(self, request: Request, route: str | None) -> Generator[ReadFile, Any, Response] | None:
        """The handler for ``request`` if the site answers it — a path under a mount,
        or a browser navigation to the app — else None (the API answers it).
        ``route`` is the API route the path matches (None: none)."""
        mount = self.mount_for(request.path)
        if mount is not None and mount.wants_slash(request.path):
            return _redirect(request, self.root_prefix + mount.prefix + "/")
        if mount is not None:
            return serve_file(request, mount.read_for(request.path, self.max_file_bytes))
        if self.overridable(request, route) and prefers_html(request.header("accept")):
            # The same URL answers JSON to an API client: caches must key on Accept.
            assert self.app is not None
            read = self.app.read_for(self.app.prefix, self.max_file_bytes)
            return serve_file(request, read, VARY_ACCEPT)
        return None

    def overridable(self, request: Request, route: str | None) -> bool:
        """Whether ``request`` (not under a mount) gets the app or the API by its
        ``Accept`` alone (``html_override``): then the API's answer, too, must carry
        ``Vary: Accept``, or a cache that stored the JSON for ``/minions`` would hand
        it to the next browser that navigates there (and the HTML to the next API
        client)."""
        return self.app is not None and request.method == "GET" and route not in _STREAM_ROUTES


def _redirect(request: Request, location: str) -> Generator[ReadFile, Any, Response]:
    """301 to ``location`` (the operator's own path: nothing of the request, not
    even its query, is sent back)."""
    if request.method not in FILE_METHODS:
        raise HTTPError(405, f"method {request.method} not allowed here", [("allow", ", ".join(FILE_METHODS))])
    return Response(301, b"", (("location", location),), None)
    yield  # pragma: no cover - makes this a generator


def serve_file(
    request: Request, read: ReadFile | None, headers: tuple[tuple[str, str], ...] = ()
) -> Generator[ReadFile, Any, Response]:
    """Answer ``request`` with the file ``read`` names (None: no file, 404): 200,
    or 304 when the client's copy is current; the runtime reads it."""
    if request.method not in FILE_METHODS:
        raise HTTPError(405, f"method {request.method} not allowed here", [("allow", ", ".join(FILE_METHODS))])
    if read is None:
        raise HTTPError(404, FileRefusal.MISSING.value)
    try:
        found = yield read
    except Exception:  # the reader failed unexpectedly: no path or error text to the client
        raise HTTPError(500, "the file could not be read") from None
    if isinstance(found, FileRefusal):
        raise HTTPError(404, found.value)
    assert isinstance(found, FileContent)
    headers = (
        ("etag", found.etag),
        ("last-modified", http_date(found.mtime_ns)),
        ("cache-control", "no-cache"),
        ("x-content-type-options", "nosniff"),
        *headers,
    )
    if not_modified(request, found):
        return Response(304, b"", headers, None)
    return Response(200, found.data, headers, content_type(read.name))


def http_date(mtime_ns: int) -> str:
    """RFC 9110 §5.6.7's IMF-fixdate of a file time, e.g. ``Tue, 14 Nov 2023 22:13:20 GMT``."""
    return formatdate(mtime_ns // 1_000_000_000, usegmt=True)


def not_modified(request: Request, content: FileContent) -> bool:
    """Is the client's copy current (answer 304)? RFC 9110 §13.2.2: with
    ``If-None-Match`` that alone decides (weak comparison: ``W/`` is ignored;
    ``*`` matches any file); else ``If-Modified-Since``, when it is a valid date,
    is compared with the file's time in whole seconds (``Last-Modified``'s)."""
    tags = [value for name, value in request.headers if name == "if-none-match"]
    if tags:
        listed = {tag.strip().removeprefix("W/") for value in tags for tag in value.split(",")}
        return "*" in listed or content.etag in listed
    since = request.header("if-modified-since")
    if not since:
        return False
    try:
        date = parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False  # RFC 9110 §13.1.3: an invalid date is ignored
    if date.tzinfo is None:  # "-0000": UTC, without a claim of being local time
        date = date.replace(tzinfo=timezone.utc)
    return content.mtime_ns // 1_000_000_000 <= date.timestamp()
