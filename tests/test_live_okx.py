"""Live sandbox sessions on the fake venue reached as OKX: the real ccxt.pro okx client, its REST v5 and v5 sockets.

The same scenarios as tests/test_live_sessions.py (trade, faults, crash and restart), on a second protocol: OKX's
`clOrdId`, its `{"code", "data"}` answers, its demo-trading header, its `orders` channel and its fill pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
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
from fakes.okx import VENUE_STATUS as OKX_STATUS
from fakes.okx import OkxVenue
from test_live_sessions import LEASE_T0, SAFETY_S, SERVER_B, T0, TTL_S, ShiftedClock, crash, server, until
from web_support import with_test_strategies

pytestmark = pytest.mark.anyio

SYMBOL = "BTC/USDT"
KEYS = {"apiKey": "test-key", "secret": "test-secret", "password": "test-passphrase"}


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


@pytest.mark.parametrize(
    ("change", "check", "text"),
    [
        ({"secret": "wrong-secret"}, "AUTH_FAILED", "refused the credentials"),
        ({"password": "wrong-passphrase"}, "AUTH_FAILED", "refused the credentials"),
        ({"clock_offset_ms": 3_000}, "CLOCK_SKEW", "-3000 ms from ours"),
    ],
)
async def test_a_failed_check_before_trading_on_okx_ends_the_session_failed_with_its_code(
    venue: OkxVenue, target: DatabaseTarget, tmp_path: Path, change: dict[str, Any], check: str, text: str
) -> None:
    change = dict(change)
    offset = change.pop("clock_offset_ms", 0)
    async with server(target, settings_for(venue, tmp_path), ShiftedClock(venue, offset)) as registry:
        run = registry.get((await registry.start(live_config(**change)))["run_id"])
        await until(lambda: run.status == "failed", "failed")

    assert run.error_code == check
    assert run.error is not None and text in run.error
    assert venue_orders(venue) == []


async def test_after_a_crash_on_okx_the_next_server_takes_the_passphrase_too_and_reconciles_what_changed(
    venue: OkxVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    settings = settings_for(venue, tmp_path)
    async with server(target, settings, venue.clock) as a:
        run_a = a.get((await a.start(live_config(risk={"capital": 5_000.0})))["run_id"])
        await until(lambda: run_a.status == "running", "running")
        assert run_a.live is not None
        bid = float(venue.book_ticker("BTCUSDT")["bidPrice"])
        placed = [
            await run_a.live.place(OrderIntent(SYMBOL, "buy", "limit", 0.01, round(bid * k, 2)))
            for k in (0.97, 0.96, 0.95)
        ]
        assert [o.status for o in placed] == [OrderStatus.OPEN] * 3
        await crash(a, run_a)

    first, second, third = placed
    venue.fill_order(first.client_order_id, SYMBOL)
    venue.fill_order(second.client_order_id, SYMBOL, qty="0.004")
    venue.cancel_order(third.client_order_id, SYMBOL)
    venue.add_external_order(SYMBOL, "BUY", "0.001", str(round(bid * 0.5, 2)))

    later = LEASE_T0 + timedelta(seconds=TTL_S + 1)
    async with server(target, settings, venue.clock, server_id=SERVER_B, lease=later) as b:
        assert await b.scan() == [run_a.run_id]
        run_b = b.get(run_a.run_id)
        assert run_b.snapshot()["phase"] == "awaiting_credentials"
        resume(run_b, dict(KEYS))
        await until(lambda: run_b.status == "running", "running")
        assert run_b.live is not None
        report = run_b.live.report
        assert (report.looked_up, report.updated, report.external_orders) == (3, 3, 1)
        assert_ledger_equals_venue(run_b, venue)
        assert len(venue_orders(venue)) == 3  # nothing was sent again
        assert len(await run_b.live.store.fills(run_b.run_id)) == 2
        await b.stop(run_b.run_id)
    assert_ledger_equals_venue(run_b, venue)


async def test_okx_order_pushes_twice_and_out_of_order_count_each_fill_once(
    venue: OkxVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        run = await _running(registry, venue)
        order = await _resting_buy(run, venue)
        venue.duplicate_user_events(4)
        venue.reorder_user_events(2)
        venue.fill_order(order.client_order_id, SYMBOL, qty="0.004")
        venue.fill_order(order.client_order_id, SYMBOL)
        await venue.user_settled()
        # A fill whose push came out of order can wait in ccxt.pro's cache (its watch returns on the next message):
        # the periodic check (every 30 s of the venue's clock) finds the order filled further and fetches its fills.
        for _ in range(40):
            if run.plan.session.fills_booked == 2:
                break
            await venue.step(1)
            await asyncio.sleep(0.01)
        await until(lambda: run.plan.session.fills_booked == 2, "both fills booked")

        assert order.status is OrderStatus.FILLED
        assert_ledger_equals_venue(run, venue)
        assert run.live is not None
        fills = await run.live.store.fills(run.run_id)
        assert sorted(f.trade_id for f in fills) == sorted(str(t.id) for t in venue_orders(venue)[0].trades)
        assert all(f.fee > 0 for f in fills)  # charged, as OKX's negative fillFee means
        await registry.stop(run.run_id)


async def test_an_okx_order_that_fills_while_its_socket_is_down_is_followed_over_rest(
    venue: OkxVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        run = await _running(registry, venue)
        order = await _resting_buy(run, venue)
        venue.drop_user_events(10)  # nothing of the fill reaches the socket
        assert venue.drop_user_stream() == 1
        venue.fill_order(order.client_order_id, SYMBOL)
        for _ in range(20):  # 20 s of the venue's time, a second at a time
            if order.status is OrderStatus.FILLED:
                break
            await venue.step(1)
            await asyncio.sleep(0.01)
        await until(lambda: run.plan.session.fills_booked == 1, "the fill booked")

        assert order.status is OrderStatus.FILLED
        assert_ledger_equals_venue(run, venue)
        assert run.live is not None
        assert len(await run.live.store.fills(run.run_id)) == 1
        await registry.stop(run.run_id)


async def test_an_okx_429_refuses_the_order_unplaced_and_the_next_one_goes_out_once(
    venue: OkxVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        run = await _running(registry, venue)
        assert run.live is not None
        venue.rate_limit_next(1, retry_after_s=1, path="/api/v5/trade/batch-orders")
        bid = float(venue.book_ticker("BTCUSDT")["bidPrice"])
        refused = await run.live.place(OrderIntent(SYMBOL, "buy", "limit", 0.01, round(bid * 0.97, 2)))
        assert (refused.status, refused.reason) == (OrderStatus.REJECTED, "RATE_LIMITED")
        assert venue_orders(venue) == []
        # The next request waits out OKX's Retry-After (1 s of the venue's clock), then goes out once.
        sending = asyncio.ensure_future(run.live.place(OrderIntent(SYMBOL, "buy", "limit", 0.01, round(bid * 0.97, 2))))
        await venue.step(1)
        placed = await asyncio.wait_for(sending, SAFETY_S)
        assert placed.status is OrderStatus.OPEN
        assert [o.client_id for o in venue_orders(venue)] == [placed.client_order_id]
        assert_ledger_equals_venue(run, venue)
        await registry.stop(run.run_id)


async def test_an_okx_order_hidden_for_3_s_after_a_503_is_found_by_its_clordid_and_not_sent_again(
    venue: OkxVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        run = await _running(registry, venue)
        venue.hide_next_order(3.0)
        venue.accept_then_503()
        order = await _resting_buy(run, venue)
        assert run.live is not None and run.live.orders is not None
        assert run.live.orders.sent == 1 and len(venue_orders(venue)) == 1
        assert_ledger_equals_venue(run, venue)
        await venue.step(3)  # visible again: the stop's cancel finds it
        await registry.stop(run.run_id)
    assert order.status is OrderStatus.CANCELED and venue_orders(venue)[0].status == "CANCELED"


async def test_a_balance_that_moved_on_okx_degrades_the_session_until_it_is_back(
    venue: OkxVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        run = await _running(registry, venue)
        assert run.live is not None
        venue.set_balance("BTC", "0.5")
        await run.live.check_balances()
        assert run.snapshot()["live"]["balance_drift"] == {"BTC": pytest.approx(0.5)}
        venue.set_balance("BTC", "0")
        await run.live.check_balances()
        assert run.snapshot()["condition"] == "ok"
        await registry.stop(run.run_id)


async def test_okx_arms_and_refreshes_its_dead_man_switch_so_the_venue_cancels_for_a_crashed_server(
    venue: OkxVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    settings = settings_for(venue, tmp_path)
    async with server(target, settings, venue.clock) as a:
        run_a = await _running(a, venue)
        assert run_a.live is not None
        assert run_a.snapshot()["live"]["dead_man_switch"] == "armed" and venue.dead_man_calls == [60]
        bid = float(venue.book_ticker("BTCUSDT")["bidPrice"])
        resting = await run_a.live.place(OrderIntent(SYMBOL, "buy", "limit", 0.01, round(bid * 0.97, 2)))
        assert resting.status is OrderStatus.OPEN
        await venue.step(20)  # the session refreshes the timer every 20 s of its clock
        await until(lambda: venue.dead_man_calls == [60, 60], "the timer refreshed")
        await crash(a, run_a)

    venue.clock.advance(61)  # nobody refreshed it: the venue's timer runs out
    assert venue.expire_dead_man() == 1
    later = LEASE_T0 + timedelta(seconds=TTL_S + 1)
    async with server(target, settings, venue.clock, server_id=SERVER_B, lease=later) as b:
        assert await b.scan() == [run_a.run_id]
        run_b = b.get(run_a.run_id)
        resume(run_b, dict(KEYS))
        await until(lambda: run_b.status == "running", "running")
        assert run_b.live is not None and run_b.live.offline_cancels == 0  # the venue did it, armed again now
        (order,) = run_b.live.orders.ledger if run_b.live.orders is not None else ()
        assert order.status is OrderStatus.CANCELED and venue_orders(venue)[0].status == "CANCELED"
        assert venue.dead_man_calls[-1] == 60
        await b.stop(run_b.run_id)
    assert venue.dead_man_calls[-1] == 0  # the last session of the account stopped: the timer is off
