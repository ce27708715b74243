"""Bodies of `/credentials`: secrets go in, and only names, exchanges and dates come out."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cracktrader.exchanges.credentials import CREDENTIAL_FIELDS

MAX_SECRET_CHARS = 4096  # a PEM private key fits; anything longer is not a credential
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
# A NUL or a lone surrogate: refused at the edge for JSON, and here for every other way in (the CLI).
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")

Secret = Annotated[str | None, Field(None, min_length=1, max_length=MAX_SECRET_CHARS)]


def _clean_text(value: str | None) -> str | None:
    if value is not None and _BAD_TEXT.search(value):
        raise ValueError("text must be valid Unicode without NUL characters")
    return value


class CredentialSecrets(BaseModel):
    """The secret fields (ccxt's names; `passphrase` is the same as `password`); the exchange says which it needs."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    apiKey: Secret = None
    secret: Secret = None
    password: Secret = None
    passphrase: Secret = None
    uid: Secret = None
    accountId: Secret = None
    login: Secret = None
    twofa: Secret = None
    privateKey: Secret = None
    walletAddress: Secret = None
    token: Secret = None

    _text = field_validator(*CREDENTIAL_FIELDS, "passphrase")(lambda cls, value: _clean_text(value))

    def fields(self) -> dict[str, str | None]:
        """The fields given, by name."""
        return {k: getattr(self, k) for k in (*CREDENTIAL_FIELDS, "passphrase")}


class CredentialCreate(CredentialSecrets):
    """New credentials: a name, the exchange, and the exchange's fields."""

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {"name": "binance-testnet", "exchange": "binance", "apiKey": "your-api-key", "secret": "your-secret"}
            ]
        },
    )

    name: str = Field(..., pattern=NAME_PATTERN, description=NAME_RULE, examples=["binance-testnet"])
    exchange: str = Field(..., min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$", examples=["binance"])


class CredentialRotate(CredentialSecrets):
    """The new secrets of stored credentials (the name and the exchange stay)."""


class CredentialTestRequest(BaseModel):
    """How to test: against the exchange's sandbox (test network) or its real API."""

    model_config = ConfigDict(extra="forbid")

    sandbox: bool = Field(False, strict=True, description="Call the exchange's sandbox instead of its real API")


class CredentialOut(BaseModel):
    """Stored credentials as they are shown: never a secret, nor any part of one."""

    name: str
    exchange: str
    created_at: datetime
    last_used_at: datetime | None
    rotated_at: datetime | None


class CredentialList(BaseModel):
    """The caller's stored credentials, by name."""

    credentials: list[CredentialOut]


class CredentialTestResult(BaseModel):
    """`fetch_balance` through the credentials: ok, or the exchange's error code (AUTH_FAILED, ...)."""

    ok: bool
    code: Literal["OK"] | str = Field(description="OK, or an error code such as AUTH_FAILED or NETWORK_ERROR")
    message: str
