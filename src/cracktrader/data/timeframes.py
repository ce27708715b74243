"""Timeframe parsing, validation and bar-grid arithmetic (UTC, milliseconds)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from cracktrader.errors import InvalidTimeframeError

SUPPORTED_TIMEFRAMES: tuple[str, ...] = (
    "1s",
    "10s",
    "30s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_MONTH_MS = 30 * 86_400_000
_YEAR_MS = 365 * 86_400_000
# Exchanges open weekly candles on Monday; 1970-01-05 was the first Monday after the epoch.
_WEEK_OFFSET_MS = 4 * 86_400_000


@dataclass(frozen=True, slots=True)
class Timeframe:
    """A candle timeframe such as `1h` or `1M`."""

    name: str

    @property
    def is_monthly(self) -> bool:
        return self.name.endswith("M")

    @property
    def ms(self) -> int:
        """Nominal bar length; a month counts as 30 days, as in ccxt."""
        if self.is_monthly:
            return int(self.name[:-1]) * _MONTH_MS
        return int(self.name[:-1]) * _UNIT_MS[self.name[-1]]

    @property
    def periods_per_year(self) -> float:
        """Bars in a 365-day year (crypto trades every day)."""
        if self.is_monthly:
            return 12.0 / int(self.name[:-1])
        return _YEAR_MS / self.ms

    def floor(self, ts_ms: int) -> int:
        """Open time of the bar that contains `ts_ms`."""
        if self.is_monthly:
            dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
            return int(datetime(dt.year, dt.month, 1, tzinfo=UTC).timestamp() * 1000)
        offset = _WEEK_OFFSET_MS if self.name.endswith("w") else 0
        return (ts_ms - offset) // self.ms * self.ms + offset

    def ceil(self, ts_ms: int) -> int:
        """Open time of the first bar that starts at or after `ts_ms`."""
        floored = self.floor(ts_ms)
        return floored if floored == ts_ms else self.next(floored)

    def next(self, bar_open_ms: int) -> int:
        """Open time of the bar after the one opening at `bar_open_ms`."""
        if self.is_monthly:
            dt = datetime.fromtimestamp(bar_open_ms / 1000, tz=UTC)
            months = dt.month - 1 + int(self.name[:-1])
            year, month = dt.year + months // 12, months % 12 + 1
            return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
        return bar_open_ms + self.ms

    def grid(self, start_ms: int, end_ms: int) -> np.ndarray:
        """Bar open times in [start_ms, end_ms), aligned to the timeframe."""
        first = self.ceil(start_ms)
        if not self.is_monthly:
            return np.arange(first, end_ms, self.ms, dtype=np.int64)
        out: list[int] = []
        ts = first
        while ts < end_ms:
            out.append(ts)
            ts = self.next(ts)
        return np.asarray(out, dtype=np.int64)

    def count(self, start_ms: int, end_ms: int) -> int:
        """Number of bars opening in [start_ms, end_ms)."""
        if self.is_monthly:
            return len(self.grid(start_ms, end_ms))
        first = self.ceil(start_ms)
        return max(0, -(-(end_ms - first) // self.ms))

    def __str__(self) -> str:
        return self.name


def parse_timeframe(value: str | Timeframe) -> Timeframe:
    """Validate a timeframe string; the error lists the accepted ones."""
    if isinstance(value, Timeframe):
        return value
    if value not in SUPPORTED_TIMEFRAMES:
        raise InvalidTimeframeError(
            f"Timeframe {value!r} is not supported. Use one of: {', '.join(SUPPORTED_TIMEFRAMES)}",
            details={"timeframe": value, "supported_timeframes": list(SUPPORTED_TIMEFRAMES)},
        )
    return Timeframe(value)
