"""Keep credentials out of server logs: uvicorn logs request paths with their query strings, and ccxt's debug
log shows every exchange request with its headers (binance's X-MBX-APIKEY, okx's OK-ACCESS-KEY and passphrase)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["ExchangeRequestFilter", "QuerySecretFilter", "UrlSecretFilter", "install_log_redaction", "redact_url"]

from cracktrader.runs.sanitize import REDACTED, looks_secret, redact_query, redact_url, redact_urls

LOGGERS = ("uvicorn.access", "uvicorn.error")
# Every ccxt client (sync, async and pro) logs through its base module's logger.
CCXT_LOGGER = "ccxt.base.exchange"


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


def _masked(value: Any) -> Any:
    """`value` with the values under secret-looking names masked, at any depth."""
    if isinstance(value, Mapping):
        return {k: REDACTED if looks_secret(k) and v not in (None, "") else _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


def _masked_arg(arg: Any) -> Any:
    if isinstance(arg, Mapping):
        return _masked(arg)
    if isinstance(arg, str):
        if arg.lstrip().startswith(("{", "[")):
            try:
                return json.dumps(_masked(json.loads(arg)))
            except ValueError:
                pass
        return redact_query(arg)
    return arg


class ExchangeRequestFilter(logging.Filter):
    """Masks credentials in ccxt's request and response lines: headers, query parameters and JSON bodies."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        if isinstance(record.args, tuple):
            record.args = tuple(_masked_arg(a) for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        return True


def install_log_redaction() -> None:
    """Add the filters to uvicorn's, httpx's and ccxt's loggers once (idempotent, as apps may be created many times)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuerySecretFilter) for f in logger.filters):
            logger.addFilter(QuerySecretFilter())
    ccxt_logger = logging.getLogger(CCXT_LOGGER)
    if not any(isinstance(f, ExchangeRequestFilter) for f in ccxt_logger.filters):
        ccxt_logger.addFilter(ExchangeRequestFilter())
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UrlSecretFilter) for f in logger.filters):
            logger.addFilter(UrlSecretFilter())
