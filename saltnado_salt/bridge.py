"""Runs the core's Salt call descriptions with Salt's own classes.

Everything here blocks (token files, eauth modules, the master's request
channel), so the server calls :meth:`SaltBridge.execute` from worker threads
only. The bridge holds no policy: results and exceptions go back to the core.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from saltnado_core import ConfigError, GetToken, MakeToken, SaltCall
from saltnado_core.salt_calls import FireEvent, GetAuthList, PublishGrains, RemoveToken, RunLowstate, ScanTokenStore


class SaltBridge:
    """``on_salt_loaded`` runs once Salt's auth modules are imported (the runtime
    attaches its token-masking log filter to Salt's loggers then: they must be
    Salt's own logger class, which importing salt installs)."""

    def __init__(self, master_opts: Mapping[str, Any], on_salt_loaded: Callable[[], None] = lambda: None) -> None:
        self.opts = dict(master_opts)
        self._on_salt_loaded = on_salt_loaded
        if not self.opts.get("master_uri"):
            # Runner and wheel calls reach the master over its request channel;
            # api_config() sets master_uri, master_config() does not.
            host = self.opts.get("interface") or "127.0.0.1"
            if host in ("0.0.0.0", "::"):
                host = "127.0.0.1"
            self.opts["master_uri"] = f"tcp://{host}:{self.opts.get('ret_port', 4506)}"
        self._auth: Any = None
        self._netapi: Any = None
        self._lock = threading.Lock()

    def load_auth(self) -> Any:
        """``salt.auth.LoadAuth`` for the master's options, made once (it loads eauth modules)."""
        with self._lock:
            if self._auth is None:
                import salt.auth

                self._on_salt_loaded()  # e.g. salt.auth names the tokens it cannot load
                self._auth = salt.auth.LoadAuth(self.opts)
            return self._auth

    def netapi(self) -> Any:
        """``salt.netapi.NetapiClient``: enforces ``netapi_enable_clients`` and eauth."""
        with self._lock:
            if self._netapi is None:
                import salt.netapi

                self._netapi = salt.netapi.NetapiClient(self.opts)
            return self._netapi

    def execute(self, call: SaltCall) -> Any:
        if isinstance(call, MakeToken):
            load = {"username": call.username, "password": call.password, "eauth": call.eauth}
            return self.load_auth().mk_token(load)
        if isinstance(call, GetToken):
            return self.load_auth().get_tok(call.token)
        if isinstance(call, ScanTokenStore):
            return self.scan_token_store()
        if isinstance(call, GetAuthList):
            # As the master computes it for a request carrying this token
            # (ClearFuncs → LoadAuth.check_authentication(load, "token")).
            record = dict(call.record)
            return self.load_auth().get_auth_list({"token": record.get("token")}, token=record)
        if isinstance(call, PublishGrains):
            low: dict[str, Any] = {"client": "local_async", "fun": "grains.items", "token": call.token}
            if call.minions is None:
                low.update(tgt="*", tgt_type="glob")
            else:
                low.update(tgt=list(call.minions), tgt_type="list")
            return self.netapi().run(low)
        if isinstance(call, RunLowstate):
            return self.netapi().run(dict(call.low))
        if isinstance(call, RemoveToken):
            return self.load_auth().rm_token(call.token)
        if isinstance(call, FireEvent):
            return self.fire_event(call.tag, dict(call.data))
        raise TypeError(f"unknown Salt call {call!r}")

    def token_dir(self) -> str | None:
        """The directory of Salt's token store, or None if it is not one. As
        ``LoadAuth`` picks it: ``eauth_tokens.cache_driver`` "rediscluster" is the
        old token module, any other driver (default: the ``cache`` option,
        "localfs") a Salt cache whose bank "tokens" is, for localfs,
        ``<cachedir>/tokens`` holding ``<token>.p`` (salt/cache/localfs.py)."""
        driver = self.opts.get("eauth_tokens.cache_driver") or self.opts.get("cache") or "localfs"
        if driver != "localfs":
            return None
        return os.path.join(self.opts["cachedir"], "tokens")

    def scan_token_store(self) -> dict[str, int] | None:
        """:class:`ScanTokenStore`: one listing of :meth:`token_dir`, each file's
        inode as its stamp (read with the name, no ``stat``: Salt's cache writes a
        temporary file and renames it over the token's, so a rewrite changes it)."""
        path = self.token_dir()
        if path is None:
            return None
        try:
            with os.scandir(path) as entries:
                return {entry.name[:-2]: entry.inode() for entry in entries if entry.name.endswith(".p")}
        except FileNotFoundError:  # Salt's flush of the whole bank: no token is left
            return {}

    def fire_event(self, tag: str, data: dict[str, Any]) -> bool:
        """Salt's own ``fire_event`` into the master's event bus (pull socket)."""
        import salt.utils.event

        event = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False)
        try:
            return bool(event.fire_event(data, tag))
        finally:
            event.destroy()


def load_master_opts(path: str) -> dict[str, Any]:
    """Read a master config file the way salt-api does (includes, defaults, root_dir)."""
    import salt.config

    if not os.path.isfile(path):
        raise ConfigError(f"master config {path} does not exist")
    return dict(salt.config.api_config(path))
