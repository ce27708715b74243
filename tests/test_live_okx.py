"""Live sandbox sessions on the fake venue reached as OKX: the real ccxt.pro okx client, its REST v5 and v5 sockets.

The same scenarios as tests/test_live_sessions.py (trade, faults, crash and restart), on a second protocol: OKX's
`clOrdId`, its `{"code", "data"}` answers, its demo-trading header, its `orders` channel and its fill pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cracktrader.brokers.live import OrderIntent
from cracktrader.brokers.orders import OrderStatus
from cracktrader.runs.config import LiveConfig
from cracktrader.runs.sessions import LiveRun, SessionRegistry, resume
from cracktrader.settings import Settings
from db_support import DatabaseTarget
from fakes.binance import exchange_options_for
from fakes.okx import OkxVenue
from test_live_sessions import LEASE_T0, SERVER_B, T0, TTL_S, crash, server, until
from web_support import with_test_strategies

pytestmark = pytest.mark.anyio

SYMBOL = "BTC/USDT"
KEYS = {"apiKey": "test-key", "secret": "test-secret", "password": "test-passphrase"}
# OKX's states as the order model names them (the core's EXPIRED is a cancelled rest on OKX).
OKX_STATUS = {"NEW": "open", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled", "CANCELED": "canceled",
              "EXPIRED": "canceled"}  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[OkxVenue]:
    with OkxVenue(now_ms=T0 + 30_000, balances={"USDT": "10000", "BTC": "0"}) as server_:
        yield server_


def settings_for(venue: OkxVenue, data_dir: Path) -> Settings:
    options = exchange_options_for(venue.base_url, "okx")
    options["okx"]["sandbox_base_url"] = venue.sandbox_base_url
    base = Settings(data_dir=data_dir, exchange_options=options, server_lease_ttl_s=TTL_S)
    return with_test_strategies(base)


def live_config(**exchange_config: Any) -> LiveConfig:
    return LiveConfig(
        strategy_name="BuyAndHold",
        strategy_params={"size": 0.5},
        symbols=[SYMBOL],
        timeframe="1m",
        exchange="okx",
        mode="live",
        exchange_config={**KEYS, "sandbox": True, "risk": {"capital": 1_000.0}, **exchange_config},
    )


def venue_orders(venue: OkxVenue) -> list[Any]:
    return [o for o in venue.account.orders.values() if not o.external]


def assert_ledger_equals_venue(run: LiveRun, venue: OkxVenue) -> None:
    assert run.live is not None and run.live.orders is not None
    ours = {o.exchange_order_id: o for o in run.live.orders.ledger if o.exchange_order_id is not None}
    theirs = {str(o.order_id): o for o in venue_orders(venue)}
    assert set(ours) == set(theirs)
    for xid, o in theirs.items():
        assert (str(ours[xid].status), ours[xid].filled) == (OKX_STATUS[o.status], float(o.executed)), xid


async def _running(registry: SessionRegistry, venue: OkxVenue, **exchange_config: Any) -> LiveRun:
    run = registry.get((await registry.start(live_config(**exchange_config)))["run_id"])
    await until(lambda: run.status == "running", "running")
    await venue.wait_user_streams()
    return run


async def _resting_buy(run: LiveRun, venue: OkxVenue, amount: float = 0.01) -> Any:
    assert run.live is not None
    bid = float(venue.book_ticker("BTCUSDT")["bidPrice"])
    order = await run.live.place(OrderIntent(SYMBOL, "buy", "limit", amount, round(bid * 0.97, 2)))
    assert order.status is OrderStatus.OPEN
    return order


async def test_an_okx_sandbox_session_trades_its_strategys_orders_and_talks_only_to_the_demo_site(
    venue: OkxVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        started = await registry.start(live_config())
        run = registry.get(started["run_id"])
        await until(lambda: run.status == "running", "running")
        assert run.live is not None and run.live.report.looked_up == 0
        await venue.wait_subscribed("btcusdt@kline_1m")
        await venue.settled()
        await venue.step(30)  # the 12:00 candle closes: BuyAndHold buys half the capital at market
        assert run.live.orders is not None
        orders = run.live.orders
        await until(lambda: any(o.status is OrderStatus.FILLED for o in orders.ledger), "bought")
        await until(lambda: run.plan.session.fills_booked == 1, "booked")

        status = run.snapshot()
        assert status["mode"] == "live" and status["condition"] == "ok"
        bought = venue_orders(venue)[0]
        fee = bought.trades[0].commission
        assert status["positions"][0]["size"] == pytest.approx(float(bought.executed - fee))
        assert status["cash"] == pytest.approx(1_000.0 - float(bought.cum_quote))
        stopped = await registry.stop(run.run_id, flatten=True)

    assert stopped["status"] == "stopped"
    assert [o.side for o in venue_orders(venue)] == ["BUY", "SELL"]  # one order per intent
    assert [o.client_id for o in venue_orders(venue)] == [o.client_order_id for o in orders.ledger]
    assert_ledger_equals_venue(run, venue)
    assert venue.sites_used() == {"sandbox"}
    fills = await run.live.store.fills(run.run_id)
    assert [f.fee for f in fills] == [pytest.approx(float(t.commission)) for o in venue_orders(venue) for t in o.trades]
