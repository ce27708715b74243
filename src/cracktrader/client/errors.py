"""Typed exceptions of the SDK, carrying the server's error envelope (`{"error": {code, message, details}, ...}`)."""

from __future__ import annotations

import builtins
import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "AuthenticationError",
    "CheckTooLargeError",
    "ConflictError",
    "ConnectionError",
    "CrackTraderError",
    "InvalidDateRangeError",
    "InvalidPaperConfigError",
    "InvalidResponseError",
    "InvalidStrategyParamsError",
    "InvalidSymbolError",
    "InvalidTimeframeError",
    "NoActiveRunError",
    "NotFoundError",
    "NotImplementedByServerError",
    "NotSupportedError",
    "PermissionDeniedError",
    "RateLimitError",
    "RunAlreadyActiveError",
    "RunFailedError",
    "RunNotResettableError",
    "ServerError",
    "SessionLimitError",
    "StreamClosedError",
    "SweepTooLargeError",
    "TimeoutError",
    "UnknownExchangeError",
    "UnknownStrategyError",
    "ValidationError",
    "error_from_response",
]


class CrackTraderError(Exception):
    """Base of every SDK error; `status_code` is None when no HTTP response was received."""

    default_code: ClassVar[str] = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        path: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code or self.default_code
        self.details: dict[str, Any] = dict(details or {})
        self.path = path
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        prefix = f"{self.status_code} {self.code}" if self.status_code is not None else self.code
        return f"[{prefix}] {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor arguments would be lost by the default pickling of exceptions.
        return (_rebuild, (type(self), self.message), dict(self.__dict__))


def _rebuild(cls: type[CrackTraderError], message: str) -> CrackTraderError:
    """Unpickling helper: the instance dict is restored by pickle afterwards."""
    return cls(message)


class ValidationError(CrackTraderError):
    """The server refused the request as invalid (400, 413, 415, 422; VALIDATION_ERROR and the INVALID_* codes)."""

    default_code = "VALIDATION_ERROR"


class InvalidSymbolError(ValidationError):
    """A symbol the exchange does not list; `details["supported_symbols"]` holds some that it does."""

    default_code = "INVALID_SYMBOL"


class InvalidTimeframeError(ValidationError):
    """A timeframe the server or exchange does not support."""

    default_code = "INVALID_TIMEFRAME"


class InvalidDateRangeError(ValidationError):
    """A start date at or after the end date, or otherwise unusable dates."""

    default_code = "INVALID_DATE_RANGE"


class UnknownStrategyError(ValidationError):
    """No strategy of that name is registered on the server."""

    default_code = "UNKNOWN_STRATEGY"


class InvalidStrategyParamsError(ValidationError):
    """Strategy parameters that do not match the strategy's schema."""

    default_code = "INVALID_STRATEGY_PARAMS"


class UnknownExchangeError(ValidationError):
    """An exchange id the server does not know."""

    default_code = "UNKNOWN_EXCHANGE"


class CheckTooLargeError(ValidationError):
    """A check over more bars per symbol than the server checks at once; `details` has `bars` and `max_bars`."""

    default_code = "CHECK_TOO_LARGE"


class SweepTooLargeError(ValidationError):
    """A sweep grid with more combinations than the server runs; `details` has `combinations` and `max_combinations`."""

    default_code = "SWEEP_TOO_LARGE"


class InvalidPaperConfigError(ValidationError):
    """`exchange_config.paper` of a session is not valid; `details["accepted"]` lists its fields."""

    default_code = "INVALID_PAPER_CONFIG"


class AuthenticationError(CrackTraderError):
    """401: missing or wrong credentials."""

    default_code = "UNAUTHORIZED"


class PermissionDeniedError(CrackTraderError):
    """403: authenticated but not allowed (or a refused Origin)."""

    default_code = "FORBIDDEN"


class NotFoundError(CrackTraderError):
    """404: no such run, results or route."""

    default_code = "NOT_FOUND"


class ConflictError(CrackTraderError):
    """409: the runner's state does not allow the request."""

    default_code = "CONFLICT"


class RunAlreadyActiveError(ConflictError):
    """A run can only start when the runner is idle; `details["status"]` says what it is instead."""

    default_code = "RUN_ALREADY_ACTIVE"


class NoActiveRunError(ConflictError):
    """Nothing is running, so there is nothing to stop (or to wait for)."""

    default_code = "NO_ACTIVE_RUN"


class RunNotResettableError(ConflictError):
    """An active run cannot be reset or deleted; stop it first."""

    default_code = "RUN_NOT_RESETTABLE"


class DuplicateNameError(ConflictError):
    """You already have a stored strategy with that name (or it is a strategy class's name)."""

    default_code = "DUPLICATE_NAME"


class SessionLimitError(ConflictError):
    """The server runs as many paper/live sessions as it admits; `details["max_live_sessions"]` says how many."""

    default_code = "SESSION_LIMIT"


class RateLimitError(CrackTraderError):
    """429: too many requests; `retry_after` is the server's `Retry-After` in seconds, when given."""

    default_code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(CrackTraderError):
    """5xx: the server failed; quote `request_id` when reporting it."""

    default_code = "INTERNAL_ERROR"


class NotImplementedByServerError(ServerError):
    """501: the server knows the endpoint but cannot do it yet (paper and live trading)."""

    default_code = "NOT_IMPLEMENTED"


class InvalidResponseError(CrackTraderError):
    """A successful response whose body is not what the endpoint answers (e.g. a proxy's HTML page)."""

    default_code = "INVALID_RESPONSE"


class ConnectionError(CrackTraderError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke before a response arrived."""

    default_code = "CONNECTION_ERROR"


class StreamClosedError(ConnectionError):
    """A WebSocket stream was closed abnormally (e.g. the server dropped a client that read too slowly)."""

    default_code = "STREAM_CLOSED"


class TimeoutError(CrackTraderError, builtins.TimeoutError):
    """A request, a stream read or `wait_for_completion` took longer than allowed."""

    default_code = "TIMEOUT"


class RunFailedError(CrackTraderError):
    """`backtest()` waited for a run that ended `failed`; `code` is the run's error code."""

    default_code = "RUN_FAILED"


class NotSupportedError(CrackTraderError):
    """The SDK method needs a server feature that does not exist yet."""

    default_code = "NOT_SUPPORTED"


_BY_CODE: dict[str, type[CrackTraderError]] = {
    cls.default_code: cls
    for cls in (
        ValidationError,
        InvalidSymbolError,
        InvalidTimeframeError,
        InvalidDateRangeError,
        UnknownStrategyError,
        InvalidStrategyParamsError,
        UnknownExchangeError,
        CheckTooLargeError,
        SweepTooLargeError,
        InvalidPaperConfigError,
        RunAlreadyActiveError,
        NoActiveRunError,
        RunNotResettableError,
        DuplicateNameError,
        SessionLimitError,
        NotImplementedByServerError,
        RateLimitError,
    )
}
_BY_STATUS: dict[int, type[CrackTraderError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: ValidationError,
    415: ValidationError,
    422: ValidationError,
    429: RateLimitError,
    501: NotImplementedByServerError,
}
# The server's code for a bare status, used when a body carries no envelope (a proxy's page, an old server).
_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


def error_class(status_code: int | None, code: str | None) -> type[CrackTraderError]:
    """The most specific class for a code, else for the HTTP status."""
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if status_code is None:
        return CrackTraderError
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    if status_code >= 500:
        return ServerError
    return CrackTraderError


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(
    status_code: int, headers: Mapping[str, str], content: bytes, *, method: str, url: str
) -> CrackTraderError:
    """The typed error for a failed response, whether or not its body is the standard envelope."""
    body: Any = None
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = {}
    path: str | None = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code") if isinstance(err.get("code"), str) else None
            message = err.get("message") if isinstance(err.get("message"), str) else None
            raw_details = err.get("details")
            details = raw_details if isinstance(raw_details, dict) else {}
        elif isinstance(err, str):
            message = err
        if message is None and "detail" in body:
            # FastAPI's plain shape: a message, or a validation list.
            detail = body["detail"]
            message = detail if isinstance(detail, str) else json.dumps(detail)[:500]
            if not isinstance(detail, str):
                details = {"errors": detail}
        path = body.get("path") if isinstance(body.get("path"), str) else None
    if message is None:
        text = content.decode("utf-8", "replace").strip()
        snippet = " ".join(text.split())[:200]
        message = f"HTTP {status_code} from {method} {url}" + (f": {snippet}" if snippet else "")
    code = code or _STATUS_CODES.get(status_code, f"HTTP_{status_code}")
    request_id = headers.get("x-request-id") or (
        details.get("request_id") if isinstance(details.get("request_id"), str) else None
    )
    cls = error_class(status_code, code)
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "code": code,
        "details": details,
        "path": path,
        "request_id": request_id,
        "body": body if body is not None else content.decode("utf-8", "replace"),
    }
    if issubclass(cls, RateLimitError):
        return cls(message, retry_after=parse_retry_after(headers.get("retry-after")), **kwargs)
    return cls(message, **kwargs)
