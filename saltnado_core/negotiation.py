"""Output media by ``Accept`` (with q-values) and serialization; CORS decisions.

The reference picks the first listed acceptable type and ignores q-values;
here ``Accept: text/html;q=0.9, application/x-yaml;q=0.1`` still gives YAML
(the only acceptable type) while ``application/json;q=0.1, application/x-yaml``
gives YAML because it is preferred. ``*/*``, ``application/*`` or no header → JSON.

An event stream (``/events``) offers ``text/event-stream`` first
(:data:`STREAM_OFFERED`): a browser's ``EventSource`` asks for it alone.
``/metrics`` offers the Prometheus text format and OpenMetrics
(:data:`EXPOSITION_OFFERED`), chosen by the same q-value rules.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import yaml

from .messages import dumps

JSON = "application/json"
YAML = "application/x-yaml"
EVENT_STREAM = "text/event-stream"
OFFERED = (JSON, YAML)  # in order of preference on ties
STREAM_OFFERED = (EVENT_STREAM, JSON, YAML)  # an event stream; its error answers are JSON or YAML
# GET /metrics: Prometheus' text format (curl's */*), or OpenMetrics when asked (a
# Prometheus server's Accept prefers it); its error answers are JSON
PROMETHEUS_TEXT = "text/plain"
OPENMETRICS = "application/openmetrics-text"
EXPOSITION_OFFERED = (PROMETHEUS_TEXT, OPENMETRICS)


def choose_media(accept: str | None, offered: tuple[str, ...] = OFFERED) -> str | None:
    """The type of ``offered`` to answer with (the first without ``Accept``), or
    None when none is acceptable (406)."""
    if not accept or not accept.strip():
        return offered[0]
    best: tuple[float, int, str] | None = None
    for _, media, q in _ranges(accept):
        if q <= 0:
            continue
        for rank, kind in enumerate(offered):
            if fnmatch.fnmatchcase(kind, media) or (media == "text/yaml" and kind == YAML):
                candidate = (-q, rank, kind)  # highest q, then our preference
                if best is None or candidate < best:
                    best = candidate
    return best[2] if best else None


HTML = "text/html"


def prefers_html(accept: str | None) -> bool:
    """Does ``accept`` prefer ``text/html`` to ``application/json``, as a browser's
    navigation does (``text/html,…,*/*;q=0.8``) and an API client does not
    (``application/json``, ``*/*``, none, YAML)? For rest_cherrypy's ``html_override``.

    Each type takes the q-value of the most specific range matching it (RFC 9110
    §12.5.1: ``text/html`` before ``text/*`` before ``*/*``); ``text/html`` must have
    a higher one, or the same one from a range listed earlier. One range matching
    both (``*/*``) prefers neither."""
    if not accept:
        return False
    html, json = _preference(accept, HTML), _preference(accept, JSON)
    if html is None or html[0] <= 0:
        return False
    if json is None:
        return True
    return html[0] > json[0] or (html[0] == json[0] and html[1] < json[1])


def _preference(accept: str, media: str) -> tuple[float, int] | None:
    """(q-value, position in ``accept``) of the most specific range matching ``media``."""
    kind = media.split("/", 1)[0]
    best: tuple[int, float, int] | None = None  # (specificity, q, position)
    for position, name, q in _ranges(accept):
        specificity = {media: 3, f"{kind}/*": 2, "*/*": 1}.get(name, 0)
        if not specificity or (best is not None and best[0] >= specificity):
            continue
        if not 0.0 <= q <= 1.0:  # also NaN: RFC 9110 §12.4.2 allows 0 to 1
            q = 0.0
        best = (specificity, q, position)
    return None if best is None else (best[1], best[2])


def _ranges(accept: str) -> Iterator[tuple[int, str, float]]:
    """Each media range of ``accept``: (position, lower-cased range, its q-value as
    written — 1.0 without one, 0.0 when unreadable)."""
    for position, item in enumerate(accept.split(",")):
        media, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        yield position, media.strip().lower(), q


def serialize(obj: Any, media: str) -> bytes:
    if media == YAML:
        return yaml.safe_dump(obj, default_flow_style=None, allow_unicode=True, sort_keys=False).encode("utf-8")
    return dumps(obj).encode("utf-8")


def allowed_origin(origin: str | None, cors_origin: str | Sequence[str] | None) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for ``origin``, or None.

    ``cors_origin`` is ``"*"``, one origin, or a list; entries may be glob
    patterns (``https://*.example.com``).
    """
    if not cors_origin:
        return None
    patterns = [cors_origin] if isinstance(cors_origin, str) else list(cors_origin)
    if "*" in patterns:
        return "*"
    if origin and any(fnmatch.fnmatchcase(origin, p) for p in patterns):
        return origin
    return None


def same_origin(origin: str, host: str | None) -> bool:
    """Is ``origin`` this server's own: its host and port those of the ``Host``
    header (Tornado's default ``check_origin``)? The scheme is not compared: one
    port serves one scheme."""
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # e.g. an unbalanced "[" in the host
        netloc = ""
    return bool(netloc and host and netloc.lower() == host.strip().lower())


def websocket_origin_allowed(origin: str, host: str | None, cors_origin: str | Sequence[str] | None) -> bool:
    """May a browser page from ``origin`` open a websocket to this server (reached as ``host``)?

    Its own origin may (:func:`same_origin`, which the reference uses when
    ``cors_origin`` is unset); any other only if ``cors_origin`` allows it.
    A request without ``Origin`` does not come from a browser: check that before.
    """
    return same_origin(origin, host) or allowed_origin(origin, cors_origin) is not None
