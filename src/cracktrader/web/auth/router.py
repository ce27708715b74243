"""`/auth`: login (OAuth2 password form or JSON), refresh, logout, me, and API keys."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Request, Response
from pydantic import ValidationError

from cracktrader.auth import service
from cracktrader.auth.errors import ForbiddenError
from cracktrader.auth.store import ApiKeyRow, AuthStore
from cracktrader.auth.tokens import TokenSettings
from cracktrader.web.auth.deps import AuthState, CurrentUser
from cracktrader.web.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyOut,
    LoginRequest,
    LogoutRequest,
    LogoutResponse,
    MeResponse,
    RefreshRequest,
    TokenResponse,
)
from cracktrader.web.errors import ApiError

# Reachable without credentials (they hand them out).
public_router = APIRouter(prefix="/auth", tags=["auth"])
# Need a valid principal, but not the `trade` scope: managing one's own session and keys is not trading.
account_router = APIRouter(prefix="/auth", tags=["auth"])

_FORM = "application/x-www-form-urlencoded"
_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            _FORM: {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string"},
                        "password": {"type": "string", "format": "password"},
                    },
                }
            },
            "application/json": {"schema": LoginRequest.model_json_schema()},
        },
    }
}


def _state(request: Request) -> tuple[AuthState, AuthStore, TokenSettings]:
    auth: AuthState = request.app.state.auth
    if auth.store is None or auth.tokens is None:
        raise ApiError(
            501,
            "AUTH_DISABLED",
            "Logins need JWT_SECRET_KEY (and CRACKTRADER_AUTH_MODE=on to require them)",
        )
    return auth, auth.store, auth.tokens


async def _login_body(request: Request) -> LoginRequest:
    """The OAuth2 password form (seed 004) or the same fields as JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    try:
        if ctype == _FORM:
            fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            data: Any = {k: v[0] for k, v in fields.items() if k in ("username", "password")}
        else:
            data = json.loads(raw or b"null")
        return LoginRequest.model_validate(data)
    except (ValidationError, ValueError, UnicodeDecodeError):
        # Never echo the submitted body: it holds a password.
        raise ApiError(422, "VALIDATION_ERROR", "Send username and password as a form or a JSON object") from None


@public_router.post("/login", response_model=TokenResponse, openapi_extra=_LOGIN_BODY)
async def login(request: Request) -> dict[str, Any]:
    """Exchange a username and password for an access token and a refresh token."""
    auth, store, tokens = _state(request)
    body = await _login_body(request)
    client = request.client.host if request.client else None
    user = await service.authenticate(
        store=store, limiter=auth.limiter, username=body.username, password=body.password, ip=client
    )
    return await service.issue_tokens(store=store, user=user, settings=tokens)


@public_router.post("/refresh", response_model=TokenResponse)
async def refresh(body: RefreshRequest, request: Request) -> dict[str, Any]:
    """Rotate a refresh token: the old one stops working; reusing it ends the whole login."""
    _, store, tokens = _state(request)
    return await service.refresh_tokens(store=store, refresh_token=body.refresh_token, settings=tokens)


# A default instance, not `LogoutRequest | None`: a body parameter on a union makes pydantic warn about its alias.
EVERY_LOGIN = LogoutRequest()


@account_router.post("/logout", response_model=LogoutResponse)
async def logout(principal: CurrentUser, request: Request, body: LogoutRequest = EVERY_LOGIN) -> dict[str, Any]:
    """End this login (its refresh token and access tokens) or, without a refresh token, every login."""
    auth: AuthState = request.app.state.auth
    if auth.store is None:
        return {"revoked": 0}
    revoked = await service.logout(store=auth.store, principal=principal, refresh_token=body.refresh_token)
    if auth.authenticator is not None and principal.session_id is not None:
        auth.authenticator.end_session(principal.session_id)
    await auth.revoked()
    return {"revoked": revoked}


@account_router.get("/me", response_model=MeResponse)
async def me(principal: CurrentUser, request: Request) -> dict[str, Any]:
    """Who the credentials belong to, with role and scopes."""
    auth: AuthState = request.app.state.auth
    return {
        "user_id": principal.user_id,
        "username": principal.username,
        "role": principal.role,
        "scopes": sorted(principal.scopes),
        "auth": principal.via,
        "api_key_id": principal.api_key_id,
        "auth_mode": "on" if auth.enabled else "off",
    }


def _key_out(row: ApiKeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": sorted(row.scopes),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "user_id": row.user_id,
    }


def _key_store(principal: Any, request: Request) -> tuple[AuthState, AuthStore, int]:
    auth: AuthState = request.app.state.auth
    if auth.store is None or principal.user_id is None:
        raise ApiError(409, "NO_USER", "API keys belong to users: turn authentication on and log in as one")
    if principal.via == "api_key":
        # A leaked key must not be able to mint more keys.
        raise ForbiddenError("API keys cannot manage API keys; log in with a password")
    return auth, auth.store, principal.user_id


@account_router.post("/apikeys", response_model=ApiKeyCreated, status_code=201)
async def create_api_key(body: ApiKeyCreate, principal: CurrentUser, request: Request) -> dict[str, Any]:
    """Create a key with some of your scopes; the full key is in this response only."""
    _, store, user_id = _key_store(principal, request)
    key, row = await service.create_api_key(
        store=store,
        user_id=user_id,
        name=body.name,
        scopes=body.scopes,
        allowed=principal.scopes,
        expires_at=body.expires_at,
    )
    return {**_key_out(row), "key": key}


@account_router.get("/apikeys", response_model=ApiKeyList)
async def list_api_keys(principal: CurrentUser, request: Request) -> dict[str, Any]:
    """Your keys (every key for an admin), without secrets."""
    _, store, user_id = _key_store(principal, request)
    rows = await service.list_api_keys(store=store, user_id=None if principal.is_admin else user_id)
    return {"items": [ApiKeyOut.model_validate(_key_out(r)) for r in rows]}


@account_router.delete("/apikeys/{key_id}", status_code=204)
async def revoke_api_key(
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1, description="The key's id")],
    principal: CurrentUser,
    request: Request,
) -> Response:
    """Revoke a key (your own; an admin may revoke any); it stops working at once."""
    auth, store, user_id = _key_store(principal, request)
    await service.revoke_api_key(store=store, key_id=key_id, user_id=None if principal.is_admin else user_id)
    await auth.revoked()
    return Response(status_code=204)
