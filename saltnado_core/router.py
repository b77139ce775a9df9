"""The reference's URL table (``rest_tornado/__init__.py::get_application``),
plus ``/logout`` and ``/stats`` (rest_cherrypy's), ``/health`` and ``/metrics``.

Routes are anchored full matches, like Tornado's. rest_tornado's websocket
routes exist only with ``websockets: True`` and take a token of exactly the
master's ``hash_type`` hex-digest length; any other shape is a 404, as in the
reference. rest_cherrypy's ``/ws`` (and its ``/keys`` and ``/token``) are
served in both dialects: ``/ws`` under ``websockets: True``, and always for a
``rest_cherrypy:`` block (which has no such key: salt-api serves it whenever
ws4py is installed). Its optional path token may have any shape: a wrong one
is a 401, as there. rest_tornado's also exist without the token segment
(``/all_events``), for clients that send it another way
(:func:`saltnado_core.rest.websocket_token`).

Routes match the path as sent, still percent-encoded: a proxy in front that
allows or denies by path sees the same path the router does (``/%6cogin`` is
not ``/login``, nor ``/minions%2fminion1`` ``/minions/minion1``). What a route
captures is decoded after matching, except ``%2F``, which stays as sent: it is
never a separator (RFC 3986 §2.2: "URIs that differ in the replacement of a
reserved character with its corresponding percent-encoded octet are not equivalent").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from .kinds import StreamKind, TokenPlace, Transport


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    params: tuple[str, ...] = ()


# The routes that need a session; rest_cherrypy's ``enable_sessions: False`` removes them.
SESSION_ROUTES = frozenset({"login", "logout", "minions", "jobs"})


class Router:
    def __init__(
        self,
        token_length: int = 64,
        websockets: bool = True,
        cherrypy: bool = False,
        hook_path: str = "/hook",
        sessions: bool = True,
    ) -> None:
        """``cherrypy``: the settings are a ``rest_cherrypy:`` block's (``/ws`` always
        served); ``hook_path``: where the hook is (rest_cherrypy's ``webhook_url``), a
        URL path of unreserved characters; ``sessions=False``: no :data:`SESSION_ROUTES`."""
        token = rf"([0-9A-Fa-f]{{{token_length}}})"
        table = [
            ("root", r"/"),
            ("login", r"/login"),
            ("logout", r"/logout"),
            ("minions", r"/minions(?:/(.*))?"),
            ("jobs", r"/jobs(?:/(.*))?"),
            ("run", r"/run"),
            ("keys", r"/keys(?:/(.*))?"),
            ("token", r"/token"),
            ("hook", re.escape(hook_path) + r"(/.*)?"),
            ("health", r"/health"),
            ("metrics", r"/metrics"),
            ("stats", r"/stats"),
        ]
        if not sessions:
            table = [(name, pattern) for name, pattern in table if name not in SESSION_ROUTES]
        for kind in StreamKind:  # websocket routes exist only with ``websockets: True``
            if not kind.routed:
                continue  # a variant of another kind's route (/ws?format_events)
            if kind.transport is Transport.SSE or websockets or (cherrypy and kind.token_place is TokenPlace.PATH_OR_HEADER):
                table.append((kind.value, _stream_pattern(kind, token)))
        self._table = [(name, re.compile(pattern)) for name, pattern in table]
        self.names = tuple(name for name, _ in table)  # every route, in matching order

    def match(self, path: str) -> Route | None:
        for name, pattern in self._table:
            found = pattern.fullmatch(path)
            if found:
                return Route(name, tuple(decode(g or "") for g in found.groups()))
        return None


def _stream_pattern(kind: StreamKind, token: str) -> str:
    if kind.token_place is TokenPlace.PATH:
        # /all_events/<token> as the reference, and /all_events (the token in a
        # header, a cookie or a subprotocol): the parameter is "" then
        return f"/{kind.route}(?:/{token})?"
    if kind.token_place is TokenPlace.PATH_OR_HEADER:
        return f"/{kind.route}(?:/([^/]+))?"
    return f"/{kind.route}"


_ENCODED_SLASH = re.compile(r"(%2[fF])")


def decode(captured: str) -> str:
    """A captured part of the path, percent-decoded but for ``%2F``, kept as sent."""
    parts = _ENCODED_SLASH.split(captured)
    return "".join(part if i % 2 else unquote(part) for i, part in enumerate(parts))
