"""Closed candles from a ccxt exchange: WebSocket `watch_ohlcv` first, REST `fetch_ohlcv` to poll and to fill gaps.

Each bar time is delivered once, in order, with every symbol's closed candle of that bar. A WebSocket candle counts
as closed when the exchange flags its push final (Binance's `x`, read from the raw message since ccxt drops it) or
when the next candle of the same symbol arrives on the same connection; whatever the socket did not confirm by the
bar's end plus a grace (or at the end, while the socket is down or the exchange has none) is asked from REST, so
missed closes after a disconnect or a restart come in order before the next bar. Time comes from the injected clock
only; every delivered candle is also merged into the Parquet store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cracktrader.clock import Clock
from cracktrader.data import service
from cracktrader.data.candles import Candles
from cracktrader.data.feeds.base import BarBatch, ClosedCandle, batches
from cracktrader.data.store import CandleStore
from cracktrader.data.timeframes import Timeframe
from cracktrader.errors import DataUnavailableError, UserInputError
from cracktrader.settings import Settings, get_settings

log = logging.getLogger(__name__)

# How long after a bar's end a healthy socket may take to confirm it before REST decides the bar.
DEFAULT_GRACE_MS = 5_000
# A socket candle is final only if its last update came this close to the bar's end (a stalled stream that resumes
# in the next bar would otherwise pass its last forming update off as the close); local clock skew must stay below.
MAX_CLOSE_SKEW_MS = 500
MIN_RETRY_MS = 100  # even with a zero backoff setting: never a busy loop
MAX_BACKOFF_MS = 60_000
DEFAULT_PAGE_LIMIT = 500
# Store writes at most this often (clock ms): each rewrites the dataset's file, and what a crash loses since the
# last write, a restarted feed fetches again from REST.
STORE_EVERY_MS = 60_000
# ccxt's `requiredCredentials` names: a paper feed passes none of them, so it can never sign a request.
CREDENTIAL_KEYS: frozenset[str] = frozenset(
    {"apiKey", "secret", "password", "uid", "login", "twofa", "privateKey", "walletAddress", "token", "accountId"}
)


def public_settings(settings: Settings, exchange_id: str) -> Settings:
    """`settings` with every credential removed from `exchange_options[exchange_id]['config']`."""
    entry = settings.exchange_options.get(exchange_id)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("config"), Mapping):
        return settings  # nothing to strip (a malformed entry is reported by the client factory)
    config = {k: v for k, v in entry["config"].items() if k not in CREDENTIAL_KEYS}
    options = {**settings.exchange_options, exchange_id: {**entry, "config": config}}
    return settings.model_copy(update={"exchange_options": options})


def _candle(row: Sequence[Any]) -> ClosedCandle | None:
    """A ccxt OHLCV row as a candle; None for rows without prices (some exchanges send empty intervals)."""
    if len(row) < 6 or any(value is None for value in row[:5]):
        return None
    return ClosedCandle(float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5] or 0.0))


@dataclass(slots=True)
class _Seen:
    """The newest socket candle of a symbol on the current connection, and when (clock ms) it was read."""

    open_ms: int
    candle: ClosedCandle
    received_ms: int


class CcxtFeed:
    """Closed candles of `symbols` on a ccxt exchange, from the bar forming when the feed is made (or `start_ms`)."""

    def __init__(
        self,
        exchange_id: str,
        symbols: tuple[str, ...],
        timeframe: Timeframe,
        clock: Clock,
        *,
        settings: Settings | None = None,
        store: CandleStore | None = None,
        start_ms: int | None = None,
        grace_ms: int = DEFAULT_GRACE_MS,
    ) -> None:
        exchange = exchange_id.strip().lower()
        if exchange == service.SYNTHETIC:
            raise UserInputError("The synthetic exchange has its own live feed (SyntheticFeed), not a ccxt one")
        if not symbols:
            raise UserInputError("A live feed needs at least one symbol")
        base = settings or get_settings()
        self.exchange_id = exchange
        self.symbols = symbols
        self.timeframe = timeframe
        self._clock = clock
        self._settings = public_settings(base, exchange)
        self._source = service.get_source(exchange, self._settings)  # an unknown exchange id fails here
        self._store = store if store is not None else service.open_store(base)
        self._grace = max(0, int(grace_ms))
        self._skew = min(MAX_CLOSE_SKEW_MS, timeframe.ms // 4)
        # A restart passes the first bar it has not seen; by default the bar forming now is the first.
        self._first_open = timeframe.floor(clock.now_ms() if start_ms is None else int(start_ms))
        self._next_open = self._first_open
        self._closed: dict[str, dict[int, ClosedCandle]] = {s: {} for s in symbols}
        self._decided_until: dict[str, int] = dict.fromkeys(symbols, self._first_open)
        self._seen: dict[str, _Seen | None] = dict.fromkeys(symbols)
        self._ws_up: dict[str, bool] = dict.fromkeys(symbols, False)
        self._rest_at: dict[str, int] = dict.fromkeys(symbols, 0)  # no REST call for a symbol before this time
        self._news: asyncio.Future[None] | None = None  # resolved by the sockets or the timer: look again
        self._timer: asyncio.Task[None] | None = None
        self._timer_at: int | None = None
        self._client: Any = None
        self._watchers: list[asyncio.Task[None]] = []
        self._unstored: dict[str, list[list[float]]] = {s: [] for s in symbols}
        self._unstored_from: int | None = None
        self._unstored_to = self._first_open
        self._flusher: asyncio.Task[None] | None = None
        self._flushed_at: int | None = None
        self._iterating = False
        self.rest_calls = 0  # fetch_ohlcv calls of the live loop (history not included)
        self._heard: dict[str, bool] = dict.fromkeys(symbols, False)  # a candle came since the last (re)dial
        self._raw_ids: dict[str, str] | None = None  # market id -> symbol, for klines read before ccxt parses them
        self.closes_by_flag = 0  # closes known from the final push, without waiting for the next candle
        self.raw_klines = 0  # socket candles read from the raw message (ccxt's parse and watch skipped)

    # ------------------------------------------------------------ warm-up

    def history(self, bars: int) -> list[BarBatch]:
        """The `bars` closed bars before the feed's first one (store first, then REST): the warm-up window.

        Blocking (synchronous REST with the project's retries): call it before the session runs, or in a thread.
        """
        if bars <= 0:
            return []
        start = self._first_open
        for _ in range(bars):
            start = self.timeframe.floor(start - 1)
        loaded = {
            s: service.load_candles(
                self.exchange_id, s, self.timeframe, start, self._first_open,
                store=self._store, source=self._source, settings=self._settings,
            )
            for s in self.symbols
        }  # fmt: skip
        return batches(loaded)

    # ------------------------------------------------------------ the live stream

    async def __aiter__(self) -> AsyncIterator[BarBatch]:
        if self._iterating:
            raise RuntimeError("a CcxtFeed can be iterated once at a time")
        self._iterating = True
        try:
            await self._open()
            while True:
                batch = await self._next_batch()
                if batch.candles:  # a bar no symbol traded in (or an exchange outage) is no bar
                    self._keep(batch)
                    yield batch
        finally:
            await self.aclose()

    async def _open(self) -> None:
        from cracktrader.data.sources.ccxt_source import make_async_exchange

        self._client = make_async_exchange(self.exchange_id, self._settings)
        # ccxt backs off its WebSocket dials after refused handshakes by its own clock: on the feed's clock (the
        # wall clock in production), a test's virtual time decides when the redial comes, not the machine's speed.
        self._client.milliseconds = self._clock.now_ms
        self._read_raw_klines(self._client)
        if self._client.has.get("watchOHLCV"):
            loop = asyncio.get_running_loop()
            for symbol in self.symbols:
                self._ws_up[symbol] = True  # until it fails: a starting socket gets the grace too
                self._watchers.append(loop.create_task(self._watch(symbol), name=f"watch {symbol}"))

    def _read_raw_klines(self, client: Any) -> None:
        """Take Binance kline pushes of this feed's streams from the raw message, before ccxt's dispatch and parse.

        ccxt would build its dispatch table, parse the kline, drop its final flag `x` and resolve a watch future
        that wakes a watch loop, which calls watch_ohlcv again: per push, and a bar is two pushes per symbol. That
        chain was most of the 10-symbol bar's latency; read here, a close is known and the bar's waiter woken on
        the push itself. The watch loops stay subscribed (and see the socket's errors), their futures just never
        resolve for these streams. ccxt's own candle cache (`client.ohlcvs`) is kept as it would keep it.
        """
        import ccxt.pro

        if not isinstance(client, ccxt.pro.binance):
            return  # other exchanges: ccxt's watch_ohlcv rows, closes proven by the next candle
        handle = client.handle_message
        interval = str((getattr(client, "timeframes", None) or {}).get(self.timeframe.name, self.timeframe.name))

        def handle_message(ws: Any, message: Any) -> Any:
            kline = message.get("k") if type(message) is dict and message.get("e") == "kline" else None
            if type(kline) is dict and kline.get("i") == interval:
                ids = self._raw_ids if self._raw_ids is not None else self._market_symbols(client)
                market_id = kline.get("s")
                symbol = ids.get(market_id) if type(market_id) is str else None
                if symbol is not None and self._on_raw_kline(client, symbol, kline):
                    return None
            return handle(ws, message)

        client.handle_message = handle_message  # clients (connections) made from now on dispatch through it

    def _market_symbols(self, client: Any) -> dict[str, str]:
        """Market id -> symbol for this feed's symbols, once ccxt has its markets; ambiguous ids stay with ccxt."""
        if not client.markets:
            return {}
        ids: dict[str, str] = {}
        taken: set[str] = set()
        for symbol in self.symbols:
            market = client.markets.get(symbol)
            market_id = market.get("id") if isinstance(market, dict) else None
            if not isinstance(market_id, str) or market_id in taken:
                ids.pop(str(market_id), None)
                continue
            taken.add(market_id)
            ids[market_id] = symbol
        self._raw_ids = ids
        return ids

    def _on_raw_kline(self, client: Any, symbol: str, kline: dict[str, Any]) -> bool:
        """Record one raw Binance kline of `symbol`; False when it is malformed (ccxt then handles it as usual)."""
        try:
            row = [int(kline["t"]), float(kline["o"]), float(kline["h"]), float(kline["l"]), float(kline["c"]),
                   float(kline["v"])]  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return False
        self.raw_klines += 1
        self._cache(client, symbol, row)
        self._heard[symbol] = self._ws_up[symbol] = True
        closed = self._on_socket_candle(symbol, row, self._clock.now_ms(), final=kline.get("x") is True)
        if closed and self._ready():
            self._notify()
        return True

    def _cache(self, client: Any, symbol: str, row: list[Any]) -> None:
        """Append `row` to ccxt's candle cache, as its handle_ohlcv does (the feed itself never reads it)."""
        by_tf = client.ohlcvs.get(symbol)
        if by_tf is None:
            by_tf = client.ohlcvs[symbol] = {}
        stored = by_tf.get(self.timeframe.name)
        if stored is None:
            from ccxt.async_support.base.ws.cache import ArrayCacheByTimestamp

            stored = by_tf[self.timeframe.name] = ArrayCacheByTimestamp(
                client.safe_integer(client.options, "OHLCVLimit", 1000)
            )
        stored.append(row)

    async def aclose(self) -> None:
        """Stop the sockets, write what is not stored yet and close the client; safe to call twice."""
        watchers, self._watchers = self._watchers, []
        if self._timer is not None:
            watchers.append(self._timer)
            self._timer = self._timer_at = None
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await self.flush()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        self._source.close()
        self._iterating = False

    async def _next_batch(self) -> BarBatch:
        """The bar at `_next_open` once every symbol is decided for it (waiting on the sockets and the clock)."""
        loop = asyncio.get_running_loop()
        tf = self.timeframe
        bar = self._next_open
        close = tf.next(bar)
        while True:
            self._news = loop.create_future()  # before the look: news from here on wakes the wait below
            missing = [s for s in self.symbols if not self._decided(s, bar)]
            if not missing:
                break
            now = self._clock.now_ms()
            # A live socket gets the grace to confirm the close; without one REST is asked at the close itself.
            due_at = {s: max(close + self._grace if self._ws_up[s] else close, self._rest_at[s]) for s in missing}
            due = [s for s in missing if now >= due_at[s]]
            if due:
                await self._fill_from_rest(due, bar, close)
                continue
            await self._wait(min(due_at.values()))
        candles = {s: self._closed[s].pop(bar) for s in self.symbols if bar in self._closed[s]}
        self._next_open = close
        for s in self.symbols:  # confirmations of bars already delivered are dropped (duplicates)
            for stale in [t for t in self._closed[s] if t < close]:
                del self._closed[s][stale]
        return BarBatch(bar, candles)

    def _decided(self, symbol: str, bar: int) -> bool:
        return bar in self._closed[symbol] or bar < self._decided_until[symbol]

    async def _wait(self, until_ms: int) -> None:
        """Until the clock reaches `until_ms` or a socket brings news (`_notify`)."""
        news = self._news
        assert news is not None
        if self._clock.now_ms() >= until_ms:
            await asyncio.sleep(0)
            return
        # One timer per deadline, kept across the waits of a bar: a timer and a news task made and cancelled
        # (and awaited) on each wake cost the bar's delivery several event-loop turns.
        if self._timer is None or self._timer.done() or self._timer_at != until_ms:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = until_ms
            self._timer = asyncio.get_running_loop().create_task(self._clock.sleep_until(until_ms))
            self._timer.add_done_callback(self._on_timer)
        await news

    def _on_timer(self, timer: asyncio.Task[None]) -> None:
        if not timer.cancelled():
            self._notify()

    def _notify(self) -> None:
        """Wake the bar's waiter (no-op when it is not waiting or already woken)."""
        news = self._news
        if news is not None and not news.done():
            news.set_result(None)

    # ------------------------------------------------------------ WebSocket

    async def _watch(self, symbol: str) -> None:
        """Call watch_ohlcv again as soon as it returns (a push only wakes an armed watch); redial after errors."""
        try:
            await self._watch_loop(symbol)
        finally:
            self._ws_up[symbol] = False  # a watcher that ended for any reason leaves the symbol to REST

    async def _watch_loop(self, symbol: str) -> None:
        import ccxt

        failures = 0
        while True:
            try:
                rows = await self._client.watch_ohlcv(symbol, self.timeframe.name)
            except ccxt.NetworkError as exc:
                # A new connection starts a new sequence: nothing from before the cut may confirm a close.
                self._seen[symbol] = None
                self._ws_up[symbol] = False
                self._notify()
                if self._heard[symbol]:  # raw klines came on the connection: a new cut, redial at once
                    failures, self._heard[symbol] = 0, False
                failures += 1
                log.info("%s %s socket down (%s), attempt %d", self.exchange_id, symbol, type(exc).__name__, failures)
                if failures > 1:  # redial at once after a cut, then back off
                    await self._clock.sleep_until(self._clock.now_ms() + self._backoff_ms(failures - 2))
                continue
            except ccxt.BaseError as exc:
                log.warning("%s %s: no candle stream (%s: %s); REST only", self.exchange_id, symbol,
                            type(exc).__name__, exc)  # fmt: skip
                self._seen[symbol] = None
                self._ws_up[symbol] = False
                self._notify()
                return
            failures = 0
            self._ws_up[symbol] = True
            # The bar's waiter wakes once every symbol has closed the bar, not on each of a bar's many pushes:
            # each wake re-armed its timer, and 20 of them were a third of a 10-symbol bar's latency.
            if self._on_socket_rows(symbol, rows, self._clock.now_ms()) and self._ready():
                self._notify()

    def _ready(self) -> bool:
        """Whether every symbol is decided for the bar being waited for."""
        return all(self._decided(s, self._next_open) for s in self.symbols)

    def _on_socket_rows(self, symbol: str, rows: Sequence[Sequence[Any]], now: int) -> bool:
        """Record ccxt's socket rows (no final flag: ccxt drops it); True when they closed a candle."""
        closed = False
        for row in sorted(rows, key=lambda r: r[0]):
            closed = self._on_socket_candle(symbol, row, now) or closed
        return closed

    def _on_socket_candle(self, symbol: str, row: Sequence[Any], now: int, *, final: bool = False) -> bool:
        """Record one socket update read at `now`; True when it closed a candle (no awaits here).

        The candle before a new one of the same connection is closed, and so is one the exchange flags `final`
        once its end is near.
        """
        candle = _candle(row)
        if candle is None:
            return False
        tf = self.timeframe
        closed = False
        open_ms = int(row[0])
        seen = self._seen[symbol]
        if seen is not None and open_ms < seen.open_ms:
            return False  # an update of an older candle: not something binance sends
        if seen is not None and open_ms > seen.open_ms:
            end = tf.next(seen.open_ms)
            if open_ms == end and seen.received_ms >= end - self._skew:
                self._confirm(symbol, seen.open_ms, seen.candle)
                closed = True
        self._seen[symbol] = _Seen(open_ms, candle, now)
        if final and now >= tf.next(open_ms) - self._skew:
            if self._confirm(symbol, open_ms, candle):  # the exchange's own final push of the candle
                self.closes_by_flag += 1
            closed = True
        return closed

    def _confirm(self, symbol: str, open_ms: int, candle: ClosedCandle) -> bool:
        """Keep a closed candle of a bar not delivered yet; True when it is new (the first confirmation)."""
        closed = self._closed[symbol]
        if open_ms < self._next_open or open_ms in closed:
            return False
        closed[open_ms] = candle
        return True

    # ------------------------------------------------------------ REST

    async def _fill_from_rest(self, symbols: list[str], bar: int, close: int) -> None:
        """Ask REST for `symbols` from `bar` on, and when to ask again if that did not decide the bar."""
        tf = self.timeframe
        for symbol in symbols:
            rows = await self._fetch(symbol, bar)
            now = self._clock.now_ms()
            if rows is not None:
                self._on_rest_rows(symbol, bar, rows, now)
            if not self._decided(symbol, bar):
                # Still forming at the close (the exchange has not rolled over) or unreachable after every retry:
                # ask again when the grace is over, else at the next candle close. Stale, never busy.
                later = close + self._grace
                self._rest_at[symbol] = later if rows is not None and now < later else tf.next(tf.floor(now))

    async def _fetch(self, symbol: str, since: int) -> list[list[Any]] | None:
        """fetch_ohlcv with bounded retries on 5xx, 429 and timeouts (backoff on the clock); None when they ran out."""
        import ccxt

        tf = self.timeframe
        limit = max(1, min(self._page_limit(), tf.count(since, tf.floor(self._clock.now_ms())) + 1))
        attempts = 1 + self._settings.ccxt_max_retries
        for attempt in range(attempts):
            self.rest_calls += 1
            try:
                rows: list[list[Any]] = await self._client.fetch_ohlcv(symbol, tf.name, since=since, limit=limit)
                return rows
            except ccxt.NetworkError as exc:
                log.info("%s %s klines: %s (attempt %d of %d)", self.exchange_id, symbol, type(exc).__name__,
                         attempt + 1, attempts)  # fmt: skip
                if attempt + 1 < attempts:
                    wait = max(self._backoff_ms(attempt), self._retry_after_ms())
                    await self._clock.sleep_until(self._clock.now_ms() + min(wait, MAX_BACKOFF_MS))
            except ccxt.BaseError as exc:
                raise DataUnavailableError(
                    f"{self.exchange_id} refused to serve {symbol} {tf.name} candles: {type(exc).__name__}: "
                    f"{str(exc)[:300]}",
                    details={"exchange": self.exchange_id, "symbol": symbol, "timeframe": tf.name},
                ) from exc
        return None

    def _on_rest_rows(self, symbol: str, since: int, rows: list[list[Any]], now: int) -> None:
        """Keep REST candles that are closed: a later one follows them, or their end plus the grace has passed."""
        tf = self.timeframe
        ordered = sorted((r for r in rows if int(r[0]) >= since), key=lambda r: r[0])
        settled = tf.floor(now - self._grace)  # every bar opening before this one ended a grace ago
        decided = since
        for i, row in enumerate(ordered):
            open_ms = int(row[0])
            later = i + 1 < len(ordered)
            if not (later or tf.next(open_ms) <= settled):
                decided = max(decided, open_ms)  # still forming: the bars before it are done
                break
            candle = _candle(row)
            if candle is not None:
                self._confirm(symbol, open_ms, candle)
            decided = tf.next(open_ms)
        else:
            # The page held everything up to now: bars that ended a grace ago and were not in it have no candle.
            if len(ordered) < self._page_limit():
                decided = max(decided, settled)
        self._decided_until[symbol] = max(self._decided_until[symbol], decided)

    def _page_limit(self) -> int:
        features = getattr(self._client, "features", None) or {}
        limit = ((features.get("spot") or {}).get("fetchOHLCV") or {}).get("limit")
        return limit if isinstance(limit, int) and limit > 0 else DEFAULT_PAGE_LIMIT

    def _backoff_ms(self, attempt: int) -> int:
        base_ms = self._settings.ccxt_backoff_base * 1000 * 2**attempt
        return int(max(MIN_RETRY_MS, min(base_ms, MAX_BACKOFF_MS)))

    def _retry_after_ms(self) -> int:
        """The exchange's Retry-After of its last answer (a 429 says how long to stay away), else 0."""
        headers = getattr(self._client, "last_response_headers", None) or {}
        value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
        try:
            return int(float(value) * 1000) if value is not None else 0
        except ValueError:
            return 0

    # ------------------------------------------------------------ the store

    def _keep(self, batch: BarBatch) -> None:
        """Queue the bar's candles for the store; one write at a time runs in a thread, off the delivery path."""
        for symbol, c in batch.candles.items():
            self._unstored[symbol].append([batch.timestamp, c.open, c.high, c.low, c.close, c.volume])
        if self._unstored_from is None:
            self._unstored_from = self._unstored_to
        self._unstored_to = self.timeframe.next(batch.timestamp)
        if self._flushed_at is None or self._clock.now_ms() - self._flushed_at >= STORE_EVERY_MS:
            self._start_write()

    def _start_write(self) -> None:
        if self._unstored_from is None or (self._flusher is not None and not self._flusher.done()):
            return
        taken, self._unstored = self._unstored, {s: [] for s in self.symbols}
        covered = (self._unstored_from, self._unstored_to)
        self._unstored_from = None
        self._flushed_at = self._clock.now_ms()
        self._flusher = asyncio.get_running_loop().create_task(asyncio.to_thread(self._write, taken, covered))

    def _write(self, taken: dict[str, list[list[float]]], covered: tuple[int, int]) -> None:
        for symbol, rows in taken.items():
            try:
                # Every bar in `covered` was decided for every symbol, so a bar without a row had no candle.
                candles = Candles.from_rows(rows) if rows else Candles.empty()
                self._store.write(self.exchange_id, symbol, self.timeframe, candles, covered=covered)
            except Exception:  # a full disk must not stop a trading session; the candles were delivered
                log.exception("could not store %s %s %s candles", self.exchange_id, symbol, self.timeframe)

    async def writes_done(self) -> None:
        """Until the store write under way (if any) has finished; starts none."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def flush(self) -> None:
        """Write every delivered candle to the store now, and wait until it is there."""
        while True:
            if self._flusher is not None and not self._flusher.done():
                await asyncio.shield(self._flusher)
            if self._unstored_from is None:
                return
            self._start_write()
