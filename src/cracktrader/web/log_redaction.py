"""Keep credentials out of server logs: uvicorn logs request paths with their query strings."""

from __future__ import annotations

import logging
import re

__all__ = ["QuerySecretFilter", "UrlSecretFilter", "install_log_redaction", "redact_url"]

from cracktrader.runs.sanitize import REDACTED, looks_secret, redact_url, redact_urls

# WebSocket clients may send `?token=` (browsers cannot set headers on the handshake); never log its value.
# Any parameter whose name looks secret in any spelling (`api-secret=`, `X_MBX_APIKEY=`) is hidden the same way.
_QUERY_PARAM = re.compile(r"(?<![\w.%-])([\w.%-]{1,64})=([^&\s\"']+)")
LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact_query(text: str) -> str:
    """The text with the values of credential query parameters replaced by `***`."""
    return _QUERY_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}" if looks_secret(m.group(1)) else m.group(0), text)


# httpx logs every request's URL (INFO "HTTP Request: POST <url>"): a webhook's carries its credentials.
URL_LOGGERS = ("httpx", "httpcore")


class UrlSecretFilter(logging.Filter):
    """Rewrites a record's message and arguments (URL objects included) so no URL credentials reach a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        if isinstance(record.args, tuple):
            record.args = tuple(a if isinstance(a, int | float) else redact_urls(str(a)) for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_urls(record.msg)
        return True


class QuerySecretFilter(logging.Filter):
    """Rewrites a record's message arguments so credential query parameters never reach a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        return True


def install_log_redaction() -> None:
    """Add the filters to uvicorn's and httpx's loggers once (idempotent, as apps may be created many times)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuerySecretFilter) for f in logger.filters):
            logger.addFilter(QuerySecretFilter())
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UrlSecretFilter) for f in logger.filters):
            logger.addFilter(UrlSecretFilter())
