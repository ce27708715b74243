"""Live quotes from the fake venue through the real ccxt client: watch_ticker, and fetch_ticker while it is down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cracktrader.brokers.paper import PaperSession
from cracktrader.data.feeds.base import ClosedCandle
from cracktrader.data.feeds.quotes import CcxtQuoteFeed, Quote, QuotedFeed
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.records import O_PRICE, O_STATUS, STATUS_FILLED
from cracktrader.runs.config import LiveConfig
from cracktrader.runs.trade import prepare_paper
from cracktrader.settings import Settings
from cracktrader.strategies.builtin import BuyAndHold
from fakes.venue import FakeVenue

pytestmark = pytest.mark.anyio

T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z
SYMBOLS = ("BTC/USDT", "ETH/USDT")
SAFETY_S = 10.0  # a safety net only: every wait ends on an event


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[FakeVenue]:
    with FakeVenue(now_ms=T0 + 30_000) as server:
        yield server


def expected(venue: FakeVenue, symbol: str, source: str) -> Quote:
    """The venue's best bid and ask now, as the feed must hand them over."""
    ticker = venue.ticker(symbol.replace("/", ""))
    return Quote(symbol, float(ticker["bidPrice"]), float(ticker["askPrice"]), venue.now_ms, source)  # type: ignore[arg-type]


class Quotes:
    """Iterates a quote feed in a task."""

    def __init__(self, feed: CcxtQuoteFeed) -> None:
        self.feed = feed
        self.queue: asyncio.Queue[Quote] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Quotes:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        async for quote in self.feed:
            self.queue.put_nowait(quote)

    async def next(self, n: int = 1) -> dict[str, Quote]:
        """The next `n` quotes by symbol."""
        out: dict[str, Quote] = {}
        for _ in range(n):
            quote = await asyncio.wait_for(self.queue.get(), SAFETY_S)
            out[quote.symbol] = quote
        return out


def settings_for(venue: FakeVenue, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, exchange_options=venue.exchange_options(), ccxt_max_retries=0)


async def subscribed(venue: FakeVenue) -> None:
    for s in SYMBOLS:
        await venue.wait_subscribed(f"{s.replace('/', '').lower()}@ticker")
    await venue.settled()


async def test_watch_ticker_quotes_are_the_venues_best_bid_and_ask_as_the_clock_moves(
    venue: FakeVenue, tmp_path: Path
) -> None:
    feed = CcxtQuoteFeed("binance", SYMBOLS, venue.clock, settings=settings_for(venue, tmp_path))
    async with Quotes(feed) as quotes:
        await subscribed(venue)
        assert await quotes.next(2) == {s: expected(venue, s, "ws") for s in SYMBOLS}  # the snapshot at subscribe
        await venue.step(1.0)
        assert await quotes.next(2) == {s: expected(venue, s, "ws") for s in SYMBOLS}
        assert feed.rest_calls == 0 and all(feed.socket_up.values())
    assert venue.credentialed_requests() == []  # public data only


async def test_a_dropped_ticker_socket_falls_back_to_fetch_ticker_then_returns_to_the_socket(
    venue: FakeVenue, tmp_path: Path
) -> None:
    feed = CcxtQuoteFeed("binance", SYMBOLS, venue.clock, settings=settings_for(venue, tmp_path), poll_ms=1_000)
    async with Quotes(feed) as quotes:
        await subscribed(venue)
        await quotes.next(2)
        venue.refuse_sockets()  # redials fail until restored
        venue.drop_sockets()
        assert await quotes.next(2) == {s: expected(venue, s, "rest") for s in SYMBOLS}  # polled at once
        assert not any(feed.socket_up.values()) and feed.rest_calls == 2
        venue.clock.advance(1.0)  # a poll interval later: the redial is refused, REST answers again
        assert await quotes.next(2) == {s: expected(venue, s, "rest") for s in SYMBOLS}
        assert feed.rest_calls == 4
        venue.refuse_sockets(False)
        venue.clock.advance(1.0)  # the next redial gets through
        await subscribed(venue)
        fresh = await quotes.next(2)
        assert {q.source for q in fresh.values()} == {"ws"} and all(feed.socket_up.values())
        assert venue.connections_opened >= 2 and len(venue.requests_to("/api/v3/ticker/24hr")) == 4


async def test_a_paper_order_fills_at_the_venues_ask_one_latency_after_the_decision(
    venue: FakeVenue, tmp_path: Path
) -> None:
    m1 = parse_timeframe("1m")
    session = PaperSession(BuyAndHold(), ("BTC/USDT",), SimSettings(), m1.periods_per_year)
    session.use_quotes(200, venue.clock.now_ms)
    feed = CcxtQuoteFeed("binance", ("BTC/USDT",), venue.clock, settings=settings_for(venue, tmp_path))
    candle = ClosedCandle(1.0, 1.0, 1.0, 1.0, 1.0)
    async with Quotes(feed) as quotes:
        await venue.wait_subscribed("btcusdt@ticker")
        await venue.settled()
        session.on_quote((await quotes.next())["BTC/USDT"])
        session.on_bar(T0, {"BTC/USDT": candle})  # decides now: all in
        await venue.step(0.1)
        session.on_quote((await quotes.next())["BTC/USDT"])  # 100 ms later: too early
        await venue.step(0.1)
        seen = expected(venue, "BTC/USDT", "ws")
        session.on_quote((await quotes.next())["BTC/USDT"])
        await venue.step(0.1)
        session.on_quote((await quotes.next())["BTC/USDT"])
    session.on_bar(T0 + m1.ms, {"BTC/USDT": candle})
    (row,) = session.result().orders
    assert row[O_STATUS] == STATUS_FILLED and row[O_PRICE] == seen.ask


async def test_a_quote_session_on_a_ccxt_exchange_gets_its_market_rules_and_its_ticker(
    venue: FakeVenue, tmp_path: Path
) -> None:
    config = LiveConfig(
        strategy_name="SmaCross",
        symbols=["BTC/USDT", "ETH/USDT"],
        timeframe="1m",
        exchange="binance",
        exchange_config={"paper": {"fill_model": "quote", "latency_ms": 50}},
    )
    plan = prepare_paper(config, clock=venue.clock, settings=settings_for(venue, tmp_path))
    rules = plan.session.sim.s.rules
    assert rules is not None  # exchange_rules is on by default: the venue's exchangeInfo filters
    assert [(r.amount_precision, r.price_precision, r.min_notional) for r in rules] == [
        (1e-5, 0.01, 5.0),
        (1e-4, 0.01, 5.0),
    ]
    assert isinstance(plan.feed, QuotedFeed) and isinstance(plan.feed.quotes, CcxtQuoteFeed)
    assert plan.session.quotes is not None
    assert venue.credentialed_requests() == []
