"""The OKX protocol of the fake venue, checked with the real ccxt okx client: strict signing, OKX's answers, pushes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import ccxt
import pytest

from fakes.binance import candle
from fakes.okx import OkxVenue, okx_client

pytestmark = pytest.mark.anyio

T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z
SYMBOL = "BTC/USDT"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[OkxVenue]:
    with OkxVenue(now_ms=T0 + 30_000, balances={"USDT": "10000", "BTC": "0"}) as server:
        yield server


async def _call(venue: OkxVenue, method: str, *args: Any, **client_kw: Any) -> Any:
    client = okx_client(venue, "async", **client_kw)
    try:
        await client.load_markets()
        return await getattr(client, method)(*args)
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("client_kw", "error", "code"),
    [
        ({"secret": "wrong"}, ccxt.AuthenticationError, "50113"),
        ({"password": "wrong"}, ccxt.AuthenticationError, "50105"),
        ({"api_key": "nobody"}, ccxt.AuthenticationError, "50111"),
        ({"demo_header": False}, ccxt.AuthenticationError, "50101"),  # the demo site without the demo header
    ],
)
async def test_a_mis_signed_or_mis_keyed_okx_request_is_refused_with_okxs_code(
    venue: OkxVenue, client_kw: dict[str, Any], error: type[Exception], code: str
) -> None:
    venue.passphrases = {"test-key": "test-passphrase", "nobody": "x"}
    demo_header = client_kw.pop("demo_header", True)
    client = okx_client(venue, "async", **client_kw)
    if not demo_header:
        client.headers = {k: v for k, v in client.headers.items() if k != "x-simulated-trading"}
    try:
        with pytest.raises(error, match=code):
            await client.fetch_balance()
    finally:
        await client.close()


async def test_a_timestamp_30_s_off_the_venues_clock_is_refused_as_a_nonce_error(venue: OkxVenue) -> None:
    client = okx_client(venue, "async")
    client.nonce = lambda: venue.clock.now_ms() - 31_000
    try:
        await client.load_markets()
        with pytest.raises(ccxt.InvalidNonce, match="50102"):
            await client.fetch_balance()
    finally:
        await client.close()


async def test_okx_candles_are_the_cores_candles_newest_first_and_paged_by_after(venue: OkxVenue) -> None:
    since = T0 - 10 * 60_000
    rows = await _call(venue, "fetch_ohlcv", SYMBOL, "1m", since, 5)
    assert [r[0] for r in rows] == [since + k * 60_000 for k in range(5)]
    assert [tuple(r) for r in rows] == [candle(SYMBOL, "1m", since + k * 60_000) for k in range(5)]
    (request,) = [p for _, path, p in venue.request_log if path.endswith("candles")]
    assert (request["bar"], request["before"], request["after"]) == ("1m", str(since - 1), str(since + 5 * 60_000))


async def test_a_client_order_id_is_unique_among_all_orders_and_bad_orders_get_okxs_codes(venue: OkxVenue) -> None:
    client = okx_client(venue, "async")
    try:
        await client.load_markets()
        placed = await client.create_order(SYMBOL, "market", "buy", 0.001, None, {"clientOrderId": "ct1"})
        assert (placed["clientOrderId"], placed["status"]) == ("ct1", None)  # OKX answers ids only
        assert venue.order("ct1", SYMBOL) is not None and venue.order("ct1", SYMBOL).status == "FILLED"
        with pytest.raises(ccxt.InvalidOrder, match="51016"):  # filled, not open: still a duplicate on OKX
            await client.create_order(SYMBOL, "market", "buy", 0.001, None, {"clientOrderId": "ct1"})
        with pytest.raises(ccxt.BadRequest, match="51000"):  # a tdMode a spot cash account does not take
            await client.create_order(SYMBOL, "limit", "buy", 0.001, 30_000, {"clientOrderId": "ct2", "tdMode": "x"})
        with pytest.raises(ccxt.InsufficientFunds, match="51008"):
            await client.create_order(SYMBOL, "limit", "buy", 1, 30_000, {"clientOrderId": "ct3"})
        with pytest.raises(ccxt.OrderNotFound, match="51603"):
            await client.fetch_order(None, SYMBOL, {"clientOrderId": "nope"})
    finally:
        await client.close()
    assert len(venue.account.orders) == 1


async def test_a_wrong_passphrase_at_the_websocket_login_fails_watch_orders(venue: OkxVenue) -> None:
    client = okx_client(venue, "pro")
    try:
        await client.load_markets()
        client.password = "wrong"
        with pytest.raises(ccxt.AuthenticationError, match="60024"):
            await asyncio.wait_for(client.watch_orders(), 5)
    finally:
        await client.close()
    assert venue.user_stream_count() == 0


async def test_the_orders_channel_pushes_each_state_with_its_fill_once_and_twice_under_the_fault(
    venue: OkxVenue,
) -> None:
    client = okx_client(venue, "pro")
    try:
        watching = asyncio.ensure_future(client.watch_orders())
        await venue.wait_user_streams()
        await client.create_order(SYMBOL, "limit", "buy", 0.01, 30_000, {"clientOrderId": "rest1"})
        assert [(o["clientOrderId"], o["status"]) for o in await watching] == [("rest1", "open")]
        venue.duplicate_user_events(1)
        venue.fill_order("rest1", SYMBOL)
        await venue.user_settled()
        trades = [t for t in client.myTrades if t["order"] == str(venue.order("rest1", SYMBOL).order_id)]
    finally:
        await client.close()
    order = venue.order("rest1", SYMBOL)
    assert [t["id"] for t in trades] == [str(order.trades[0].id)]  # ccxt's cache holds the repeated fill once
    fills = [e for e in venue.user_events if e.get("e") == "executionReport" and e["x"] == "TRADE"]
    assert len(fills) == 2  # the fault sent the fill's push twice
