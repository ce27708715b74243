"""Auth dependencies: resolve the caller once per request, and the `CurrentUser` / `RequireScope` aliases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from cracktrader.auth.api_keys import SCOPES
from cracktrader.auth.errors import AuthError, ForbiddenError, NotAuthenticatedError, RateLimitedError
from cracktrader.auth.login_limiter import LoginLimiter, LoginLimits, LoginPolicy
from cracktrader.auth.principal import LOCAL_ADMIN, Authenticator, Principal
from cracktrader.auth.rate_limit import RateLimit, RateLimiter
from cracktrader.auth.revocation import DEFAULT_POLL_S, RevocationPoller
from cracktrader.auth.shared import SharedAuth, open_shared_auth
from cracktrader.auth.store import AuthStore
from cracktrader.auth.tokens import TokenSettings

__all__ = [
    "AuthState",
    "CurrentUser",
    "RequireScope",
    "authenticate_request",
    "authorize_request",
    "authorize_websocket",
    "health_detail_allowed",
    "optional_principal",
    "resolve_connection",
    "watch_credentials",
]

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# WebSocket close code "policy violation".
WS_POLICY_VIOLATION = 1008
# How long a WebSocket without handshake credentials may take to send them as its first message.
WS_AUTH_TIMEOUT_S = 10.0
WS_AUTH_HINT = (
    'Authentication required: ?token=<access token or API key>, or first send {"action": "auth", "token": ...}'
)


@dataclass
class AuthState:
    """Everything auth needs at request time (`app.state.auth`); the store arrives with the database."""

    enabled: bool
    tokens: TokenSettings | None
    cache_ttl_s: float = 10.0
    limiter: LoginLimits = field(default_factory=LoginLimiter)
    # Replaced at start by the shared one (Redis or PostgreSQL) when the server may run as several processes.
    rate_limiter: RateLimit = field(default_factory=lambda: RateLimiter(0))
    store: AuthStore | None = None
    authenticator: Authenticator | None = None
    # How often the database is asked whether another process (the CLI) revoked something.
    revocation_poll_s: float = DEFAULT_POLL_S
    poller: RevocationPoller | None = None
    redis_url: str | None = None
    redis_prefix: str = "cracktrader:"
    shared: SharedAuth | None = None
    # run id -> owner user id, so /status and /results can tell whose the current run is without a query.
    run_owners: dict[str, int | None] = field(default_factory=dict)

    def attach(self, store: AuthStore) -> None:
        """Bind to the opened database."""
        self.store = store
        if self.tokens is not None:
            self.authenticator = Authenticator(store=store, tokens=self.tokens, cache_ttl_s=self.cache_ttl_s)

    async def start(self) -> None:
        """With auth on, share the limits, listen for other processes' revocations, and poll as a safety net."""
        if not self.enabled or self.authenticator is None or self.store is None or self.shared is not None:
            return
        shared = await open_shared_auth(
            redis_url=self.redis_url,
            redis_prefix=self.redis_prefix,
            engine=self.store.engine,
            per_minute=self.rate_limiter.per_minute,
            login=self.limiter.policy if isinstance(self.limiter, LoginLimiter) else LoginPolicy(),
        )
        self.shared = shared
        if shared.backend != "local":
            self.rate_limiter = shared.rate_limiter
        if shared.login_limiter is not None:
            self.limiter = shared.login_limiter
        # Listening starts before the poller's first reading: nothing revoked after it can be missed.
        await shared.notices.start(self.authenticator.invalidate)
        log.info("Rate limits, login lockouts and revocation notices shared through %s", shared.backend)
        self.poller = RevocationPoller(self.authenticator, interval_s=self.revocation_poll_s)
        await self.poller.start()

    async def close(self) -> None:
        """Stop polling and listening."""
        if self.poller is not None:
            await self.poller.close()
            self.poller = None
        if self.shared is not None:
            await self.shared.close()
            self.shared = None

    async def revoked(self) -> None:
        """This process revoked a credential: drop the caches, re-check open streams, and tell the other processes.

        Awaited before the response, so by the time the client hears "done" every other process has been sent
        the notice (each drops its caches the moment it arrives).
        """
        if self.authenticator is not None:
            self.authenticator.invalidate()
        if self.shared is not None:
            try:
                await self.shared.notices.publish()
            except Exception:
                # The revocation is committed; other processes still see it through polling.
                log.warning("Could not announce a revocation to the other processes", exc_info=True)

    def remember_owner(self, run_id: str, user_id: int | None) -> None:
        """Record a run's owner (bounded: ids are few, but never let it grow without limit)."""
        if len(self.run_owners) >= 10_000:
            self.run_owners.clear()
        self.run_owners[run_id] = user_id


def _auth(conn: HTTPConnection) -> AuthState:
    state: AuthState = conn.app.state.auth
    return state


def _credentials(conn: HTTPConnection, *, allow_query: bool) -> tuple[str, str] | None:
    """("bearer" | "api_key", value) from the headers (or, for WebSockets, the `token` query parameter)."""
    headers = conn.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return "bearer", value.strip()
    key = headers.get("x-api-key")
    if key:
        return "api_key", key
    if allow_query:
        # Browsers cannot set headers on a WebSocket handshake; the token travels in the URL instead.
        token = conn.query_params.get("token") or conn.query_params.get("api_key")
        if token:
            return _kind_of(token), token
    return None


def _kind_of(token: str) -> str:
    """A bare credential's kind: API keys start with `ct_`, anything else is an access token."""
    return "api_key" if token.startswith("ct_") else "bearer"


async def _authenticate(auth: AuthState, kind: str, value: str) -> Principal:
    """The principal a bearer token or API key stands for; AuthError when it is bad."""
    if auth.authenticator is None:
        raise NotAuthenticatedError("Authentication is not ready")
    if kind == "bearer":
        return await auth.authenticator.from_bearer(value)
    return await auth.authenticator.from_api_key(value)


async def resolve_connection(conn: HTTPConnection, *, allow_query: bool = False) -> Principal | None:
    """The caller's principal; None without credentials; AuthError for bad ones."""
    auth = _auth(conn)
    if not auth.enabled:
        return LOCAL_ADMIN
    found = _credentials(conn, allow_query=allow_query)
    if found is None:
        return None
    return await _authenticate(auth, *found)


async def authenticate_request(request: Request) -> Principal:
    """The caller (the local admin when auth is off); 401 without valid credentials."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    principal = await resolve_connection(request)
    if principal is None:
        raise NotAuthenticatedError("Authentication required: send a bearer token or an X-API-Key header")
    await check_rate_limit(_auth(request), principal)
    request.state.principal = principal
    return principal


def _rate_key(principal: Principal) -> str | None:
    """Keys and users have separate allowances; the auth-off local operator has none to spend."""
    if principal.api_key_id is not None:
        return f"key:{principal.api_key_id}"
    return f"user:{principal.user_id}" if principal.user_id is not None else None


async def check_rate_limit(auth: AuthState, principal: Principal) -> None:
    """Spend one request of the caller's allowance; 429 RATE_LIMITED with Retry-After when it is used up."""
    key = _rate_key(principal)
    if key is None:
        return
    wait = await auth.rate_limiter.take(key)
    if wait:
        per_minute = auth.rate_limiter.per_minute
        raise RateLimitedError(
            f"Rate limit of {per_minute} requests a minute exceeded; retry in {wait} s",
            details={"limit_per_minute": per_minute, "retry_after_s": wait},
            headers={"Retry-After": str(wait)},
        )


CurrentUser = Annotated[Principal, Depends(authenticate_request)]


async def authorize_request(request: Request, principal: CurrentUser) -> Principal:
    """The rule for the whole API router: reads need `read`, anything that changes state needs `trade`."""
    needed = "read" if request.method in SAFE_METHODS else "trade"
    if needed not in principal.scopes:
        raise ForbiddenError(
            f"This needs the {needed!r} scope (role {principal.role!r} has {sorted(principal.scopes)})",
            details={"required_scope": needed},
        )
    return principal


def RequireScope(scope: str) -> Any:
    """A dependency that answers 403 unless the caller has `scope` (use in `dependencies=[...]` or `Annotated`)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def require(principal: CurrentUser) -> Principal:
        if scope not in principal.scopes:
            raise ForbiddenError(f"This needs the {scope!r} scope", details={"required_scope": scope})
        return principal

    dependency: DependsParam = Depends(require)
    return dependency


async def optional_principal(request: Request) -> Principal | None:
    """For public routes (/health): the caller when valid credentials came, else None; never fails."""
    try:
        principal = await resolve_connection(request)
    except AuthError:
        principal = None
    request.state.principal = principal
    return principal


def health_detail_allowed(request: Request) -> bool:
    """Checks and metrics for authenticated callers only (always when auth is off)."""
    if not _auth(request).enabled:
        return True
    return getattr(request.state, "principal", None) is not None


async def _first_message_principal(ws: WebSocket) -> Principal:
    """Credentials from the first message, `{"action": "auth", "token": "..."}`, sent within WS_AUTH_TIMEOUT_S."""
    try:
        async with asyncio.timeout(WS_AUTH_TIMEOUT_S):
            message = await ws.receive()
    except TimeoutError:
        raise NotAuthenticatedError(f"No credentials within {WS_AUTH_TIMEOUT_S:g} s") from None
    text = message.get("text") or ""
    try:
        body = json.loads(text) if len(text) <= 8192 else None
    except json.JSONDecodeError:
        body = None
    token = body.get("token") or body.get("api_key") if isinstance(body, dict) else None
    action = (body.get("action") or body.get("type")) if isinstance(body, dict) else None
    if action != "auth" or not isinstance(token, str) or not token:
        raise NotAuthenticatedError(WS_AUTH_HINT)
    return await _authenticate(_auth(ws), _kind_of(token), token)


async def authorize_websocket(ws: WebSocket) -> bool:
    """Accept a WebSocket once its caller is known, else close it with 1008.

    Credentials come in the handshake (Authorization, X-API-Key, `?token=`) or, when none came, in the first
    message. Bad handshake credentials are refused before the upgrade (HTTP 403). The caller needs `read`, and
    the connection counts against its rate limit.
    """
    auth = _auth(ws)
    try:
        principal = await resolve_connection(ws, allow_query=True)
        if principal is not None:
            await check_rate_limit(auth, principal)
    except AuthError as exc:
        await ws.close(code=WS_POLICY_VIOLATION, reason=exc.message[:120])
        return False
    if principal is None:
        await ws.accept()
        try:
            principal = await _first_message_principal(ws)
            await check_rate_limit(auth, principal)
        except AuthError as exc:
            await ws.close(code=WS_POLICY_VIOLATION, reason=exc.message[:120])
            return False
        except WebSocketDisconnect:
            return False
    if "read" not in principal.scopes:
        await ws.close(code=WS_POLICY_VIOLATION, reason="This stream needs the 'read' scope")
        return False
    if ws.client_state == WebSocketState.CONNECTING:  # handshake credentials: not accepted yet
        await ws.accept()
    ws.state.principal = principal
    return True


async def watch_credentials(ws: WebSocket) -> None:
    """Return once the stream's credential has been revoked, after closing it with 1008; never with auth off.

    Woken by every invalidation (this server's own revocations at once, other processes' within a poll), it
    re-checks the connection's principal from the caches.
    """
    auth = _auth(ws)
    authenticator = auth.authenticator
    principal: Principal | None = getattr(ws.state, "principal", None)
    if not auth.enabled or authenticator is None or principal is None or principal.via == "local":
        await asyncio.Event().wait()
        return
    while True:
        generation = authenticator.generation
        try:
            await authenticator.recheck(principal)
        except AuthError as exc:
            with contextlib.suppress(Exception):
                await ws.close(code=WS_POLICY_VIOLATION, reason=exc.message[:120])
            return
        except Exception:
            # The database failed the re-check: keep the stream, and try again on the next change.
            log.warning("Could not re-check a stream's credentials", exc_info=True)
        await authenticator.wait_changed(generation)
