"""The endpoints: rest_tornado's URLs, as generator handlers over a :class:`Context`.

Successful responses match the reference's shapes; where the reference is
broken (redirects instead of 401, HTML errors, hangs on empty bodies, no wheel
client, 200 instead of 202 on ``POST /minions``, the caller's token copied into
hook events) these do what its documentation promises instead. README lists
every difference.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from . import lowstate
from .outcomes import (
    AUTH_COOKIE_NAME,
    AUTH_TOKEN_HEADER,
    AcceptEventStream,
    AcceptWebSocket,
    Context,
    Handler,
)
from .access import ApiAcl
from .bodies import parse_body
from .blocks import Dialect
from .csrf import check_cookie_use
from .http import HTTPError, Request, Response, status_line, websocket_key
from .kinds import StreamKind, Transport, stream_kind
from .negotiation import websocket_origin_allowed
from .permissions import EVENTS_FORBIDDEN, may_read_events
from .salt_calls import FireEvent, GetAuthList, GetToken, MakeToken, RemoveToken, RunLowstate, SaltCall
from .tokens import TokenStatus, check_token, is_token_shaped


class Unauthorized(HTTPError):
    """401 "Please log in". ``raise UNAUTHORIZED`` makes a new one each time: an
    exception instance raised again and again keeps every traceback (and the
    frames they hold) chained onto it, a leak of ~3 KB per 401."""

    def __init__(self) -> None:
        super().__init__(401, "Please log in", [("www-authenticate", "Session")])


UNAUTHORIZED = Unauthorized
# A hook event goes to every subscriber of the event bus, so by default no header whose
# name looks like it carries a credential goes into it: X-Auth-Token, Cookie, Cookie2,
# Authorization, Proxy-Authorization, X-Forwarded-Authorization, X-Api-Key, X-Gitlab-Token,
# X-Hub-Signature-256, X-Session-Id … (a word list: a deny-list of names always misses one).
# ``webhook_headers`` replaces this with an allow-list.
CREDENTIAL_WORDS = re.compile("auth|token|key|secret|cookie|session|passw|signature|credential")


@dataclass(frozen=True, slots=True)
class Shapes:
    """Where rest_tornado and rest_cherrypy answer the same request differently: a
    master's clients get the answers of the server its config block was written
    for (``settings.dialect``). Everything not here is answered alike."""

    login_page: bool  # GET /login: 200 {"status": "200 OK", "return": "Please log in"}, else 401
    token_header: bool  # POST /login: the token in an X-Auth-Token header too, besides the cookie
    no_perms: Any  # POST /login's "perms" when the user has none
    job_detail: bool  # GET /jobs/<jid>: {"info": [<the job>], "return": [{<minion>: <its return>}]}


SHAPES: Mapping[Dialect, Shapes] = {
    Dialect.TORNADO: Shapes(login_page=False, token_header=False, no_perms=[], job_detail=False),
    Dialect.CHERRYPY: Shapes(login_page=True, token_header=True, no_perms={}, job_detail=True),
}


def shapes(ctx: Context) -> Shapes:
    return SHAPES[ctx.settings.dialect]


# -- helpers -----------------------------------------------------------------------
def allow(ctx: Context, *methods: str) -> None:
    if ctx.request.method not in methods:
        raise HTTPError(405, f"method {ctx.request.method} not allowed here", [("allow", ", ".join(methods))])


def cookie(request: Request, name: str) -> str | None:
    """The value of the first cookie called ``name``, across every ``Cookie`` header
    in order; None when there is none.

    ``session_id=a; session_id=b`` (or two ``Cookie`` headers) gives ``a``, even when
    ``a`` is no token: RFC 6265 §5.4 has a browser list cookies with longer paths
    first, then older ones, so the first is the one its own rule prefers; a server
    sees neither path nor age. Most frameworks take the first too.
    """
    for key, value in request.headers:
        if key == "cookie":
            for part in value.split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return v
    return None


def request_token(ctx: Context) -> str | None:
    """``X-Auth-Token`` (wins) or the ``session_id`` cookie; 403 when the cookie
    is on a request a page of another origin may have forged
    (:mod:`saltnado_core.csrf`)."""
    token = ctx.request.header(AUTH_TOKEN_HEADER)
    if token:
        return token
    token = cookie(ctx.request, AUTH_COOKIE_NAME)
    if token is not None:
        check_cookie_use(ctx.request, ctx.settings.cors_origin)
    return token


def authenticate(ctx: Context) -> Generator[SaltCall, Any, tuple[str, Mapping[str, Any]]]:
    """The request's token if Salt's token store says it is valid → (token, its record); else 401
    (403 for a forged cookie, see :func:`request_token`)."""
    token = request_token(ctx)
    if not token or not is_token_shaped(token, ctx.settings.token_length):
        raise UNAUTHORIZED
    return token, (yield from token_record(ctx, token))


def token_record(ctx: Context, token: str) -> Generator[SaltCall, Any, Mapping[str, Any]]:
    """Salt's record of ``token`` if it is valid at ``ctx.now``; else 401."""
    record = yield GetToken(token)
    if check_token(record, ctx.now) is not TokenStatus.VALID:
        raise UNAUTHORIZED
    return record  # type: ignore[no-any-return]


def require_event_access(record: Mapping[str, Any]) -> Generator[SaltCall, Any, None]:
    """403 unless the token's eauth permissions allow reading the event bus
    (the rule is in :mod:`saltnado_core.permissions`)."""
    auth_list = yield GetAuthList(record)
    if not may_read_events(auth_list):
        raise HTTPError(403, EVENTS_FORBIDDEN)


def body(ctx: Context) -> Any:
    payload = parse_body(ctx.request)
    if payload is None:
        raise HTTPError(400, "this request needs a body")
    return payload


def query_args(request: Request) -> dict[str, Any]:
    """Query-string arguments, a single value or a list when repeated (as the reference)."""
    return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(request.query, keep_blank_values=True).items()}


# -- / -----------------------------------------------------------------------------
def root(ctx: Context) -> Handler:
    allow(ctx, "GET", "POST")
    if ctx.request.method == "GET":
        return ctx.reply(200, {"clients": list(ctx.settings.enabled_clients), "return": "Welcome"})
    token, _ = yield from authenticate(ctx)
    return (yield from run_lowstate(ctx, body(ctx), token))


def run_lowstate(ctx: Context, payload: Any, token: str | None, status: int = 200) -> Handler:
    chunks = lowstate.normalize(payload)
    lowstate.check_clients(chunks, ctx.settings.enabled_clients)
    results = yield from lowstate.run(chunks, token)
    return ctx.reply(status, {"return": results})


# -- /login, /logout ---------------------------------------------------------------
def login(ctx: Context) -> Handler:
    allow(ctx, "GET", "POST")
    if ctx.request.method == "GET":
        if shapes(ctx).login_page:
            return ctx.reply(200, {"status": status_line(200), "return": "Please log in"}, _CHALLENGE)
        raise UNAUTHORIZED
    payload = body(ctx)
    if isinstance(payload, list) and len(payload) == 1:  # rest_cherrypy accepts [{...}]
        payload = payload[0]
    if not isinstance(payload, dict):
        raise HTTPError(400, "send username, password and eauth")
    missing = [k for k in ("username", "password", "eauth") if not isinstance(payload.get(k), str)]
    if missing:
        raise HTTPError(400, f"missing or non-string field(s): {', '.join(missing)}")
    if not api_acl_allows(ctx.settings.api_acl, payload["username"], ctx.request.client):
        raise HTTPError(401, "api_acl does not let this user log in from this address", _CHALLENGE)
    record = yield MakeToken(payload["username"], payload["password"], payload["eauth"])
    if not record or "token" not in record:
        raise HTTPError(401, "Could not authenticate using provided credentials", [("www-authenticate", "Session")])
    eauth_config = ctx.settings.external_auth.get(record.get("eauth"))
    if not isinstance(eauth_config, Mapping):
        raise HTTPError(
            401, f"eauth {record.get('eauth')!r} is not configured in external_auth", [("www-authenticate", "Session")]
        )
    result = {
        "token": record["token"],
        "expire": record["expire"],
        "start": record["start"],
        "user": record["name"],
        "eauth": record["eauth"],
        "perms": sorted_permissions(sum_permissions(record, eauth_config)) or shapes(ctx).no_perms,
    }
    headers: tuple[tuple[str, str], ...] = (("set-cookie", session_cookie(ctx, record["token"])),)
    if shapes(ctx).token_header:
        headers += ((AUTH_TOKEN_HEADER, record["token"]),)
    return ctx.reply(200, {"return": [result]}, headers)


_CHALLENGE = (("www-authenticate", "Session"),)


def api_acl_allows(acl: ApiAcl | None, username: str, client: str | None) -> bool:
    """rest_cherrypy's ``salt_api_acl_tool``, checked before the credentials are."""
    return acl is None or acl.allows(username, client)


def session_cookie(ctx: Context, value: str, clear: bool = False) -> str:
    cookie_text = f"{AUTH_COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Lax"
    if clear:
        cookie_text += "; Max-Age=0"
    if not ctx.settings.disable_ssl:
        cookie_text += "; Secure"
    return cookie_text


def logout(ctx: Context) -> Handler:
    allow(ctx, "POST")
    token, _ = yield from authenticate(ctx)
    yield RemoveToken(token)
    return ctx.reply(
        200, {"return": "Your token has been cleared"}, (("set-cookie", session_cookie(ctx, "", clear=True)),)
    )


def sum_permissions(token: Mapping[str, Any], eauth: Mapping[str, Any]) -> list[Any]:
    """User + ``*`` + group permissions (``salt.netapi.sum_permissions``, without
    its side effect of growing the configured list on every login)."""
    perms = list(eauth.get(str(token.get("name")), None) or [])
    perms.extend(eauth.get("*", None) or [])
    groups = set(token.get("groups") or ())
    for group in sorted(groups & {k[:-1] for k in eauth if isinstance(k, str) and k.endswith("%")}):
        perms.extend(eauth[f"{group}%"] or [])
    return perms


def sorted_permissions(perms: list[Any]) -> list[Any]:
    """Deduplicated; strings sorted, then the rest by ``repr`` (``salt.netapi``)."""
    strings: list[str] = []
    others: list[Any] = []
    for entry in perms:
        bucket = strings if isinstance(entry, str) else others
        if entry not in bucket:
            bucket.append(entry)
    return sorted(strings) + sorted(others, key=repr)


# -- /minions, /jobs, /run ---------------------------------------------------------
def minions(ctx: Context) -> Handler:
    mid = ctx.route.params[0] if ctx.route.params else ""
    if mid and ctx.request.method == "POST":
        raise HTTPError(405, "POST to /minions, not /minions/<id>", [("allow", "GET")])
    allow(ctx, "GET") if mid else allow(ctx, "GET", "POST")
    token, _ = yield from authenticate(ctx)
    if ctx.request.method == "GET":
        chunk = {"client": "local", "tgt": mid or "*", "fun": "grains.items"}
        return (yield from run_lowstate(ctx, chunk, token))
    chunks = lowstate.normalize(body(ctx))
    for chunk in chunks:
        if chunk.setdefault("client", "local_async") != "local_async":
            raise HTTPError(400, "We don't serve your kind here: /minions only runs local_async jobs")
    lowstate.check_clients(chunks, ctx.settings.enabled_clients)
    results = yield from lowstate.run(chunks, token)
    jobs_path = f"{ctx.settings.root_prefix}/jobs"  # a link a client can follow, behind root_prefix too
    links = [{"href": f"{jobs_path}/{r['jid']}"} for r in results if isinstance(r, Mapping) and "jid" in r]
    return ctx.reply(202, {"return": results, "_links": {"jobs": links}})


def jobs(ctx: Context) -> Handler:
    allow(ctx, "GET")
    token, _ = yield from authenticate(ctx)
    jid = ctx.route.params[0] if ctx.route.params else ""
    chunk: dict[str, Any] = {"client": "runner", "fun": "jobs.list_job" if jid else "jobs.list_jobs"}
    if jid:
        chunk["jid"] = jid
    if not (jid and shapes(ctx).job_detail):
        return (yield from run_lowstate(ctx, chunk, token))
    chunks = lowstate.normalize(chunk)
    lowstate.check_clients(chunks, ctx.settings.enabled_clients)
    job = (yield from lowstate.run(chunks, token))[0]
    return ctx.reply(200, {"info": [job], "return": [minion_returns(job)]})


def minion_returns(job: Any) -> dict[str, Any]:
    """``jobs.list_job``'s ``Result`` as ``{minion: its return}`` (rest_cherrypy's
    ``/jobs/<jid>``); ``{}`` when the job has none (an unknown jid)."""
    result = job.get("Result") if isinstance(job, Mapping) else None
    if not isinstance(result, Mapping):
        return {}
    return {mid: ret.get("return") if isinstance(ret, Mapping) else ret for mid, ret in result.items()}


def run(ctx: Context) -> Handler:
    """Lowstate with credentials in each chunk; no session needed."""
    allow(ctx, "POST")
    return (yield from run_lowstate(ctx, body(ctx), request_token(ctx)))


# -- /events, /hook ----------------------------------------------------------------
def events(ctx: Context) -> Handler:
    allow(ctx, "GET")
    if ctx.request.query:
        # Salt removed query-string tokens from rest_cherrypy: they leak into logs.
        raise HTTPError(400, "/events takes no query string; send X-Auth-Token or the session_id cookie")
    token, record = yield from authenticate(ctx)
    yield from require_event_access(record)
    return AcceptEventStream(float(record["expire"]), token=token)


def hook(ctx: Context) -> Handler:
    allow(ctx, "POST")
    if not ctx.settings.webhook_disable_auth:
        yield from authenticate(ctx)
    suffix = ctx.route.params[0] if ctx.route.params else ""
    payload = parse_body(ctx.request)
    headers = {
        "-".join(word.capitalize() for word in name.split("-")): value
        for name, value in ctx.request.headers
        if hook_may_carry(name, ctx.settings.webhook_headers)
    }
    data = {"post": payload if payload is not None else {}, "get": query_args(ctx.request), "headers": headers}
    sent = yield FireEvent(f"salt/netapi/hook{suffix}", data)
    return ctx.reply(200, {"success": bool(sent)})


def hook_may_carry(name: str, allowed: tuple[str, ...] | None) -> bool:
    """May the (lower-cased) header ``name`` go into a hook event? Only one of
    ``allowed`` (``webhook_headers``) when set, else any not credential-like."""
    if allowed is not None:
        return name in allowed
    return CREDENTIAL_WORDS.search(name) is None


# -- /health ----------------------------------------------------------------------
def health(ctx: Context) -> Handler:
    """200 while the event bus is followed and the master counts as available,
    else 503 with why; no token, no Salt call (a load balancer polls it).
    Never cached: RFC 9111 §5.2.2.5, "no-store"."""
    allow(ctx, "GET", "HEAD")
    state = ctx.health()
    status = 200 if state.ok else 503
    return ctx.reply(status, {"status": status_line(status), "return": state.reason}, (("cache-control", "no-store"),))
    yield  # pragma: no cover - makes this a generator


# -- websockets ----------------------------------------------------------------------
def websocket(ctx: Context) -> Handler:
    allow(ctx, "GET")
    # The reference's check_origin: a browser page may open a websocket only from
    # an origin cors_origin allows, or its own (same host and port); clients that
    # send no Origin (websocket-client, pepper, curl) are not browsers.
    origin = ctx.request.header("origin", ctx.request.header("sec-websocket-origin"))
    host = ctx.request.header("host")
    if origin is not None and not websocket_origin_allowed(origin, host, ctx.settings.cors_origin):
        raise HTTPError(403, "Cross origin websockets not allowed")
    token = ctx.route.params[0]
    record = yield from token_record(ctx, token)
    yield from require_event_access(record)
    if not ctx.request.wants_websocket:
        raise HTTPError(400, 'Can "Upgrade" only to "WebSocket".')
    websocket_key(ctx.request)  # validates the handshake (400/426)
    delta = parse_qs(ctx.request.query).get("delta", [""])[-1].lower() in ("1", "true", "yes")
    return AcceptWebSocket(stream_kind(ctx.route.name), float(record["expire"]), token, delta)


HANDLERS: Mapping[str, Callable[[Context], Handler]] = {
    "root": root,
    "login": login,
    "logout": logout,
    "minions": minions,
    "jobs": jobs,
    "run": run,
    "hook": hook,
    "health": health,
    # the event streams: one handler per transport (saltnado_core.kinds)
    **{kind.value: events if kind.transport is Transport.SSE else websocket for kind in StreamKind},
}

__all__ = ["HANDLERS", "RunLowstate", "Response", "sorted_permissions", "sum_permissions"]
