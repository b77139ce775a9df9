"""The reference's URL table (``rest_tornado/__init__.py::get_application``).

Routes are anchored full matches, like Tornado's. The websocket routes exist
only with ``websockets: True`` and take a token of exactly the master's
``hash_type`` hex-digest length; any other shape is a 404, as in the reference.

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

from .kinds import StreamKind, Transport


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    params: tuple[str, ...] = ()


# The routes that need a session; rest_cherrypy's ``enable_sessions: False`` removes them.
SESSION_ROUTES = frozenset({"login", "logout", "minions", "jobs"})


class Router:
    def __init__(
        self, token_length: int = 64, websockets: bool = True, hook_path: str = "/hook", sessions: bool = True
    ) -> None:
        """``hook_path``: where the hook is (rest_cherrypy's ``webhook_url``), a URL
        path of unreserved characters; ``sessions=False``: no :data:`SESSION_ROUTES`."""
        token = rf"([0-9A-Fa-f]{{{token_length}}})"
        table = [
            ("root", r"/"),
            ("login", r"/login"),
            ("logout", r"/logout"),
            ("minions", r"/minions(?:/(.*))?"),
            ("jobs", r"/jobs(?:/(.*))?"),
            ("run", r"/run"),
            ("hook", re.escape(hook_path) + r"(/.*)?"),
            ("health", r"/health"),
        ]
        if not sessions:
            table = [(name, pattern) for name, pattern in table if name not in SESSION_ROUTES]
        for kind in StreamKind:  # websocket routes exist only with ``websockets: True``
            if kind.transport is Transport.SSE or websockets:
                table.append((kind.value, f"/{kind.value}/{token}" if kind.token_in_path else f"/{kind.value}"))
        self._table = [(name, re.compile(pattern)) for name, pattern in table]
        self.names = tuple(name for name, _ in table)  # every route, in matching order

    def match(self, path: str) -> Route | None:
        for name, pattern in self._table:
            found = pattern.fullmatch(path)
            if found:
                return Route(name, tuple(decode(g or "") for g in found.groups()))
        return None


_ENCODED_SLASH = re.compile(r"(%2[fF])")


def decode(captured: str) -> str:
    """A captured part of the path, percent-decoded but for ``%2F``, kept as sent."""
    parts = _ENCODED_SLASH.split(captured)
    return "".join(part if i % 2 else unquote(part) for i, part in enumerate(parts))
