"""The ccxt live feed against the fake venue with the real ccxt client, on the venue's virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import astuple
from pathlib import Path
from typing import Any

import ccxt
import pytest

from cracktrader.brokers.paper import PaperSession
from cracktrader.clock import ManualClock
from cracktrader.data import service
from cracktrader.data.feeds.base import BarBatch, ClosedCandle
from cracktrader.data.feeds.ccxt_feed import CcxtFeed
from cracktrader.data.sources.ccxt_source import make_exchange
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.records import O_STATUS, STATUS_FILLED
from cracktrader.errors import UnknownExchangeError
from cracktrader.runs.config import LiveConfig
from cracktrader.runs.session import run_session
from cracktrader.runs.trade import prepare_paper
from cracktrader.settings import Settings
from fakes.binance import candle
from fakes.venue import FakeVenue, venue_client

pytestmark = pytest.mark.anyio

MINUTE = 60_000
T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z; the venue starts half way through this 1m candle
M1 = parse_timeframe("1m")
SYMBOLS = ("BTC/USDT", "ETH/USDT")
GRACE_MS = 5_000  # the feed's default
SAFETY_S = 10.0  # only a safety net for a broken feed: every wait below ends on an event
IDLE_TURNS = 200  # event-loop turns a "nothing happened" check gives the feed


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[FakeVenue]:
    with FakeVenue(now_ms=T0 + 30_000) as server:
        yield server


def settings_for(venue: FakeVenue, data_dir: Path, *, retries: int = 5, **config: Any) -> Settings:
    """Settings that point binance at the venue (with extra ccxt `config`), backoff 0.5 s doubling."""
    return Settings(
        data_dir=data_dir,
        exchange_options=venue.exchange_options(config=config or None),
        ccxt_max_retries=retries,
        ccxt_backoff_base=0.5,
    )


def expected(symbol: str, open_ms: int) -> ClosedCandle:
    """The venue's final candle, as the feed must deliver it."""
    return ClosedCandle(*candle(symbol, "1m", open_ms)[1:])


def assert_bar(batch: BarBatch, open_ms: int, symbols: tuple[str, ...] = SYMBOLS) -> None:
    assert batch.timestamp == open_ms
    assert dict(batch.candles) == {s: expected(s, open_ms) for s in symbols}


async def until(condition: Callable[[], bool]) -> None:
    """Poll `condition` (1 ms apart, 10 s at most: a safety net, not a timing assumption)."""
    for _ in range(int(SAFETY_S * 1000)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition still false after the safety timeout")


async def idle_turns() -> None:
    for _ in range(IDLE_TURNS):
        await asyncio.sleep(0)


async def ready(venue: FakeVenue, symbols: tuple[str, ...] = SYMBOLS) -> None:
    """Every symbol's kline stream is subscribed and ccxt has read its first push."""
    for s in symbols:
        await venue.wait_subscribed(f"{s.replace('/', '').lower()}@kline_1m")
    await venue.settled()


class Consumer:
    """Iterates a feed in a task, keeping each batch and the virtual time it arrived at."""

    def __init__(self, feed: CcxtFeed, venue: FakeVenue) -> None:
        self.feed = feed
        self.clock = venue.clock
        self.batches: list[BarBatch] = []
        self.arrivals: list[int] = []
        self._queue: asyncio.Queue[BarBatch] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Consumer:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.feed.aclose()

    async def _run(self) -> None:
        async for batch in self.feed:
            self.arrivals.append(self.clock.now_ms())
            self.batches.append(batch)
            self._queue.put_nowait(batch)

    async def next(self) -> BarBatch:
        """The next batch; the feed's own error if it failed instead."""
        assert self._task is not None
        getter = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait({getter, self._task}, timeout=SAFETY_S, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if self._task in done:
            self._task.result()
        raise AssertionError(f"no batch within {SAFETY_S} s; got {[b.timestamp for b in self.batches]}")

    async def assert_idle(self) -> None:
        await idle_turns()
        assert self._queue.empty(), [b.timestamp for b in self.batches]

    def times(self) -> list[int]:
        return [b.timestamp for b in self.batches]


# ---------------------------------------------------------------- WebSocket


async def test_closed_candles_arrive_in_order_once_the_clock_passes_each_end(venue: FakeVenue, tmp_path: Path) -> None:
    settings = settings_for(venue, tmp_path)
    feed = CcxtFeed("binance", SYMBOLS, M1, venue.clock, settings=settings)
    async with Consumer(feed, venue) as c:
        await ready(venue)
        await venue.step(29.999)  # 1 ms before the 12:00 candle ends
        await c.assert_idle()
        await venue.step(0.001)
        assert_bar(await c.next(), T0)
        for k in (1, 2):
            await venue.step(60)
            assert_bar(await c.next(), T0 + k * MINUTE)
        await c.assert_idle()
        assert c.arrivals == [T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE]  # at each close, no grace waited
        assert feed.rest_calls == 0  # the socket confirmed every close
        assert feed.closes_by_flag == 3 * len(SYMBOLS)  # each from Binance's final push (`x`), which ccxt drops
        assert feed.raw_klines == len(venue.kline_messages()) == 16  # every push read raw, none parsed by ccxt

    store = service.open_store(settings)
    for s in SYMBOLS:  # every delivered candle is in the Parquet store, with its coverage
        stored = store.read("binance", s, "1m")
        assert stored.timestamp.tolist() == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
        assert stored.close.tolist() == [expected(s, T0 + k * MINUTE).close for k in range(3)]
        assert store.coverage("binance", s, "1m") == [(T0, T0 + 3 * MINUTE)]


def kline_push(open_ms: int, *, final: bool, interval: str = "1m") -> dict[str, Any]:
    """A Binance kline push of BTCUSDT as the exchange sends it (prices as strings, `x` the final flag)."""
    return {
        "e": "kline", "E": open_ms, "s": "BTCUSDT",
        "k": {"t": open_ms, "T": open_ms + MINUTE - 1, "s": "BTCUSDT", "i": interval, "o": "1.0", "c": "1.5",
              "h": "2.0", "l": "0.5", "v": "10.0", "x": final},
    }  # fmt: skip


async def test_a_final_push_closes_a_candle_at_its_end_and_a_forming_one_never_does(
    venue: FakeVenue, tmp_path: Path
) -> None:
    clock = ManualClock(T0 + 10_000)
    feed = CcxtFeed("binance", SYMBOLS, M1, clock, settings=settings_for(venue, tmp_path), start_ms=T0)
    feed._client = client = venue_client(venue, "pro")  # markets as the venue lists them
    feed._read_raw_klines(client)
    ws = client.client(venue.ws_url)  # a connection object, never dialled: pushes are handed to it below
    try:
        await client.load_markets()
        # Flagged final but read long before the candle's end (a clock far behind): not taken as the close.
        client.handle_message(ws, kline_push(T0, final=True))
        assert feed._closed["BTC/USDT"] == {} and feed.closes_by_flag == 0
        await clock.advance(50_000)  # T0 + 1 min: the candle's end
        # Without the exchange's final flag a lone update proves nothing, whenever it comes.
        client.handle_message(ws, kline_push(T0, final=False))
        assert feed._closed["BTC/USDT"] == {}
        client.handle_message(ws, kline_push(T0, final=True))
        client.handle_message(ws, kline_push(T0, final=True))  # the same close pushed twice
        assert feed._closed["BTC/USDT"] == {T0: ClosedCandle(1.0, 2.0, 0.5, 1.5, 10.0)}
        assert feed.closes_by_flag == 1 and feed.raw_klines == 4
        # ccxt's own candle cache is kept as its handler keeps it, though ccxt never parsed these pushes.
        assert [list(r) for r in client.ohlcvs["BTC/USDT"]["1m"]] == [[T0, 1.0, 2.0, 0.5, 1.5, 10.0]]
        # A stream the feed does not read (another interval) is left to ccxt.
        client.handle_message(ws, kline_push(T0, final=True, interval="5m"))
        assert feed.raw_klines == 4 and [list(r) for r in client.ohlcvs["BTC/USDT"]["5m"]] == [
            [T0, 1.0, 2.0, 0.5, 1.5, 10.0]
        ]
    finally:
        await client.close()


async def test_a_duplicated_close_is_delivered_once(venue: FakeVenue, tmp_path: Path) -> None:
    feed = CcxtFeed("binance", SYMBOLS, M1, venue.clock, settings=settings_for(venue, tmp_path))
    async with Consumer(feed, venue) as c:
        await ready(venue)
        venue.duplicate_next(4)  # the closes and the new candles of both streams, each sent twice
        await venue.step(30)
        assert_bar(await c.next(), T0)
        await venue.step(60)
        assert_bar(await c.next(), T0 + MINUTE)
        await c.assert_idle()
        closes = [d.message["k"]["t"] for d in venue.kline_messages("BTC/USDT", closed=True)]
        assert closes.count(T0) == 2  # ccxt did see the close twice
        assert c.times() == [T0, T0 + MINUTE]


async def test_a_dropped_socket_gets_the_missed_closes_from_rest_in_order_before_the_next_bar(
    venue: FakeVenue, tmp_path: Path
) -> None:
    feed = CcxtFeed("binance", SYMBOLS, M1, venue.clock, settings=settings_for(venue, tmp_path))
    async with Consumer(feed, venue) as c:
        await ready(venue)
        await venue.step(30)
        assert_bar(await c.next(), T0)

        venue.refuse_sockets()  # the cut lasts: redials fail until restored
        venue.drop_sockets()
        venue.clock.advance(150)  # 12:03:30: the 12:01 and 12:02 candles closed while nobody listened
        assert_bar(await c.next(), T0 + MINUTE)
        assert_bar(await c.next(), T0 + 2 * MINUTE)
        assert c.arrivals[1:] == [T0 + 210_000] * 2  # at once, the clock did not have to move
        assert feed.rest_calls == 2  # one klines page per symbol held both missed closes
        assert venue.kline_messages(closed=True)[-1].message["k"]["t"] == T0  # the socket never sent them

        # Both watchers back off on the clock (plus the bar timer) before the cut ends: a refusal that ccxt read
        # after the next step would start a backoff past that step, and the redial would wait for a later one.
        await until(lambda: venue.clock.sleepers() == 3)
        venue.refuse_sockets(False)
        await venue.step(30)  # 12:04:00: the feed redials (its backoff is over) and resubscribes
        await ready(venue)
        await venue.step(5)  # the 12:03 close came before the new connection: REST has it by the grace
        assert_bar(await c.next(), T0 + 3 * MINUTE)
        calls = feed.rest_calls
        await venue.step(55)  # 12:05:00: the new connection confirms the 12:04 close by itself
        assert_bar(await c.next(), T0 + 4 * MINUTE)
        assert feed.rest_calls == calls and venue.connections_opened >= 2
        assert c.times() == [T0 + k * MINUTE for k in range(5)]  # in order, each bar once


async def test_a_stalled_socket_falls_back_to_rest_after_the_grace_and_recovers(
    venue: FakeVenue, tmp_path: Path
) -> None:
    feed = CcxtFeed("binance", SYMBOLS, M1, venue.clock, settings=settings_for(venue, tmp_path))
    async with Consumer(feed, venue) as c:
        await ready(venue)
        venue.stall_candles()  # the socket stays up but sends no kline; REST still answers
        await venue.step(30)
        await c.assert_idle()  # the socket gets the grace
        await venue.step(GRACE_MS / 1000)
        assert_bar(await c.next(), T0)
        await venue.step(60)
        assert_bar(await c.next(), T0 + MINUTE)
        assert c.arrivals == [T0 + MINUTE + GRACE_MS, T0 + 2 * MINUTE + GRACE_MS]
        assert feed.rest_calls == 4

        venue.resume_candles()
        await venue.step(55)  # 12:03:00: the stream is back; its 12:02 close is confirmed by the 12:03 candle
        assert_bar(await c.next(), T0 + 2 * MINUTE)
        assert c.arrivals[-1] == T0 + 3 * MINUTE and feed.rest_calls == 4
        assert c.times() == [T0, T0 + MINUTE, T0 + 2 * MINUTE]


async def test_a_stream_that_resumes_after_missing_a_close_does_not_pass_a_forming_candle_off_as_closed(
    venue: FakeVenue, tmp_path: Path
) -> None:
    feed = CcxtFeed("binance", ("BTC/USDT",), M1, venue.clock, settings=settings_for(venue, tmp_path))
    async with Consumer(feed, venue) as c:
        await ready(venue, ("BTC/USDT",))  # ccxt holds the 12:00 candle as it was at 12:00:30
        venue.stall_candles()
        await venue.step(30)  # the 12:00 close is never pushed
        venue.resume_candles()
        await venue.step(2)  # 12:01:02: the stream goes on with the 12:01 candle
        await c.assert_idle()  # the next candle alone does not make the stale 12:00 one final
        await venue.step(3)
        assert_bar(await c.next(), T0, ("BTC/USDT",))  # the final one, from REST at the grace
        assert feed.rest_calls == 1


async def test_a_restarted_feed_fills_the_bars_it_missed_from_rest_before_the_next_live_one(
    venue: FakeVenue, tmp_path: Path
) -> None:
    settings = settings_for(venue, tmp_path)
    first = CcxtFeed("binance", SYMBOLS, M1, venue.clock, settings=settings)
    async with Consumer(first, venue) as c:
        await ready(venue)
        await venue.step(30)
        assert_bar(await c.next(), T0)

    venue.clock.advance(90)  # 12:02:30: down for two closes
    restarted = CcxtFeed("binance", SYMBOLS, M1, venue.clock, settings=settings, start_ms=T0 + MINUTE)
    async with Consumer(restarted, venue) as c:
        assert_bar(await c.next(), T0 + MINUTE)  # from REST, without waiting for the clock
        await ready(venue)
        await venue.step(30)
        assert_bar(await c.next(), T0 + 2 * MINUTE)  # the socket's
        assert restarted.rest_calls == 2
        assert c.times() == [T0 + MINUTE, T0 + 2 * MINUTE]
    stored = service.open_store(settings).read("binance", "BTC/USDT", "1m")
    assert stored.timestamp.tolist() == [T0, T0 + MINUTE, T0 + 2 * MINUTE]


# ---------------------------------------------------------------- REST


async def test_without_websocket_rest_is_polled_at_each_close_and_a_429_is_retried_after_its_backoff(
    venue: FakeVenue, tmp_path: Path
) -> None:
    settings = settings_for(venue, tmp_path, has={"watchOHLCV": False})  # an exchange with no kline stream
    feed = CcxtFeed("binance", ("BTC/USDT",), M1, venue.clock, settings=settings)
    klines = lambda: len(venue.requests_to("/api/v3/klines"))  # noqa: E731
    async with Consumer(feed, venue) as c:
        await until(lambda: venue.clock.sleepers() == 1)  # the feed waits for the close on the clock
        venue.fail_next(1, 429, path="/api/v3/klines")
        await venue.step(30)
        await until(lambda: klines() == 1 and venue.clock.sleepers() == 1)  # refused, now backing off
        await venue.step(0.999)  # the venue asked for 1 s (Retry-After), more than the 0.5 s backoff
        await c.assert_idle()
        assert klines() == 1
        await venue.step(0.001)
        assert_bar(await c.next(), T0, ("BTC/USDT",))
        assert klines() == 2 and c.arrivals == [T0 + MINUTE + 1_000]

        await venue.step(59)  # 12:02:00: polled at the close itself
        assert_bar(await c.next(), T0 + MINUTE, ("BTC/USDT",))
        assert klines() == 3 and c.arrivals[-1] == T0 + 2 * MINUTE
    assert venue.subscriptions() == set() and venue.connections_opened == 0


async def test_when_retries_run_out_the_bar_waits_for_the_next_close_and_then_comes_in_order(
    venue: FakeVenue, tmp_path: Path
) -> None:
    settings = settings_for(venue, tmp_path, retries=2, has={"watchOHLCV": False})
    feed = CcxtFeed("binance", ("BTC/USDT",), M1, venue.clock, settings=settings)
    klines = lambda: len(venue.requests_to("/api/v3/klines"))  # noqa: E731
    async with Consumer(feed, venue) as c:
        await until(lambda: venue.clock.sleepers() == 1)
        venue.fail_next(3, 503, path="/api/v3/klines")
        await venue.step(30)  # 12:01:00: fails, retried after 0.5 s and 1 s (virtual): three attempts in all
        await until(lambda: klines() == 1 and venue.clock.sleepers() == 1)
        await venue.step(0.5)
        await until(lambda: klines() == 2 and venue.clock.sleepers() == 1)
        await venue.step(1.0)
        await until(lambda: klines() == 3 and venue.clock.sleepers() == 1)  # gave up until the next close
        await venue.step(58.499)
        await c.assert_idle()
        assert klines() == 3  # no busy loop while the exchange is down
        await venue.step(0.001)  # 12:02:00: the exchange answers again; both closes, oldest first
        assert_bar(await c.next(), T0, ("BTC/USDT",))
        assert_bar(await c.next(), T0 + MINUTE, ("BTC/USDT",))
        assert klines() == 4 and c.arrivals == [T0 + 2 * MINUTE] * 2


def test_history_is_the_last_closed_bars_as_rest_serves_them_and_then_comes_from_the_store(
    venue: FakeVenue, tmp_path: Path
) -> None:
    settings = settings_for(venue, tmp_path)
    feed = CcxtFeed("binance", SYMBOLS, M1, venue.clock, settings=settings)
    window = feed.history(5)
    assert [b.timestamp for b in window] == [T0 - k * MINUTE for k in range(5, 0, -1)]  # before the forming bar
    rest = make_exchange("binance", settings)
    for s in SYMBOLS:
        rows = rest.fetch_ohlcv(s, "1m", since=T0 - 5 * MINUTE, limit=5)
        assert [[b.timestamp, *astuple(b.candles[s])] for b in window] == rows
    served = len(venue.requests_to("/api/v3/klines"))
    assert feed.history(5) == window
    assert len(venue.requests_to("/api/v3/klines")) == served  # the second time from the store
    asyncio.run(feed.aclose())


# ---------------------------------------------------------------- paper sessions


async def test_a_paper_session_on_binance_trades_live_candles_and_sends_no_signed_request(
    venue: FakeVenue, tmp_path: Path
) -> None:
    # Keys in the server's exchange options and in the request: paper must use neither.
    settings = settings_for(venue, tmp_path, apiKey="server-key", secret="server-secret")
    config = LiveConfig(
        strategy_name="BuyAndHold", symbols=list(SYMBOLS), timeframe="1m", exchange="binance",
        exchange_config={"apiKey": "request-key", "secret": "request-secret"},
    )  # fmt: skip
    plan = await asyncio.to_thread(prepare_paper, config, clock=venue.clock, settings=settings)
    assert isinstance(plan.feed, CcxtFeed) and not plan.replay
    assert [b.timestamp for b in plan.history] == [T0 - k * MINUTE for k in range(plan.session.window, 0, -1)]
    arrived: asyncio.Queue[int] = asyncio.Queue()

    def on_bar(_session: PaperSession, batch: BarBatch) -> None:
        arrived.put_nowait(batch.timestamp)

    task = asyncio.get_running_loop().create_task(
        run_session(plan.session, plan.feed, history=plan.history, on_bar=on_bar, max_bars=3)
    )
    try:
        await ready(venue)
        for k, step in enumerate((30, 60, 60)):
            await venue.step(step)
            assert await asyncio.wait_for(arrived.get(), SAFETY_S) == T0 + k * MINUTE
        assert await asyncio.wait_for(task, SAFETY_S) == 3
    finally:
        task.cancel()
        await plan.feed.aclose()

    result = plan.session.result()
    filled = result.orders[result.orders[:, O_STATUS] == STATUS_FILLED]
    assert len(filled) == 2  # bought both symbols at the open of the bar after the first decision
    assert all(p.size > 0 for p in result.positions)
    assert venue.requests_to("/api/v3/klines") and venue.requests_to("/api/v3/exchangeInfo")
    assert venue.credentialed_requests() == []

    # The check can see a signed request: a client with keys asking for a balance is caught.
    signed = venue_client(venue, "async", apiKey="k", secret="s")
    try:
        with pytest.raises(ccxt.ExchangeNotAvailable):  # the venue has no account route; the request is what counts
            await signed.fetch_balance()
    finally:
        await signed.close()
    assert [(m, p) for m, p, _ in venue.credentialed_requests()] == [("GET", "/api/v3/account")]


def test_an_unknown_exchange_is_refused_with_suggestions(tmp_path: Path) -> None:
    config = LiveConfig(strategy_name="BuyAndHold", symbols=["BTC/USDT"], timeframe="1m", exchange="binanse")
    with pytest.raises(UnknownExchangeError, match=r"Unknown exchange 'binanse'\. Did you mean binance"):
        prepare_paper(config, clock=FakeVenue().clock, settings=Settings(data_dir=tmp_path))


async def test_a_session_whose_exchange_stalls_is_degraded_stale_data_and_recovers_when_candles_return(
    venue: FakeVenue, tmp_path: Path
) -> None:
    from cracktrader.runs.sessions import SessionRegistry

    settings = settings_for(venue, tmp_path)
    registry = SessionRegistry(settings, clock=venue.clock)
    config = LiveConfig(strategy_name="BuyAndHold", symbols=list(SYMBOLS), timeframe="1m", exchange="binance")
    run_id = (await registry.start(config))["run_id"]
    run = registry.runs[run_id]
    session = run.plan.session
    try:
        await ready(venue)
        await venue.step(30)  # 12:01:00: the 12:00 candle closes
        await until(lambda: session.last_timestamp == T0)
        assert run.snapshot()["condition"] == "ok"
        venue.stall_candles(rest=True)  # the market's data freezes: the socket goes quiet, REST stops moving
        await venue.step(60 + 30)  # 12:02:30: REST gave the 12:01 candle as it froze; nothing after it comes
        await until(lambda: session.last_timestamp == T0 + MINUTE)
        await venue.step(60)  # 12:03:30: no close for a timeframe plus 30 s (the last, 12:01, closed at 12:02)
        assert run.snapshot()["condition"] == "ok"
        await venue.step(1)
        late = run.snapshot()
        assert (late["condition"], late["reasons"], late["data_lag_seconds"]) == ("degraded", ["STALE_DATA"], 31.0)
        venue.resume_candles()
        await venue.step(30)  # 12:04:01: candles flow again; the missed closes come in order
        await until(lambda: session.last_timestamp == T0 + 3 * MINUTE)
        fresh = run.snapshot()
        assert (fresh["condition"], fresh["reasons"]) == ("ok", [])
        assert fresh["last_candle_time"] == "2024-06-01T12:03:00Z"
    finally:
        await registry.close()
