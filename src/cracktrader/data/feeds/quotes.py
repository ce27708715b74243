"""Live best bid and ask: ccxt's `watch_ticker` (REST `fetch_ticker` polling while the socket is down), or the
synthetic exchange's deterministic quotes; and a candle feed that hands quotes on while it runs.

A quote's time is the injected clock's when it arrived, so which quote an order sees never depends on machine speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

from cracktrader.clock import Clock
from cracktrader.data.feeds.base import BarBatch, CandleFeed
from cracktrader.data.sources.synthetic import generate, price_decimals
from cracktrader.data.timeframes import Timeframe, parse_timeframe
from cracktrader.errors import UserInputError
from cracktrader.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_POLL_MS = 1_000  # fetch_ticker every this long while the socket is down or absent
SYNTHETIC_EVERY_MS = 1_000  # a synthetic quote a second (four a bar on shorter timeframes)
MIN_SYNTHETIC_EVERY_MS = 100
# watch_ticker parameters by exchange: binance's default stream (miniTicker) carries no bid and ask.
WATCH_TICKER_PARAMS: dict[str, dict[str, str]] = {"binance": {"name": "ticker"}, "binanceus": {"name": "ticker"}}


@dataclass(frozen=True, slots=True)
class Quote:
    """A symbol's best bid and ask, and when (clock ms) they arrived."""

    symbol: str
    bid: float
    ask: float
    timestamp: int
    source: Literal["ws", "rest", "synthetic"] = "ws"


class QuoteFeed(Protocol):
    """An async stream of quotes, in arrival order."""

    def __aiter__(self) -> AsyncIterator[Quote]: ...


def ticker_quote(symbol: str, ticker: Mapping[str, Any], now_ms: int, source: Literal["ws", "rest"]) -> Quote | None:
    """A ccxt ticker as a quote; None when it has no usable bid and ask."""
    bid, ask = ticker.get("bid"), ticker.get("ask")
    if not isinstance(bid, int | float) or not isinstance(ask, int | float):
        return None
    if not (math.isfinite(bid) and math.isfinite(ask) and 0 < bid <= ask):
        return None
    return Quote(symbol, float(bid), float(ask), now_ms, source)


class CcxtQuoteFeed:
    """Quotes of `symbols` on a ccxt exchange: `watch_ticker` per symbol, else `fetch_ticker` every `poll_ms`.

    When the socket drops the symbol is polled over REST, one poll per `poll_ms` of clock time, and the socket is
    dialled again after each poll; the client carries no credentials (public data only).
    """

    def __init__(
        self,
        exchange_id: str,
        symbols: tuple[str, ...],
        clock: Clock,
        *,
        settings: Settings | None = None,
        poll_ms: int = DEFAULT_POLL_MS,
    ) -> None:
        from cracktrader.data.feeds.ccxt_feed import public_settings

        if not symbols:
            raise UserInputError("A quote feed needs at least one symbol")
        self.exchange_id = exchange_id.strip().lower()
        self.symbols = symbols
        self._clock = clock
        self._settings = public_settings(settings or get_settings(), self.exchange_id)
        self._poll_ms = max(MIN_SYNTHETIC_EVERY_MS, int(poll_ms))
        self.socket_up: dict[str, bool] = dict.fromkeys(symbols, False)
        self.rest_calls = 0

    async def __aiter__(self) -> AsyncIterator[Quote]:
        from cracktrader.data.sources.ccxt_source import make_async_exchange

        client = make_async_exchange(self.exchange_id, self._settings)
        queue: asyncio.Queue[Quote] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._symbol(client, s, queue), name=f"quotes {s}") for s in self.symbols]
        try:
            while True:
                yield await queue.get()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await client.close()

    async def _symbol(self, client: Any, symbol: str, queue: asyncio.Queue[Quote]) -> None:
        import ccxt

        use_socket = bool(client.has.get("watchTicker"))
        params = WATCH_TICKER_PARAMS.get(self.exchange_id, {})
        while True:
            if use_socket:
                try:
                    ticker = await client.watch_ticker(symbol, params)
                except ccxt.NetworkError as exc:
                    self.socket_up[symbol] = False
                    log.info("%s %s ticker socket down (%s); polling REST", self.exchange_id, symbol,
                             type(exc).__name__)  # fmt: skip
                except ccxt.BaseError as exc:
                    log.warning("%s %s: no ticker stream (%s); REST only", self.exchange_id, symbol, exc)
                    self.socket_up[symbol] = use_socket = False
                else:
                    if self._put(queue, symbol, ticker, "ws"):
                        self.socket_up[symbol] = True
                        continue
                    log.warning("%s %s: the ticker stream has no bid and ask; REST only", self.exchange_id, symbol)
                    self.socket_up[symbol] = use_socket = False
            await self._poll(client, symbol, queue)
            await self._clock.sleep_until(self._clock.now_ms() + self._poll_ms)

    async def _poll(self, client: Any, symbol: str, queue: asyncio.Queue[Quote]) -> None:
        import ccxt

        self.rest_calls += 1
        try:
            ticker = await client.fetch_ticker(symbol)
        except ccxt.BaseError as exc:  # transient or not, the next poll tries again; stale quotes fill nothing
            log.info("%s %s fetch_ticker: %s", self.exchange_id, symbol, type(exc).__name__)
            return
        self._put(queue, symbol, ticker, "rest")

    def _put(
        self, queue: asyncio.Queue[Quote], symbol: str, ticker: Mapping[str, Any], source: Literal["ws", "rest"]
    ) -> bool:
        quote = ticker_quote(symbol, ticker, self._clock.now_ms(), source)
        if quote is not None:
            queue.put_nowait(quote)
        return quote is not None


@lru_cache(maxsize=4096)
def _bar(symbol: str, timeframe: str, open_ms: int) -> tuple[float, float, float, float]:
    tf = parse_timeframe(timeframe)
    c = generate(symbol, tf, open_ms, open_ms + tf.ms, open_ms + tf.ms)
    return float(c.open[0]), float(c.high[0]), float(c.low[0]), float(c.close[0])


def synthetic_quote(symbol: str, timeframe: Timeframe, at_ms: int) -> Quote:
    """The synthetic exchange's quote at `at_ms`: the forming candle's path from open to close, one tick each side.

    It depends on (symbol, timeframe, time) alone, and stays inside the candle the backtest of that bar gets.
    """
    open_ms = timeframe.floor(at_ms)
    o, h, lo, c = _bar(symbol, timeframe.name, open_ms)
    fraction = (at_ms - open_ms) / timeframe.ms
    decimals = price_decimals(symbol)
    tick = 10.0**-decimals
    mid = min(max(o + (c - o) * fraction, lo), h)
    return Quote(symbol, round(mid - tick, decimals), round(mid + tick, decimals), at_ms, "synthetic")


class SyntheticQuoteFeed:
    """The synthetic exchange's live quotes: every symbol's quote every `every_ms` of clock time."""

    def __init__(
        self, symbols: tuple[str, ...], timeframe: Timeframe, clock: Clock, *, every_ms: int | None = None
    ) -> None:
        self._symbols = symbols
        self._tf = timeframe
        self._clock = clock
        default = min(SYNTHETIC_EVERY_MS, timeframe.ms // 4)
        self._every = max(MIN_SYNTHETIC_EVERY_MS, int(every_ms if every_ms is not None else default))

    async def __aiter__(self) -> AsyncIterator[Quote]:
        at = -(-self._clock.now_ms() // self._every) * self._every
        while True:
            await self._clock.sleep_until(at)
            for symbol in self._symbols:
                yield synthetic_quote(symbol, self._tf, at)
            at += self._every


class QuotedFeed:
    """A candle feed that hands every quote of `quotes` to `on_quote` while it is iterated (the quote fill model)."""

    def __init__(self, candles: CandleFeed, quotes: QuoteFeed, on_quote: Callable[[Quote], None]) -> None:
        self.candles = candles
        self.quotes = quotes
        self._on_quote = on_quote

    async def _pump(self) -> None:
        async for quote in self.quotes:
            self._on_quote(quote)

    async def __aiter__(self) -> AsyncIterator[BarBatch]:
        pump = asyncio.get_running_loop().create_task(self._pump(), name="quotes")
        bars = aiter(self.candles)
        try:
            while True:
                try:
                    batch = await anext(bars)
                except StopAsyncIteration:
                    return
                if pump.done() and not pump.cancelled() and pump.exception() is not None:
                    raise pump.exception()  # type: ignore[misc]
                yield batch
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            close = getattr(bars, "aclose", None)
            if close is not None:
                await close()
