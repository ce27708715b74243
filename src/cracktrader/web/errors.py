"""The standard error envelope and the exception handlers that produce it for every error."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cracktrader.errors import CracktraderError
from cracktrader.runs.config import SECRET_KEYS, redact

log = logging.getLogger("cracktrader.web")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_PROBE_SCOPE: dict[str, Any] = {"type": "http", "headers": [], "query_string": b""}
# An echoed value is a hint, not a copy: long strings, big containers and deep nesting are cut.
ECHO_CHARS = 200
ECHO_ITEMS = 20
ECHO_DEPTH = 4

_HTTP_CODES = {
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
    503: "SERVICE_UNAVAILABLE",
}


class ErrorBody(BaseModel):
    """The `error` object: a stable code, a message for people, machine-readable details."""

    code: str
    message: str
    details: dict[str, Any]


class ErrorEnvelope(BaseModel):
    """Every error response; `detail` keeps FastAPI's convention (a message, or the validation list of a 422)."""

    error: ErrorBody
    status_code: int
    path: str
    detail: Any


def _described(description: str) -> dict[str, Any]:
    return {"model": ErrorEnvelope, "description": description}


# Documented on every /api/v1 operation so clients (and schemathesis) know the envelope is the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _described("Bad input: INVALID_SYMBOL, INVALID_TIMEFRAME, UNKNOWN_STRATEGY, UNKNOWN_EXCHANGE, ..."),
    401: _described("Missing or invalid credentials (when authentication is on)"),
    403: _described("Not allowed: FORBIDDEN, FORBIDDEN_ORIGIN"),
    404: _described("NOT_FOUND"),
    409: _described("Conflict: RUN_ALREADY_ACTIVE, NO_ACTIVE_RUN, RUN_NOT_RESETTABLE"),
    413: _described("PAYLOAD_TOO_LARGE"),
    415: _described("UNSUPPORTED_MEDIA_TYPE: send application/json"),
    422: _described("VALIDATION_ERROR (detail: FastAPI's list) or INVALID_STRATEGY_PARAMS (detail: message)"),
    429: _described("RATE_LIMITED; see Retry-After"),
    500: _described("INTERNAL_ERROR; details.request_id is in the server log"),
    501: _described("NOT_IMPLEMENTED / AUTH_DISABLED"),
    503: _described("SERVICE_UNAVAILABLE or DATA_UNAVAILABLE (exchange unreachable)"),
}


class ApiError(CracktraderError):
    """An error raised by the web layer with an explicit code and status."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.code = code  # type: ignore[misc]
        self.status_code = status_code  # type: ignore[misc]
        self.headers = headers or {}


def envelope(
    status: int, code: str, message: str, path: str, *, details: dict[str, Any] | None = None, detail: Any = None
) -> dict[str, Any]:
    """`{"error": {code, message, details}, "status_code", "path", "detail"}`; detail keeps FastAPI's convention."""
    return {
        "error": {"code": code, "message": message, "details": details or {}},
        "status_code": status,
        "path": path,
        "detail": message if detail is None else detail,
    }


def _safe_text(value: str, limit: int) -> str:
    # Lone surrogates cannot be encoded as UTF-8 and NULs upset logs and databases: both are written escaped.
    text = value if len(value) <= limit else f"{value[:limit]}... ({len(value)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def json_safe(value: Any, *, limit: int = ECHO_CHARS, items: int = ECHO_ITEMS, depth: int = ECHO_DEPTH) -> Any:
    """A copy of `value` that JSON always encodes: finite numbers, escaped and truncated text, bounded size."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Rendering an integer of thousands of digits is refused (and slow): say how big it is instead.
        return value if value.bit_length() <= 256 else f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _safe_text(value, limit)
    if isinstance(value, dict | list | tuple):
        if depth <= 0:
            return f"<{type(value).__name__} of {len(value)} items>"
        more = f"... ({len(value) - items} more)"
        if isinstance(value, dict):
            out = {
                _safe_text(str(k), limit): json_safe(v, limit=limit, items=items, depth=depth - 1)
                for k, v in list(value.items())[:items]
            }
            if len(value) > items:
                out["..."] = more
            return out
        listed = [json_safe(v, limit=limit, items=items, depth=depth - 1) for v in list(value)[:items]]
        return [*listed, more] if len(value) > items else listed
    return _safe_text(str(value), limit)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response in the standard envelope; one that cannot be encoded is sent made JSON-safe."""
    body = envelope(status, code, message, request.url.path, details=details, detail=detail)
    try:
        return JSONResponse(body, status_code=status, headers=headers)
    except (ValueError, UnicodeError):
        # An error about a bad value must never fail on that value (NaN, a lone surrogate, ...).
        return JSONResponse(json_safe(body, limit=2000, items=100, depth=8), status_code=status, headers=headers)


async def _cracktrader_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CracktraderError)
    headers = getattr(exc, "headers", None)
    return error_response(request, exc.status_code, exc.code, exc.message, details=exc.details, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").capitalize()
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"No route matches {request.method} {request.url.path}"
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
        allowed = allowed_methods(request)
        if allowed:
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return error_response(request, exc.status_code, code, message, detail=exc.detail, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method a route of the app serves on the request's path (FastAPI has one route per operation)."""
    allowed = []
    for method in HTTP_METHODS:
        # A fresh scope per probe: matching may annotate the scope, and the request's own must stay as it is.
        probe = {
            **_PROBE_SCOPE,
            "method": method,
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
        }
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation list with secrets redacted from the echoed input, and nothing that is not JSON-safe."""
    cleaned = []
    for err in errors:
        item = {k: v for k, v in dict(err).items() if k in ("type", "loc", "msg", "input")}
        loc = [str(p).lower() for p in item.get("loc", ())]
        if any(p in SECRET_KEYS or p == "exchange_config" for p in loc):
            item.pop("input", None)
        elif "input" in item:
            # A missing field echoes the whole body, which may hold exchange keys or a password.
            item["input"] = redact(item["input"])
        if "ctx" in err:
            item["ctx"] = {k: str(v) for k, v in err["ctx"].items()}
        # The echo must encode whatever was sent: NaN, 1e309, lone surrogates, huge or deep values.
        item = {k: _safe_text(v, 1000) if k == "msg" and isinstance(v, str) else json_safe(v) for k, v in item.items()}
        cleaned.append(item)
    return cleaned


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_validation_errors(exc.errors())
    summary = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors)
    return error_response(
        request, 422, "VALIDATION_ERROR", f"Invalid request: {summary}", details={"errors": errors}, detail=errors
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id", "-")
    log.exception("Unhandled error on %s %s (request id %s)", request.method, request.url.path, request_id)
    return error_response(
        request,
        500,
        "INTERNAL_ERROR",
        f"Internal server error; quote request id {request_id} when reporting it",
        details={"request_id": request_id},
        headers={"X-Request-ID": request_id},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of error through the standard envelope."""
    app.add_exception_handler(CracktraderError, _cracktrader_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)
