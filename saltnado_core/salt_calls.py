"""Descriptions of blocking Salt calls, executed by a binding in a worker thread.

A handler yields one of these; the binding runs it with Salt's own classes
(``salt.auth.LoadAuth`` …) and sends the result back in, or the exception, which
:func:`classify_salt_error` maps to an HTTP status so bindings never decide one.
Secrets are kept out of ``repr`` so a logged call leaks nothing.

A call a request makes carries ``master``: the name of the master it runs on
(:mod:`saltnado_core.masters`), None for the default one, so a node serving
several masters runs each call with the right master's options and token store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .files import ReadFile
from .tokens import redact_tokens


@dataclass(frozen=True, slots=True)
class MakeToken:
    """``LoadAuth.mk_token({username, password, eauth})`` → token record or ``{}``."""

    username: str
    password: str = field(repr=False)
    eauth: str
    master: str | None = None  # the master whose token store keeps the token (None: the default)


@dataclass(frozen=True, slots=True)
class GetToken:
    """``LoadAuth.get_tok(token)`` → token record, ``{}`` if unknown or expired."""

    token: str = field(repr=False)
    master: str | None = None  # the master that issued it (None: the default)


@dataclass(frozen=True, slots=True)
class ScanTokenStore:
    """One listing of Salt's token store, if it is a directory of files (the default
    ``localfs`` cache: ``<cachedir>/tokens/<token>.p``) → ``{token: stamp}`` for every
    token file, the stamp (an int) changing whenever the file is rewritten (Salt's cache
    writes a new file and renames it over the old one); ``{}`` if the directory is
    gone (Salt's ``flush`` of the whole bank); None if the store is not a directory
    (``rediscluster``, a ``redis``/``consul``/… cache driver)."""


@dataclass(frozen=True, slots=True)
class GetAuthList:
    """``LoadAuth.get_auth_list({"token": …}, token=record)`` for a valid token's
    record (from :class:`GetToken`) → the permission entries Salt enforces for it
    (a list), or None when its eauth is not configured."""

    record: Mapping[str, Any] = field(repr=False)
    master: str | None = None  # the master whose external_auth applies (None: the default)


@dataclass(frozen=True, slots=True)
class PublishGrains:
    """Publish ``grains.items`` (``local_async`` through Salt's ``NetapiClient``,
    so ``netapi_enable_clients`` and the token's eauth ACLs apply) to ``minions``
    as a list target, or to every minion (``*``) when None → publish data."""

    minions: tuple[str, ...] | None
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RemoveToken:
    """``LoadAuth.rm_token(token)``: revoke it in Salt's token store."""

    token: str = field(repr=False)
    master: str | None = None  # the master that issued it (None: the default)


@dataclass(frozen=True, slots=True)
class RunLowstate:
    """``salt.netapi.NetapiClient(opts).run(low)`` for one lowstate chunk: Salt's own
    client dispatch, which enforces ``netapi_enable_clients`` and eauth."""

    low: Mapping[str, Any] = field(repr=False)
    master: str | None = None  # the master that runs it (None: the default)

    def __repr__(self) -> str:  # never show credentials
        on = "" if self.master is None else f", master={self.master!r}"
        return f"RunLowstate(client={self.low.get('client')!r}, fun={self.low.get('fun')!r}{on})"


@dataclass(frozen=True, slots=True)
class FireEvent:
    """Fire ``data`` on the master's event bus under ``tag`` → True if sent."""

    tag: str
    data: Mapping[str, Any] = field(repr=False)
    master: str | None = None  # the master whose event bus gets it (None: the default)


SaltCall = (
    MakeToken | GetToken | ScanTokenStore | GetAuthList | PublishGrains | RemoveToken | RunLowstate | FireEvent
)

# Calls that reach the running master (its request server or event bus). Tokens
# and eauth are local (the master's cache on disk, its config), so MakeToken,
# GetToken, ScanTokenStore, GetAuthList and RemoveToken still work while the
# master is stopped.
_NEEDS_MASTER = (PublishGrains, RunLowstate, FireEvent)


def needs_master(call: SaltCall | ReadFile) -> bool:
    """True if ``call`` cannot succeed while the master is down (never a file read)."""
    return isinstance(call, _NEEDS_MASTER)


def call_master(call: SaltCall | ReadFile) -> str | None:
    """The name of the master ``call`` runs on; None: the default one (or no master
    in particular: a file read, a call every stream shares)."""
    return getattr(call, "master", None)


class MasterUnavailable(Exception):
    """The master is known to be down (its event bus is gone): a call that needs it
    is not attempted, or no longer awaited. Classified as 503; ``master``: its name
    when the node serves several (named in the answer: it comes from the config)."""

    def __init__(self, master: str | None = None) -> None:
        super().__init__(master or "")
        self.master = master


MASTER_DOWN = "The Salt master is unavailable (its event bus is down); try again later"


def master_down(master: str | None) -> str:
    """The 503's reason for a master that is down, named when it has a name."""
    if master is None:
        return MASTER_DOWN
    return f"The Salt master {master!r} is unavailable (its event bus is down); try again later"


UNREACHABLE = "The Salt master could not be reached; try again later"

# Salt exception class names (matched along the MRO: the core cannot import salt).
_UNAVAILABLE = {"SaltDaemonNotRunning", "SaltReqTimeoutError", "ConnectionError", "TimeoutError"}
AUTH_FAILURES = {"EauthAuthenticationError", "AuthenticationError", "AuthorizationError", "TokenAuthenticationError"}
_UNAUTHORIZED = {"EauthAuthenticationError", "AuthenticationError", "TokenAuthenticationError"}
_FORBIDDEN = {"AuthorizationError"}
_BAD_REQUEST = {"SaltInvocationError"}
# What Salt 3008's LocalClient.run_job raises when pub() found no master (a bare
# SaltClientError, or one of these re-raised): every other SaltClientError is not an outage.
_MASTER_NOT_CONTACTED = "The salt master could not be contacted"
_MAX_WRAPS = 4  # SaltClientError(SaltClientError(...)) unwrapped this deep at most


def classify_salt_error(exc: BaseException) -> tuple[int, str]:
    """HTTP status and client-safe message for an exception raised by a Salt call.

    Salt's ``LocalClient.run_job`` re-raises every exception of ``pub()`` but an
    auth error as ``SaltClientError(exc)`` (salt/client/__init__.py), so an
    undefined nodegroup (``SaltInvocationError("Node group x unavailable in …")``)
    arrives as a ``SaltClientError``: the wrapped exception is classified instead.
    Only a master that cannot be reached is 503; a call Salt refuses is 400 and
    any other Salt error 500, each with Salt's own message, tokens masked.
    """
    inner = _unwrapped(exc)
    names = _names(inner)
    if names & _UNAUTHORIZED:
        return 401, "Please log in"
    if names & _FORBIDDEN:
        return 403, "Salt's eauth ACLs do not allow this for your token"
    if names & _BAD_REQUEST:
        return 400, _message(inner)
    if "MasterUnavailable" in names:
        return 503, master_down(getattr(inner, "master", None))
    if (
        names & _UNAVAILABLE
        or ("SaltClientError" in names and _not_contacted(inner))
        or (inner is not exc and "OSError" in names)  # pub()'s transport failed (tornado's StreamClosedError)
    ):
        return 503, UNREACHABLE
    if "SaltClientTimeout" in names:
        return 504, "Salt did not answer in time"
    if "SaltException" in names:  # Salt's own error, e.g. a job cache returner failing
        return 500, _message(inner)
    return 500, "Internal error while calling Salt"  # a bug, whose text is for the log only


def _unwrapped(exc: BaseException) -> BaseException:
    """The exception a ``SaltClientError`` was raised for, however deep; else ``exc``.

    Salt writes ``except Exception as general_exception: raise
    SaltClientError(general_exception)``, and ``SaltException`` keeps only the
    message (``str``) of what it is given: the wrapped exception is the one being
    handled (``__context__``, kept across the worker thread) when the messages match.
    """
    for _ in range(_MAX_WRAPS):
        inner = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], BaseException) else exc.__context__
        if inner is None or "SaltClientError" not in _names(exc) or str(inner) != str(exc):
            break
        exc = inner
    return exc


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _not_contacted(exc: BaseException) -> bool:
    message = str(exc)  # "" for a bare ``raise SaltClientError``
    return not message or message.startswith(_MASTER_NOT_CONTACTED)


def _message(exc: BaseException) -> str:
    return redact_tokens(str(exc)) or type(exc).__name__
