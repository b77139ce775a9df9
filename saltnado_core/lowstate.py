"""Lowstate: the list of Salt commands a client POSTs, and how it is run.

Follows the reference's ``SaltAPIHandler.disbatch``: one chunk or a list; a
scalar ``arg`` becomes a list; the request's header/cookie token is injected
into chunks without credentials; results come back in chunk order; an
authentication failure appends ``"Failed to authenticate"`` and stops; any
other failure appends ``"Unexpected exception while handling request: …"`` and
goes on. Unlike the reference, every chunk's client is checked *before* any
chunk runs (an invalid or disabled client is a 400 naming the problem), and an
unreachable master is a 503 rather than a string in the list.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

from .config import SUPPORTED_CLIENTS
from .http import HTTPError
from .salt_calls import AUTH_FAILURES, RunLowstate, SaltCall, classify_salt_error
from .tokens import redact_tokens

FAILED_AUTH = "Failed to authenticate"
CREDENTIALS = ("username", "password", "eauth")


def normalize(payload: Any) -> list[dict[str, Any]]:
    """One chunk or a list of chunks → a list of chunk dicts (400 otherwise)."""
    if payload is None or payload == [] or payload == {}:
        raise HTTPError(400, "send a lowstate: a chunk such as {\"client\": \"local\", \"tgt\": \"*\", \"fun\": \"test.ping\"} or a list of them")
    chunks = payload if isinstance(payload, list) else [payload]
    out = []
    for chunk in chunks:
        if not isinstance(chunk, Mapping):
            raise HTTPError(400, "each lowstate chunk must be a map")
        chunk = dict(chunk)
        if "arg" in chunk and not isinstance(chunk["arg"], list):
            chunk["arg"] = [chunk["arg"]]
        out.append(chunk)
    return out


def check_clients(chunks: Sequence[Mapping[str, Any]], enabled: Sequence[str]) -> None:
    """Refuse the request before anything runs if any chunk names a bad client."""
    for chunk in chunks:
        client = chunk.get("client")
        if client not in SUPPORTED_CLIENTS:
            raise HTTPError(400, f"Invalid client: {client!r}; use one of {', '.join(SUPPORTED_CLIENTS)}")
        if client not in enabled:
            raise HTTPError(
                400,
                f"Client disabled: {client!r}. Add to 'netapi_enable_clients' master config option to enable.",
            )


def has_credentials(chunk: Mapping[str, Any]) -> bool:
    return "token" in chunk or all(key in chunk for key in CREDENTIALS)


def run(
    chunks: list[dict[str, Any]], token: str | None, masters: Sequence[str | None] | None = None
) -> Generator[SaltCall, Any, list[Any]]:
    """Run every chunk through Salt (``RunLowstate``), each on its master in
    ``masters`` (:func:`saltnado_core.masters.chunk_masters`; None: every chunk on
    the default one); return the results list."""
    results: list[Any] = []
    for index, chunk in enumerate(chunks):
        master = masters[index] if masters is not None else None
        if token is not None and "token" not in chunk:
            chunk["token"] = token
        if not has_credentials(chunk):
            results.append(FAILED_AUTH)
            break
        try:
            results.append((yield RunLowstate(chunk, master)))
        except Exception as exc:
            names = {cls.__name__ for cls in type(exc).__mro__}
            if names & AUTH_FAILURES:
                results.append(FAILED_AUTH)
                break
            status, reason = classify_salt_error(exc)
            # A master that is down or slow (503, 504) and a call Salt refuses (400:
            # SaltInvocationError, e.g. an undefined nodegroup) answer the request, with
            # Salt's own message; any other error is the reference's string in the list.
            if status in (400, 503, 504):
                raise HTTPError(status, reason) from None
            results.append(f"Unexpected exception while handling request: {redact_tokens(str(exc))}")
    return results
