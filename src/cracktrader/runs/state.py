"""The current run's live state, as `/status` reports it."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

ACTIVE = frozenset({"starting", "running"})
FINISHED = frozenset({"completed", "failed", "stopped"})


# What another user's run shows when auth is on: its lifecycle and progress, none of its money or errors.
PRIVATE_STATUS_BLANKS: dict[str, Any] = {
    "run_id": None,
    "cash": None,
    "value": None,
    "pnl": None,
    "trade_count": 0,
    "error": None,
    "error_code": None,
}


def lifecycle_only(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A `/status` document with the run's private fields blanked."""
    return {**snapshot, **PRIVATE_STATUS_BLANKS}


@dataclass(slots=True)
class RunState:
    """Mutable state of the current run; the worker thread writes it, the event loop reads snapshots."""

    run_id: str | None = None
    status: str = "idle"
    mode: str | None = None
    config: dict[str, Any] | None = None
    start_time: str | None = None
    end_time: str | None = None
    started_at: float | None = None  # monotonic, for runtime
    ended_at: float | None = None
    initial_cash: float | None = None
    cash: float | None = None
    value: float | None = None
    trade_count: int = 0
    error: str | None = None
    error_code: str | None = None
    phase: str | None = None
    bars_processed: int = 0
    bars_total: int = 0
    recent_orders: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    recent_trades: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    equity_samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def snapshot(self) -> dict[str, Any]:
        """The `/status` document."""
        runtime = None
        if self.started_at is not None:
            runtime = round((self.ended_at or time.monotonic()) - self.started_at, 3)
        pnl = None if self.value is None or self.initial_cash is None else self.value - self.initial_cash
        return {
            "run_id": self.run_id,
            "status": self.status,
            "mode": self.mode,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "runtime_seconds": runtime,
            "cash": self.cash,
            "value": self.value,
            "pnl": pnl,
            "trade_count": self.trade_count,
            "error": self.error,
            "error_code": self.error_code,
            "phase": self.phase,
            "progress": round(self.bars_processed / self.bars_total, 6) if self.bars_total else 0.0,
            "bars_processed": self.bars_processed,
            "bars_total": self.bars_total,
        }
