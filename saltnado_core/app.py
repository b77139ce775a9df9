"""Request handling: route a :class:`Request` to a handler and drive it.

A handler is a generator: it yields Salt calls (:mod:`saltnado_core.salt_calls`)
that the binding executes off the event loop and sends results back into, and
finally returns a :class:`Response` or an :class:`AcceptWebSocket`. The
:class:`Exchange` wraps that generator so a binding's loop is::

    step = exchange.start()
    while isinstance(step, SaltCall):          # run it in a worker thread
        step = exchange.resume(result)  # or exchange.fail(exc)
    # step is a Response or AcceptWebSocket
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs
from typing import Any, Union

from .bodies import parse_body
from .config import Settings
from .http import HTTPError, Request, Response, error_response, json_response, websocket_key
from .router import Route, Router
from .salt_calls import GetToken, MakeToken, SaltCall, classify_salt_error
from .tokens import TokenStatus, check_token

AUTH_TOKEN_HEADER = "x-auth-token"
AUTH_COOKIE_NAME = "session_id"


@dataclass(frozen=True, slots=True)
class AcceptWebSocket:
    """Upgrade the connection; stream ``stream`` after the client says it is ready."""

    stream: str
    token_expire: float
    token: str = field(default="", repr=False)
    delta: bool = False  # /formatted_events?delta=1: only changes after the first view


Outcome = Union[Response, AcceptWebSocket]
Step = Union[SaltCall, Outcome]
Handler = Generator[SaltCall, Any, Outcome]


def unauthorized() -> Response:
    """The reference's ``GET /login`` answer, used for every 401."""
    return json_response(
        401, {"status": "401 Unauthorized", "return": "Please log in"}, [("www-authenticate", "Session")]
    )


class Exchange:
    """One request's handler, driven by the binding one Salt call at a time."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.error: BaseException | None = None  # an unexpected exception, for the binding's log

    def start(self) -> Step:
        return self._step(lambda: next(self._handler))

    def resume(self, result: Any) -> Step:
        return self._step(lambda: self._handler.send(result))

    def fail(self, exc: BaseException) -> Step:
        """Feed a Salt call's exception in; uncaught, it becomes a JSON error."""

        def throw() -> Step:
            try:
                return self._handler.throw(exc)
            except type(exc):
                status, reason = classify_salt_error(exc)
                if status == 500:
                    self.error = exc
                return error_response(status, reason)

        return self._step(throw)

    def _step(self, advance: Callable[[], Step]) -> Step:
        try:
            return advance()
        except StopIteration as stop:
            outcome: Outcome = stop.value
            return outcome
        except HTTPError as exc:
            return error_response(exc.status, exc.reason, exc.headers)
        except Exception as exc:  # a bug: answer 500, never a traceback to the client
            self.error = exc
            return error_response(500, "internal server error")


class App:
    """Routes requests to the handlers for one master's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.router = Router(settings.token_length, settings.websockets)
        self._handlers: Mapping[str, Callable[[Request, Route, float], Handler]] = {
            "root": self._root,
            "login": self._login,
            "all_events": self._websocket,
            "formatted_events": self._websocket,
        }

    def handle(self, request: Request, now: float) -> Exchange:
        """Start handling ``request``; ``now`` is the binding's wall-clock time."""
        route = self.router.match(request.path)
        if route is None:
            return Exchange(_answer(error_response(404, f"no such resource: {request.path}")))
        handler = self._handlers.get(route.name)
        if handler is None:
            return Exchange(_answer(error_response(501, f"{request.path} is not implemented yet")))
        return Exchange(handler(request, route, now))

    # -- handlers ----------------------------------------------------------
    def _root(self, request: Request, route: Route, now: float) -> Handler:
        _allow(request, "GET")
        return json_response(200, {"clients": list(self.settings.enabled_clients), "return": "Welcome"})
        yield  # pragma: no cover - makes this a generator

    def _login(self, request: Request, route: Route, now: float) -> Handler:
        _allow(request, "GET", "POST")
        if request.method == "GET":
            return unauthorized()
        payload = parse_body(request)
        if isinstance(payload, list) and len(payload) == 1:  # rest_cherrypy accepts [{...}]
            payload = payload[0]
        if not isinstance(payload, dict):
            raise HTTPError(400, "send username, password and eauth")
        missing = [k for k in ("username", "password", "eauth") if not isinstance(payload.get(k), str)]
        if missing:
            raise HTTPError(400, f"missing or non-string field(s): {', '.join(missing)}")
        record = yield MakeToken(payload["username"], payload["password"], payload["eauth"])
        if not record or "token" not in record:
            return _unauthorized_with("Could not authenticate using provided credentials")
        eauth_config = self.settings.external_auth.get(record.get("eauth"))
        if not isinstance(eauth_config, Mapping):
            return _unauthorized_with(f"eauth {record.get('eauth')!r} is not configured in external_auth")
        body = {
            "return": [
                {
                    "token": record["token"],
                    "expire": record["expire"],
                    "start": record["start"],
                    "user": record["name"],
                    "eauth": record["eauth"],
                    "perms": sorted_permissions(sum_permissions(record, eauth_config)),
                }
            ]
        }
        cookie = f"{AUTH_COOKIE_NAME}={record['token']}; Path=/; HttpOnly; SameSite=Lax"
        if not self.settings.disable_ssl:
            cookie += "; Secure"
        return json_response(200, body, [("set-cookie", cookie)])

    def _websocket(self, request: Request, route: Route, now: float) -> Handler:
        _allow(request, "GET")
        record = yield GetToken(route.params[0])
        if check_token(record, now) is not TokenStatus.VALID:
            return unauthorized()
        if not request.wants_websocket:
            raise HTTPError(400, 'Can "Upgrade" only to "WebSocket".')
        websocket_key(request)  # validates the handshake (400/426)
        delta = parse_qs(request.query).get("delta", [""])[-1].lower() in ("1", "true", "yes")
        return AcceptWebSocket(route.name, float(record["expire"]), route.params[0], delta)


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


def _allow(request: Request, *methods: str) -> None:
    if request.method not in methods:
        raise HTTPError(405, f"method {request.method} not allowed", [("allow", ", ".join(methods))])


def _unauthorized_with(reason: str) -> Response:
    return json_response(
        401, {"status": "401 Unauthorized", "return": reason}, [("www-authenticate", "Session")]
    )


def _answer(response: Response) -> Handler:
    return response
    yield  # pragma: no cover
