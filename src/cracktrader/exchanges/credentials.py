"""Exchange credentials as the rest of the code holds them, and the fields each exchange needs (ccxt's own list).

The values are secrets: held in memory only, never in a repr, a log line, a response or a database column in clear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from cracktrader.errors import UserInputError

if TYPE_CHECKING:
    from cracktrader.clock import Clock
    from cracktrader.settings import Settings

# ccxt's requiredCredentials names; `passphrase` is accepted as the common name of ccxt's `password` (okx, kucoin).
CREDENTIAL_FIELDS: tuple[str, ...] = (
    "apiKey",
    "secret",
    "password",
    "uid",
    "accountId",
    "login",
    "twofa",
    "privateKey",
    "walletAddress",
    "token",
)
ALIASES: Mapping[str, str] = MappingProxyType({"passphrase": "password"})


class CredentialFieldsError(UserInputError):
    """Fields missing for the exchange, or fields it does not use (422, the field names in details)."""

    code = "INVALID_CREDENTIALS"
    status_code = 422


@dataclass(frozen=True, slots=True)
class ExchangeCredentials:
    """The keys of one exchange account: `values` maps ccxt's field names to secrets (never shown)."""

    exchange: str
    values: Mapping[str, str] = field(repr=False)
    name: str | None = None

    def __repr__(self) -> str:
        return f"ExchangeCredentials(exchange={self.exchange!r}, name={self.name!r}, fields={sorted(self.values)})"

    def as_ccxt(self) -> dict[str, str]:
        """The fields to set on a ccxt client (a copy: keep it in memory only)."""
        return dict(self.values)


def required_fields(exchange: str, settings: Settings | None = None) -> list[str]:
    """The credential fields `exchange` needs (ccxt's requiredCredentials); UnknownExchangeError for no such one."""
    from cracktrader.data.sources.ccxt_source import make_exchange

    client = make_exchange(exchange, settings)  # the one factory: raises UnknownExchangeError for a name ccxt lacks
    return [k for k, needed in (client.requiredCredentials or {}).items() if needed]


def credentials_for(exchange: str, fields: Mapping[str, str | None]) -> ExchangeCredentials:
    """Check `fields` against what `exchange` needs: every required one present, none it does not use."""
    given: dict[str, str] = {}
    for key, value in fields.items():
        if value is None or value == "":
            continue
        given[ALIASES.get(key, key)] = value
    needed = required_fields(exchange)
    missing = [n for n in needed if n not in given]
    unused = sorted(k for k in given if k not in needed)
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"needs {', '.join(missing)}")
        if unused:
            parts.append(f"does not use {', '.join(unused)}")
        raise CredentialFieldsError(
            f"{exchange} {' and '.join(parts)} (its credential fields: {', '.join(needed)})",
            details={"exchange": exchange, "missing": missing, "unused": unused, "required": needed},
        )
    return ExchangeCredentials(exchange, MappingProxyType(given))


def scrub(text: str, credentials: ExchangeCredentials) -> str:
    """`text` (an exchange's error message) with every credential value in it masked."""
    for value in credentials.values.values():
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


@dataclass(frozen=True, slots=True)
class CheckResult:
    """`fetch_balance` through credentials: ok, or the error code order calls give the exception (AUTH_FAILED, ...)."""

    ok: bool
    code: str
    message: str


async def check_balance(
    creds: ExchangeCredentials, settings: Settings, *, sandbox: bool, clock: Clock | None = None
) -> CheckResult:
    """Read the balance with `creds` (on the sandbox with `sandbox`); the exchange's refusal is a result, not raised."""
    from cracktrader.clock import SystemClock
    from cracktrader.data.sources.ccxt_source import make_async_exchange, sandbox_settings
    from cracktrader.exchanges.order_calls import OrderCalls, reason_code

    client = make_async_exchange(creds.exchange, sandbox_settings(settings, creds.exchange) if sandbox else settings)
    for key, value in creds.values.items():
        setattr(client, key, value)
    calls = OrderCalls(client, creds.exchange, clock=clock or SystemClock())
    try:
        if client.has.get("fetchTime"):
            await calls.resync_clock()  # as a live session signs: a skewed clock is not a bad key
        await calls.balance()
    except Exception as exc:
        text = str(exc) or type(exc).__name__
        message = scrub(text if len(text) <= 300 else text[:300] + "...", creds)
        return CheckResult(False, reason_code(exc), message)
    finally:
        await client.close()
    return CheckResult(True, "OK", f"{creds.exchange} accepted the credentials")
