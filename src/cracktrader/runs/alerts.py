"""Alerts: what a trader must see at once (a halt, a drift, a ban, a lost or revived order, a failure).

The engine and broker layers raise them through `RunAlerts`, bound to one run and its owner; the `AlertSink` it
is given (the server's web.alerts.service.AlertService) stores, streams and posts them, never on the trading path.
"""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from cracktrader.clock import Clock
from cracktrader.runs.sanitize import redact_urls


class AlertKind(StrEnum):
    """What happened."""

    SESSION_HALTED = "SESSION_HALTED"
    BALANCE_DRIFT = "BALANCE_DRIFT"
    RATE_BANNED = "RATE_BANNED"
    ORDER_REJECTED_UNCONFIRMED = "ORDER_REJECTED_UNCONFIRMED"
    ORDER_REVIVED = "ORDER_REVIVED"
    EXTERNAL_ORDER = "EXTERNAL_ORDER"
    STREAM_DISCONNECTED = "STREAM_DISCONNECTED"
    RECONCILIATION_FAILED = "RECONCILIATION_FAILED"
    SESSION_FAILED = "SESSION_FAILED"


class Severity(StrEnum):
    """How urgent: `critical` needs the trader now, `warning` soon."""

    CRITICAL = "critical"
    WARNING = "warning"


# The one rule for how urgent each kind is.
SEVERITY: dict[AlertKind, Severity] = {
    AlertKind.SESSION_HALTED: Severity.CRITICAL,
    AlertKind.BALANCE_DRIFT: Severity.CRITICAL,
    AlertKind.RATE_BANNED: Severity.CRITICAL,
    AlertKind.ORDER_REJECTED_UNCONFIRMED: Severity.CRITICAL,
    AlertKind.ORDER_REVIVED: Severity.WARNING,
    AlertKind.EXTERNAL_ORDER: Severity.WARNING,
    AlertKind.STREAM_DISCONNECTED: Severity.WARNING,
    AlertKind.RECONCILIATION_FAILED: Severity.CRITICAL,
    AlertKind.SESSION_FAILED: Severity.CRITICAL,
}


class AlertDetails(BaseModel):
    """What an alert is about; each kind fills the fields that apply to it (the others stay null)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str | None = None
    client_order_id: str | None = None
    exchange_order_id: str | None = None
    status: str | None = Field(None, description="The order's state (an order alert)")
    reason: str | None = Field(None, description="The halt's reason, or the order's")
    drift: dict[str, float] | None = Field(None, description="Balance drift per asset: the account less expected")
    banned_until_ms: int | None = Field(None, description="When a rate ban ends (the session's clock)")
    stream: str | None = Field(None, description="The user-data stream that is down")
    down_ms: int | None = Field(None, description="How long the stream has been down")
    external_orders: list[str] | None = Field(None, description="Exchange ids of orders on the account not ours")
    code: str | None = Field(None, description="The error code of a failure")
    error: str | None = Field(None, description="The failure's message")


class Alert(BaseModel):
    """One stored alert of a run, owned by the run's owner."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: AlertKind
    severity: Severity
    run_id: str
    user_id: int | None
    message: str
    details: AlertDetails = Field(default_factory=AlertDetails)
    created_at: datetime


class AlertSink(Protocol):
    """Where alerts go; `emit` must return at once (delivery happens elsewhere) and may be called from any thread."""

    def emit(self, alert: Alert) -> None: ...


# Alerts of one process in the order raised, even within one millisecond of the (possibly virtual) clock.
_SEQUENCE = itertools.count()


def alert_id(now_ms: int) -> str:
    """32 hex digits that sort as alerts were raised: the time, this process's counter, then randomness."""
    return f"{max(0, now_ms):012x}{next(_SEQUENCE) % 16**8:08x}{secrets.token_hex(6)}"


class RunAlerts:
    """One run's alerts: built with its id, its owner and the time, handed to the sink (nothing when there is none)."""

    def __init__(self, sink: AlertSink | None, run_id: str, user_id: int | None, clock: Clock) -> None:
        self.sink = sink
        self.run_id = run_id
        self.user_id = user_id
        self.clock = clock

    def raise_(self, kind: AlertKind, message: str, details: AlertDetails | None = None) -> Alert:
        """Make the alert and hand it over; returns it. URLs in its text lose their user info and query."""
        now = self.clock.now_ms()
        details = details or AlertDetails()
        if details.error is not None:
            details = details.model_copy(update={"error": redact_urls(details.error)})
        alert = Alert(
            id=alert_id(now),
            kind=kind,
            severity=SEVERITY[kind],
            run_id=self.run_id,
            user_id=self.user_id,
            message=redact_urls(message),
            details=details,
            created_at=datetime.fromtimestamp(now / 1000, UTC),
        )
        if self.sink is not None:
            self.sink.emit(alert)
        return alert


__all__ = ["SEVERITY", "Alert", "AlertDetails", "AlertKind", "AlertSink", "RunAlerts", "Severity"]
