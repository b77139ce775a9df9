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
