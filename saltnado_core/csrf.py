"""Cross-site request forgery: may a request use the ``session_id`` cookie?

A browser attaches the cookie to requests that any page makes to this server, so
a page of another origin could run a command with a logged-in operator's session
by submitting a ``<form method=post>`` to ``/`` (the reference lets it). The
cookie's ``SameSite=Lax`` stops that in current browsers only across *sites*: a
page on a sibling host of the same site (``https://x.example.com`` against
``https://salt.example.com``) still gets it sent, as do older browsers and cookies
set without ``SameSite`` (by salt-api, by a proxy).

So a request that changes state (RFC 9110 §9.2.1: any method but the safe GET,
HEAD, OPTIONS) and authenticates with the cookie, not ``X-Auth-Token`` (which a
page can only send cross-origin after a CORS preflight), is served only if a page
of another origin could not have sent it without ``cors_origin``'s consent:

- its ``Content-Type`` is JSON or YAML: not CORS-safelisted (Fetch standard: only
  ``application/x-www-form-urlencoded``, ``multipart/form-data`` and ``text/plain``
  are), so a browser sends it cross-origin only after a preflight that an
  allowed origin passes; or
- its ``Origin`` is the server's own (same host and port as ``Host``) or a named
  origin ``cors_origin`` allows. ``*`` does not count: it grants no credentials
  (the answers carry no ``Access-Control-Allow-Credentials``).

Anything else is 403 :data:`CROSS_SITE_COOKIE`, before Salt is asked anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from .bodies import media_type
from .http import HTTPError, Request
from .negotiation import allowed_origin, same_origin

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Body types a browser sends to another origin only after a CORS preflight.
PREFLIGHTED_TYPES = ("application/json", "application/x-yaml", "text/yaml")
CROSS_SITE_COOKIE = (
    "a POST authenticated by the session_id cookie needs X-Auth-Token, a JSON or YAML body, "
    "or an Origin this server allows (cross-site request forgery protection)"
)


def check_cookie_use(request: Request, cors_origin: str | Sequence[str] | None) -> None:
    """Raise 403 unless ``request`` may authenticate with the session cookie (module docstring)."""
    if request.method in SAFE_METHODS or media_type(request) in PREFLIGHTED_TYPES:
        return
    origin = request.header("origin")
    if origin is not None and (
        same_origin(origin, request.header("host")) or allowed_origin(origin, cors_origin) not in (None, "*")
    ):
        return
    raise HTTPError(403, CROSS_SITE_COOKIE)
