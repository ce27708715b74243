"""The interface every candle source implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from cracktrader.data.candles import Candles
from cracktrader.data.timeframes import Timeframe

# Called with (bars fetched so far, bars expected in total) while a download runs.
ProgressCallback = Callable[[int, int], None]


class CandleSource(Protocol):
    """Something that can produce candles for a symbol and timeframe over a time range."""

    exchange_id: str

    def symbols(self) -> list[str]:
        """Symbols the source knows; an empty list means any well-formed symbol."""
        ...

    def validate_symbol(self, symbol: str) -> None:
        """Raise InvalidSymbolError listing supported symbols when `symbol` is unknown."""
        ...

    def fetch(
        self,
        symbol: str,
        timeframe: Timeframe,
        start_ms: int,
        end_ms: int,
        progress: ProgressCallback | None = None,
    ) -> Candles:
        """Candles with start_ms <= timestamp < end_ms (may be fewer where the exchange has gaps)."""
        ...

    def fee_rates(self, symbol: str) -> tuple[float, float] | None:
        """(maker, taker) fee rates where the exchange publishes them, else None."""
        ...

    def close(self) -> None:
        """Release network resources."""
        ...
