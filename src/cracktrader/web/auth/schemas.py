"""Request and response bodies of the `/auth` routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cracktrader.runs.config import DATE_MAX, DATE_MIN, DATE_RANGE

Scope = Literal["read", "trade", "live"]


class LoginRequest(BaseModel):
    """Username and password (JSON variant of the OAuth2 password form)."""

    model_config = ConfigDict(extra="ignore")

    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    """Tokens after a login or a refresh."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    refresh_token: str
    expires_in: int = Field(description="Seconds until the access token expires")


class RefreshRequest(BaseModel):
    """A refresh token to rotate."""

    refresh_token: str = Field(min_length=1, max_length=256)


class LogoutRequest(BaseModel):
    """The login to end; without a refresh token, every login of the user ends."""

    model_config = ConfigDict(frozen=True)

    refresh_token: str | None = Field(None, max_length=256)


class LogoutResponse(BaseModel):
    """How many refresh tokens were revoked."""

    revoked: int


class MeResponse(BaseModel):
    """The caller."""

    user_id: int | None
    username: str
    role: str
    scopes: list[str]
    auth: Literal["local", "token", "api_key"]
    api_key_id: int | None = None
    auth_mode: Literal["off", "on"]


def _read_only() -> list[Scope]:
    return ["read"]


class ApiKeyCreate(BaseModel):
    """A key to create: a label, its scopes (default read) and an optional expiry."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(default_factory=_read_only, min_length=1, max_length=3)
    expires_at: datetime | None = Field(None, description=f"UTC when no offset is given; {DATE_RANGE}")

    @field_validator("expires_at")
    @classmethod
    def _expiry_in_range(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        # A naive time is UTC; the range keeps it comparable and storable on both databases.
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        if not DATE_MIN <= aware <= DATE_MAX:
            raise ValueError(f"expires_at must be {DATE_RANGE}")
        return aware


class ApiKeyOut(BaseModel):
    """A key without its secret."""

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    user_id: int


class ApiKeyCreated(ApiKeyOut):
    """A new key: `key` is shown this once and cannot be retrieved again."""

    key: str


class ApiKeyList(BaseModel):
    """The caller's keys (all keys for an admin)."""

    items: list[ApiKeyOut]
