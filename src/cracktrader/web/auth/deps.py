"""Auth dependencies: resolve the caller once per request, and the `CurrentUser` / `RequireScope` aliases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from cracktrader.auth.api_keys import SCOPES
from cracktrader.auth.errors import AuthError, ForbiddenError, NotAuthenticatedError
from cracktrader.auth.login_limiter import LoginLimiter
from cracktrader.auth.principal import LOCAL_ADMIN, Authenticator, Principal
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
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# WebSocket close code "policy violation".
WS_POLICY_VIOLATION = 1008


@dataclass
class AuthState:
    """Everything auth needs at request time (`app.state.auth`); the store arrives with the database."""

    enabled: bool
    tokens: TokenSettings | None
    cache_ttl_s: float = 10.0
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    store: AuthStore | None = None
    authenticator: Authenticator | None = None
    # run id -> owner user id, so /status and /results can tell whose the current run is without a query.
    run_owners: dict[str, int | None] = field(default_factory=dict)

    def attach(self, store: AuthStore) -> None:
        """Bind to the opened database."""
        self.store = store
        if self.tokens is not None:
            self.authenticator = Authenticator(store=store, tokens=self.tokens, cache_ttl_s=self.cache_ttl_s)

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
            return ("api_key" if token.startswith("ct_") else "bearer"), token
    return None


async def resolve_connection(conn: HTTPConnection, *, allow_query: bool = False) -> Principal | None:
    """The caller's principal; None without credentials; AuthError for bad ones."""
    auth = _auth(conn)
    if not auth.enabled:
        return LOCAL_ADMIN
    found = _credentials(conn, allow_query=allow_query)
    if found is None:
        return None
    if auth.authenticator is None:
        raise NotAuthenticatedError("Authentication is not ready")
    kind, value = found
    if kind == "bearer":
        return await auth.authenticator.from_bearer(value)
    return await auth.authenticator.from_api_key(value)


async def authenticate_request(request: Request) -> Principal:
    """The caller (the local admin when auth is off); 401 without valid credentials."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    principal = await resolve_connection(request)
    if principal is None:
        raise NotAuthenticatedError("Authentication required: send a bearer token or an X-API-Key header")
    request.state.principal = principal
    return principal


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


async def authorize_websocket(ws: WebSocket) -> bool:
    """The hook the WebSocket routes call before accepting: a token or API key with `read`, else close 1008."""
    try:
        principal = await resolve_connection(ws, allow_query=True)
    except AuthError as exc:
        await ws.close(code=WS_POLICY_VIOLATION, reason=exc.message[:120])
        return False
    if principal is None or "read" not in principal.scopes:
        await ws.close(code=WS_POLICY_VIOLATION, reason="Authentication required: ?token=<access token or API key>")
        return False
    ws.state.principal = principal
    return True
