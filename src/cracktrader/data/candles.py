"""The candle container: column arrays of UTC millisecond timestamps and OHLCV floats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from cracktrader.errors import InvalidDataError, InvalidDateRangeError

COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Candles:
    """Sorted, de-duplicated candles as contiguous numpy columns."""

    timestamp: np.ndarray  # int64 ms, UTC, bar open time
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    @classmethod
    def empty(cls) -> Candles:
        f = np.empty(0, dtype=np.float64)
        return cls(np.empty(0, dtype=np.int64), f, f.copy(), f.copy(), f.copy(), f.copy())

    @classmethod
    def from_columns(
        cls,
        timestamp: np.ndarray,
        open: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
    ) -> Candles:
        """Build candles from columns, sorting by time and keeping the last row of each timestamp."""
        ts = np.asarray(timestamp, dtype=np.int64)
        cols = [np.asarray(c, dtype=np.float64) for c in (open, high, low, close, volume)]
        if any(c.shape != ts.shape for c in cols):
            raise InvalidDataError("Candle columns have different lengths")
        if ts.size and not (np.all(ts[1:] > ts[:-1])):
            # Stable sort then keep the last occurrence, so newer rows win over older ones.
            order = np.argsort(ts, kind="stable")
            ts = ts[order]
            cols = [c[order] for c in cols]
            keep = np.ones(ts.size, dtype=bool)
            keep[:-1] = ts[1:] != ts[:-1]
            ts = ts[keep]
            cols = [c[keep] for c in cols]
        return cls(np.ascontiguousarray(ts), *(np.ascontiguousarray(c) for c in cols))

    @classmethod
    def from_rows(cls, rows: list[list[float]] | np.ndarray) -> Candles:
        """Build candles from `[timestamp, open, high, low, close, volume]` rows (ccxt's shape)."""
        if len(rows) == 0:
            return cls.empty()
        arr = np.asarray(rows, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] < 6:
            raise InvalidDataError("Candle rows must have 6 fields: timestamp, open, high, low, close, volume")
        return cls.from_columns(arr[:, 0].astype(np.int64), *(arr[:, i] for i in range(1, 6)))

    def slice_time(self, start_ms: int | None, end_ms: int | None) -> Candles:
        """Candles with start_ms <= timestamp < end_ms."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.timestamp, start_ms, side="left"))
        hi = len(self) if end_ms is None else int(np.searchsorted(self.timestamp, end_ms, side="left"))
        return Candles(*(getattr(self, c)[lo:hi] for c in COLUMNS))

    def concat(self, other: Candles) -> Candles:
        """Merge two candle sets; rows of `other` win on equal timestamps."""
        return Candles.from_columns(*(np.concatenate([getattr(self, c), getattr(other, c)]) for c in COLUMNS))

    def validate(self) -> None:
        """Raise when prices are not positive or high/low do not bracket open/close."""
        if len(self) == 0:
            return
        prices = np.stack([self.open, self.high, self.low, self.close])
        if not np.all(np.isfinite(prices)) or np.any(prices <= 0):
            raise InvalidDataError("Candle prices must be finite and positive")
        if np.any(self.high < np.maximum(self.open, self.close)) or np.any(
            self.low > np.minimum(self.open, self.close)
        ):
            raise InvalidDataError("Candle high/low must bracket open and close")
        if np.any(self.volume < 0) or not np.all(np.isfinite(self.volume)):
            raise InvalidDataError("Candle volume must be finite and non-negative")


def to_ms(value: str | int | float | datetime | None) -> int | None:
    """Parse an ISO 8601 string, a datetime or epoch milliseconds into UTC milliseconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidDateRangeError(
            f"Cannot parse date {value!r}; use ISO 8601 such as 2024-01-01 or 2024-01-01T00:00:00Z",
            details={"value": value},
        ) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def ms_to_iso(ts_ms: int) -> str:
    """Format UTC milliseconds as ISO 8601 with a `Z` suffix."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if ts_ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
