"""A fake Binance spot REST server on 127.0.0.1 that the real ccxt client can be pointed at in tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from http import HTTPStatus
from types import TracebackType
from typing import Any

from aiohttp import web

# 2024-06-01T12:34:56.789Z: inside a bar for every interval, so the forming candle is always visible.
DEFAULT_NOW_MS = 1_717_245_296_789
DEFAULT_LISTING_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000

_MINUTE = 60_000
_DAY = 86_400_000
# Binance opens weekly candles on Monday; 1970-01-05 was the first Monday after the epoch.
_WEEK_OFFSET_MS = 4 * _DAY
INTERVAL_MS: dict[str, int] = {
    "1s": 1_000, "1m": _MINUTE, "3m": 3 * _MINUTE, "5m": 5 * _MINUTE, "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE, "1h": 60 * _MINUTE, "2h": 120 * _MINUTE, "4h": 240 * _MINUTE,
    "6h": 360 * _MINUTE, "8h": 480 * _MINUTE, "12h": 720 * _MINUTE, "1d": _DAY, "3d": 3 * _DAY,
    "1w": 7 * _DAY,
}  # fmt: skip
INTERVALS: tuple[str, ...] = (*INTERVAL_MS, "1M")

BASE_PRICES: dict[str, float] = {"BTCUSDT": 42_000.0, "ETHUSDT": 2_500.0, "SOLUSDT": 100.0}

RequestRecord = tuple[str, str, dict[str, str]]
CandleTuple = tuple[int, float, float, float, float, float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---------------------------------------------------------------- interval arithmetic (independent of
# cracktrader.data.timeframes on purpose, so a bug there cannot hide behind the same bug here)


def _month_start(ts_ms: int, add: int = 0) -> int:
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    months = dt.year * 12 + dt.month - 1 + add
    return int(datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC).timestamp() * 1000)


def interval_floor(interval: str, ts_ms: int) -> int:
    """Open time of the `interval` bar containing `ts_ms`."""
    if interval == "1M":
        return _month_start(ts_ms)
    size = INTERVAL_MS[interval]
    offset = _WEEK_OFFSET_MS if interval == "1w" else 0
    return (ts_ms - offset) // size * size + offset


def interval_next(interval: str, open_ms: int) -> int:
    """Open time of the bar after the one opening at `open_ms`."""
    return _month_start(open_ms, 1) if interval == "1M" else open_ms + INTERVAL_MS[interval]


def interval_prev(interval: str, open_ms: int) -> int:
    """Open time of the bar before the one opening at `open_ms`."""
    return _month_start(open_ms, -1) if interval == "1M" else open_ms - INTERVAL_MS[interval]


def interval_ceil(interval: str, ts_ms: int) -> int:
    """Open time of the first bar opening at or after `ts_ms`."""
    floored = interval_floor(interval, ts_ms)
    return floored if floored == ts_ms else interval_next(interval, floored)


# ---------------------------------------------------------------- deterministic prices

_MASK64 = (1 << 64) - 1


def symbol_id(symbol: str) -> str:
    """Binance market id for a unified (`BTC/USDT`) or raw (`BTCUSDT`) symbol."""
    return symbol.replace("/", "").upper()


@lru_cache(maxsize=256)
def _seed(sid: str) -> int:
    return int.from_bytes(hashlib.blake2b(sid.encode(), digest_size=8).digest(), "big")


def _unit(seed: int, ts_ms: int, salt: int) -> float:
    """A uniform number in [0, 1) that depends only on its inputs (splitmix64)."""
    z = (seed ^ (ts_ms * 0x9E3779B97F4A7C15) ^ (salt * 0xBF58476D1CE4E5B9)) & _MASK64
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


def _base_price(sid: str) -> float:
    return BASE_PRICES.get(sid, float(10 + _seed(sid) % 990))


def price_at(symbol: str, ts_ms: int) -> float:
    """The fake's mid price of `symbol` at `ts_ms`: smooth cycles plus a little per-millisecond noise."""
    sid = symbol_id(symbol)
    seed = _seed(sid)
    phase = (seed % 1000) / 1000 * 2 * math.pi
    days = ts_ms / _DAY
    log_move = (
        0.30 * math.sin(2 * math.pi * days / 365 + phase)
        + 0.10 * math.sin(2 * math.pi * days / 29.5 + 2 * phase)
        + 0.02 * math.sin(2 * math.pi * days / 0.9 + 3 * phase)
        + 0.004 * math.sin(2 * math.pi * ts_ms / (17 * _MINUTE) + phase)
        + 0.0008 * (_unit(seed, ts_ms, 1) - 0.5)
    )
    return _base_price(sid) * math.exp(log_move)


def candle(symbol: str, interval: str, open_ms: int) -> CandleTuple:
    """The candle the fake serves for (symbol, interval, open time), as ccxt parses it."""
    sid = symbol_id(symbol)
    seed = _seed(sid)
    close_ms = interval_next(interval, open_ms)
    # Open and close sample the same price path, so each close equals the next bar's open.
    o = round(price_at(sid, open_ms), 2)
    c = round(price_at(sid, close_ms), 2)
    minutes = (close_ms - open_ms) / _MINUTE
    root = math.sqrt(minutes)
    spread = 0.0005 + 0.002 * root / (1 + root / 20)  # wider wicks on longer bars, bounded
    # Rounding a value >= a 0.01-grid price to the grid cannot go below it, so high/low stay valid.
    h = round(max(o, c) * (1 + spread * _unit(seed, open_ms, 2)), 2)
    low = round(min(o, c) * (1 - spread * _unit(seed, open_ms, 3)), 2)
    v = max(round(50_000 / _base_price(sid) * minutes * (0.5 + _unit(seed, open_ms, 4)), 5), 0.00001)
    return (open_ms, o, h, low, c, v)


def _kline_row(sid: str, interval: str, bar: CandleTuple) -> list[Any]:
    open_ms, o, h, low, c, v = bar
    quote = v * (o + c) / 2
    trades = 1 + int(_unit(_seed(sid), open_ms, 5) * 500)
    return [
        open_ms, f"{o:.8f}", f"{h:.8f}", f"{low:.8f}", f"{c:.8f}", f"{v:.8f}",
        interval_next(interval, open_ms) - 1, f"{quote:.8f}", trades, f"{v / 2:.8f}", f"{quote / 2:.8f}", "0",
    ]  # fmt: skip


# ---------------------------------------------------------------- configuration objects


@dataclass(frozen=True, slots=True)
class FakeMarket:
    """A spot market listed by the fake."""

    base: str
    quote: str = "USDT"
    listing_ms: int | None = None  # None: the server's listing_ms
    status: str = "TRADING"
    tick_size: str = "0.01000000"
    step_size: str = "0.00001000"
    min_qty: str = "0.00001000"
    min_notional: str = "5.00000000"

    @property
    def id(self) -> str:
        return f"{self.base}{self.quote}"

    @property
    def symbol(self) -> str:
        return f"{self.base}/{self.quote}"


DEFAULT_MARKETS: tuple[FakeMarket, ...] = (
    FakeMarket("BTC"),
    FakeMarket("ETH", step_size="0.00010000", min_qty="0.00010000"),
    FakeMarket("SOL", step_size="0.00100000", min_qty="0.00100000"),
)


@dataclass(frozen=True, slots=True)
class Gap:
    """Bars opening in [start_ms, end_ms) are missing, for one market id or (None) all of them."""

    start_ms: int
    end_ms: int
    symbol_id: str | None = None

    def covers(self, sid: str, ts_ms: int) -> bool:
        return (self.symbol_id is None or self.symbol_id == sid) and self.start_ms <= ts_ms < self.end_ms


@dataclass(slots=True)
class _Failure:
    remaining: int
    status: int
    body: str | dict[str, Any] | None
    path: str | None
    delay_s: float
    headers: dict[str, str] = field(default_factory=dict)


def _binance_error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


_RATE_LIMIT_MSG = (
    "Too much request weight used; current limit is 6000 request weight per 1 MINUTE. "
    "Please use WebSocket Streams for live updates to avoid polling the API."
)


def exchange_options_for(
    base_url: str,
    exchange_id: str = "binance",
    *,
    config: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The `Settings.exchange_options` value that points `exchange_id` at a fake at `base_url`."""
    # A short timeout so a hung fake fails a test in seconds, not ccxt's default 10 s per attempt.
    config = {"timeout": 5_000, **(config or {})}
    return {exchange_id: {"base_url": base_url, "config": config, "options": options or {}}}


# ---------------------------------------------------------------- the server


class FakeBinance:
    """Binance spot REST on 127.0.0.1:<random port>, served from a background thread."""

    def __init__(
        self,
        *,
        now_ms: int = DEFAULT_NOW_MS,
        listing_ms: int = DEFAULT_LISTING_MS,
        markets: Iterable[FakeMarket] = DEFAULT_MARKETS,
    ) -> None:
        self.now_ms = now_ms  # the virtual clock: no candle opens after it
        self.listing_ms = listing_ms  # no candle closes before it, unless a market overrides it
        self.markets: dict[str, FakeMarket] = {m.id: m for m in markets}
        self.request_log: list[RequestRecord] = []
        self.gaps: list[Gap] = []
        self._failures: list[_Failure] = []
        # Seconds every request to a path takes, e.g. {"/api/v3/klines": 0.3}: slow pages by design.
        self.delays: dict[str, float] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeBinance:
        """Start serving; returns self so `FakeBinance().start()` reads naturally."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to the starting thread below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-binance", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        if failure:
            self._thread = None
            raise RuntimeError("fake Binance failed to start") from failure[0]
        if self._port is None:
            raise RuntimeError("fake Binance did not start within 10 s")
        return self

    async def _start_site(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        for path, handler in self.routes().items():
            app.router.add_get(path, handler)
        for method, path, handler in self.method_routes():
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        """Stop serving and join the server thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._port = None

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`; the server must be started."""
        if self._port is None:
            raise RuntimeError("fake Binance is not running; call start() first")
        return f"http://127.0.0.1:{self._port}"

    # ------------------------------------------------------------ test controls

    def exchange_options(
        self,
        exchange_id: str = "binance",
        *,
        config: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """The `Settings.exchange_options` override pointing `exchange_id` at this server."""
        return exchange_options_for(self.base_url, exchange_id, config=config, options=options)

    def exchange_options_json(self, exchange_id: str = "binance") -> str:
        """The same override as JSON, for the `CRACKTRADER_EXCHANGE_OPTIONS` environment variable."""
        return json.dumps(self.exchange_options(exchange_id))

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        *,
        body: str | dict[str, Any] | None = None,
        path: str | None = None,
        delay_s: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `n` requests (to `path`, if given) with `status` instead of serving them.

        Default bodies mimic Binance: 418/429 carry code -1003 (ccxt: DDoSProtection); other statuses
        get a plain-text reason (ccxt: ExchangeNotAvailable for 5xx, RequestTimeout for 408/504).
        `delay_s` stalls before answering, to exercise client timeouts.
        """
        if headers is None:
            headers = {"Retry-After": "1"} if status in (418, 429) else {}
        with self._lock:
            self._failures.append(_Failure(n, status, body, path, delay_s, dict(headers)))

    def add_gap(self, start_ms: int, end_ms: int, symbol: str | None = None) -> None:
        """Remove the bars opening in [start_ms, end_ms), for `symbol` or for every market."""
        self.gaps.append(Gap(start_ms, end_ms, symbol_id(symbol) if symbol else None))

    def advance(self, ms: int) -> None:
        """Move the virtual clock forward."""
        self.now_ms += ms

    def reset(self) -> None:
        """Forget logged requests, pending failures and gaps."""
        with self._lock:
            self._failures.clear()
        self.request_log.clear()
        self.gaps.clear()

    def requests_to(self, path: str) -> list[dict[str, str]]:
        """Query parameters of each logged request to `path`, oldest first."""
        return [params for _, logged, params in self.request_log if logged == path]

    # ------------------------------------------------------------ data model

    def listing_of(self, sid: str) -> int:
        """When market `sid` started trading."""
        market = self.markets[sid]
        return self.listing_ms if market.listing_ms is None else market.listing_ms

    def klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[CandleTuple]:
        """The candles `/api/v3/klines` serves, with Binance's semantics for startTime/endTime/limit."""
        sid = symbol_id(symbol)
        first = interval_floor(interval, self.listing_of(sid))  # the bar containing the listing exists
        last = interval_floor(interval, self.now_ms)  # the still-forming bar is served, as on Binance
        if end_ms is not None:
            last = min(last, interval_floor(interval, end_ms))
        out: list[CandleTuple] = []
        if start_ms is not None:
            ts = max(first, interval_ceil(interval, start_ms))
            while ts <= last and len(out) < limit:
                gap = self._gap_at(sid, ts)
                if gap is not None:
                    ts = interval_ceil(interval, gap.end_ms)
                    continue
                out.append(candle(sid, interval, ts))
                ts = interval_next(interval, ts)
            return out
        # Without startTime Binance answers the most recent `limit` bars up to endTime (or now).
        ts = last
        while ts >= first and len(out) < limit:
            gap = self._gap_at(sid, ts)
            if gap is not None:
                ts = interval_floor(interval, gap.start_ms - 1)
                continue
            out.append(candle(sid, interval, ts))
            ts = interval_prev(interval, ts)
        out.reverse()
        return out

    def _gap_at(self, sid: str, ts_ms: int) -> Gap | None:
        return next((g for g in self.gaps if g.covers(sid, ts_ms)), None)

    def ticker(self, sid: str) -> dict[str, Any]:
        """The 24h ticker of market `sid` at the virtual now."""
        market = self.markets[sid]
        now = self.now_ms
        tick = float(market.tick_size)
        last = round(price_at(sid, now), 2)
        open_ = round(price_at(sid, now - _DAY), 2)
        hours = [candle(sid, "1h", interval_floor("1h", now - k * 3_600_000)) for k in range(24)]
        high = max(max(h[2] for h in hours), last, open_)
        low = min(min(h[3] for h in hours), last, open_)
        volume = sum(h[5] for h in hours)
        quote_volume = sum(h[5] * (h[1] + h[4]) / 2 for h in hours)
        return {
            "symbol": sid,
            "priceChange": f"{last - open_:.8f}",
            "priceChangePercent": f"{(last / open_ - 1) * 100:.3f}",
            "weightedAvgPrice": f"{quote_volume / volume:.8f}",
            "prevClosePrice": f"{open_:.8f}",
            "lastPrice": f"{last:.8f}",
            "lastQty": "0.01000000",
            "bidPrice": f"{last - tick:.8f}",
            "bidQty": "1.00000000",
            "askPrice": f"{last + tick:.8f}",
            "askQty": "1.00000000",
            "openPrice": f"{open_:.8f}",
            "highPrice": f"{high:.8f}",
            "lowPrice": f"{low:.8f}",
            "volume": f"{volume:.8f}",
            "quoteVolume": f"{quote_volume:.8f}",
            "openTime": now - _DAY,
            "closeTime": now,
            "firstId": 1,
            "lastId": 1000,
            "count": 1000,
        }

    def exchange_info(self) -> dict[str, Any]:
        """The `/api/v3/exchangeInfo` document."""
        return {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(m) for m in self.markets.values()],
        }

    @staticmethod
    def _symbol_info(m: FakeMarket) -> dict[str, Any]:
        return {
            "symbol": m.id,
            "status": m.status,
            "baseAsset": m.base,
            "baseAssetPrecision": 8,
            "quoteAsset": m.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            # ccxt refuses order types missing here ("limit is not a valid order type").
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": m.tick_size,
                    "maxPrice": "1000000.00000000",
                    "tickSize": m.tick_size,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": m.min_qty,
                    "maxQty": "9000.00000000",
                    "stepSize": m.step_size,
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": m.min_notional,
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
        }

    # ------------------------------------------------------------ HTTP layer

    def routes(self) -> dict[str, Handler]:
        """GET routes; later features add order endpoints here."""
        return {
            "/api/v3/ping": self._ping,
            "/api/v3/time": self._time,
            "/api/v3/exchangeInfo": self._exchange_info,
            "/api/v3/klines": self._klines,
            "/api/v3/ticker/24hr": self._ticker_24hr,
        }

    def method_routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) routes beyond the GET ones; the trading venue adds its order endpoints."""
        return []

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        params = dict(request.query)
        if request.method == "POST":
            form = await request.post()  # form bodies are logged like queries (from aiohttp's cached body)
            params.update({k: str(v) for k, v in form.items()})
        self.request_log.append((request.method, request.path, params))
        if self.delays.get(request.path):
            await asyncio.sleep(self.delays[request.path])
        failure = self._take_failure(request.path)
        if failure is not None:
            if failure.delay_s:
                await asyncio.sleep(failure.delay_s)
            return self._failure_response(failure)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            # Unknown paths: a bare 404 like Binance's, which ccxt reports as ExchangeNotAvailable.
            return web.Response(status=exc.status, text=exc.reason)

    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.path is None or failure.path == path:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                    return failure
        return None

    @staticmethod
    def _failure_response(failure: _Failure) -> web.Response:
        body = failure.body
        if body is None and failure.status in (418, 429):
            body = {"code": -1003, "msg": _RATE_LIMIT_MSG}
        if isinstance(body, dict):
            return web.json_response(body, status=failure.status, headers=failure.headers)
        text = body if body is not None else HTTPStatus(failure.status).phrase
        return web.Response(status=failure.status, text=text, headers=failure.headers)

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.now_ms})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.exchange_info())

    async def _klines(self, request: web.Request) -> web.Response:
        query = request.query
        sid = query.get("symbol", "")
        if not sid:
            return _binance_error(
                400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        if sid not in self.markets:
            return _binance_error(400, -1121, "Invalid symbol.")
        interval = query.get("interval", "")
        if interval not in INTERVALS:
            return _binance_error(400, -1120, "Invalid interval.")
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            start = int(query["startTime"]) if "startTime" in query else None
            end = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            return _binance_error(400, -1100, "Illegal characters found in a parameter.")
        limit = max(1, min(limit, MAX_LIMIT))
        bars = self.klines(sid, interval, start, end, limit)
        return web.json_response([_kline_row(sid, interval, bar) for bar in bars])

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        query = request.query
        if "symbol" in query:
            if query["symbol"] not in self.markets:
                return _binance_error(400, -1121, "Invalid symbol.")
            return web.json_response(self.ticker(query["symbol"]))
        if "symbols" in query:
            try:
                wanted = [str(s) for s in json.loads(query["symbols"])]
            except (ValueError, TypeError):
                return _binance_error(400, -1100, "Illegal characters found in parameter 'symbols'.")
            if any(s not in self.markets for s in wanted):
                return _binance_error(400, -1121, "Invalid symbol.")
            return web.json_response([self.ticker(s) for s in wanted])
        return web.json_response([self.ticker(s) for s in self.markets])
