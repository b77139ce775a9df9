"""The reference's URL table (``rest_tornado/__init__.py::get_application``).

Routes are anchored full matches, like Tornado's. The websocket routes exist
only with ``websockets: True`` and take a token of exactly the master's
``hash_type`` hex-digest length; any other shape is a 404, as in the reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .kinds import StreamKind, Transport


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    params: tuple[str, ...] = ()


class Router:
    def __init__(self, token_length: int = 64, websockets: bool = True) -> None:
        token = rf"([0-9A-Fa-f]{{{token_length}}})"
        table = [
            ("root", r"/"),
            ("login", r"/login"),
            ("logout", r"/logout"),
            ("minions", r"/minions(?:/(.*))?"),
            ("jobs", r"/jobs(?:/(.*))?"),
            ("run", r"/run"),
            ("hook", r"/hook(/.*)?"),
        ]
        for kind in StreamKind:  # websocket routes exist only with ``websockets: True``
            if kind.transport is Transport.SSE or websockets:
                table.append((kind.value, f"/{kind.value}/{token}" if kind.token_in_path else f"/{kind.value}"))
        self._table = [(name, re.compile(pattern)) for name, pattern in table]
        self.names = tuple(name for name, _ in table)  # every route, in matching order

    def match(self, path: str) -> Route | None:
        for name, pattern in self._table:
            found = pattern.fullmatch(path)
            if found:
                return Route(name, tuple(g or "" for g in found.groups()))
        return None
