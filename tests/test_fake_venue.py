"""The fake venue (tests/fakes/venue.py) against the real ccxt client: REST, WebSocket, virtual time, faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import ccxt
import ccxt.async_support
import pytest

from cracktrader.clock import Clock
from fakes.binance import candle, interval_floor, price_at
from fakes.clock import VirtualClock
from fakes.venue import FakeVenue, venue_client

pytestmark = pytest.mark.anyio

MINUTE = 60_000
# 2024-06-01T12:00:00Z: a whole minute, so one 60 s step closes exactly one 1m candle.
T0 = 1_717_243_200_000
MAX_YIELDS = 2_000  # scheduling yields a condition may take; counts loop turns, not seconds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[FakeVenue]:
    with FakeVenue(now_ms=T0 + 30_000) as server:  # half way through the 12:00 candle
        yield server


@asynccontextmanager
async def client(venue: FakeVenue, kind: str = "pro") -> AsyncIterator[ccxt.async_support.binance]:
    exchange = venue_client(venue, "pro" if kind == "pro" else "async")
    try:
        yield exchange
    finally:
        await exchange.close()


async def eventually(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until `condition()` holds (ccxt wakes its watchers a few turns later)."""
    for _ in range(MAX_YIELDS):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition still false after {MAX_YIELDS} event-loop turns")


class Recorder:
    """Calls watch_ohlcv in a loop, as a live feed does, keeping every row it returns."""

    def __init__(self, exchange: ccxt.async_support.binance, symbol: str, timeframe: str) -> None:
        self.rows: list[list[float]] = []
        self.error: BaseException | None = None
        self._exchange, self._symbol, self._timeframe = exchange, symbol, timeframe
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while True:
                rows = await self._exchange.watch_ohlcv(self._symbol, self._timeframe)
                self.rows.extend(list(row) for row in rows)
        except ccxt.NetworkError as exc:
            self.error = exc

    async def ready(self, venue: FakeVenue) -> None:
        """Wait for the subscription and the first (snapshot) rows; network waits go through the venue."""
        await venue.wait_subscribed(f"{self._symbol.replace('/', '').lower()}@kline_{self._timeframe}")
        await venue.settled()  # ccxt has read the snapshot pushed on subscribe
        await eventually(lambda: self.rows != [])  # and the watcher task has woken up with it

    async def finished(self) -> None:
        """Wait (on an event, not a timer; 5 s is only a safety net) until the watch loop has ended."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), 5)

    def opens(self) -> list[int]:
        return [int(row[0]) for row in self.rows]


def armed(exchange: ccxt.async_support.binance, message_hash: str) -> bool:
    """True once a watch call waits on `message_hash` (a push before that would resolve nothing)."""
    return any(message_hash in c.futures for c in exchange.clients.values())


def cached(exchange: ccxt.async_support.binance, symbol: str = "BTC/USDT", tf: str = "1m") -> list[list[float]]:
    """ccxt.pro's candle cache for (symbol, tf): every candle its WebSocket handler has stored."""
    return [list(row) for row in exchange.ohlcvs.get(symbol, {}).get(tf, [])]


# ---------------------------------------------------------------- the virtual clock


async def test_clock_moves_only_when_advanced_and_wakes_virtual_sleepers() -> None:
    clock: Clock = VirtualClock(T0)  # the runtime's Clock protocol, so one clock drives venue and runtime
    assert isinstance(clock, VirtualClock)
    moves: list[tuple[int, int]] = []
    clock.subscribe(lambda old, new: moves.append((old, new)))
    sleeper = asyncio.get_running_loop().create_task(clock.sleep(30))
    await eventually(lambda: clock.sleepers() == 1)

    assert clock.advance(29.999) == T0 + 29_999
    for _ in range(50):
        await asyncio.sleep(0)
    assert not sleeper.done()
    clock.set(T0 + 30_000)
    await asyncio.wait_for(sleeper, 5)

    assert moves == [(T0, T0 + 29_999), (T0 + 29_999, T0 + 30_000)]
    assert clock.time() == (T0 + 30_000) / 1000
    with pytest.raises(ValueError, match="only moves forward"):
        clock.set(T0)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)


# ---------------------------------------------------------------- REST


async def test_fetch_ohlcv_returns_the_deterministic_candles_up_to_the_virtual_now(venue: FakeVenue) -> None:
    async with client(venue, "async") as ex:
        rows = await ex.fetch_ohlcv("BTC/USDT", "1m", limit=3)
        # Two closed candles, then the forming one at 30 s: its open is final, the rest is partial.
        assert [r[0] for r in rows] == [T0 - 2 * MINUTE, T0 - MINUTE, T0]
        assert rows[:2] == [list(candle("BTCUSDT", "1m", T0 - k * MINUTE)) for k in (2, 1)]
        forming = rows[2]
        final = candle("BTCUSDT", "1m", T0)
        assert forming[1] == final[1] and forming[5] == pytest.approx(final[5] / 2, abs=1e-5)
        assert forming[4] == min(max(round(price_at("BTCUSDT", T0 + 30_000), 2), final[3]), final[2])

        venue.clock.advance(150)  # to 12:03:00: the 12:00 candle closed, 12:01 and 12:02 too
        rows = await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=10)
        assert [r[0] for r in rows] == [T0, T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE]
        assert rows[:3] == [list(candle("BTCUSDT", "1m", T0 + k * MINUTE)) for k in range(3)]
        assert rows[3][1:5] == [rows[2][4]] * 4 and rows[3][5] == 0  # the 12:03 candle has just opened

        assert await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=2) == rows[:2]
        until = await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, params={"until": T0 + MINUTE})
        assert [r[0] for r in until] == [T0, T0 + MINUTE]


async def test_ticker_order_book_and_best_quotes_agree_at_the_virtual_now(venue: FakeVenue) -> None:
    async with client(venue, "async") as ex:
        last = round(price_at("BTCUSDT", venue.now_ms), 2)
        ticker = await ex.fetch_ticker("BTC/USDT")
        book = await ex.fetch_order_book("BTC/USDT", 5)
        quotes = (await ex.fetch_bids_asks(["BTC/USDT"]))["BTC/USDT"]
        assert ticker["last"] == last
        assert (ticker["bid"], ticker["ask"]) == (round(last - 0.01, 2), round(last + 0.01, 2))
        assert (book["bids"][0][0], book["asks"][0][0]) == (ticker["bid"], ticker["ask"])
        assert [b[0] for b in book["bids"]] == [round(last - 0.01 * k, 2) for k in range(1, 6)]
        assert (quotes["bid"], quotes["ask"]) == (ticker["bid"], ticker["ask"])

        venue.clock.advance(3600)
        moved = await ex.fetch_ticker("BTC/USDT")
        assert moved["last"] == round(price_at("BTCUSDT", venue.now_ms), 2) != last


RATE_LIMIT_BODY = {"code": -1003, "msg": "Too much request weight used"}


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        # binance's handle_errors checks 418/429 before the body's code: DDoSProtection, not RateLimitExceeded.
        (429, None, ccxt.DDoSProtection), (418, None, ccxt.DDoSProtection),
        # Code -1003 under another status is what ccxt reports as RateLimitExceeded.
        (400, RATE_LIMIT_BODY, ccxt.RateLimitExceeded),
        (503, None, ccxt.ExchangeNotAvailable), (500, None, ccxt.ExchangeNotAvailable),
        (504, None, ccxt.RequestTimeout),
    ],
)  # fmt: skip
async def test_rest_faults_surface_as_ccxt_errors_for_the_next_n_calls(
    venue: FakeVenue, status: int, body: dict[str, Any] | None, error: type[Exception]
) -> None:
    async with client(venue, "async") as ex:
        await ex.load_markets()
        venue.fail_next(2, status, body=body, path="/api/v3/klines")
        for _ in range(2):
            with pytest.raises(error):
                await ex.fetch_ohlcv("BTC/USDT", "1m", limit=1)
        assert await ex.fetch_ticker("BTC/USDT")  # other paths were never affected
        assert len(await ex.fetch_ohlcv("BTC/USDT", "1m", limit=1)) == 1  # the third call is served


# ---------------------------------------------------------------- WebSocket


async def test_watch_ohlcv_gets_the_closed_candle_as_soon_as_the_clock_passes_its_end(venue: FakeVenue) -> None:
    async with client(venue) as ex, Recorder(ex, "BTC/USDT", "1m") as feed:
        await feed.ready(venue)
        assert feed.opens() == [T0]  # the forming candle, pushed on subscribe
        assert feed.rows[0] == list(venue.bar("BTCUSDT", "1m", T0, T0 + 30_000))

        await venue.step(29.999)  # 1 ms before the close: only a forming update
        assert venue.kline_messages(closed=True) == []
        await venue.step(0.001)  # 12:01:00.000

        closes = venue.kline_messages("BTC/USDT", "1m", closed=True)
        assert [(d.at_ms, d.message["k"]["t"]) for d in closes] == [(T0 + MINUTE, T0)]
        await eventually(lambda: T0 + MINUTE in feed.opens())
        closed_rows = [row for row in feed.rows if row[0] == T0]
        assert closed_rows[-1] == list(candle("BTCUSDT", "1m", T0))  # the final candle, equal to REST's
        assert cached(ex)[-1] == [T0 + MINUTE, *[candle("BTCUSDT", "1m", T0)[4]] * 4, 0.0]

        await venue.step(120)  # two more closes in one step, pushed oldest first
        closed_at = [d.message["k"]["t"] for d in venue.kline_messages(closed=True)]
        assert closed_at == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
        await eventually(lambda: T0 + 3 * MINUTE in feed.opens())
        async with client(venue, "async") as rest:
            assert cached(ex)[:-1] == await rest.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=3)


async def test_two_symbols_and_timeframes_stream_in_virtual_time_order(venue: FakeVenue) -> None:
    async with client(venue) as ex:
        await ex.watch_ohlcv_for_symbols([["BTC/USDT", "1m"], ["ETH/USDT", "5m"]])
        await venue.step(30 + 4 * 60)  # to 12:05:00: four BTC 1m closes and ETH's 12:00 5m candle
        closes = [(d.at_ms, d.message["s"], d.message["k"]["i"]) for d in venue.kline_messages(closed=True)]
        assert closes == [
            (T0 + MINUTE, "BTCUSDT", "1m"), (T0 + 2 * MINUTE, "BTCUSDT", "1m"), (T0 + 3 * MINUTE, "BTCUSDT", "1m"),
            (T0 + 4 * MINUTE, "BTCUSDT", "1m"), (T0 + 5 * MINUTE, "BTCUSDT", "1m"), (T0 + 5 * MINUTE, "ETHUSDT", "5m"),
        ]  # fmt: skip
        assert cached(ex, "ETH/USDT", "5m")[0] == list(candle("ETHUSDT", "5m", T0))


async def test_watch_ticker_defaults_to_the_mini_ticker_and_the_full_one_carries_bid_and_ask(
    venue: FakeVenue,
) -> None:
    async with client(venue) as ex:
        mini = await asyncio.wait_for(ex.watch_ticker("BTC/USDT"), 5)
        full = await asyncio.wait_for(ex.watch_ticker("ETH/USDT", {"name": "ticker"}), 5)
        assert mini["info"]["e"] == "24hrMiniTicker" and mini["bid"] is None
        assert mini["last"] == round(price_at("BTCUSDT", venue.now_ms), 2)
        last = round(price_at("ETHUSDT", venue.now_ms), 2)
        assert (full["last"], full["bid"], full["ask"]) == (last, round(last - 0.01, 2), round(last + 0.01, 2))
        assert {"btcusdt@miniTicker", "ethusdt@ticker"} <= venue.subscriptions()

        pending = asyncio.get_running_loop().create_task(ex.watch_ticker("ETH/USDT", {"name": "ticker"}))
        await eventually(lambda: armed(ex, "ticker:ticker@ETH/USDT"))
        now = await venue.step(10)
        moved = await asyncio.wait_for(pending, 5)
        assert (moved["last"], moved["timestamp"]) == (round(price_at("ETHUSDT", now), 2), now)


async def test_watch_bids_asks_reads_the_book_ticker_stream(venue: FakeVenue) -> None:
    async with client(venue) as ex:
        quotes = await asyncio.wait_for(ex.watch_bids_asks(["SOL/USDT"]), 5)
        last = round(price_at("SOLUSDT", venue.now_ms), 2)
        assert (quotes["SOL/USDT"]["bid"], quotes["SOL/USDT"]["ask"]) == (round(last - 0.01, 2), round(last + 0.01, 2))
        assert "solusdt@bookTicker" in venue.subscriptions()


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(("code", "reported"), [(None, "1006"), (1001, "1001")])
async def test_dropped_socket_fails_the_watch_rest_still_answers_and_the_next_watch_redials(
    venue: FakeVenue, code: int | None, reported: str
) -> None:
    async with client(venue) as ex, Recorder(ex, "BTC/USDT", "1m") as feed:
        await feed.ready(venue)
        assert venue.drop_sockets(code) == 1
        await feed.finished()
        assert isinstance(feed.error, ccxt.NetworkError) and reported in str(feed.error)

        venue.clock.advance(150)  # the 12:00 and 12:01 candles close while nobody listens
        assert venue.kline_messages(closed=True) == []
        rest = await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=2)
        assert rest == [list(candle("BTCUSDT", "1m", T0 + k * MINUTE)) for k in range(2)]

        # ccxt redials on the next watch and resubscribes; what closed during the gap is not replayed.
        rows = await asyncio.wait_for(ex.watch_ohlcv("BTC/USDT", "1m"), 5)
        assert venue.connections_opened == 2
        assert [r[0] for r in rows] == [T0 + 3 * MINUTE]
        assert [r[0] for r in cached(ex)] == [T0, T0 + 3 * MINUTE]  # 12:00 still as it was when cut
        assert cached(ex)[0] != list(candle("BTCUSDT", "1m", T0))


async def test_refused_sockets_keep_watch_failing_until_restored_while_rest_answers(venue: FakeVenue) -> None:
    async with client(venue) as ex:
        await asyncio.wait_for(ex.watch_ohlcv("BTC/USDT", "1m"), 5)
        venue.refuse_sockets()
        venue.drop_sockets()
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(ex.watch_ohlcv("BTC/USDT", "1m"), 5)
        assert len(await ex.fetch_ohlcv("BTC/USDT", "1m", limit=5)) == 5
        venue.refuse_sockets(False)
        rows = await asyncio.wait_for(ex.watch_ohlcv("BTC/USDT", "1m"), 10)
        assert rows[-1][0] == T0 and venue.connection_count() == 1


async def test_stalled_candles_stop_every_kline_push_while_the_clock_moves(venue: FakeVenue) -> None:
    async with client(venue) as ex:
        await asyncio.wait_for(ex.watch_ohlcv("BTC/USDT", "1m"), 5)
        await asyncio.wait_for(ex.watch_ticker("BTC/USDT"), 5)
        before = cached(ex)
        sent = len(venue.kline_messages())
        venue.stall_candles("BTC/USDT")

        await venue.step(150)  # three candle ends pass; settled() means ccxt has read all that was sent
        assert len(venue.kline_messages()) == sent and cached(ex) == before
        assert venue.delivered[-1].stream == "btcusdt@miniTicker"  # other streams keep flowing
        # REST is not stalled unless asked: a REST fallback can fill the gap.
        rest = await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=3)
        assert [r[0] for r in rest] == [T0, T0 + MINUTE, T0 + 2 * MINUTE]

        venue.resume_candles()
        await venue.step(60)  # to 12:04: only the candle that closes after the resume (12:03) arrives
        assert [d.message["k"]["t"] for d in venue.kline_messages(closed=True)] == [T0 + 3 * MINUTE]


async def test_a_rest_stall_freezes_klines_at_the_stall_time(venue: FakeVenue) -> None:
    async with client(venue, "async") as ex:
        venue.stall_candles(rest=True)
        venue.clock.advance(600)
        rows = await ex.fetch_ohlcv("BTC/USDT", "1m", limit=2)
        assert [r[0] for r in rows] == [T0 - MINUTE, T0]
        assert rows[1] == list(venue.bar("BTCUSDT", "1m", T0, T0 + 30_000))  # as it was when the data froze
        venue.resume_candles()
        rows = await ex.fetch_ohlcv("BTC/USDT", "1m", limit=2)
        assert rows[-1][0] == interval_floor("1m", venue.now_ms)


async def test_a_duplicated_close_reaches_ccxt_twice_and_its_cache_keeps_one_candle(venue: FakeVenue) -> None:
    async with client(venue) as ex, Recorder(ex, "BTC/USDT", "1m") as feed:
        await feed.ready(venue)
        venue.duplicate_next(1, "btcusdt@kline_1m")
        await venue.step(30)
        closes = venue.kline_messages(closed=True)
        assert [d.message["k"]["t"] for d in closes] == [T0, T0]  # the close, sent twice
        assert len(venue.kline_messages(closed=False)) == 2  # the snapshot and the new candle, once each
        assert [r[0] for r in cached(ex)] == [T0, T0 + MINUTE]
        await eventually(lambda: T0 + MINUTE in feed.opens())
        # The watcher saw 12:00 at least twice (snapshot, close): a consumer must upsert candles by open time.
        assert feed.opens().count(T0) >= 2


def test_blocking_advance_works_from_a_sync_test_with_the_sync_client(venue: FakeVenue) -> None:
    from cracktrader.data.sources.ccxt_source import LOCAL_SERVER_OPTIONS, point_exchange_at

    ex: Any = ccxt.binance({"enableRateLimit": False, "options": dict(LOCAL_SERVER_OPTIONS)})
    point_exchange_at(ex, venue.base_url)
    venue.advance(90_000)  # FakeBinance's ms-based advance, routed through the clock
    assert venue.clock.now_ms() == T0 + 120_000
    rows = ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=5)
    assert [r[0] for r in rows] == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
