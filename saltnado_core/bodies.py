"""Request bodies by ``Content-Type``, as the reference's ``ct_in_map`` reads them.

Form bodies merge the query string's arguments and turn repeated keys into
lists; ``text/plain`` is JSON ("because people are terrible"). An unknown or
missing type with a body is 415 (the reference: 406), an unparseable body 400
with the parser's reason — including bodies nested past the parsers' recursion
limit, YAML values its constructors refuse (``!!float x``, a 5,000-digit int) and
YAML aliases, which are not accepted: ``&a``/``*a`` let a few hundred bytes
stand for a structure with billions of nodes that Salt would then walk.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import yaml

from .http import HTTPError, Request


class _BodyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` without aliases (see the module docstring)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not accepted", mark)
        return super().compose_node(parent, index)


def parse_form(text: str, into: dict[str, Any] | None = None) -> dict[str, Any]:
    """``a=1&a=2&b=3`` → ``{"a": ["1", "2"], "b": "3"}``."""
    out: dict[str, Any] = {} if into is None else into
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in out:
            prev = out[key]
            out[key] = prev + [value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


def media_type(request: Request) -> str:
    """The ``Content-Type`` without parameters, lower-cased; ``""`` when there is none."""
    return (request.header("content-type") or "").split(";", 1)[0].strip().lower()


def parse_body(request: Request, merge_query: bool = True) -> Any:
    """The decoded body, or None when there is none. A form body has the query
    string's arguments merged in unless ``merge_query`` is False (rest_cherrypy's
    hook reads the body alone)."""
    if not request.body:
        return None
    content_type = media_type(request)
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "request body is not UTF-8") from None
    if content_type == "application/x-www-form-urlencoded":
        return parse_form(text, parse_form(request.query) if merge_query else None)
    if content_type in ("application/json", "text/plain"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise HTTPError(400, f"invalid JSON body: {exc}") from None
        except RecursionError:
            raise HTTPError(400, "invalid JSON body: nested too deeply") from None
    if content_type in ("application/x-yaml", "text/yaml"):
        try:
            return yaml.load(text, Loader=_BodyLoader)  # noqa: S506 - a SafeLoader
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            reason = str(exc).replace("\n", " ")
            raise HTTPError(400, f"invalid YAML body: {reason}") from None
        except RecursionError:
            raise HTTPError(400, "invalid YAML body: nested too deeply") from None
    raise HTTPError(
        415,
        f"unsupported Content-Type {content_type or '(none)'!r}; use application/json, "
        "application/x-www-form-urlencoded, application/x-yaml, text/yaml or text/plain",
    )
