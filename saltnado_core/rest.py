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

from . import keys as keyfiles
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
from .history import FOREIGN_ID, EventId, parse_event_id
from .http import HTTPError, Request, Response, status_line, websocket_key
from .kinds import StreamKind, Transport, stream_kind
from .masters import MASTERS_PARAM, NO_MASTER, chunk_masters, masters_listing, request_master
from .negotiation import EXPOSITION_OFFERED, PROMETHEUS_TEXT, choose_media, websocket_origin_allowed
from .permissions import EVENTS_FORBIDDEN, may_read_events
from .salt_calls import FireEvent, GetAuthList, GetToken, MakeToken, RemoveToken, RunLowstate, SaltCall
from .tagfilter import MAX_PATTERNS, BadTagPattern, TagFilter, glob_filter, master_filter
from .tokens import SECRET_QUERY_KEYS, TokenStatus, check_token, is_token_shaped, redact_tokens


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
    hook_body: bool  # /hook's event: {"body": <the body as text>, "post", "headers"}, else {"post", "get", "headers"}


SHAPES: Mapping[Dialect, Shapes] = {
    Dialect.TORNADO: Shapes(login_page=False, token_header=False, no_perms=[], job_detail=False, hook_body=False),
    Dialect.CHERRYPY: Shapes(login_page=True, token_header=True, no_perms={}, job_detail=True, hook_body=True),
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


def authenticate(
    ctx: Context, master: str | None = None
) -> Generator[SaltCall, Any, tuple[str, Mapping[str, Any]]]:
    """The request's token if the token store of ``master`` (None: the default)
    says it is valid → (token, its record); else 401 (403 for a forged cookie, see
    :func:`request_token`)."""
    token = request_token(ctx)
    if not token or not is_token_shaped(token, ctx.settings.token_length):
        raise UNAUTHORIZED
    return token, (yield from token_record(ctx, token, master))


def token_record(ctx: Context, token: str, master: str | None = None) -> Generator[SaltCall, Any, Mapping[str, Any]]:
    """Salt's record of ``token`` (in ``master``'s token store) if it is valid at ``ctx.now``; else 401."""
    record = yield GetToken(token, master)
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
        answer: dict[str, Any] = {"clients": list(ctx.settings.enabled_clients), "return": "Welcome"}
        if query_args(ctx.request).get(MASTERS_PARAM) in YES:  # opt-in: the reference's shape otherwise
            answer.update(masters_listing(ctx.settings))
        return ctx.reply(200, answer)
    master = request_master(ctx.request, ctx.settings)
    token, _ = yield from authenticate(ctx, master)
    return (yield from run_lowstate(ctx, body(ctx), token, master))


def run_lowstate(ctx: Context, payload: Any, token: str | None, master: str | None = None) -> Handler:
    """Run a lowstate, each chunk on its master (its ``master`` key, else ``master``)."""
    chunks = lowstate.normalize(payload)
    lowstate.check_clients(chunks, ctx.settings.enabled_clients)
    masters = chunk_masters(chunks, ctx.settings, master)
    results = yield from lowstate.run(chunks, token, masters)
    return ctx.reply(200, {"return": results})


# -- /login, /logout ---------------------------------------------------------------
def login(ctx: Context) -> Handler:
    allow(ctx, "GET", "POST")
    if ctx.request.method == "GET":
        if shapes(ctx).login_page:
            return ctx.reply(200, {"status": status_line(200), "return": "Please log in"}, _CHALLENGE)
        raise UNAUTHORIZED
    master = request_master(ctx.request, ctx.settings)  # the master whose token store keeps the token
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
    record = yield MakeToken(payload["username"], payload["password"], payload["eauth"], master)
    if not record or "token" not in record:
        raise HTTPError(401, "Could not authenticate using provided credentials", [("www-authenticate", "Session")])
    eauth_config = ctx.settings.external_auth_of(master).get(record.get("eauth"))
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
    master = request_master(ctx.request, ctx.settings)
    token, _ = yield from authenticate(ctx, master)
    yield RemoveToken(token, master)
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
    master = request_master(ctx.request, ctx.settings)
    token, _ = yield from authenticate(ctx, master)
    if ctx.request.method == "GET":
        chunk = {"client": "local", "tgt": mid or "*", "fun": "grains.items"}
        return (yield from run_lowstate(ctx, chunk, token, master))
    chunks = lowstate.normalize(body(ctx))
    for chunk in chunks:
        if chunk.setdefault("client", "local_async") != "local_async":
            raise HTTPError(400, "We don't serve your kind here: /minions only runs local_async jobs")
    lowstate.check_clients(chunks, ctx.settings.enabled_clients)
    results = yield from lowstate.run(chunks, token, chunk_masters(chunks, ctx.settings, master))
    jobs_path = f"{ctx.settings.root_prefix}/jobs"  # a link a client can follow, behind root_prefix too
    links = [{"href": f"{jobs_path}/{r['jid']}"} for r in results if isinstance(r, Mapping) and "jid" in r]
    return ctx.reply(202, {"return": results, "_links": {"jobs": links}})


def jobs(ctx: Context) -> Handler:
    allow(ctx, "GET")
    master = request_master(ctx.request, ctx.settings)
    token, _ = yield from authenticate(ctx, master)
    jid = ctx.route.params[0] if ctx.route.params else ""
    chunk: dict[str, Any] = {"client": "runner", "fun": "jobs.list_job" if jid else "jobs.list_jobs"}
    if jid:
        chunk["jid"] = jid
    if not (jid and shapes(ctx).job_detail):
        return (yield from run_lowstate(ctx, chunk, token, master))
    chunks = lowstate.normalize(chunk)
    lowstate.check_clients(chunks, ctx.settings.enabled_clients)
    job = (yield from lowstate.run(chunks, token, [master]))[0]
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
    master = request_master(ctx.request, ctx.settings)
    return (yield from run_lowstate(ctx, body(ctx), request_token(ctx), master))


# -- stream options ------------------------------------------------------------------
TAG_PARAM = "tag"  # ?tag=<glob>, repeatable: the events a stream's client wants
MASTER_PARAM = "master"  # ?master=<name>, repeatable: only these masters' events (an event log's)
NO_QUERY_TOKENS = (
    "no token in the query string (it would reach logs and proxies); "
    "send X-Auth-Token or the session_id cookie"
)


def stream_query(request: Request) -> dict[str, list[str]]:
    """A stream request's query parameters, every value kept (``tag`` repeats);
    400 if one of them holds a token (``token``, ``salt_token``, ``session_id`` …):
    rest_cherrypy's ``/events`` takes one there, saltnado never does."""
    params = parse_qs(request.query, keep_blank_values=True)
    if any(key.lower() in SECRET_QUERY_KEYS for key in params):
        raise HTTPError(400, NO_QUERY_TOKENS)
    return params


IDS_PARAM = "ids"  # ?ids=1: each event carries its id
LAST_EVENT_ID_PARAM = "last_event_id"  # ?last_event_id=<id>: resume after it
YES = ("1", "true", "yes")


def stream_ids(params: Mapping[str, list[str]], last_event_id_header: str | None = None) -> tuple[bool, EventId | None]:
    """Whether a stream's client asked for event ids, and the id to resume after:
    ``?last_event_id=`` (which implies ids), else — with ``?ids=1`` only, so a
    client of the reference is never resumed — the ``Last-Event-ID`` header an
    ``EventSource`` sends when it reconnects. 400 for a ``?last_event_id=`` that is
    not an id of the shape this server gives."""
    ids = params.get(IDS_PARAM, [""])[-1].lower() in YES
    text = params.get(LAST_EVENT_ID_PARAM, [None])[-1]
    if text is None:
        if ids and last_event_id_header:
            # An EventSource gives up for good on an error response, so an id this
            # server cannot read (another server's, an older format) resumes as an
            # unknown one: the notice, then live events.
            return True, parse_event_id(last_event_id_header) or FOREIGN_ID
        return ids, None
    last = parse_event_id(text)
    if last is None:
        raise HTTPError(400, "bad last event id: not an id this server gives (<epoch>-<position>)")
    return True, last


def stream_tags(params: Mapping[str, list[str]], settings: Any = None) -> TagFilter | None:
    """The filter the ``tag`` parameters ask for (None: every event), narrowed to
    the ``master`` parameters' masters (with an event log only); 400 with the
    reason for a bad pattern, which is not quoted back (:mod:`saltnado_core.tagfilter`)."""
    patterns = params.get(TAG_PARAM)
    masters = params.get(MASTER_PARAM)
    try:
        tags = None if patterns is None else glob_filter(patterns)
    except BadTagPattern as exc:
        raise HTTPError(400, f"bad tag filter: {exc}") from None
    if masters is None:
        return tags
    if settings is None or settings.event_log is None:
        raise HTTPError(400, f"{MASTER_PARAM}=<name> is for a server on an event log (event_log:), which this is not")
    if len(masters) > MAX_PATTERNS or any(not m or len(m) > 128 or not m.isprintable() for m in masters):
        raise HTTPError(400, f"bad {MASTER_PARAM} filter: at most {MAX_PATTERNS} names of 1-128 printable characters")
    return master_filter(tags, masters)


# -- /keys, /token (rest_cherrypy's) ----------------------------------------------------
def keys(ctx: Context) -> Handler:
    """``GET /keys`` → wheel ``key.list_all``, ``GET /keys/<mid>`` → ``key.finger``,
    with the session's token; ``POST /keys`` → a key pair for a new minion."""
    mid = ctx.route.params[0] if ctx.route.params else ""
    if mid and ctx.request.method == "POST":
        raise HTTPError(405, "POST to /keys, not /keys/<id>", [("allow", "GET")])
    allow(ctx, "GET") if mid else allow(ctx, "GET", "POST")
    master = request_master(ctx.request, ctx.settings)
    if ctx.request.method == "POST":
        return (yield from generate_keys(ctx, master))
    token, _ = yield from authenticate(ctx, master)
    chunk: dict[str, Any] = {"client": "wheel", "fun": "key.finger", "match": mid} if mid else {
        "client": "wheel", "fun": "key.list_all"}
    lowstate.check_clients([chunk], ctx.settings.enabled_clients)
    chunk["token"] = token
    # Salt's errors (an ACL that refuses, a master that is down) are thrown in here
    # and answered by the Exchange, as rest_cherrypy's hypermedia_handler does.
    result = yield RunLowstate(chunk, master)
    return ctx.reply(200, {"return": keyfiles.wheel_return(result)})


def generate_keys(ctx: Context, master: str | None = None) -> Handler:
    """``POST /keys``: ``mid`` and eauth credentials (``username``, ``password``,
    ``eauth``) in the body, optional ``keysize`` and ``force`` → wheel
    ``key.gen_accept`` run with those credentials (no session, as in rest_cherrypy)
    → the pair as ``saltkeys-<mid>.tar``."""
    payload = body(ctx)
    if isinstance(payload, list) and len(payload) == 1:  # rest_cherrypy reads lowstate[0]
        payload = payload[0]
    if not isinstance(payload, Mapping):
        raise HTTPError(400, "send mid, username, password and eauth")
    missing = [k for k in ("mid", "username", "password", "eauth") if not isinstance(payload.get(k), str)]
    if missing:
        raise HTTPError(400, f"missing or non-string field(s): {', '.join(missing)}")
    problem = keyfiles.minion_id_problem(payload["mid"])
    if problem:
        raise HTTPError(400, problem)
    try:
        options = keyfiles.gen_accept_options(payload)
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None
    mid = payload["mid"]
    chunk = {"client": "wheel", "fun": "key.gen_accept", "id_": mid, **options}
    lowstate.check_clients([chunk], ctx.settings.enabled_clients)
    chunk.update({k: payload[k] for k in lowstate.CREDENTIALS})
    result = yield RunLowstate(chunk, master)
    pair = keyfiles.wheel_return(result)
    if keyfiles.wheel_failed(result):
        raise HTTPError(500, "key.gen_accept failed: " + redact_tokens(str(pair))[:500])
    if not (isinstance(pair, Mapping) and isinstance(pair.get("pub"), str) and isinstance(pair.get("priv"), str)):
        # key.gen_accept returns {} when the id has an accepted key and force is not set
        raise HTTPError(409, "this minion id has an accepted key already; send force=true to replace it")
    headers = (("content-disposition", keyfiles.attachment(mid)), ("cache-control", "no-store"))
    return Response(200, keyfiles.key_tarball(pair["pub"], pair["priv"]), headers, keyfiles.TAR)


TOKEN_FIELDS_MISSING = 'Require "username", "password", and "eauth" params'


def make_tokens(ctx: Context) -> Handler:
    """``POST /token``: a raw Salt token per credentials chunk, made by the runner
    ``auth.mk_token`` run with those credentials (rest_cherrypy's ``Token``: so the
    user needs ``@runner`` rights and ``runner`` in ``netapi_enable_clients``) →
    ``[{"start", "token", "expire", "name", "eauth"}, …]``, without a ``return`` wrapper."""
    allow(ctx, "POST")
    master = request_master(ctx.request, ctx.settings)
    payload = body(ctx)
    chunks = payload if isinstance(payload, list) else [payload]
    if not chunks or not all(
        isinstance(c, Mapping) and all(isinstance(c.get(k), str) for k in lowstate.CREDENTIALS) for c in chunks
    ):
        raise HTTPError(400, TOKEN_FIELDS_MISSING)
    lowstate.check_clients([{"client": "runner"}], ctx.settings.enabled_clients)
    results = []
    for chunk in chunks:
        credentials = {k: chunk[k] for k in lowstate.CREDENTIALS}
        results.append((yield RunLowstate({"client": "runner", "fun": "auth.mk_token", **credentials,
                                           "kwarg": dict(credentials)}, master)))
    return ctx.reply(200, results)


# -- /events, /hook ----------------------------------------------------------------
def events(ctx: Context) -> Handler:
    allow(ctx, "GET")
    params = stream_query(ctx.request)
    if params.keys() - {TAG_PARAM, IDS_PARAM, LAST_EVENT_ID_PARAM, MASTER_PARAM}:
        raise HTTPError(
            400, f"/events takes only {TAG_PARAM}=<glob>, {IDS_PARAM}=1, {LAST_EVENT_ID_PARAM}=<id> and "
            f"{MASTER_PARAM}=<name> in the query string"
        )
    ids, last = stream_ids(params, ctx.request.header("last-event-id"))
    token, record = yield from authenticate(ctx)
    yield from require_event_access(record)
    tags = stream_tags(params, ctx.settings)  # compiled only for a client allowed to stream
    return AcceptEventStream(float(record["expire"]), token=token, tags=tags, ids=ids, last_event_id=last)


def hook(ctx: Context) -> Handler:
    allow(ctx, "POST")
    master = request_master(ctx.request, ctx.settings)  # whose event bus gets the event
    if not ctx.settings.webhook_disable_auth:
        yield from authenticate(ctx, master)
    suffix = ctx.route.params[0] if ctx.route.params else ""
    data = hook_event(ctx.request, shapes(ctx).hook_body, ctx.settings.webhook_headers)
    sent = yield FireEvent(f"salt/netapi/hook{suffix}", data, master)
    return ctx.reply(200, {"success": bool(sent)})


def hook_event(request: Request, with_body: bool, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    """The data of the event ``POST /hook`` fires for ``request``.

    rest_tornado's: ``{"post": <the parsed body, {} without one>, "get": <the query's
    arguments>, "headers"}``. rest_cherrypy's (``with_body``, its ``Webhook.POST``):
    ``{"body": <the body as text, "" without one>, "post": <the body alone parsed,
    {} when that is empty or false>, "headers"}``, the headers with the
    ``Remote-Addr`` CherryPy adds from the socket (here the socket's peer: a
    client's own ``Remote-Addr`` is not passed on). Either way ``headers`` leaves out
    credentials (:func:`hook_may_carry`); the body is within ``max_body_bytes``, and
    UTF-8 (parse_body refuses it otherwise with 400, where rest_cherrypy fails with 500).
    """
    payload = parse_body(request, merge_query=not with_body)
    fields = list(request.headers)
    if with_body:
        fields = [(name, value) for name, value in fields if name != "remote-addr"]
        if request.client is not None:
            fields.append(("remote-addr", request.client))
    headers = {
        "-".join(word.capitalize() for word in name.split("-")): value
        for name, value in fields
        if hook_may_carry(name, allowed)
    }
    if with_body:
        return {"body": request.body.decode("utf-8"), "post": payload or {}, "headers": headers}
    return {"post": payload if payload is not None else {}, "get": query_args(request), "headers": headers}


def hook_may_carry(name: str, allowed: tuple[str, ...] | None) -> bool:
    """May the (lower-cased) header ``name`` go into a hook event? Only one of
    ``allowed`` (``webhook_headers``) when set, else any not credential-like."""
    if allowed is not None:
        return name in allowed
    return CREDENTIAL_WORDS.search(name) is None


# -- /health ----------------------------------------------------------------------
def health(ctx: Context) -> Handler:
    """200 while the event bus is followed and the master counts as available,
    else 503 with why; no token, no Salt call (a load balancer polls it). A node
    with no master for commands says so (its streams are what it serves).
    Never cached: RFC 9111 §5.2.2.5, "no-store"."""
    allow(ctx, "GET", "HEAD")
    state = ctx.health()
    status = 200 if state.ok else 503
    reason = state.reason if ctx.settings.command_masters else f"{state.reason}; {NO_MASTER}"
    return ctx.reply(status, {"status": status_line(status), "return": reason}, (("cache-control", "no-store"),))
    yield  # pragma: no cover - makes this a generator


# -- /metrics, /stats -------------------------------------------------------------
# Counters change from one request to the next: never cached (RFC 9111 §5.2.2.5).
NO_STORE = (("cache-control", "no-store"),)


def metrics(ctx: Context) -> Handler:
    """The server's metrics for Prometheus, in the text format or OpenMetrics
    (by ``Accept``, q-values honoured; the App answered 406 if neither is
    acceptable). A valid token (header or cookie), unless ``metrics_disable_auth``."""
    allow(ctx, "GET", "HEAD")
    if not ctx.settings.metrics_disable_auth:
        yield from authenticate(ctx)
    media = choose_media(ctx.request.header("accept"), EXPOSITION_OFFERED) or PROMETHEUS_TEXT
    exposition = ctx.metrics(media)
    return Response(200, exposition.body, NO_STORE, exposition.content_type)


def stats(ctx: Context) -> Handler:
    """rest_cherrypy's ``/stats``: the same figures as ``/metrics``, as an object of
    sections (README, "Metrics and health"). A valid token, unless ``stats_disable_auth``."""
    allow(ctx, "GET", "HEAD")
    if not ctx.settings.stats_disable_auth:
        yield from authenticate(ctx)
    return ctx.reply(200, ctx.stats(ctx.now), NO_STORE)


# -- websockets ----------------------------------------------------------------------
# A browser cannot set headers on a WebSocket, so it may carry its token in the
# subprotocols it offers: ``new WebSocket(url, ["saltnado", "saltnado.token." + token])``.
# The server answers with SUBPROTOCOL, never the one holding the token (a browser
# fails a handshake whose answer names a protocol it did not offer, hence both).
SUBPROTOCOL = "saltnado"
TOKEN_SUBPROTOCOL = "saltnado.token."


def offered_subprotocols(request: Request) -> list[str]:
    """The ``Sec-WebSocket-Protocol`` values offered, in order, across every such
    header (RFC 6455 §4.1: a comma-separated list; names are case-sensitive)."""
    return [
        name.strip()
        for key, value in request.headers
        if key == "sec-websocket-protocol"
        for name in value.split(",")
        if name.strip()
    ]


def websocket_token(ctx: Context, offered: list[str]) -> str | None:
    """The token a websocket request carries, the first of: the path
    (``/all_events/<token>``, the reference's way), ``X-Auth-Token``, a
    ``saltnado.token.<token>`` subprotocol, the ``session_id`` cookie (the origin
    check has run: a page of a foreign origin gets 403 before this). 400 for
    more than one token subprotocol, or one offered without ``saltnado``."""
    in_protocols = [name[len(TOKEN_SUBPROTOCOL):] for name in offered if name.startswith(TOKEN_SUBPROTOCOL)]
    if len(in_protocols) > 1:
        raise HTTPError(400, "offer at most one saltnado.token.<token> subprotocol")
    if in_protocols and SUBPROTOCOL not in offered:
        raise HTTPError(
            400, f"offer the {SUBPROTOCOL!r} subprotocol with the token one: it is the one the server answers with"
        )
    path_token = ctx.route.params[0] if ctx.route.params else ""
    return (
        path_token
        or ctx.request.header(AUTH_TOKEN_HEADER)
        or (in_protocols[0] if in_protocols else None)
        or cookie(ctx.request, AUTH_COOKIE_NAME)
    )


def websocket(ctx: Context) -> Handler:
    allow(ctx, "GET")
    # The reference's check_origin: a browser page may open a websocket only from
    # an origin cors_origin allows, or its own (same host and port); clients that
    # send no Origin (websocket-client, pepper, curl) are not browsers.
    origin = ctx.request.header("origin", ctx.request.header("sec-websocket-origin"))
    host = ctx.request.header("host")
    if origin is not None and not websocket_origin_allowed(origin, host, ctx.settings.cors_origin):
        raise HTTPError(403, "Cross origin websockets not allowed")
    kind = stream_kind(ctx.route.name)
    in_path = bool(ctx.route.params and ctx.route.params[0])
    # The reference ignores the query string: its URLs keep working whatever
    # follows the token; the token-less routes are new and refuse a token there.
    params = parse_qs(ctx.request.query, keep_blank_values=True) if in_path else stream_query(ctx.request)
    if kind is StreamKind.WS and "format_events" in params:  # rest_cherrypy: the parameter's presence
        kind = StreamKind.WS_FORMATTED
    ids, last = stream_ids(params)
    if (ids or last is not None) and kind is not StreamKind.ALL_EVENTS:
        raise HTTPError(400, "event ids are for /all_events and /events; the other streams are views or rest_cherrypy's")
    offered = offered_subprotocols(ctx.request)
    token = websocket_token(ctx, offered)
    if not token or not is_token_shaped(token, ctx.settings.token_length):
        raise UNAUTHORIZED
    record = yield from token_record(ctx, token)
    yield from require_event_access(record)
    tags = stream_tags(params, ctx.settings)  # compiled only for a client allowed to stream
    if not ctx.request.wants_websocket:
        raise HTTPError(400, 'Can "Upgrade" only to "WebSocket".')
    websocket_key(ctx.request)  # validates the handshake (400/426)
    delta = kind is StreamKind.FORMATTED_EVENTS and params.get("delta", [""])[-1].lower() in YES
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    return AcceptWebSocket(kind, float(record["expire"]), token, delta, tags, subprotocol, ids, last)


HANDLERS: Mapping[str, Callable[[Context], Handler]] = {
    "root": root,
    "login": login,
    "logout": logout,
    "minions": minions,
    "jobs": jobs,
    "run": run,
    "hook": hook,
    "health": health,
    "metrics": metrics,
    "stats": stats,
    "keys": keys,
    "token": make_tokens,
    # the event streams: one handler per transport (saltnado_core.kinds)
    **{kind.value: events if kind.transport is Transport.SSE else websocket for kind in StreamKind if kind.routed},
}

__all__ = ["HANDLERS", "RunLowstate", "Response", "sorted_permissions", "sum_permissions"]
