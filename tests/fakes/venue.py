"""A fake Binance spot venue, REST and WebSocket on 127.0.0.1, driven by a virtual clock.

`FakeVenue` extends `FakeBinance` (same markets, same deterministic candles, same REST faults) with the
market-data streams ccxt.pro's binance client reads (`<id>@kline_<i>`, `@ticker`, `@miniTicker`,
`@bookTicker`), partial forming candles, an order book and faults on demand. Nothing happens in real
time: moving the `VirtualClock` pushes what became due, and `settle()` / `await settled()` wait for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import WSMsgType, web

from .binance import (
    DEFAULT_LIMIT,
    DEFAULT_LISTING_MS,
    DEFAULT_MARKETS,
    DEFAULT_NOW_MS,
    INTERVALS,
    CandleTuple,
    FakeBinance,
    FakeMarket,
    Handler,
    RequestRecord,
    _binance_error,
    _Failure,
    _kline_row,
    _seed,
    _unit,
    candle,
    interval_floor,
    interval_next,
    price_at,
    symbol_id,
)
from .clock import VirtualClock

if TYPE_CHECKING:
    import ccxt.async_support

WS_PATHS: tuple[str, ...] = ("/ws", "/stream/ws")  # ccxt dials <urls.api.ws.spot>/<stream index>
TICKER_CHANNELS: tuple[str, ...] = ("ticker", "miniTicker", "bookTicker")
DEPTH_LIMITS_MAX = 5000
DEFAULT_DEPTH_LIMIT = 100
SETTLE_TIMEOUT_S = 10.0  # a safety net only: a healthy settle takes milliseconds


@dataclass(frozen=True, slots=True)
class Stream:
    """A parsed Binance stream name such as `btcusdt@kline_1m`."""

    name: str
    symbol_id: str
    channel: str  # kline | ticker | miniTicker | bookTicker
    interval: str | None = None


def parse_stream(name: str, markets: Iterable[str]) -> Stream | None:
    """The stream `name` refers to, or None when Binance would not know it."""
    sid, _, channel = name.partition("@")
    sid = sid.upper()
    if sid not in set(markets):
        return None
    if channel.startswith("kline_") and channel[6:] in INTERVALS:
        return Stream(name, sid, "kline", channel[6:])
    if channel in TICKER_CHANNELS:
        return Stream(name, sid, channel)
    return None


@dataclass(frozen=True, slots=True)
class Delivered:
    """One WebSocket message the venue wrote, with the virtual time it belongs to."""

    conn_id: int
    stream: str
    at_ms: int
    message: dict[str, Any]

    @property
    def closed(self) -> bool:
        """True for a kline message that closes its candle (`x: true`)."""
        return bool(self.message.get("k", {}).get("x"))


@dataclass(eq=False, slots=True)
class _Conn:
    id: int
    ws: web.WebSocketResponse
    request: web.Request
    seen_ms: dict[str, int] = field(default_factory=dict)  # stream name -> pushed up to this virtual ms
    pongs: dict[bytes, asyncio.Future[None]] = field(default_factory=dict)


@dataclass(slots=True)
class _Stall:
    since_ms: int
    rest: bool


async def read_frames(
    ws: web.WebSocketResponse, pongs: dict[bytes, asyncio.Future[None]], on_text: Callable[[str], Awaitable[None]]
) -> None:
    """Read a client's frames until it goes: text to `on_text`, pings answered, pongs settle their barrier."""
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await on_text(msg.data)
        elif msg.type == WSMsgType.PING:
            await ws.pong(msg.data)
        elif msg.type == WSMsgType.PONG:
            future = pongs.pop(bytes(msg.data), None)
            if future is not None and not future.done():
                future.set_result(None)


def _fmt(value: float) -> str:
    return f"{value:.8f}"


class FakeVenue(FakeBinance):
    """Binance spot REST + market-data WebSocket on one 127.0.0.1 port, on a virtual clock."""

    def __init__(
        self,
        *,
        clock: VirtualClock | None = None,
        now_ms: int = DEFAULT_NOW_MS,
        listing_ms: int = DEFAULT_LISTING_MS,
        markets: Iterable[FakeMarket] = DEFAULT_MARKETS,
        push_on_subscribe: bool = True,
    ) -> None:
        self.clock = clock if clock is not None else VirtualClock(now_ms)
        super().__init__(now_ms=self.clock.now_ms(), listing_ms=listing_ms, markets=markets)
        # Binance pushes a stream's first update within a second or two; in virtual time that is "at once".
        self.push_on_subscribe = push_on_subscribe
        self.delivered: list[Delivered] = []
        self.connections_opened = 0
        self.refusing_sockets = False
        self.credentialed: list[RequestRecord] = []  # requests that carried an API key or a signature
        self._conns: set[_Conn] = set()
        self._conn_ids = itertools.count(1)
        self._ping_ids = itertools.count(1)
        self._pending: list[concurrent.futures.Future[None]] = []
        self._stalls: dict[str | None, _Stall] = {}  # None: every market
        self._duplicates: list[tuple[int, str | None]] = []  # (remaining, stream name or None for any)
        self._deliver_lock: asyncio.Lock | None = None
        self._subscribed: asyncio.Condition | None = None

    # ------------------------------------------------------------ the clock drives the venue

    @property
    def now_ms(self) -> int:
        """The virtual now, read from the clock."""
        return self.clock.now_ms()

    @now_ms.setter
    def now_ms(self, value: int) -> None:
        # FakeBinance.__init__ and FakeBinance.advance assign here; both must go through the clock.
        if value != self.clock.now_ms():
            self.clock.set(value)

    def advance(self, ms: int) -> None:
        """Move the clock forward by `ms` milliseconds and wait until the venue has pushed what is due."""
        self.clock.set(self.clock.now_ms() + ms)
        self.settle()

    def _on_clock(self, old_ms: int, new_ms: int) -> None:
        loop = self._loop
        if loop is None or self._deliver_lock is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._deliver_due(), loop)
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(future)

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Block until every push due so far has been written to the sockets (not necessarily read)."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.result(timeout)

    async def settled(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until every due push is written and every client has read it (a ping/pong round trip).

        ccxt answers a ping only after handling the frames before it, so when this returns ccxt's
        caches (`ex.ohlcvs`, `ex.tickers`) hold everything the venue sent. Await it from the loop the
        ccxt client runs on.
        """
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        await self._on_server_loop(self._ping_all(timeout), timeout)

    async def step(self, seconds: float, timeout: float = SETTLE_TIMEOUT_S) -> int:
        """Advance the clock by `seconds`, then `await settled()`; returns the new virtual ms."""
        now = self.clock.advance(seconds)
        await self.settled(timeout)
        return now

    async def wait_subscribed(self, stream: str, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until some connection subscribes to `stream` (e.g. `btcusdt@kline_1m`)."""

        async def wait() -> None:
            assert self._subscribed is not None
            async with self._subscribed:
                await self._subscribed.wait_for(lambda: stream in self.subscriptions())

        await self._on_server_loop(wait(), timeout)

    async def _on_server_loop(self, coro: Any, timeout: float) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("fake venue is not running; call start() first")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def _run_on_server_loop(self, coro: Any, timeout: float = SETTLE_TIMEOUT_S) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("fake venue is not running; call start() first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeVenue:
        """Serve REST and WebSocket; returns self."""
        super().start()
        self._run_on_server_loop(self._init_loop_state())
        self.clock.subscribe(self._on_clock)
        return self

    async def _init_loop_state(self) -> None:
        self._deliver_lock = asyncio.Lock()
        self._subscribed = asyncio.Condition()

    def stop(self) -> None:
        """Close every socket, then stop serving."""
        self.clock.unsubscribe(self._on_clock)
        if self._loop is not None:
            self._run_on_server_loop(self._drop(None))
        self._deliver_lock = None
        super().stop()

    def __enter__(self) -> FakeVenue:
        return self.start()

    @property
    def ws_url(self) -> str:
        """`ws://127.0.0.1:<port>/ws`, the value ccxt's `urls['api']['ws']['spot']` gets after a rebase."""
        return self.base_url.replace("http://", "ws://", 1) + "/ws"

    # ------------------------------------------------------------ faults

    def drop_sockets(self, code: int | None = None) -> int:
        """Close every WebSocket connection; returns how many there were.

        `code=None` aborts the TCP connections (a network cut: ccxt sees code 1006); a code such as 1001
        sends a close frame first (a server going away). New connections are accepted again at once,
        unless `refuse_sockets()` is on.
        """
        count: int = self._run_on_server_loop(self._drop(code))
        return count

    def refuse_sockets(self, refuse: bool = True) -> None:
        """Answer new WebSocket handshakes with 503 (while on), so reconnects fail and REST must serve."""
        self.refusing_sockets = refuse

    def stall_candles(self, symbol: str | None = None, *, rest: bool = False) -> None:
        """Stop pushing kline updates (forming and closes) for `symbol`, or every market, as the clock moves.

        Missed updates are never replayed, as on a real stream. With `rest=True` REST klines also stop
        at the stall's start (the market's data froze), so a REST fallback cannot catch up either.
        """
        self._stalls[symbol_id(symbol) if symbol else None] = _Stall(self.clock.now_ms(), rest)

    def resume_candles(self, symbol: str | None = None) -> None:
        """Undo `stall_candles` for `symbol`, or every stall when None."""
        if symbol is None:
            self._stalls.clear()
        else:
            self._stalls.pop(symbol_id(symbol), None)

    def duplicate_next(self, n: int = 1, stream: str | None = None) -> None:
        """Send each of the next `n` pushes (of `stream`, if given) twice in a row."""
        with self._lock:
            self._duplicates.append((n, stream))

    def _take_failure(self, path: str) -> _Failure | None:
        # A path-less fail_next() is about REST; WebSocket handshakes fail through refuse_sockets().
        if path.startswith(WS_PATHS):
            with self._lock:
                for failure in self._failures:
                    if failure.path == path:
                        failure.remaining -= 1
                        if failure.remaining <= 0:
                            self._failures.remove(failure)
                        return failure
            return None
        return super()._take_failure(path)

    def reset(self) -> None:
        """Forget logged requests and deliveries, pending failures, gaps, stalls and duplicates."""
        super().reset()
        self.delivered.clear()
        self.credentialed.clear()
        self._stalls.clear()
        with self._lock:
            self._duplicates.clear()

    # ------------------------------------------------------------ what was sent, who listens

    def credentialed_requests(self) -> list[RequestRecord]:
        """Requests (HTTP, and WebSocket frames as ("WS", path, params)) that carried an API key or a signature."""
        return list(self.credentialed)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Binance sends the key in X-MBX-APIKEY and the HMAC as `signature` (query, or form body on POST).
        body = await request.text() if request.can_read_body else ""
        if "X-MBX-APIKEY" in request.headers or "signature" in request.query or "signature=" in body:
            self.credentialed.append((request.method, request.path, dict(request.query)))
        return await super()._middleware(request, handler)

    def subscriptions(self) -> set[str]:
        """Stream names subscribed on open connections."""
        return {name for conn in list(self._conns) for name in list(conn.seen_ms)}

    def connection_count(self) -> int:
        """Open WebSocket connections."""
        return len(self._conns)

    def kline_messages(
        self, symbol: str | None = None, interval: str | None = None, *, closed: bool | None = None
    ) -> list[Delivered]:
        """Kline pushes so far, oldest first, optionally of one market, interval and closed state."""
        sid = symbol_id(symbol) if symbol else None
        out = []
        for d in list(self.delivered):
            k = d.message.get("k")
            if k is None or (sid and k["s"] != sid) or (interval and k["i"] != interval):
                continue
            if closed is None or d.closed == closed:
                out.append(d)
        return out

    # ------------------------------------------------------------ market data model

    def _stall_of(self, sid: str) -> _Stall | None:
        return self._stalls.get(sid) or self._stalls.get(None)

    def bar(self, symbol: str, interval: str, open_ms: int, now_ms: int) -> CandleTuple:
        """The candle opening at `open_ms` as seen at `now_ms`: final once closed, else partial.

        A forming candle keeps the final open, its close is the price now (held inside the final
        high/low), high/low are the extremes of open and close, volume grows linearly. At its open
        it is flat with zero volume; the closed values equal `candle()` and REST.
        """
        sid = symbol_id(symbol)
        final = candle(sid, interval, open_ms)
        close_ms = interval_next(interval, open_ms)
        if now_ms >= close_ms:
            return final
        _, o, h, low, _, v = final
        price = min(max(round(price_at(sid, now_ms), 2), low), h)
        fraction = (now_ms - open_ms) / (close_ms - open_ms)
        return (open_ms, o, max(o, price), min(o, price), price, round(v * fraction, 5))

    def klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[CandleTuple]:
        """FakeBinance's klines, with the forming candle partial and REST stalls applied."""
        sid = symbol_id(symbol)
        now = self.clock.now_ms()
        stall = self._stall_of(sid)
        if stall is not None and stall.rest:
            now = min(now, stall.since_ms)
            end_ms = now if end_ms is None else min(end_ms, now)
        bars = super().klines(sid, interval, start_ms, end_ms, limit)
        if bars and bars[-1][0] == interval_floor(interval, now):
            bars[-1] = self.bar(sid, interval, bars[-1][0], now)
        return bars

    def book_ticker(self, sid: str) -> dict[str, Any]:
        """Best bid and ask now: one tick either side of the last price, as in the 24h ticker."""
        ticker = self.ticker(sid)
        now = self.clock.now_ms()
        seed = _seed(sid)
        return {
            "symbol": sid,
            "bidPrice": ticker["bidPrice"],
            "bidQty": _fmt(round(0.5 + 2 * _unit(seed, now, 20), 5)),
            "askPrice": ticker["askPrice"],
            "askQty": _fmt(round(0.5 + 2 * _unit(seed, now, 21), 5)),
        }

    def order_book(self, sid: str, limit: int = DEFAULT_DEPTH_LIMIT) -> dict[str, Any]:
        """`limit` levels a side, one tick apart, around the last price; the best ones match the ticker."""
        market = self.markets[sid]
        tick = float(market.tick_size)
        now = self.clock.now_ms()
        last = round(price_at(sid, now), 2)
        seed = _seed(sid)
        levels = max(1, min(limit, DEPTH_LIMITS_MAX))

        def side(sign: int, salt: int) -> list[list[str]]:
            return [
                [_fmt(round(last + sign * tick * (k + 1), 8)), _fmt(round(0.1 + 3 * _unit(seed, now, salt + k), 5))]
                for k in range(levels)
            ]

        return {"lastUpdateId": now, "bids": side(-1, 1000), "asks": side(1, 9000)}

    # ------------------------------------------------------------ WebSocket messages

    def _kline_message(self, stream: Stream, open_ms: int, at_ms: int) -> dict[str, Any]:
        assert stream.interval is not None
        bar = self.bar(stream.symbol_id, stream.interval, open_ms, at_ms)
        row = _kline_row(stream.symbol_id, stream.interval, bar)
        closed = at_ms >= interval_next(stream.interval, open_ms)
        return {
            "e": "kline",
            "E": at_ms,
            "s": stream.symbol_id,
            "k": {
                "t": open_ms, "T": row[6], "s": stream.symbol_id, "i": stream.interval, "f": 1, "L": row[8],
                "o": row[1], "c": row[4], "h": row[2], "l": row[3], "v": row[5], "n": row[8], "x": closed,
                "q": row[7], "V": row[9], "Q": row[10], "B": "0",
            },
        }  # fmt: skip

    def _ticker_message(self, stream: Stream, at_ms: int) -> dict[str, Any]:
        sid = stream.symbol_id
        if stream.channel == "bookTicker":
            book = self.book_ticker(sid)
            return {
                "u": at_ms, "s": sid, "b": book["bidPrice"], "B": book["bidQty"],
                "a": book["askPrice"], "A": book["askQty"],
            }  # fmt: skip
        t = self.ticker(sid)
        mini = {
            "E": at_ms, "s": sid, "c": t["lastPrice"], "o": t["openPrice"], "h": t["highPrice"],
            "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"],
        }  # fmt: skip
        if stream.channel == "miniTicker":
            return {"e": "24hrMiniTicker", **mini}
        return {
            "e": "24hrTicker", **mini, "p": t["priceChange"], "P": t["priceChangePercent"],
            "w": t["weightedAvgPrice"], "x": t["prevClosePrice"], "Q": t["lastQty"], "b": t["bidPrice"],
            "B": t["bidQty"], "a": t["askPrice"], "A": t["askQty"], "O": t["openTime"], "C": t["closeTime"],
            "F": t["firstId"], "L": t["lastId"], "n": t["count"],
        }  # fmt: skip

    def _due(self, stream: Stream, seen_ms: int, now_ms: int) -> list[tuple[int, dict[str, Any]]]:
        """Messages of `stream` for virtual time (seen_ms, now_ms], oldest first."""
        if stream.channel != "kline":
            return [(now_ms, self._ticker_message(stream, now_ms))]
        if self._stall_of(stream.symbol_id) is not None:
            return []
        assert stream.interval is not None
        out: list[tuple[int, dict[str, Any]]] = []
        open_ms = interval_floor(stream.interval, seen_ms)
        while (close_ms := interval_next(stream.interval, open_ms)) <= now_ms:
            if self._gap_at(stream.symbol_id, open_ms) is None:
                out.append((close_ms, self._kline_message(stream, open_ms, close_ms)))
            open_ms = close_ms
        if self._gap_at(stream.symbol_id, open_ms) is None:
            out.append((now_ms, self._kline_message(stream, open_ms, now_ms)))
        return out

    async def _deliver_due(self) -> None:
        assert self._deliver_lock is not None
        async with self._deliver_lock:
            now = self.clock.now_ms()
            batch: list[tuple[int, int, _Conn, str, dict[str, Any]]] = []
            order = itertools.count()
            for conn in sorted(self._conns, key=lambda c: c.id):
                for name, seen in list(conn.seen_ms.items()):
                    stream = parse_stream(name, self.markets)
                    if stream is None or seen >= now:
                        continue
                    conn.seen_ms[name] = now
                    for at_ms, message in self._due(stream, seen, now):
                        batch.append((at_ms, next(order), conn, name, message))
            batch.sort(key=lambda item: (item[0], item[1]))
            for at_ms, _, conn, name, message in batch:
                await self._send(conn, name, at_ms, message)

    def _take_duplicate(self, name: str) -> bool:
        with self._lock:
            for i, (remaining, wanted) in enumerate(self._duplicates):
                if wanted is None or wanted == name:
                    if remaining <= 1:
                        del self._duplicates[i]
                    else:
                        self._duplicates[i] = (remaining - 1, wanted)
                    return True
        return False

    async def _send(self, conn: _Conn, name: str, at_ms: int, message: dict[str, Any]) -> None:
        if conn not in self._conns:
            return
        text = json.dumps(message)
        for _ in range(2 if self._take_duplicate(name) else 1):
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                self._conns.discard(conn)  # the peer went away; a real stream would just stop too
                return
            self.delivered.append(Delivered(conn.id, name, at_ms, message))

    async def _drop(self, code: int | None) -> int:
        conns = list(self._conns)
        self._conns.clear()
        for conn in conns:
            for future in conn.pongs.values():
                if not future.done():
                    future.set_result(None)  # a dropped client has nothing left to read
            if code is None:
                transport = conn.request.transport
                if transport is not None:
                    transport.abort()
            else:
                # close() waits for the client's reply; the reply must not hold up the test's thread.
                asyncio.get_running_loop().create_task(conn.ws.close(code=code, message=b"dropped by test"))
        return len(conns)

    async def _ping_all(self, timeout: float) -> None:
        waits = []
        for conn in list(self._conns):
            token = f"settle-{next(self._ping_ids)}".encode()
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            conn.pongs[token] = future
            try:
                await conn.ws.ping(token)
            except (ConnectionError, RuntimeError):
                self._conns.discard(conn)
                continue
            waits.append(future)
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)

    # ------------------------------------------------------------ WebSocket and extra REST routes

    def routes(self) -> dict[str, Handler]:
        """FakeBinance's routes plus bookTicker, depth and the WebSocket endpoints."""
        routes = super().routes()
        routes["/api/v3/ticker/bookTicker"] = self._book_ticker_route
        routes["/api/v3/depth"] = self._depth_route
        for path in WS_PATHS:
            routes[path] = self._ws_route
            routes[path + "/{tail:.*}"] = self._ws_route
        return routes

    async def _book_ticker_route(self, request: web.Request) -> web.Response:
        sid = request.query.get("symbol")
        if sid is None:
            return web.json_response([self.book_ticker(s) for s in self.markets])
        if sid not in self.markets:
            return _binance_error(400, -1121, "Invalid symbol.")
        return web.json_response(self.book_ticker(sid))

    async def _depth_route(self, request: web.Request) -> web.Response:
        sid = request.query.get("symbol", "")
        if sid not in self.markets:
            return _binance_error(400, -1121, "Invalid symbol.")
        try:
            limit = int(request.query.get("limit", DEFAULT_DEPTH_LIMIT))
        except ValueError:
            return _binance_error(400, -1100, "Illegal characters found in parameter 'limit'.")
        return web.json_response(self.order_book(sid, limit))

    async def _ws_route(self, request: web.Request) -> web.StreamResponse:
        if self.refusing_sockets:
            return web.Response(status=503, text="Service Unavailable")
        # autoping off: the venue's own pings are the settle barrier, so it must see the pongs.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = _Conn(next(self._conn_ids), ws, request)
        self._conns.add(conn)
        self.connections_opened += 1
        tail = request.match_info.get("tail", "")
        if "@" in tail:  # a raw stream URL such as /ws/btcusdt@kline_1m
            await self._subscribe(conn, tail.split("/"), None)
        try:
            await read_frames(ws, conn.pongs, lambda data: self._on_text(conn, data))
        finally:
            self._conns.discard(conn)
        return ws

    async def _on_text(self, conn: _Conn, data: str) -> None:
        try:
            request = json.loads(data)
            method, request_id = request["method"], request.get("id")
            params = request.get("params", [])
            if isinstance(params, dict) and {"apiKey", "signature"} & set(params):
                self.credentialed.append(("WS", conn.request.path, {k: str(v) for k, v in params.items()}))
        except (ValueError, KeyError, TypeError):
            await conn.ws.send_json({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
            return
        if method == "SUBSCRIBE":
            await self._subscribe(conn, [str(p) for p in params], request_id)
        elif method == "UNSUBSCRIBE":
            for name in params:
                conn.seen_ms.pop(str(name), None)
            await conn.ws.send_json({"result": None, "id": request_id})
        elif method == "LIST_SUBSCRIPTIONS":
            await conn.ws.send_json({"result": sorted(conn.seen_ms), "id": request_id})
        else:
            await conn.ws.send_json({"error": {"code": 2, "msg": f"Invalid request: {method}"}, "id": request_id})

    async def _subscribe(self, conn: _Conn, names: list[str], request_id: Any) -> None:
        assert self._deliver_lock is not None and self._subscribed is not None
        unknown = [n for n in names if parse_stream(n, self.markets) is None]
        if unknown:
            msg = f"Invalid request: unknown stream(s) {', '.join(unknown)}"
            await conn.ws.send_json({"error": {"code": 2, "msg": msg}, "id": request_id})
            return
        async with self._deliver_lock:
            now = self.clock.now_ms()
            if request_id is not None:
                await conn.ws.send_json({"result": None, "id": request_id})
            for name in names:
                conn.seen_ms[name] = now
                stream = parse_stream(name, self.markets)
                if self.push_on_subscribe and stream is not None:
                    snapshot = self._due(stream, now, now)[-1:]  # the forming candle or the ticker now
                    for at_ms, message in snapshot:
                        await self._send(conn, name, at_ms, message)
        async with self._subscribed:
            self._subscribed.notify_all()


# ---------------------------------------------------------------- ccxt clients pointed at a venue


def venue_client(
    venue: FakeBinance, kind: Literal["async", "pro"] = "pro", **config: Any
) -> ccxt.async_support.binance:
    """A real ccxt binance client (async REST, or ccxt.pro with WebSocket) pointed at `venue`.

    Uses the project's own URL rewrite and local-server options; build it inside the test's event loop
    and `await client.close()` at the end.
    """
    from cracktrader.data.sources.ccxt_source import LOCAL_SERVER_OPTIONS, point_exchange_at

    if kind == "pro":
        import ccxt.pro as module
    else:
        import ccxt.async_support as module
    options = {**LOCAL_SERVER_OPTIONS, **config.pop("options", {})}
    client: ccxt.async_support.binance = module.binance(
        {"enableRateLimit": False, "timeout": 5_000, **config, "options": options}
    )
    point_exchange_at(client, venue.base_url)
    return client
