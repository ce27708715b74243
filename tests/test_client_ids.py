"""Client order ids: the format round-trips, and the real ccxt client puts them where each exchange expects."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import ccxt
import pytest

from cracktrader.data.sources.ccxt_source import point_exchange_at
from cracktrader.exchanges.client_ids import (
    CLIENT_ID_PARAMS,
    MAX_CLIENT_ID_LENGTH,
    MAX_SEQUENCE,
    ClientIdError,
    client_id_params,
    is_own,
    make_client_id,
    parse_client_id,
    session_tag,
)
from fakes.recorder import RecordingServer

TAG = session_tag("session-42")
SYMBOL = "BTC/USDT"
MARKET_IDS = {
    "binance": "BTCUSDT", "bybit": "BTCUSDT", "okx": "BTC-USDT", "kucoin": "BTC-USDT", "gate": "BTC_USDT",
    "kraken": "XBTUSDT", "coinbase": "BTC-USDT",
}  # fmt: skip
# Options that keep ccxt from asking the account's mode first (the recorder's `{}` would not tell it).
ACCOUNT_MODE_OPTIONS: dict[str, dict[str, Any]] = {
    "bybit": {"enableUnifiedAccount": True, "enableUnifiedMargin": False},
    "kucoin": {"uta": False},
}
# What the lookup by client id requested, per exchange (method, path), with the id where the exchange reads it.
LOOKUP_PATHS = {
    "binance": ("GET", "/api/v3/order"),
    "bybit": ("GET", "/v5/order/realtime"),
    "okx": ("GET", "/api/v5/trade/order"),
    "kucoin": ("GET", "/api/v1/order/client-order/{cid}"),
    "gate": ("GET", "/api/v4/spot/orders/t-{cid}"),
    "kraken": ("POST", "/0/private/OpenOrders"),
    "coinbase": ("GET", "/api/v3/brokerage/orders/historical/batch"),
}
LOOKUP_FIELDS = {"binance": "origClientOrderId", "bybit": "orderLinkId", "okx": "clOrdId", "kraken": "cl_ord_id",
                 "coinbase": "client_order_id"}  # fmt: skip


def test_session_tag_is_8_characters_starting_with_a_letter_and_deterministic() -> None:
    assert re.fullmatch(r"[a-z][a-z0-9]{7}", TAG)
    assert session_tag("session-42") == TAG != session_tag("session-43")


@pytest.mark.parametrize("sequence", [1, 35, 36, 1_000_000, MAX_SEQUENCE])
def test_client_id_round_trips_and_stays_within_every_exchanges_limit(sequence: int) -> None:
    cid = make_client_id(TAG, sequence)
    assert re.fullmatch(r"[a-z0-9]+", cid) and len(cid) <= MAX_CLIENT_ID_LENGTH == 18
    assert parse_client_id(cid).tag == TAG and parse_client_id(cid).sequence == sequence
    assert is_own(cid, TAG) and not is_own(cid, session_tag("other"))


def test_ids_of_one_session_are_distinct() -> None:
    assert len({make_client_id(TAG, n) for n in range(1, 5_000)}) == 4_999


@pytest.mark.parametrize("bad", ["", "short", "1bcdefgh1", "abcdefgh", "abcdefgh0", "abcdefgh-1", "ABCDEFGH1",
                                 "abcdefgh" + "z" * 11])  # fmt: skip
def test_foreign_ids_do_not_parse_and_are_not_owned(bad: str) -> None:
    with pytest.raises(ClientIdError):
        parse_client_id(bad)
    assert not is_own(bad, TAG)
    assert not is_own(None, TAG) and not is_own("x-TKT5PX2Fabc", TAG)  # ccxt's own binance ids


def test_bad_tag_or_sequence_is_refused() -> None:
    with pytest.raises(ClientIdError, match="session tag"):
        make_client_id("ABC", 1)
    with pytest.raises(ClientIdError, match="sequence"):
        make_client_id(TAG, 0)
    with pytest.raises(KeyError, match="known: binance"):
        client_id_params("mtgox")


# ---------------------------------------------------------------- the real ccxt client on a loopback recorder


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def _client(exchange_id: str, base_url: str) -> Any:
    exchange = getattr(ccxt, exchange_id)(
        {"apiKey": "key", "secret": "c2VjcmV0", "password": "pass", "enableRateLimit": False, "timeout": 3_000,
         "options": ACCOUNT_MODE_OPTIONS.get(exchange_id, {})}
    )  # fmt: skip
    point_exchange_at(exchange, base_url)
    exchange.set_markets([{
        "id": MARKET_IDS[exchange_id], "symbol": SYMBOL, "base": "BTC", "quote": "USDT", "baseId": "BTC",
        "quoteId": "USDT", "type": "spot", "spot": True, "active": True,
        "precision": {"amount": 0.00001, "price": 0.01},
        "limits": {"amount": {"min": 0.00001}, "price": {"min": 0.01}, "cost": {"min": 1}},
        "info": {"orderTypes": ["LIMIT", "MARKET"]},
    }])  # fmt: skip
    return exchange


def _attempt(call: Any) -> None:
    # The recorder's `{}` may not parse: what matters is the request that went out.
    with contextlib.suppress(ccxt.BaseError):
        call()


@pytest.mark.parametrize("exchange_id", sorted(CLIENT_ID_PARAMS))
def test_create_order_sends_the_client_id_in_the_exchanges_field(exchange_id: str, recorder: RecordingServer) -> None:
    params = client_id_params(exchange_id)
    cid = make_client_id(TAG, 7)
    exchange = _client(exchange_id, recorder.base_url)
    _attempt(lambda: exchange.create_order(SYMBOL, "limit", "buy", 0.01, 30_000, params.create_params(cid)))
    carrying = [r for r in recorder.requests if r.method == "POST" and params.wire_field in r.fields()]
    assert len(carrying) == 1, [(r.method, r.path) for r in recorder.requests]
    assert carrying[0].fields()[params.wire_field] == params.on_wire(cid)


@pytest.mark.parametrize("exchange_id", sorted(CLIENT_ID_PARAMS))
def test_lookup_by_client_id_sends_it_where_the_exchange_reads_it(exchange_id: str, recorder: RecordingServer) -> None:
    params = client_id_params(exchange_id)
    cid = make_client_id(TAG, 8)
    exchange = _client(exchange_id, recorder.base_url)
    if params.lookup_call == "fetch_order":
        _attempt(lambda: exchange.fetch_order(None, SYMBOL, params.lookup_params(cid)))
    else:
        _attempt(lambda: exchange.fetch_open_orders(SYMBOL, None, None, params.lookup_params(cid)))
    method, path = LOOKUP_PATHS[exchange_id]
    sent = [r for r in recorder.requests if (r.method, r.path) == (method, path.format(cid=cid))]
    assert len(sent) == 1, [(r.method, r.path) for r in recorder.requests]
    if exchange_id in LOOKUP_FIELDS:
        assert sent[0].fields()[LOOKUP_FIELDS[exchange_id]] == cid


def test_coinbase_drops_a_unified_client_order_id(recorder: RecordingServer) -> None:
    """Why the coinbase row passes `client_order_id`: ccxt 4.5.90 replaces a unified one with its own."""
    cid = make_client_id(TAG, 9)
    exchange = _client("coinbase", recorder.base_url)
    _attempt(lambda: exchange.create_order(SYMBOL, "limit", "buy", 0.01, 30_000, {"clientOrderId": cid}))
    sent = [r.fields().get("client_order_id") for r in recorder.requests if r.method == "POST"]
    assert len(sent) == 1 and sent[0] != cid and str(sent[0]).startswith("ccxt-")
