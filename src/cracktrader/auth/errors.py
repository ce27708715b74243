"""Authentication and authorization errors, each with a stable code and HTTP status for the API envelope."""

from __future__ import annotations

from typing import Any, ClassVar

from cracktrader.errors import CracktraderError


class AuthError(CracktraderError):
    """Base of the auth errors; `headers` are added to the HTTP response."""

    code: ClassVar[str] = "UNAUTHORIZED"
    status_code: ClassVar[int] = 401

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, details=details)
        default = {"WWW-Authenticate": "Bearer"} if self.status_code == 401 else {}
        self.headers: dict[str, str] = {**default, **(headers or {})}


class NotAuthenticatedError(AuthError):
    """No credentials were sent."""

    code = "NOT_AUTHENTICATED"


class InvalidCredentialsError(AuthError):
    """Wrong username or password (the message never says which)."""

    code = "INVALID_CREDENTIALS"


class InvalidTokenError(AuthError):
    """An access token, refresh token or API key that is malformed, forged, expired or revoked."""

    code = "INVALID_TOKEN"


class ForbiddenError(AuthError):
    """Authenticated, but the role or scopes do not allow this."""

    code = "FORBIDDEN"
    status_code = 403


class RateLimitedError(AuthError):
    """Too many failed logins; `Retry-After` says when to try again."""

    code = "RATE_LIMITED"
    status_code = 429


class UserExistsError(AuthError):
    """A user with that name already exists."""

    code = "USER_EXISTS"
    status_code = 409


class UserNotFoundError(AuthError):
    """No user (or API key) with that name or id."""

    code = "NOT_FOUND"
    status_code = 404


class WeakPasswordError(AuthError):
    """The password does not meet the minimum length."""

    code = "VALIDATION_ERROR"
    status_code = 422
