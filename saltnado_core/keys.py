"""rest_cherrypy's ``/keys``: what its answers are made of, as pure functions.

``GET /keys[/<mid>]`` answers the ``return`` of the wheel's ``key.list_all`` or
``key.finger`` (:func:`wheel_return`: rest_cherrypy takes it out of the wheel's
``{"tag", "data": {"return": …}}`` envelope). ``POST /keys`` answers the key
pair ``key.gen_accept`` made as a tar file (:func:`key_tarball`), named in a
``Content-Disposition`` header (:func:`attachment`) — after the minion id was
checked (:func:`minion_id_problem`), so no client byte that could end the
header's quoted string, or the header, ever reaches it.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

TAR = "application/x-tar"
MAX_MINION_ID = 255  # a file name on the master (pki/minions/<id>)
# Characters that may not be in a minion id sent to POST /keys: a path separator
# (the id names a file on the master and in the tar's name), a quote or backslash
# (they would end or escape the header's quoted filename) and control characters
# (CR/LF would end the header line; RFC 9110 §5.5 forbids them in field values).
_FORBIDDEN = re.compile(r'[/\\"\x00-\x1f\x7f]')
# Optional key.gen_accept arguments POST /keys passes on, and how a form sends them.
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off", ""})


def minion_id_problem(mid: str) -> str | None:
    """Why ``mid`` cannot be given a key through ``POST /keys``; None if it can."""
    if not mid:
        return "mid is empty"
    if len(mid) > MAX_MINION_ID:
        return f"mid is longer than {MAX_MINION_ID} characters"
    if mid in (".", ".."):
        return "mid may not be '.' or '..'"
    if _FORBIDDEN.search(mid):
        return "mid may not hold '/', '\\', '\"' or control characters"
    return None


def attachment(mid: str) -> str:
    """``Content-Disposition`` for ``saltkeys-<mid>.tar``, as rest_cherrypy names
    it; ``mid`` must have passed :func:`minion_id_problem`. A non-ASCII id is
    also given as RFC 6266 §4.3 ``filename*`` (UTF-8, percent-encoded), with
    ``?`` in its place in the plain ``filename``, so the header stays ASCII."""
    name = f"saltkeys-{mid}.tar"
    if name.isascii():
        return f'attachment; filename="{name}"'
    fallback = name.encode("ascii", "replace").decode("ascii")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def key_tarball(pub: str, priv: str) -> bytes:
    """A tar file holding ``minion.pub`` and ``minion.pem``, the files a minion
    keeps in its ``pki_dir`` (rest_cherrypy's order; mtime 0 as there). The
    private key is mode 0400, as Salt writes it (rest_cherrypy leaves 0644)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, text, mode in (("minion.pub", pub, 0o644), ("minion.pem", priv, 0o400)):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def wheel_return(result: Any) -> Any:
    """The ``return`` in a wheel call's result ``{"tag", "data": {"return", …}}``
    (rest_cherrypy: ``.get("data", {}).get("return", {})``); ``{}`` if it has none."""
    data = result.get("data") if isinstance(result, Mapping) else None
    return data.get("return", {}) if isinstance(data, Mapping) else {}


def wheel_failed(result: Any) -> bool:
    """True if the wheel function raised (Salt puts ``success: False`` and the
    exception's text in ``return``)."""
    data = result.get("data") if isinstance(result, Mapping) else None
    return isinstance(data, Mapping) and data.get("success") is False


def gen_accept_options(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``keysize`` (an int, at least 2048 for Salt) and ``force`` (a bool) from a
    JSON/YAML value or a form's string; ValueError naming the field otherwise."""
    options: dict[str, Any] = {}
    if payload.get("keysize") is not None:
        keysize = payload["keysize"]
        if isinstance(keysize, str) and keysize.strip().isdigit():
            keysize = int(keysize)
        if not isinstance(keysize, int) or isinstance(keysize, bool) or not 0 < keysize <= 16384:
            raise ValueError("keysize must be a whole number of bits (2048 to 16384)")
        options["keysize"] = keysize
    if payload.get("force") is not None:
        force = payload["force"]
        if isinstance(force, str) and force.strip().lower() in _TRUE | _FALSE:
            force = force.strip().lower() in _TRUE
        if not isinstance(force, bool):
            raise ValueError("force must be true or false")
        options["force"] = force
    return options
