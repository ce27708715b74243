"""The server's edge as one pure-ASGI middleware (BaseHTTPMiddleware costs about two thirds of throughput).

For every HTTP request and WebSocket it: assigns a request id; rejects foreign Host headers (DNS rebinding)
and foreign Origins on WebSockets and state-changing requests (CSRF); requires JSON bodies on state-changing
requests; caps body size; and adds the API version, deprecation and security headers to every response,
errors and 404s included. It also records request counts and latency.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from cracktrader.web.config import LOOPBACK_NAMES
from cracktrader.web.deprecation import DEPRECATED_PATHS
from cracktrader.web.errors import envelope
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
                await send({"type": "websocket.close", "code": 1008, "reason": problem[2][:120]})
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

            await self._reject(scope, send_with_headers, 500, "INTERNAL_ERROR", message, {"request_id": request_id})
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

    def _check(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str, str] | None:
        raw_host = headers.get(b"host")
        host = raw_host.decode("latin-1") if raw_host is not None else None
        if raw_host is not None and not self._host_ok(raw_host):
            return 400, "INVALID_HOST", f"Host header {host!r} is not served here; use localhost or the bound address"
        method = scope.get("method")
        needs_origin_check = scope["type"] == "websocket" or method in STATE_CHANGING
        if needs_origin_check:
            raw_origin = headers.get(b"origin")
            origin = raw_origin.decode("latin-1") if raw_origin is not None else None
            if origin is not None and not self._origin_allowed(origin, host):
                return 403, "FORBIDDEN_ORIGIN", f"Origin {origin!r} may not call this server; add it to CORS_ORIGINS"
        if scope["type"] == "http" and method in STATE_CHANGING:
            raw_length = headers.get(b"content-length")
            length = raw_length.decode("latin-1").strip() if raw_length is not None else None
            has_body = (length is not None and length not in ("", "0")) or b"transfer-encoding" in headers
            if length is not None and length.isdigit() and int(length) > self.max_body:
                return 413, "PAYLOAD_TOO_LARGE", f"Request body exceeds {self.max_body} bytes"
            ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            if has_body and ctype != "application/json":
                if scope["path"] in self.form_paths and ctype == "application/x-www-form-urlencoded":
                    return None
                return (
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
        problem: tuple[int, str, str] | None,
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
            if problem is not None:
                await self._reject(scope, send_with_headers, *problem)
                return
            if b"content-length" not in headers and b"transfer-encoding" in headers:
                buffered = await self._read_capped(receive)
                if buffered is None:
                    await self._reject(
                        scope,
                        send_with_headers,
                        413,
                        "PAYLOAD_TOO_LARGE",
                        f"Request body exceeds {self.max_body} bytes",
                        {"limit": self.max_body},
                    )
                    return
                receive = buffered
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # The last line of defence (Starlette's ServerErrorMiddleware sits outside user middleware):
            # log with the request id, answer with the envelope, and never leak the exception to the client.
            log.exception("Unhandled error on %s %s (request id %s)", scope["method"], path, request_id)
            if not started[0]:
                await self._reject(
                    scope,
                    send_with_headers,
                    500,
                    "INTERNAL_ERROR",
                    f"Internal server error; quote request id {request_id} when reporting it",
                    {"request_id": request_id},
                )
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            # Routes of an included router report their path without the router's prefix.
            if template != "unmatched" and path.startswith(API_PREFIX) and not template.startswith(API_PREFIX):
                template = API_PREFIX + template
            self.metrics.observe(scope["method"], template, status_holder[0], time.perf_counter() - start)

    async def _read_capped(self, receive: Receive) -> Receive | None:
        """Read a streamed (chunked) body up to the cap; None when it is larger, else a replaying receive."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    @staticmethod
    async def _reject(
        scope: Scope, send: Send, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        body = json.dumps(envelope(status, code, message, scope["path"], details=details)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
