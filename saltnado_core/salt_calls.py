"""Descriptions of blocking Salt calls, executed by a binding in a worker thread.

A handler yields one of these; the binding runs it with Salt's own classes
(``salt.auth.LoadAuth`` …) and sends the result back in, or the exception, which
:func:`classify_salt_error` maps to an HTTP status so bindings never decide one.
Secrets are kept out of ``repr`` so a logged call leaks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MakeToken:
    """``LoadAuth.mk_token({username, password, eauth})`` → token record or ``{}``."""

    username: str
    password: str = field(repr=False)
    eauth: str


@dataclass(frozen=True, slots=True)
class GetToken:
    """``LoadAuth.get_tok(token)`` → token record, ``{}`` if unknown or expired."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PublishGrains:
    """Publish ``grains.items`` (``local_async`` through Salt's ``NetapiClient``,
    so ``netapi_enable_clients`` and the token's eauth ACLs apply) to ``minions``
    as a list target, or to every minion (``*``) when None → publish data."""

    minions: tuple[str, ...] | None
    token: str = field(repr=False)


SaltCall = MakeToken | GetToken | PublishGrains

# Salt exception class names (matched along the MRO: the core cannot import salt).
_UNAVAILABLE = {"SaltDaemonNotRunning", "SaltReqTimeoutError", "SaltClientError", "ConnectionError", "TimeoutError"}
_UNAUTHORIZED = {"EauthAuthenticationError", "AuthenticationError", "TokenAuthenticationError"}
_FORBIDDEN = {"AuthorizationError"}
_BAD_REQUEST = {"SaltInvocationError"}


def classify_salt_error(exc: BaseException) -> tuple[int, str]:
    """HTTP status and client-safe message for an exception raised by a Salt call."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _UNAUTHORIZED:
        return 401, "Please log in"
    if names & _FORBIDDEN:
        return 403, "Salt's eauth ACLs do not allow this for your token"
    if names & _BAD_REQUEST:
        return 400, str(exc) or type(exc).__name__
    if names & _UNAVAILABLE:
        return 503, "The Salt master could not be reached; try again later"
    return 500, "Internal error while calling Salt"
