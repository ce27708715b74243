"""JWT access tokens (PyJWT, HMAC) and opaque refresh tokens stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from cracktrader.auth.errors import InvalidTokenError

__all__ = [
    "ALGORITHMS",
    "AccessClaims",
    "TokenSettings",
    "create_access_token",
    "decode_access_token",
    "hash_token",
    "new_family_id",
    "new_refresh_token",
]

# HMAC only: one shared secret (JWT_SECRET_KEY). Asymmetric algorithms would need key files and a different setting.
ALGORITHMS: tuple[str, ...] = ("HS256", "HS384", "HS512")
ISSUER = "cracktrader"
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """What signs and bounds tokens."""

    secret: str
    algorithm: str = "HS256"
    access_minutes: int = 30
    refresh_days: int = 14

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"JWT_ALGORITHM must be one of {', '.join(ALGORITHMS)}, not {self.algorithm!r}")
        if len(self.secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"JWT_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified contents of an access token."""

    user_id: int
    role: str
    expires_at: int
    issued_at: int = 0
    # The login (refresh-token family) the token belongs to: revoking the family revokes the token.
    session_id: str | None = None


def create_access_token(
    *,
    user_id: int,
    role: str,
    settings: TokenSettings,
    now: float | None = None,
    session_id: str | None = None,
) -> str:
    """A signed JWT: sub (user id), role, iat, exp, iss, jti, typ=access and (for logins) sid, the login's id."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "sub": str(user_id),
        "role": role,
        "iat": issued,
        "exp": issued + settings.access_minutes * 60,
        "iss": ISSUER,
        "typ": "access",
        "jti": uuid.uuid4().hex,
    }
    if session_id is not None:
        claims["sid"] = session_id
    return jwt.encode(claims, settings.secret, algorithm=settings.algorithm)


def decode_access_token(token: str, *, settings: TokenSettings) -> AccessClaims:
    """Verify signature, expiry, issuer and type; only the configured algorithm is accepted (never `none`)."""
    try:
        claims = jwt.decode(
            token,
            settings.secret,
            algorithms=[settings.algorithm],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
            leeway=5,
        )
        if claims.get("typ") != "access":
            raise InvalidTokenError("Not an access token")
        sid = claims.get("sid")
        if sid is not None and (not isinstance(sid, str) or not 1 <= len(sid) <= 64):
            raise InvalidTokenError("Invalid access token")
        return AccessClaims(
            user_id=int(claims["sub"]),
            role=str(claims.get("role", "")),
            expires_at=int(claims["exp"]),
            issued_at=int(claims["iat"]),
            session_id=sid,
        )
    except jwt.ExpiredSignatureError:
        raise InvalidTokenError("Access token expired; refresh it or log in again") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise InvalidTokenError("Invalid access token") from None


def new_refresh_token() -> str:
    """A random opaque refresh token (256 bits)."""
    return secrets.token_urlsafe(32)


def new_family_id() -> str:
    """Id shared by every rotation of one login's refresh token."""
    return uuid.uuid4().hex


def hash_token(token: str) -> str:
    """SHA-256 hex of a high-entropy token: what the database keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()
