"""Tokens never reach a log: the last line of defence for log records.

The access log already writes request targets with tokens masked
(:func:`saltnado_core.tokens.redact_path`), and nothing logs headers, bodies or
Salt call arguments. :class:`TokenRedactor` also masks any token-shaped text
(32+ hex digits) in a record's message and traceback — an exception's message
can quote what it was given. It is attached to saltnado's own loggers and to the
Salt loggers known to name tokens (``salt.auth`` warns "Token '<token>' could not
be loaded" for every unknown or expired token a client sends), and
``saltnado serve`` attaches it to its log handler too, so every record it
writes is masked, whichever logger made it.
"""

from __future__ import annotations

import logging
import os

from saltnado_core import ConfigError, Settings
from saltnado_core.tokens import redact_tokens

LOGGERS = ("saltnado", "saltnado.server", "saltnado.access", "saltnado.feed", "saltnado.demo")
# Salt's loggers that name tokens (salt 3008); loader modules log as salt.loaded.int.<kind>.<name>.
SALT_LOGGERS = (
    "salt.auth",
    "salt.cache",
    "salt.cache.localfs",
    "salt.loaded.int.cache.localfs",
    "salt.tokens.localfs",
    "salt.tokens.rediscluster",
    "salt.loaded.int.tokens.localfs",
    "salt.loaded.int.tokens.rediscluster",
)


class TokenRedactor(logging.Filter):
    """Masks token-shaped text in a record's message and exception text; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        clean = redact_tokens(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_tokens(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_tokens(record.stack_info)
        return True


_FORMATTER = logging.Formatter()
REDACTOR = TokenRedactor()


def redact_saltnado_logs() -> None:
    """Attach :data:`REDACTOR` to every saltnado logger (idempotent)."""
    _attach(LOGGERS)


def redact_salt_logs() -> None:
    """Attach :data:`REDACTOR` to Salt's loggers that name tokens (idempotent).

    Call it only once salt is imported: Salt's modules expect loggers of its own
    class (with ``trace``), which importing salt installs; a logger made before
    would be a plain one.
    """
    _attach(SALT_LOGGERS)


def _attach(names: tuple[str, ...]) -> None:
    for name in names:
        logger = logging.getLogger(name)
        if REDACTOR not in logger.filters:
            logger.addFilter(REDACTOR)


def redact_handlers(logger: logging.Logger) -> None:
    """Attach :data:`REDACTOR` to ``logger``'s handlers, so records of every logger
    that reach them (Salt's too) are masked."""
    for handler in logger.handlers:
        if REDACTOR not in handler.filters:
            handler.addFilter(REDACTOR)


# What log_error_file gets: saltnado's warnings and errors (rest_cherrypy's error log)
ERROR_LOGGER = "saltnado"
ACCESS_LOGGER = "saltnado.access"
_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def check_log_files(settings: Settings) -> None:
    """:class:`ConfigError` unless each configured log file can be appended to
    (its directory exists and is writable, and the file too if it exists)."""
    for key in ("log_access_file", "log_error_file"):
        path = getattr(settings, key)
        if path is None:
            continue
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path) or not os.path.isdir(directory):
            raise ConfigError(f"'{settings.dialect.value}: {key}' {path}: no such directory, or it is one")
        if not os.access(path if os.path.exists(path) else directory, os.W_OK):
            raise ConfigError(f"'{settings.dialect.value}: {key}' {path} is not writable by this user")


def attach_log_files(settings: Settings) -> list[logging.Handler]:
    """Append the access log to ``log_access_file`` and saltnado's warnings and
    errors to ``log_error_file`` (besides stderr), tokens masked as everywhere;
    returns the handlers added. Raises :class:`ConfigError` if a file cannot be opened."""
    check_log_files(settings)
    added: list[logging.Handler] = []
    for key, logger_name, level in (
        ("log_access_file", ACCESS_LOGGER, logging.INFO),
        ("log_error_file", ERROR_LOGGER, logging.WARNING),
    ):
        path = getattr(settings, key)
        if path is None:
            continue
        try:
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"'{settings.dialect.value}: {key}' {path}: {exc.strerror}") from None
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        handler.addFilter(REDACTOR)
        logging.getLogger(logger_name).addHandler(handler)
        added.append(handler)
    return added
