"""The fee of a fill is a positive cost whichever of ccxt's parsers (REST or WebSocket) read it."""

from __future__ import annotations

from typing import Any

import ccxt.pro
import pytest

from cracktrader.exchanges.fees import paid_fee

# What OKX sends for one charged fill of 0.001 BTC, in its REST fill list and in its `orders` push (its own sign).
OKX_FILL = {"instType": "SPOT", "instId": "BTC-USDT", "tradeId": "5001", "ordId": "1001", "clOrdId": "ct1",
            "billId": "705001", "fillPx": "42000", "fillSz": "0.01", "side": "buy", "execType": "T",
            "feeCcy": "BTC", "fee": "-0.00001", "ts": "1717243230000"}  # fmt: skip
OKX_PUSH = {"instType": "SPOT", "instId": "BTC-USDT", "ordId": "1001", "clOrdId": "ct1", "px": "", "sz": "0.01",
            "ordType": "market", "side": "buy", "tdMode": "cash", "accFillSz": "0.01", "avgPx": "42000",
            "fillSz": "0.01", "fillPx": "42000", "tradeId": "5001", "fillTime": "1717243230000",
            "fillFee": "-0.00001", "fillFeeCcy": "BTC", "execType": "T", "state": "filled", "fee": "-0.00001",
            "feeCcy": "BTC", "cTime": "1717243230000", "uTime": "1717243230000"}  # fmt: skip


@pytest.fixture(scope="module")
def okx() -> Any:
    client = ccxt.pro.okx()
    client.markets_by_id = {}
    return client


def test_an_okx_fill_from_rest_and_from_the_orders_push_has_the_same_positive_fee(okx: Any) -> None:
    rest = okx.parse_trade(OKX_FILL)
    pushed = okx.order_to_trade(okx.parse_order(OKX_PUSH))
    assert rest["id"] == pushed["id"] == "5001"
    assert (rest["fee"]["cost"], pushed["fee"]["cost"]) == (pytest.approx(0.00001), pytest.approx(-0.00001))
    assert paid_fee("okx", rest) == paid_fee("okx", pushed) == pytest.approx(0.00001)


def test_another_venues_fee_is_taken_as_ccxt_gives_it() -> None:
    trade = {"fee": {"cost": 0.25, "currency": "USDT"}, "info": {"accFillSz": "1", "fillFee": "0.25"}}
    assert paid_fee("binance", trade) == 0.25
    assert paid_fee("binance", {"fee": None}) == 0.0
