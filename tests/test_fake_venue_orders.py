"""Trading on the fake venue (tests/fakes/trading.py) with the real ccxt client: orders, fills, streams, faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import pytest

from fakes.binance import candle
from fakes.trading import TradingVenue, sign, trading_client

pytestmark = pytest.mark.anyio

MINUTE = 60_000
T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z
SYMBOL = "BTC/USDT"
SID = "BTCUSDT"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[TradingVenue]:
    with TradingVenue(now_ms=T0 + 30_000) as server:  # half way through the 12:00 candle
        yield server


@pytest.fixture
def rest(venue: TradingVenue) -> Any:
    return trading_client(venue, "sync")


@asynccontextmanager
async def pro(venue: TradingVenue, **kwargs: Any) -> AsyncIterator[Any]:
    client = trading_client(venue, "pro", **kwargs)
    try:
        yield client
    finally:
        await client.close()


def best(venue: TradingVenue) -> tuple[Decimal, Decimal]:
    book = venue.book_ticker(SID)
    return Decimal(book["bidPrice"]), Decimal(book["askPrice"])


def free(venue: TradingVenue, asset: str) -> Decimal:
    return venue.account.balance(asset).free


# ---------------------------------------------------------------- keys, signatures, clock


def test_fetch_balance_returns_the_account_over_signed_rest(rest: Any) -> None:
    balance = rest.fetch_balance()
    assert balance["USDT"] == {"free": 100_000.0, "used": 0.0, "total": 100_000.0}
    assert balance["BTC"]["free"] == 1.0


def test_wrong_secret_is_refused_with_1022(venue: TradingVenue) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        trading_client(venue, "sync", secret="not-the-secret").fetch_balance()


def test_unknown_api_key_is_refused_with_2015(venue: TradingVenue) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        trading_client(venue, "sync", api_key="someone-else").fetch_balance()


async def test_missing_key_and_tampered_query_are_refused(venue: TradingVenue) -> None:
    query = f"timestamp={venue.clock.now_ms()}&recvWindow=5000"
    good = f"{query}&signature={sign('test-secret', query)}"
    tampered = good.replace("recvWindow=5000", "recvWindow=6000")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{venue.base_url}/api/v3/account?{good}") as resp:
            assert (resp.status, (await resp.json())["code"]) == (401, -2014)
        headers = {"X-MBX-APIKEY": "test-key"}
        async with http.get(f"{venue.base_url}/api/v3/account?{tampered}", headers=headers) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, -1022)
        async with http.get(f"{venue.base_url}/api/v3/account?{good}", headers=headers) as resp:
            assert resp.status == 200


def test_client_clock_3s_ahead_is_refused_with_1021(venue: TradingVenue) -> None:
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        trading_client(venue, "sync", skew_ms=3_000).fetch_balance()


def test_client_clock_3s_behind_is_refused_only_beyond_its_recv_window(venue: TradingVenue) -> None:
    assert trading_client(venue, "sync", skew_ms=-3_000).fetch_balance()["BTC"]["free"] == 1.0  # window 10 s
    narrow = trading_client(venue, "sync", skew_ms=-3_000, options={"recvWindow": 2_000})
    with pytest.raises(ccxt.InvalidNonce, match="outside of the recvWindow"):
        narrow.fetch_balance()


# ---------------------------------------------------------------- orders


def test_market_buy_fills_against_the_book_and_charges_the_fee_in_base(venue: TradingVenue, rest: Any) -> None:
    _, ask = best(venue)
    order = rest.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "s1a0000001"})
    assert (order["status"], order["filled"], order["clientOrderId"]) == ("closed", 0.01, "s1a0000001")
    assert order["average"] == float(ask)
    assert order["fee"] == {"currency": "BTC", "cost": 0.00001}
    assert free(venue, "BTC") == Decimal("1.00999")
    assert free(venue, "USDT") == Decimal("100000") - ask * Decimal("0.01")
    assert venue.requests_to("/api/v3/order")[-1]["newClientOrderId"] == "s1a0000001"  # the POST form body


def test_fee_is_charged_in_quote_when_the_venue_says_so(venue: TradingVenue, rest: Any) -> None:
    venue.account.fee_asset = "quote"
    bid, _ = best(venue)
    order = rest.create_order(SYMBOL, "market", "sell", 0.1)
    cost = bid * Decimal("0.1")
    assert order["fee"]["currency"] == "USDT"
    assert free(venue, "USDT") == Decimal("100000") + cost - cost * Decimal("0.001")
    assert free(venue, "BTC") == Decimal("0.9")


def test_limit_order_locks_quote_until_cancelled_by_client_id(venue: TradingVenue, rest: Any) -> None:
    order = rest.create_order(SYMBOL, "limit", "buy", 0.01, 30_000, params={"clientOrderId": "s1a0000002"})
    assert order["status"] == "open"
    assert venue.account.balance("USDT").locked == Decimal("300")
    assert rest.fetch_balance()["USDT"]["used"] == 300.0
    found = rest.fetch_order(None, SYMBOL, {"clientOrderId": "s1a0000002"})
    assert (found["id"], found["status"]) == (order["id"], "open")
    assert venue.requests_to("/api/v3/order")[-1]["origClientOrderId"] == "s1a0000002"
    assert [o["id"] for o in rest.fetch_open_orders()] == [order["id"]]
    cancelled = rest.cancel_order(None, SYMBOL, {"clientOrderId": "s1a0000002"})
    assert cancelled["status"] == "canceled"
    assert (venue.account.balance("USDT").locked, free(venue, "USDT")) == (Decimal(0), Decimal("100000"))
    assert rest.fetch_open_orders() == []


def test_unknown_order_is_2013_on_fetch_and_2011_on_cancel(rest: Any) -> None:
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        rest.fetch_order(None, SYMBOL, {"clientOrderId": "nobody"})
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        rest.cancel_order("999999", SYMBOL)


def test_cancel_of_a_filled_order_is_2011(rest: Any) -> None:
    order = rest.create_order(SYMBOL, "market", "buy", 0.01)
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        rest.cancel_order(order["id"], SYMBOL)


def test_insufficient_balance_is_2010(rest: Any) -> None:
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance"):
        rest.create_order(SYMBOL, "market", "buy", 5)  # 5 BTC costs ~215k USDT, the account holds 100k


def test_exchange_filters_reject_with_1013(venue: TradingVenue, rest: Any) -> None:
    rest.load_markets()
    base = {"symbol": SID, "side": "BUY", "newOrderRespType": "FULL"}
    cases = {
        "LOT_SIZE": {**base, "type": "MARKET", "quantity": "0.000015"},
        "PRICE_FILTER": {**base, "type": "LIMIT", "quantity": "0.01", "price": "30000.005", "timeInForce": "GTC"},
        "NOTIONAL": {**base, "type": "LIMIT", "quantity": "0.0001", "price": "30000", "timeInForce": "GTC"},
    }
    kinds: dict[str, str] = {}
    for name, request in cases.items():
        with pytest.raises((ccxt.BadRequest, ccxt.InvalidOrder), match=f"-1013.*{name}") as raised:
            rest.privatePostOrder(request)  # the implicit API: ccxt signs but does not round
        kinds[name] = type(raised.value).__name__
    # ccxt maps -1013 by message: LOT_SIZE and PRICE_FILTER are InvalidOrder, NOTIONAL a BadRequest.
    assert kinds == {"LOT_SIZE": "InvalidOrder", "PRICE_FILTER": "InvalidOrder", "NOTIONAL": "BadRequest"}
    assert venue.account.orders == {}


def test_duplicate_client_id_among_open_orders_is_refused(rest: Any) -> None:
    rest.create_order(SYMBOL, "limit", "buy", 0.01, 30_000, params={"clientOrderId": "s1a0000003"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        rest.create_order(SYMBOL, "limit", "buy", 0.01, 30_000, params={"clientOrderId": "s1a0000003"})


def _crossing_bars(price: Decimal, minutes: int) -> list[bool]:
    return [Decimal(str(candle(SID, "1m", T0 + k * MINUTE)[3])) <= price for k in range(minutes)]


async def test_resting_limit_order_fills_in_parts_as_the_clock_crosses_its_price(venue: TradingVenue) -> None:
    venue.fill_per_bar = Decimal("0.0025")
    bid, _ = best(venue)
    crossings = _crossing_bars(bid, 8)
    assert sum(crossings) >= 4, "the deterministic path must cross the bid at least 4 times in 8 minutes"
    async with pro(venue) as client:
        order = await client.create_order(SYMBOL, "limit", "buy", 0.01, float(bid))
        assert order["status"] == "open"
        for minute in range(8):
            await venue.step(60)
            expected = min(sum(crossings[: minute + 1]), 4) * Decimal("0.0025")
            assert venue.order(int(order["id"]), SYMBOL).executed == expected  # type: ignore[union-attr]
        fetched = await client.fetch_order(order["id"], SYMBOL)
        trades = await client.fetch_my_trades(SYMBOL)
    assert (fetched["status"], fetched["filled"]) == ("closed", 0.01)
    assert [t["amount"] for t in trades] == [0.0025] * 4
    assert {t["price"] for t in trades} == {float(bid)} and all(t["takerOrMaker"] == "maker" for t in trades)
    assert venue.account.balance("USDT").locked == 0


def test_my_trades_paginate_by_from_id_and_start_time(venue: TradingVenue, rest: Any) -> None:
    for _ in range(5):
        rest.create_order(SYMBOL, "market", "buy", 0.001)
        venue.advance(1_000)
    ids = [t.id for t in venue.account.trades]
    times = [t.time for t in venue.account.trades]
    page1 = rest.fetch_my_trades(SYMBOL, params={"fromId": ids[0], "limit": 2})
    page2 = rest.fetch_my_trades(SYMBOL, params={"fromId": ids[2], "limit": 2})
    page3 = rest.fetch_my_trades(SYMBOL, params={"fromId": ids[4], "limit": 2})
    assert [[int(t["id"]) for t in p] for p in (page1, page2, page3)] == [ids[0:2], ids[2:4], ids[4:5]]
    since = rest.fetch_my_trades(SYMBOL, since=times[3])
    assert [int(t["id"]) for t in since] == ids[3:]
    assert venue.requests_to("/api/v3/myTrades")[-1]["startTime"] == str(times[3])


# ---------------------------------------------------------------- the user-data stream


async def test_watch_orders_trades_and_balance_follow_a_resting_fill(venue: TradingVenue) -> None:
    bid, _ = best(venue)
    first = next(k for k, crossed in enumerate(_crossing_bars(bid, 30)) if crossed)
    async with pro(venue) as client:
        orders = asyncio.ensure_future(client.watch_orders(SYMBOL))
        await venue.wait_user_streams()
        order = await client.create_order(SYMBOL, "limit", "buy", 0.01, float(bid), params={"clientOrderId": "w1"})
        assert [(o["clientOrderId"], o["status"]) for o in await orders][-1] == ("w1", "open")
        trades = asyncio.ensure_future(client.watch_my_trades(SYMBOL))
        balance = asyncio.ensure_future(client.watch_balance())
        orders = asyncio.ensure_future(client.watch_orders(SYMBOL))
        await venue.step(60 * (first + 1))
        filled = (await orders)[-1]
        trade = (await trades)[-1]
        bal = await balance
    assert (filled["id"], filled["status"], filled["filled"]) == (order["id"], "closed", 0.01)
    assert (trade["order"], trade["amount"], trade["price"]) == (order["id"], 0.01, float(bid))
    assert bal["BTC"]["free"] == float(free(venue, "BTC"))


async def test_legacy_listen_key_stream_carries_execution_reports(venue: TradingVenue, rest: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{venue.base_url}/api/v3/userDataStream", headers={"X-MBX-APIKEY": "k"}) as resp:
            assert (resp.status, (await resp.json())["code"]) == (401, -2015)
        async with http.post(f"{venue.base_url}/api/v3/userDataStream", headers={"X-MBX-APIKEY": "test-key"}) as resp:
            key = (await resp.json())["listenKey"]
        events = await _listen(http, venue, rest, key)
    assert [(e["e"], e.get("x")) for e in events] == [
        ("executionReport", "NEW"), ("outboundAccountPosition", None),
        ("executionReport", "TRADE"), ("outboundAccountPosition", None),
    ]  # fmt: skip


async def _listen(http: aiohttp.ClientSession, venue: TradingVenue, rest: Any, key: str) -> list[dict[str, Any]]:
    async with http.ws_connect(f"{venue.ws_url}/{key}") as ws:
        await venue.wait_user_streams()
        await asyncio.to_thread(rest.create_order, SYMBOL, "market", "buy", 0.001)
        return [json.loads((await ws.receive()).data) for _ in range(4)]


# ---------------------------------------------------------------- faults: order responses


def test_accept_then_timeout_leaves_an_order_that_a_lookup_finds(venue: TradingVenue) -> None:
    client = trading_client(venue, "sync", timeout=300)
    venue.accept_then_timeout()
    with pytest.raises(ccxt.RequestTimeout):
        client.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "s1t0000001"})
    found = client.fetch_order(None, SYMBOL, {"clientOrderId": "s1t0000001"})
    assert (found["status"], found["filled"]) == ("closed", 0.01)


def test_accept_then_503_is_exchange_not_available_and_the_order_exists(venue: TradingVenue, rest: Any) -> None:
    venue.accept_then_503()
    with pytest.raises(ccxt.ExchangeNotAvailable):
        rest.create_order(SYMBOL, "limit", "buy", 0.01, 30_000, params={"clientOrderId": "s1t0000002"})
    assert rest.fetch_order(None, SYMBOL, {"clientOrderId": "s1t0000002"})["status"] == "open"


def test_accept_then_1007_is_request_timeout_and_the_order_exists(venue: TradingVenue, rest: Any) -> None:
    venue.accept_then_1007()
    with pytest.raises(ccxt.RequestTimeout, match="-1007"):
        rest.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "s1t0000003"})
    assert rest.fetch_order(None, SYMBOL, {"clientOrderId": "s1t0000003"})["status"] == "closed"


def test_refuse_with_503_creates_nothing(venue: TradingVenue, rest: Any) -> None:
    venue.refuse_with_503()
    with pytest.raises(ccxt.ExchangeNotAvailable):
        rest.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "s1t0000004"})
    with pytest.raises(ccxt.OrderNotFound):
        rest.fetch_order(None, SYMBOL, {"clientOrderId": "s1t0000004"})
    assert venue.account.orders == {}


def test_hidden_order_appears_to_queries_after_3_virtual_seconds(venue: TradingVenue, rest: Any) -> None:
    venue.hide_next_order(3)
    rest.create_order(SYMBOL, "limit", "buy", 0.01, 30_000, params={"clientOrderId": "s1h0000001"})
    venue.advance(2_999)
    with pytest.raises(ccxt.OrderNotFound):
        rest.fetch_order(None, SYMBOL, {"clientOrderId": "s1h0000001"})
    assert rest.fetch_open_orders(SYMBOL) == []
    venue.advance(1)
    assert rest.fetch_order(None, SYMBOL, {"clientOrderId": "s1h0000001"})["status"] == "open"


def test_429_carries_retry_after(venue: TradingVenue, rest: Any) -> None:
    rest.load_markets()
    venue.rate_limit_next(retry_after_s=7)
    with pytest.raises(ccxt.DDoSProtection):
        rest.fetch_balance()
    assert rest.last_response_headers["Retry-After"] == "7"
    assert rest.fetch_balance()["BTC"]["free"] == 1.0


def test_418_ban_lasts_until_the_virtual_clock_passes_it(venue: TradingVenue, rest: Any) -> None:
    rest.load_markets()
    venue.ban(120)
    with pytest.raises(ccxt.DDoSProtection):
        rest.create_order(SYMBOL, "market", "buy", 0.01)
    assert rest.last_response_headers["Retry-After"] == "120"
    venue.advance(60_000)
    with pytest.raises(ccxt.DDoSProtection):
        rest.fetch_balance()
    assert rest.last_response_headers["Retry-After"] == "60"
    venue.advance(60_000)
    assert rest.fetch_balance()["BTC"]["free"] == 1.0
    assert venue.account.orders == {}


# ---------------------------------------------------------------- faults: the user stream


def _reports(venue: TradingVenue) -> list[tuple[str, str]]:
    return [(e["x"], e["X"]) for e in venue.user_events if e["e"] == "executionReport"]


async def test_duplicated_reports_are_written_twice_and_ccxt_keys_its_trade_cache_by_id(venue: TradingVenue) -> None:
    async with pro(venue) as client:
        trades = asyncio.ensure_future(client.watch_my_trades(SYMBOL))
        await venue.wait_user_streams()
        venue.duplicate_user_events(2)  # NEW and TRADE both twice
        await client.create_order(SYMBOL, "market", "buy", 0.001)
        await trades
        await venue.user_settled()
        ids = [t["id"] for t in client.myTrades]
    assert _reports(venue) == [("NEW", "NEW"), ("NEW", "NEW"), ("TRADE", "FILLED"), ("TRADE", "FILLED")]
    # ccxt's cache keeps one trade per id; a runtime counting every delivered report must key by trade id too.
    assert ids == [str(venue.account.trades[0].id)]


async def test_reordered_reports_arrive_trade_before_new(venue: TradingVenue) -> None:
    async with pro(venue) as client:
        orders = asyncio.ensure_future(client.watch_orders(SYMBOL))
        await venue.wait_user_streams()
        venue.reorder_user_events(2)
        order = await client.create_order(SYMBOL, "market", "buy", 0.001)
        await orders
        await venue.user_settled()
        cached = [o for o in client.orders if o["id"] == order["id"]]
    assert _reports(venue) == [("TRADE", "FILLED"), ("NEW", "NEW")]
    assert [o["status"] for o in cached] == ["open"]  # a naive consumer ends with a filled order marked open


async def test_dropped_reports_leave_the_fill_on_rest_only(venue: TradingVenue) -> None:
    async with pro(venue) as client:
        await client.load_markets()
        venue.drop_user_events(2)
        order = await client.create_order(SYMBOL, "market", "buy", 0.001)
        assert _reports(venue) == []
        trades = await client.fetch_my_trades(SYMBOL)
    assert [t["order"] for t in trades] == [order["id"]]


async def test_dropped_user_socket_fails_watchers_and_the_next_watch_redials(venue: TradingVenue) -> None:
    async with pro(venue) as client:
        pending = asyncio.ensure_future(client.watch_orders(SYMBOL))
        await venue.wait_user_streams()
        assert venue.drop_user_stream() == 1
        with pytest.raises(ccxt.NetworkError):
            await pending
        again = asyncio.ensure_future(client.watch_orders(SYMBOL))
        await venue.wait_user_streams()
        await client.create_order(SYMBOL, "market", "buy", 0.001)
        assert (await again)[-1]["status"] in ("open", "closed")
    assert venue.user_stream_count() == 0


# ---------------------------------------------------------------- the account changed behind the client


def test_account_changes_behind_the_clients_back_show_on_rest(venue: TradingVenue, rest: Any) -> None:
    for cid in ("s1b0000001", "s1b0000002", "s1b0000003"):
        rest.create_order(SYMBOL, "limit", "buy", 0.01, 30_000, params={"clientOrderId": cid})
    venue.fill_order("s1b0000001", SYMBOL)
    venue.fill_order("s1b0000002", SYMBOL, "0.004")
    venue.cancel_order("s1b0000003", SYMBOL)
    external = venue.add_external_order(SYMBOL, "sell", "0.01", "90000")
    got = {cid: rest.fetch_order(None, SYMBOL, {"clientOrderId": cid}) for cid in ("s1b0000001", "s1b0000002")}
    assert (got["s1b0000001"]["status"], got["s1b0000001"]["filled"]) == ("closed", 0.01)
    assert (got["s1b0000002"]["status"], got["s1b0000002"]["filled"]) == ("open", 0.004)
    assert rest.fetch_order(None, SYMBOL, {"clientOrderId": "s1b0000003"})["status"] == "canceled"
    assert sorted(o["clientOrderId"] for o in rest.fetch_open_orders()) == sorted([external.client_id, "s1b0000002"])
    assert [t["amount"] for t in rest.fetch_my_trades(SYMBOL)] == [0.01, 0.004]


# ---------------------------------------------------------------- sandbox


async def test_sandbox_client_talks_only_to_the_sandbox_urls(venue: TradingVenue) -> None:
    async with pro(venue, sandbox=True) as client:
        orders = asyncio.ensure_future(client.watch_orders(SYMBOL))
        await venue.wait_user_streams()
        await client.create_order(SYMBOL, "market", "buy", 0.001)
        await orders
        await client.fetch_balance()
    assert venue.sites_used() == {"sandbox"}
    assert {path for _, _, path in venue.site_log} >= {"/api/v3/exchangeInfo", "/api/v3/order", "/ws-api/v3"}


def test_live_client_talks_only_to_the_main_urls(venue: TradingVenue, rest: Any) -> None:
    rest.fetch_balance()
    assert venue.sites_used() == {"main"}


async def test_async_rest_client_creates_and_cancels_by_client_id(venue: TradingVenue) -> None:
    client = trading_client(venue, "async")
    try:
        order = await client.create_order(SYMBOL, "limit", "sell", 0.01, 90_000, params={"clientOrderId": "s1c0000001"})
        assert venue.account.balance("BTC").locked == Decimal("0.01")
        cancelled = await client.cancel_order(None, SYMBOL, {"clientOrderId": "s1c0000001"})
    finally:
        await client.close()
    assert (cancelled["id"], cancelled["status"]) == (order["id"], "canceled")
    assert venue.requests_to("/api/v3/order")[-1]["origClientOrderId"] == "s1c0000001"
    assert venue.account.balance("BTC").locked == 0
