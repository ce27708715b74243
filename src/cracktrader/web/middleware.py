"""The server's edge as one pure-ASGI middleware (BaseHTTPMiddleware costs about two thirds of throughput).

For every HTTP request and WebSocket it: assigns a request id; rejects foreign Host headers (DNS rebinding)
and foreign Origins on WebSockets and state-changing requests (CSRF); refuses NUL characters in the path and
query; requires JSON bodies on state-changing requests; caps body size (tighter for `/run/*`); refuses bodies
no database or encoder accepts (see `input_guard`); and adds the API version, deprecation and security headers
to every response, errors and 404s included. It also records request counts and latency.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from cracktrader.web.config import LOOPBACK_NAMES
from cracktrader.web.deprecation import DEPRECATED_PATHS
from cracktrader.web.errors import envelope
from cracktrader.web.input_guard import (
    InputProblem,
    form_body_problem,
    json_body_problem,
    path_problem,
    query_problem,
)
from cracktrader.web.metrics import RequestMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_VERSION = "v1"
API_PREFIX = "/api/v1"
log = logging.getLogger("cracktrader.web")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-cracktrader-api-version", API_VERSION.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
UI_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    b"connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Swagger UI and ReDoc run inline bootstrap scripts and web workers.
DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
# A run request is a few hundred bytes of settings; 64 KiB leaves room for large strategy_params and no more.
RUN_BODY_BYTES = 64 * 1024
PATH_BODY_CAPS: tuple[tuple[str, int], ...] = ((f"{API_PREFIX}/run/", RUN_BODY_BYTES),)


class Rejection(NamedTuple):
    """An answer given at the edge instead of calling the app."""

    status: int
    code: str
    message: str
    details: dict[str, Any] | None = None
    detail: Any = None


def _invalid(problem: InputProblem) -> Rejection:
    """A 422 in the shape of FastAPI's validation errors (`detail` and `details.errors` list the problem)."""
    errors = [problem.error()]
    return Rejection(422, "VALIDATION_ERROR", f"Invalid request: {problem.summary()}", {"errors": errors}, errors)


def _hostname(value: str) -> str:
    """Host without port; IPv6 literals keep their brackets stripped."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class EdgeMiddleware:
    """Request id, host/origin/content-type checks, body cap, version and security headers, metrics."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        bound_host: str,
        allowed_hosts: list[str],
        cors_origins: list[str],
        max_body_bytes: int,
        metrics: RequestMetrics,
        form_paths: frozenset[str] = frozenset(),
        fast_get: dict[str, Callable[[], bytes]] | None = None,
        path_body_caps: tuple[tuple[str, int], ...] = PATH_BODY_CAPS,
    ) -> None:
        self.app = app
        hosts = {_hostname(h) for h in (*LOOPBACK_NAMES, bound_host, *allowed_hosts)}
        # A wildcard bind accepts any Host only when the operator said so through allowed_hosts.
        hosts.discard("0.0.0.0")
        hosts.discard("::")
        self.allow_any_host = "*" in allowed_hosts
        self.allowed_hosts = frozenset(hosts)
        self.cors_origins = frozenset(o.rstrip("/") for o in cors_origins)
        self.max_body = max_body_bytes
        # Longest prefix first, so a more specific cap wins; never looser than the global cap.
        self.path_body_caps = tuple(
            (prefix, min(cap, max_body_bytes)) for prefix, cap in sorted(path_body_caps, key=lambda pc: -len(pc[0]))
        )
        self.metrics = metrics
        self.form_paths = form_paths
        # Hot GET paths answered here without routing; the app fills it once its state exists.
        self.fast_get = fast_get if fast_get is not None else {}
        self._host_cache: dict[bytes, bool] = {}
        self._api_headers = [*SECURITY_HEADERS, (b"content-security-policy", API_CSP)]
        self._ui_headers = [*SECURITY_HEADERS, (b"content-security-policy", UI_CSP)]
        self._docs_headers = [*SECURITY_HEADERS, (b"content-security-policy", DOCS_CSP)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        raw_id = headers.get(b"x-request-id")
        request_id = raw_id.decode("latin-1") if raw_id else ""
        if not (0 < len(request_id) <= 64 and request_id.replace("-", "").isalnum()):
            request_id = os.urandom(8).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        problem = self._check(scope, headers)
        if kind == "websocket":
            if problem is not None:
                await send({"type": "websocket.close", "code": 1008, "reason": problem.message[:120]})
                return
            await self.app(scope, receive, send)
            return
        if problem is None and scope["method"] == "GET":
            fast = self.fast_get.get(scope["path"])
            # Cross-origin requests take the full stack so CORS headers are applied.
            if fast is not None and not scope.get("query_string") and b"origin" not in headers:
                await self._fast(scope, send, request_id, fast)
                return
        await self._http(scope, receive, send, request_id, problem, headers)

    async def _fast(self, scope: Scope, send: Send, request_id: str, handler: Callable[[], bytes]) -> None:
        """Serve a hot read path (e.g. GET /api/v1/status) without routing: same body and headers as the route."""
        start = time.perf_counter()
        extra = [*self._static_headers(scope["path"]), (b"x-request-id", request_id.encode())]
        try:
            body = handler()
        except Exception:
            log.exception("Unhandled error on GET %s (request id %s)", scope["path"], request_id)
            message = f"Internal server error; quote request id {request_id} when reporting it"

            async def send_with_headers(msg: Message) -> None:
                if msg["type"] == "http.response.start":
                    msg["headers"] = [*msg["headers"], *extra]
                await send(msg)

            rejection = Rejection(500, "INTERNAL_ERROR", message, {"request_id": request_id})
            await self._reject(scope, send_with_headers, rejection)
            self.metrics.observe("GET", scope["path"], 500, time.perf_counter() - start)
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe("GET", scope["path"], 200, time.perf_counter() - start)

    def _static_headers(self, path: str) -> list[tuple[bytes, bytes]]:
        if path == "/ui" or path.startswith("/ui/"):
            return self._ui_headers
        if path in DOCS_PATHS:
            return self._docs_headers
        return self._api_headers

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        if origin.rstrip("/") in self.cors_origins or "*" in self.cors_origins:
            return True
        parts = urlsplit(origin)
        name = (parts.hostname or "").lower()
        # Same origin as the page that made the request (the dashboard), or any loopback origin.
        return name in LOOPBACK_NAMES or (host is not None and parts.netloc.lower() == host.lower())

    def _host_ok(self, host: bytes) -> bool:
        ok = self._host_cache.get(host)
        if ok is None:
            ok = self.allow_any_host or _hostname(host.decode("latin-1")) in self.allowed_hosts
            if len(self._host_cache) < 1024:  # bounded: Host values are client-controlled
                self._host_cache[host] = ok
        return ok

    def body_cap(self, path: str) -> tuple[int, str]:
        """The body size limit of a path, and what it applies to (for the 413's message)."""
        for prefix, cap in self.path_body_caps:
            if path.startswith(prefix):
                return cap, f"{prefix}*"
        return self.max_body, "this server"

    def _too_large(self, path: str) -> Rejection:
        cap, scope = self.body_cap(path)
        message = f"Request body exceeds {cap} bytes, the limit for {scope}"
        return Rejection(413, "PAYLOAD_TOO_LARGE", message, {"limit": cap})

    def _check(self, scope: Scope, headers: dict[bytes, bytes]) -> Rejection | None:
        raw_host = headers.get(b"host")
        host = raw_host.decode("latin-1") if raw_host is not None else None
        if raw_host is not None and not self._host_ok(raw_host):
            return Rejection(
                400, "INVALID_HOST", f"Host header {host!r} is not served here; use localhost or the bound address"
            )
        method = scope.get("method")
        needs_origin_check = scope["type"] == "websocket" or method in STATE_CHANGING
        if needs_origin_check:
            raw_origin = headers.get(b"origin")
            origin = raw_origin.decode("latin-1") if raw_origin is not None else None
            if origin is not None and not self._origin_allowed(origin, host):
                return Rejection(
                    403, "FORBIDDEN_ORIGIN", f"Origin {origin!r} may not call this server; add it to CORS_ORIGINS"
                )
        # No route, store or error echo has to cope with a NUL (PostgreSQL refuses it in text).
        input_problem = path_problem(scope["path"]) or query_problem(scope.get("query_string", b""))
        if input_problem is not None:
            return _invalid(input_problem)
        if scope["type"] == "http" and method in STATE_CHANGING:
            raw_length = headers.get(b"content-length")
            length = raw_length.decode("latin-1").strip() if raw_length is not None else None
            has_body = _has_body(headers)
            # isascii: "²".isdigit() is true, and int() refuses it.
            if (
                length is not None
                and length.isascii()
                and length.isdigit()
                and int(length) > self.body_cap(scope["path"])[0]
            ):
                return self._too_large(scope["path"])
            ctype = _content_type(headers)
            if has_body and ctype != "application/json":
                if scope["path"] in self.form_paths and ctype == FORM_TYPE:
                    return None
                return Rejection(
                    415,
                    "UNSUPPORTED_MEDIA_TYPE",
                    f"Send the request body as application/json (got {ctype or 'no content type'})",
                )
        return None

    async def _http(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        problem: Rejection | None,
        headers: dict[bytes, bytes],
    ) -> None:
        start = time.perf_counter()
        path = scope["path"]
        extra = [*self._static_headers(path), (b"x-request-id", request_id.encode())]
        deprecation = DEPRECATED_PATHS.get((scope["method"], path))
        if deprecation is not None:
            extra.extend(deprecation.headers())
        status_holder = [500]
        started = [False]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                started[0] = True
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            if problem is None and scope["method"] in STATE_CHANGING and _has_body(headers):
                # Bodies are read here (up to the cap), checked, and replayed to the app.
                body = await self._read_capped(receive, self.body_cap(path)[0])
                if body is None:
                    problem = self._too_large(path)
                else:
                    problem = self._body_problem(body, _content_type(headers))
                    receive = _replay(body, receive)
            if problem is not None:
                await self._reject(scope, send_with_headers, problem)
                return
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # The last line of defence (Starlette's ServerErrorMiddleware sits outside user middleware):
            # log with the request id, answer with the envelope, and never leak the exception to the client.
            log.exception("Unhandled error on %s %s (request id %s)", scope["method"], path, request_id)
            if not started[0]:
                message = f"Internal server error; quote request id {request_id} when reporting it"
                await self._reject(
                    scope, send_with_headers, Rejection(500, "INTERNAL_ERROR", message, {"request_id": request_id})
                )
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            # Routes of an included router report their path without the router's prefix.
            if template != "unmatched" and path.startswith(API_PREFIX) and not template.startswith(API_PREFIX):
                template = API_PREFIX + template
            self.metrics.observe(scope["method"], template, status_holder[0], time.perf_counter() - start)

    @staticmethod
    async def _read_capped(receive: Receive, cap: int) -> bytes | None:
        """The whole body (streamed or not) when it is at most `cap` bytes, else None."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    def _body_problem(body: bytes, ctype: str) -> Rejection | None:
        if ctype == "application/json":
            problem = json_body_problem(body)
        elif ctype == FORM_TYPE:
            problem = form_body_problem(body)
        else:
            return None
        return _invalid(problem) if problem is not None else None

    @staticmethod
    async def _reject(scope: Scope, send: Send, rejection: Rejection) -> None:
        status, code, message, details, detail = rejection
        content = envelope(status, code, message, scope["path"], details=details, detail=detail)
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        body = text.encode("utf-8", "backslashreplace")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


FORM_TYPE = "application/x-www-form-urlencoded"


def _has_body(headers: dict[bytes, bytes]) -> bool:
    raw_length = headers.get(b"content-length")
    length = raw_length.decode("latin-1").strip() if raw_length is not None else None
    return (length is not None and length not in ("", "0")) or b"transfer-encoding" in headers


def _content_type(headers: dict[bytes, bytes]) -> str:
    return headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then passes on later messages (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
