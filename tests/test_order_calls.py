"""Order calls on the real ccxt.pro client against the misbehaving fake venue: an ambiguous order is never re-sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import ccxt
import pytest

from cracktrader.brokers.orders import ManagedOrder
from cracktrader.clock import ManualClock
from cracktrader.exchanges.order_calls import OrderCalls, Outcome, classify, reason_code
from cracktrader.exchanges.rate_gate import RateGate
from fakes.okx import OkxVenue, okx_client
from fakes.trading import TradingVenue, VenueTime, trading_client

pytestmark = pytest.mark.anyio

T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z
SYMBOL = "BTC/USDT"
SID = "BTCUSDT"
ORDER_PATH = "/api/v3/order"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[TradingVenue]:
    with TradingVenue(now_ms=T0 + 30_000) as server:
        yield server


@asynccontextmanager
async def calls_on(venue: TradingVenue, *, skew_ms: int = 0, **config: Any) -> AsyncIterator[OrderCalls]:
    """OrderCalls over a ccxt.pro client whose signing clock is skewed like the caller's and honours timeDifference."""
    client = trading_client(venue, "pro", skew_ms=skew_ms, **config)
    # ccxt's own nonce is milliseconds() - timeDifference; trading_client replaced it, so put the offset back in.
    client.nonce = lambda: venue.clock.now_ms() + skew_ms - int(client.options.get("timeDifference", 0))
    clock = VenueTime(venue, skew_ms)
    try:
        await client.load_markets()
        yield OrderCalls(client, "binance", clock, RateGate(clock))
    finally:
        await client.close()


@contextmanager
def short_timeout(calls: OrderCalls, ms: int = 300) -> Iterator[None]:
    """A short ccxt timeout for one held answer only (300 ms of real time, not 5 s); the other calls keep 5 s."""
    before, calls.client.timeout = calls.client.timeout, ms
    try:
        yield
    finally:
        calls.client.timeout = before


def sleeps(calls: OrderCalls) -> list[int]:
    clock = calls.clock
    assert isinstance(clock, VenueTime)
    return clock.sleeps


def order(cid: str = "tagabcde1", *, kind: Any = "limit", amount: float = 0.01, price: float | None = 30_000.0) -> Any:
    return ManagedOrder(cid, "binance", SYMBOL, "buy", kind, amount, T0, price=price)


def posts(venue: TradingVenue) -> int:
    """Order requests that reached the venue."""
    return sum(1 for _, method, path in venue.site_log if (method, path) == ("POST", ORDER_PATH))


# ---------------------------------------------------------------- classification


CLASSES: list[tuple[BaseException, Outcome, str]] = [
    (ccxt.InsufficientFunds("x"), Outcome.REJECTED, "INSUFFICIENT_FUNDS"),
    (ccxt.InvalidOrder("x"), Outcome.REJECTED, "INVALID_ORDER"),
    (ccxt.OrderNotFound("x"), Outcome.REJECTED, "INVALID_ORDER"),
    (ccxt.DuplicateOrderId("x"), Outcome.REJECTED, "INVALID_ORDER"),
    (ccxt.OrderImmediatelyFillable("x"), Outcome.REJECTED, "INVALID_ORDER"),
    (ccxt.OrderNotFillable("x"), Outcome.REJECTED, "INVALID_ORDER"),
    (ccxt.BadRequest("x"), Outcome.REJECTED, "BAD_REQUEST"),
    (ccxt.BadSymbol("x"), Outcome.REJECTED, "BAD_SYMBOL"),
    (ccxt.AuthenticationError("x"), Outcome.REJECTED, "AUTH_FAILED"),
    (ccxt.AccountSuspended("x"), Outcome.REJECTED, "AUTH_FAILED"),
    (ccxt.PermissionDenied("x"), Outcome.REJECTED, "PERMISSION_DENIED"),
    (ccxt.AccountNotEnabled("x"), Outcome.REJECTED, "PERMISSION_DENIED"),
    (ccxt.RateLimitExceeded("binance 429 Too Many Requests"), Outcome.REJECTED, "RATE_LIMITED"),
    (ccxt.DDoSProtection("binance 429 Too Many Requests {}"), Outcome.REJECTED, "RATE_LIMITED"),
    (
        ccxt.DDoSProtection('binance 418 I\'m a Teapot {"msg":"banned until 1717243200418"}'),
        Outcome.REJECTED,
        "RATE_BANNED",
    ),
    (ccxt.InvalidNonce("x"), Outcome.RESYNC, "CLOCK_SKEW"),
    (ccxt.ChecksumError("x"), Outcome.UNKNOWN, "NETWORK_ERROR"),  # an InvalidNonce subclass that is no clock error
    (ccxt.RequestTimeout("x"), Outcome.UNKNOWN, "REQUEST_TIMEOUT"),
    (ccxt.ExchangeNotAvailable("x"), Outcome.UNKNOWN, "EXCHANGE_NOT_AVAILABLE"),
    (ccxt.OnMaintenance("x"), Outcome.UNKNOWN, "EXCHANGE_NOT_AVAILABLE"),
    (ccxt.NetworkError("x"), Outcome.UNKNOWN, "NETWORK_ERROR"),
    (ccxt.OperationFailed("x"), Outcome.UNKNOWN, "OPERATION_FAILED"),
    (ccxt.BadResponse("x"), Outcome.UNKNOWN, "BAD_RESPONSE"),
    (ccxt.NullResponse("x"), Outcome.UNKNOWN, "BAD_RESPONSE"),
    (ccxt.ExchangeError("x"), Outcome.UNKNOWN, "UNKNOWN_OUTCOME"),
    (ccxt.NotSupported("x"), Outcome.UNKNOWN, "UNKNOWN_OUTCOME"),
    (ccxt.OperationRejected("x"), Outcome.UNKNOWN, "UNKNOWN_OUTCOME"),
    (ccxt.BaseError("x"), Outcome.UNKNOWN, "UNKNOWN_OUTCOME"),
    (asyncio.CancelledError(), Outcome.UNKNOWN, "CANCELLED"),
    (TimeoutError(), Outcome.UNKNOWN, "REQUEST_TIMEOUT"),
    (ValueError("could not parse"), Outcome.UNKNOWN, "UNKNOWN_OUTCOME"),
    (KeyError("orderId"), Outcome.UNKNOWN, "UNKNOWN_OUTCOME"),
]


@pytest.mark.parametrize(("exc", "outcome", "code"), CLASSES, ids=[f"{type(e).__name__}-{c}" for e, _, c in CLASSES])
def test_each_error_class_is_classified_from_the_specific_to_the_general(
    exc: BaseException, outcome: Outcome, code: str
) -> None:
    assert (classify(exc), reason_code(exc)) == (outcome, code)


# ---------------------------------------------------------------- accepted and rejected


async def test_a_limit_order_is_accepted_and_carries_its_client_id_to_the_venue(venue: TradingVenue) -> None:
    async with calls_on(venue) as calls:
        result = await calls.create(order("tagabcde1"))
        assert result.outcome is Outcome.ACCEPTED and result.order is not None
        assert (result.order["clientOrderId"], result.order["status"]) == ("tagabcde1", "open")
        assert venue.requests_to(ORDER_PATH)[-1]["newClientOrderId"] == "tagabcde1"
        found = await calls.lookup(SYMBOL, "tagabcde1")
        assert found is not None and found["id"] == result.order["id"]
        assert [o["clientOrderId"] for o in await calls.open_orders(SYMBOL)] == ["tagabcde1"]
        assert (await calls.cancel(SYMBOL, "tagabcde1") or {}).get("status") == "canceled"
        assert await calls.cancel(SYMBOL, "tagabcde1") is None  # already gone
        assert await calls.lookup(SYMBOL, "nobody") is None
        assert (await calls.balance())["USDT"]["free"] == 100_000.0


@pytest.mark.parametrize(
    ("amount", "price", "code"),
    [
        (5.0, None, "INSUFFICIENT_FUNDS"),  # a market buy of 5 BTC costs ~215k USDT; the account holds 100k
        (0.0001, 30_000.0, "BAD_REQUEST"),  # 3 USDT is under the 5 USDT minimum notional: -1013 NOTIONAL
    ],
)
async def test_an_order_the_venue_refuses_is_rejected_with_its_reason(
    venue: TradingVenue, amount: float, price: float | None, code: str
) -> None:
    async with calls_on(venue) as calls:
        result = await calls.create(order(kind="market" if price is None else "limit", amount=amount, price=price))
    assert (result.outcome, result.code, result.order) == (Outcome.REJECTED, code, None)
    assert (posts(venue), len(venue.account.orders)) == (1, 0)


async def test_a_quantity_under_the_lot_step_is_rejected_without_a_request(venue: TradingVenue) -> None:
    async with calls_on(venue) as calls:
        result = await calls.create(order(amount=0.000001))  # ccxt truncates it to 0 and refuses it itself
    assert (result.outcome, result.code) == (Outcome.REJECTED, "INVALID_ORDER")
    assert posts(venue) == 0


async def test_a_client_id_already_open_is_rejected_by_the_venue_as_an_invalid_order(venue: TradingVenue) -> None:
    async with calls_on(venue) as calls:
        assert (await calls.create(order("tagabcde2"))).outcome is Outcome.ACCEPTED
        again = await calls.create(order("tagabcde2"))
    assert (again.outcome, again.code) == (Outcome.REJECTED, "INVALID_ORDER")
    assert "Duplicate order sent" in (again.message or "")
    assert len(venue.account.orders) == 1


async def test_stop_orders_are_not_sent(venue: TradingVenue) -> None:
    stop = ManagedOrder("tagabcde3", "binance", SYMBOL, "sell", "stop", 0.01, T0, stop=20_000.0)
    async with calls_on(venue) as calls:
        with pytest.raises(ValueError, match="only market and limit"):
            await calls.create(stop)
    assert posts(venue) == 0


# ---------------------------------------------------------------- ambiguous outcomes


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("accept_then_timeout", "REQUEST_TIMEOUT"),
        ("accept_then_503", "EXCHANGE_NOT_AVAILABLE"),
        ("accept_then_1007", "REQUEST_TIMEOUT"),
    ],
)
async def test_an_order_accepted_then_answered_ambiguously_is_unknown_sent_once_and_located(
    venue: TradingVenue, fault: str, code: str
) -> None:
    getattr(venue, fault)()
    async with calls_on(venue) as calls:
        with short_timeout(calls):
            result = await calls.create(order("tagabcde4"))
        assert (result.outcome, result.code) == (Outcome.UNKNOWN, code)
        assert (posts(venue), len(venue.account.orders)) == (1, 1)  # never re-sent
        found = await calls.locate(SYMBOL, "tagabcde4")
    assert found is not None and (found["clientOrderId"], found["status"]) == ("tagabcde4", "open")
    assert sleeps(calls) == [500]  # found on the first lookup


async def test_an_order_refused_with_503_is_unknown_and_absent_after_31_5_s_of_lookups(venue: TradingVenue) -> None:
    venue.refuse_with_503()
    async with calls_on(venue) as calls:
        result = await calls.create(order("tagabcde5"))
        assert (result.outcome, result.code) == (Outcome.UNKNOWN, "EXCHANGE_NOT_AVAILABLE")
        assert await calls.locate(SYMBOL, "tagabcde5") is None
    assert (posts(venue), len(venue.account.orders)) == (1, 0)
    assert sleeps(calls) == [500, 1000, 2000, 4000, 8000, 16000] and sum(sleeps(calls)) == 31_500
    assert len(venue.requests_to("/api/v3/openOrders")) == 1  # the last resort after the lookups


async def test_an_order_hidden_for_3_s_is_located_on_a_later_lookup(venue: TradingVenue) -> None:
    venue.hide_next_order(3)
    venue.accept_then_timeout()
    async with calls_on(venue) as calls:
        with short_timeout(calls):
            result = await calls.create(order("tagabcde6"))
        assert result.outcome is Outcome.UNKNOWN
        found = await calls.locate(SYMBOL, "tagabcde6")
    assert found is not None and found["clientOrderId"] == "tagabcde6"
    assert sleeps(calls) == [500, 1000, 2000]  # 0.5 s and 1.5 s in, it is still hidden; 3.5 s in, it shows
    assert len(venue.account.orders) == 1


async def test_a_lookup_that_fails_on_the_network_counts_as_not_found_yet(venue: TradingVenue) -> None:
    async with calls_on(venue) as calls:
        assert (await calls.create(order("tagabcde7"))).outcome is Outcome.ACCEPTED
        venue.fail_next(2, 503, path=ORDER_PATH)
        found = await calls.locate(SYMBOL, "tagabcde7")
    assert found is not None and sleeps(calls) == [500, 1000, 2000]


# ---------------------------------------------------------------- the clock


async def test_a_clock_3_s_ahead_is_refused_then_resynchronised_and_the_order_sent_exactly_once_more(
    venue: TradingVenue,
) -> None:
    async with calls_on(venue, skew_ms=3_000) as calls:
        result = await calls.create(order("tagabcde8"))
        assert result.outcome is Outcome.ACCEPTED
        assert (calls.offset_ms, calls.client.options["timeDifference"]) == (-3_000, 3_000)
    assert (posts(venue), len(venue.account.orders)) == (2, 1)  # the refused send, then the one that went through


async def test_a_clock_still_refused_after_the_resync_is_rejected_and_not_sent_a_third_time(
    venue: TradingVenue,
) -> None:
    async with calls_on(venue, skew_ms=3_000) as calls:
        calls.client.nonce = lambda: venue.clock.now_ms() + 3_000  # a client that ignores timeDifference
        result = await calls.create(order("tagabcdec"))
    assert (result.outcome, result.code) == (Outcome.REJECTED, "CLOCK_SKEW")
    assert (posts(venue), len(venue.account.orders)) == (2, 0)


@pytest.mark.parametrize("skew_ms", [3_000, -3_000])
async def test_the_clock_offset_is_the_median_of_samples_against_the_server_time(
    venue: TradingVenue, skew_ms: int
) -> None:
    async with calls_on(venue, skew_ms=skew_ms) as calls:
        assert await calls.measure_clock_offset() == -skew_ms
    assert len(venue.requests_to("/api/v3/time")) == 5


# ---------------------------------------------------------------- 429 and 418


async def test_a_429_rejects_the_order_and_the_next_send_waits_retry_after(venue: TradingVenue) -> None:
    venue.rate_limit_next(1, retry_after_s=7, path=ORDER_PATH)
    async with calls_on(venue) as calls:
        result = await calls.create(order("tagabcde9"))
        assert (result.outcome, result.code) == (Outcome.REJECTED, "RATE_LIMITED")
        assert calls.gate is not None and (calls.gate.blocked_ms(), calls.gate.banned) == (7_000, False)
        assert len(venue.account.orders) == 0
        again = await calls.create(order("tagabcde9"))
    assert again.outcome is Outcome.ACCEPTED
    assert sleeps(calls) == [7_000]


async def test_a_418_bans_and_the_next_create_is_refused_without_a_request(venue: TradingVenue) -> None:
    async with calls_on(venue) as calls:
        venue.ban(300)  # binance's Retry-After (300 s), not the gate's 120 s default
        result = await calls.create(order("tagabcdea"))
        assert (result.outcome, result.code) == (Outcome.REJECTED, "RATE_BANNED")
        gate = calls.gate
        assert gate is not None and gate.banned and gate.blocked_ms() == 300_000
        seen = len(venue.site_log)
        refused = await calls.create(order("tagabcdeb"))
        assert (refused.outcome, refused.code) == (Outcome.REJECTED, "RATE_BANNED")
        assert len(venue.site_log) == seen  # nothing reached the venue
        assert await calls.balance()  # a read waits the ban out instead
    assert sleeps(calls) == [300_000] and len(venue.account.orders) == 0


# ---------------------------------------------------------------- trades


async def test_trades_are_paginated_by_trade_id_and_returned_once_each(venue: TradingVenue) -> None:
    async with calls_on(venue) as calls:
        for n in range(5):
            await calls.create(order(f"tagabcdf{n}", kind="market", amount=0.001, price=None))
            venue.advance(1_000)
        first = venue.account.trades[0]
        trades = await calls.trades(SYMBOL, first.time, page_limit=2)
    assert [int(t["id"]) for t in trades] == [t.id for t in venue.account.trades]
    assert len(trades) == 5
    pages = venue.requests_to("/api/v3/myTrades")
    assert [p.get("startTime") for p in pages] == [str(first.time), None, None]
    assert [p.get("fromId") for p in pages] == [None, str(venue.account.trades[2].id), str(venue.account.trades[4].id)]


# ---------------------------------------------------------------- what never leaves create


class _RaisingClient:
    """A client whose create_order raises `exc`: for what the venue cannot provoke on demand."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.options: dict[str, Any] = {}

    async def create_order(self, *args: Any) -> Any:
        raise self.exc


async def test_a_cancelled_send_propagates_and_an_unparsable_answer_is_unknown() -> None:
    clock = ManualClock(T0, auto=True)
    with pytest.raises(asyncio.CancelledError):
        await OrderCalls(_RaisingClient(asyncio.CancelledError()), "binance", clock).create(order())
    result = await OrderCalls(_RaisingClient(ValueError("Expecting value")), "binance", clock).create(order())
    assert (result.outcome, result.code, result.message) == (Outcome.UNKNOWN, "UNKNOWN_OUTCOME", "Expecting value")


# ---------------------------------------------------------------- the gate alone


async def test_the_gate_defaults_to_1_s_for_a_429_and_120_s_for_a_418_and_reads_retry_after_in_any_case() -> None:
    clock = ManualClock(T0, auto=True)
    gate = RateGate(clock)
    gate.note(ccxt.RateLimitExceeded("binance 429 Too Many Requests"), None)
    assert (gate.blocked_ms(), gate.banned) == (1_000, False)
    gate.note(ccxt.DDoSProtection("binance 429 Too Many Requests"), {"retry-after": "3"})
    assert gate.blocked_ms() == 3_000
    gate.note(ccxt.InvalidOrder("not a rate limit"), {"Retry-After": "60"})
    assert gate.blocked_ms() == 3_000
    await gate.wait()
    assert (clock.now_ms(), gate.blocked_ms()) == (T0 + 3_000, 0)
    gate.note(ccxt.DDoSProtection("binance 418 I'm a Teapot"), {})
    assert (gate.blocked_ms(), gate.banned) == (120_000, True)
    await gate.wait()
    assert not gate.banned and clock.now_ms() == T0 + 123_000


# ---------------------------------------------------------------- the other exchanges' paths


class _ListingClient:
    """Open orders and trades from lists, recording each call: the lookup and paging paths of non-binance ids."""

    def __init__(self, orders: list[dict[str, Any]], trades: list[dict[str, Any]]) -> None:
        self.orders = orders
        self.all_trades = trades
        self.calls: list[tuple[str, Any, Any]] = []
        self.options: dict[str, Any] = {}

    async def fetch_open_orders(self, symbol: str, since: Any = None, limit: Any = None, params: Any = None) -> Any:
        self.calls.append(("fetch_open_orders", symbol, params))
        return self.orders

    async def fetch_my_trades(self, symbol: str, since: int | None, limit: int, params: Any) -> Any:
        self.calls.append(("fetch_my_trades", since, params))
        return [t for t in self.all_trades if since is None or t["timestamp"] >= since][:limit]


async def test_bybit_finds_an_order_among_the_open_ones_by_its_order_link_id() -> None:
    orders = [
        {"id": "1", "clientOrderId": None, "info": {"orderLinkId": "someone"}},
        {"id": "2", "clientOrderId": None, "info": {"orderLinkId": "tagabcde1"}},
    ]
    client = _ListingClient(orders, [])
    calls = OrderCalls(client, "bybit", ManualClock(T0, auto=True))
    found = await calls.lookup(SYMBOL, "tagabcde1")
    assert found is not None and found["id"] == "2"
    assert client.calls == [("fetch_open_orders", SYMBOL, {"orderLinkId": "tagabcde1"})]
    assert await calls.lookup(SYMBOL, "tagabcdez") is None


async def test_trades_page_by_time_elsewhere_and_skip_the_repeats_at_each_page_boundary() -> None:
    trades = [{"id": f"t{n}", "timestamp": T0 + 1_000 * (n // 2)} for n in range(7)]  # two trades a second
    client = _ListingClient([], trades)
    calls = OrderCalls(client, "kucoin", ManualClock(T0, auto=True))
    got = await calls.trades(SYMBOL, T0, page_limit=3)
    assert [t["id"] for t in got] == [f"t{n}" for n in range(7)]
    assert [since for _, since, _ in client.calls] == [T0, T0 + 1_000, T0 + 2_000, T0 + 3_000]


async def test_okx_fills_page_back_by_bill_id_and_come_once_each_even_within_one_millisecond() -> None:
    with OkxVenue(now_ms=T0 + 30_000) as okx:
        resting = okx.add_external_order(SYMBOL, "BUY", "0.25", "30000", client_id="web1")
        for _ in range(250):  # 250 fills at the same virtual millisecond: a page boundary cannot be a time
            okx.fill_order(resting.order_id, SYMBOL, qty="0.001")
        client = okx_client(okx)
        try:
            await client.load_markets()
            calls = OrderCalls(client, "okx", VenueTime(okx))
            trades = await calls.trades(SYMBOL, T0)
        finally:
            await client.close()
    assert sorted(int(t["id"]) for t in trades) == [t.id for t in okx.account.trades]
    pages = [p for m, path, p in okx.request_log if path == "/api/v5/trade/fills-history"]
    assert [p.get("after") for p in pages] == [None, str(okx._bill(okx.account.trades[150])),
                                               str(okx._bill(okx.account.trades[50]))]  # fmt: skip
    assert {p["begin"] for p in pages} == {str(T0)}
