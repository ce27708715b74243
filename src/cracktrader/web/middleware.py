"""The server's edge as one pure-ASGI middleware (BaseHTTPMiddleware costs about two thirds of throughput).

For every HTTP request and WebSocket it: assigns a request id; rejects foreign Host headers (DNS rebinding)
and foreign Origins on WebSockets and state-changing requests (CSRF); requires JSON bodies on state-changing
requests; caps body size; and adds the API version, deprecation and security headers to every response,
errors and 404s included. It also records request counts and latency.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or ""
        if not (0 < len(request_id) <= 64 and request_id.replace("-", "").isalnum()):
            request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        problem = self._check(scope)
        if kind == "websocket":
            if problem is not None:
                await send({"type": "websocket.close", "code": 1008, "reason": problem[2][:120]})
                return
            await self.app(scope, receive, send)
            return
        await self._http(scope, receive, send, request_id, problem)

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        if origin.rstrip("/") in self.cors_origins or "*" in self.cors_origins:
            return True
        parts = urlsplit(origin)
        name = (parts.hostname or "").lower()
        # Same origin as the page that made the request (the dashboard), or any loopback origin.
        return name in LOOPBACK_NAMES or (host is not None and parts.netloc.lower() == host.lower())

    def _check(self, scope: Scope) -> tuple[int, str, str] | None:
        host = _header(scope, b"host")
        if host is not None and not self.allow_any_host and _hostname(host) not in self.allowed_hosts:
            return 400, "INVALID_HOST", f"Host header {host!r} is not served here; use localhost or the bound address"
        origin = _header(scope, b"origin")
        needs_origin_check = scope["type"] == "websocket" or scope.get("method") in STATE_CHANGING
        if origin is not None and needs_origin_check and not self._origin_allowed(origin, host):
            return 403, "FORBIDDEN_ORIGIN", f"Origin {origin!r} may not call this server; add it to CORS_ORIGINS"
        if scope["type"] == "http" and scope["method"] in STATE_CHANGING:
            length = _header(scope, b"content-length")
            has_body = (length is not None and length.strip() not in ("", "0")) or (
                _header(scope, b"transfer-encoding") is not None
            )
            if length is not None and length.isdigit() and int(length) > self.max_body:
                return 413, "PAYLOAD_TOO_LARGE", f"Request body exceeds {self.max_body} bytes"
            ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
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
        self, scope: Scope, receive: Receive, send: Send, request_id: str, problem: tuple[int, str, str] | None
    ) -> None:
        start = time.perf_counter()
        path = scope["path"]
        extra = list(SECURITY_HEADERS)
        extra.append((b"x-request-id", request_id.encode()))
        if path == "/ui" or path.startswith("/ui/"):
            extra.append((b"content-security-policy", UI_CSP))
        elif path in DOCS_PATHS:
            extra.append((b"content-security-policy", DOCS_CSP))
        else:
            extra.append((b"content-security-policy", API_CSP))
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
            if _header(scope, b"content-length") is None and _header(scope, b"transfer-encoding") is not None:
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
