"""The server's TLS context from ``ssl_crt`` / ``ssl_key``, checked before listening."""

from __future__ import annotations

import os
import ssl

from saltnado_core import ConfigError, Settings


def load_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context (None with ``disable_ssl``): the certificate chain
    from ``ssl_crt`` and its key from ``ssl_key``, or from ``ssl_crt`` too when it
    holds both. Raises :class:`ConfigError` saying what is wrong with the files."""
    if settings.disable_ssl:
        return None
    if not settings.ssl_crt:
        raise ConfigError(f"TLS is enabled but '{settings.dialect.value}: ssl_crt' is not set")
    for key, path in (("ssl_crt", settings.ssl_crt), ("ssl_key", settings.ssl_key)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"'{settings.dialect.value}: {key}' {path} does not exist (or is not a file)")
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"'{settings.dialect.value}: {key}' {path} is not readable by this user")
    files = f"ssl_crt {settings.ssl_crt}" + (f" and ssl_key {settings.ssl_key}" if settings.ssl_key else "")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2+, no client certificates
    try:
        # An encrypted key would make OpenSSL ask for its passphrase on the terminal: refuse it instead.
        context.load_cert_chain(settings.ssl_crt, settings.ssl_key, password=_no_passphrase)
    except _EncryptedKey:
        raise ConfigError(f"cannot load {files}: the key is encrypted; saltnado needs an unencrypted key") from None
    except (ssl.SSLError, OSError) as exc:
        hint = "" if settings.ssl_key else " (without ssl_key, ssl_crt must hold the private key too)"
        raise ConfigError(
            f"cannot load {files}: not a PEM certificate chain and its matching private key{hint}: {exc}"
        ) from None
    return context


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> bytes:
    raise _EncryptedKey
