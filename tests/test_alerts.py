"""Each alert kind, raised by the real condition in a live session on the fake venue (real ccxt, real database).

The registry runs on the venue's virtual clock; an alert is stored for the run's owner and published on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cracktrader.brokers.live import OrderIntent
from cracktrader.brokers.orders import ManagedOrder, OrderStatus
from cracktrader.db.alert_store import AlertStore
from cracktrader.runs import events
from cracktrader.runs.alerts import Alert, AlertKind, Severity
from cracktrader.runs.live import DISCONNECT_ALERT_MS
from cracktrader.runs.sessions import LiveRun, SessionRegistry
from cracktrader.web.alerts.service import AlertService
from db_support import DatabaseTarget
from fakes.trading import TradingVenue
from test_live_sessions import LEASE_T0, SERVER_A, SYMBOL, T0, live_config, settings_for, until, venue_ready

pytestmark = pytest.mark.anyio

OWNER = 7


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[TradingVenue]:
    with TradingVenue(now_ms=T0 + 30_000, balances={"USDT": "10000", "BTC": "0"}) as server:
        yield server


class Server:
    """A registry whose sessions raise alerts into the real AlertService (database and bus)."""

    def __init__(self, registry: SessionRegistry, alerts: AlertService, bus: events.EventBus) -> None:
        self.registry, self.alerts, self.bus = registry, alerts, bus
        self.published = bus.subscribe(frozenset({events.ALERT}))

    async def start(self, strategy: str = "BuyAndHold", **exchange_config: Any) -> LiveRun:
        config = live_config(**exchange_config)
        if strategy != "BuyAndHold":
            config = config.model_copy(update={"strategy_name": strategy, "strategy_params": {}})
        return self.registry.get((await self.registry.start(config, user_id=OWNER))["run_id"])

    async def running(self, venue: TradingVenue, strategy: str = "BuyAndHold", **exchange_config: Any) -> LiveRun:
        run = await self.start(strategy, **exchange_config)
        await until(lambda: run.status == "running", "running")
        await venue.wait_user_streams()
        await venue_ready(venue)
        return run

    async def stored(self, run: LiveRun) -> list[Alert]:
        """The run's stored alerts, oldest first, once every alert raised so far is delivered."""
        await self.alerts.drain()
        assert self.alerts.store is not None
        items, _ = await self.alerts.store.list(run_id=run.run_id)
        return items[::-1]

    async def kinds(self, run: LiveRun) -> list[AlertKind]:
        return [a.kind for a in await self.stored(run)]


@contextlib.asynccontextmanager
async def alerting_server(target: DatabaseTarget, venue: TradingVenue, tmp_path: Path) -> AsyncIterator[Server]:
    store = target.store()
    await store.register_server(SERVER_A, host="test", pid=1, now=LEASE_T0)
    bus = events.EventBus()
    alerts = AlertService(AlertStore(store.engine), bus)
    registry = SessionRegistry(settings_for(venue, tmp_path), store=store, clock=venue.clock, bus=bus,
                               server_id=SERVER_A, lease_now=lambda: LEASE_T0, alerts=alerts)  # fmt: skip
    try:
        yield Server(registry, alerts, bus)
    finally:
        await registry.close()
        await alerts.close()
        await store.engine.dispose()


async def step_until(venue: TradingVenue, done: Any, what: str, *, seconds: int = 120) -> None:
    """Move the venue's clock a second at a time until `done()` (the session's loops run between steps)."""
    for _ in range(seconds):
        if done():
            return
        await venue.step(1)
        await asyncio.sleep(0.01)
    await until(done, what)


def _limit_buy(venue: TradingVenue, below: float = 0.97) -> OrderIntent:
    bid = float(venue.book_ticker("BTCUSDT")["bidPrice"])
    return OrderIntent(SYMBOL, "buy", "limit", 0.01, round(bid * below, 2))


async def test_a_daily_loss_halt_raises_session_halted_once_for_the_runs_owner(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with alerting_server(target, venue, tmp_path) as server:
        # A cent of loss halts: the fee of BuyAndHold's market buy is more than that.
        run = await server.running(venue, risk={"capital": 1_000.0, "daily_loss_limit": 0.01})
        await venue.step(30)  # the 12:00 candle closes: BuyAndHold buys
        await until(lambda: run.plan.session.fills_booked == 1, "the buy booked")
        await step_until(venue, lambda: run.halted, "halted")
        await venue.step(60)  # still halted on the next bar: no second alert

        alerts = await server.stored(run)
        assert [a.kind for a in alerts] == [AlertKind.SESSION_HALTED]
        halt = alerts[0]
        assert (halt.severity, halt.user_id, halt.details.reason) == (Severity.CRITICAL, OWNER, "DAILY_LOSS_LIMIT")
        assert run.snapshot()["condition"] == "halted"
        published = server.published.queue.get_nowait()
        assert published is not None and published.payload["id"] == halt.id and published.user_id == OWNER
        await server.registry.stop(run.run_id)


async def test_a_balance_moved_beyond_a_lot_raises_balance_drift_with_the_amount(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with alerting_server(target, venue, tmp_path) as server:
        # Its one order rests far under the market: nothing of the session moves the BTC balance.
        run = await server.running(venue, "OneRestingBuy")
        venue.set_balance("BTC", "0.5")  # someone moved BTC into the account
        await step_until(venue, lambda: not server.published.queue.empty(), "the 30 s check alerted")
        await venue.step(30)  # the next check finds the same drift: no second alert

        alerts = await server.stored(run)
        assert [a.kind for a in alerts] == [AlertKind.BALANCE_DRIFT]
        assert alerts[0].details.drift == {"BTC": pytest.approx(0.5)}
        assert "BALANCE_DRIFT" in run.snapshot()["reasons"]
        await server.registry.stop(run.run_id)


async def test_a_418_ban_raises_rate_banned_with_its_end(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with alerting_server(target, venue, tmp_path) as server:
        run = await server.running(venue)
        assert run.live is not None
        venue.ban(300)
        first = await run.live.place(_limit_buy(venue))
        await run.live.place(_limit_buy(venue))  # refused here during the ban: the ban is not new

        alerts = await server.stored(run)
        assert first.reason == "RATE_BANNED"
        assert [a.kind for a in alerts] == [AlertKind.RATE_BANNED]
        assert alerts[0].details.banned_until_ms == venue.clock.now_ms() + 300_000
        await server.registry.stop(run.run_id)


async def _place_while_stepping(venue: TradingVenue, run: LiveRun, intent: OrderIntent) -> ManagedOrder:
    """Send an order whose lookups sleep on the virtual clock, moving the clock until its send settles."""
    assert run.live is not None
    task = run.live.place(intent)
    await step_until(venue, task.done, "the send settled", seconds=60)
    return await task


async def test_an_order_the_venue_never_took_raises_order_rejected_unconfirmed(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with alerting_server(target, venue, tmp_path) as server:
        run = await server.running(venue)
        venue.refuse_with_503()
        order = await _place_while_stepping(venue, run, _limit_buy(venue))

        alerts = await server.stored(run)
        assert order.status is OrderStatus.REJECTED_UNCONFIRMED
        unconfirmed = [a for a in alerts if a.kind is AlertKind.ORDER_REJECTED_UNCONFIRMED]
        assert len(unconfirmed) == 1
        assert (unconfirmed[0].details.client_order_id, unconfirmed[0].details.status) == (
            order.client_order_id,
            "rejected_unconfirmed",
        )
        await server.registry.stop(run.run_id)


async def test_an_order_found_after_it_was_given_up_raises_order_revived(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with alerting_server(target, venue, tmp_path) as server:
        run = await server.running(venue)
        venue.drop_user_events(1)  # its NEW report never reaches the socket
        venue.hide_next_order(45.0)  # queries miss it for 45 s: past the 31.5 s of lookups
        venue.accept_then_503()
        order = await _place_while_stepping(venue, run, _limit_buy(venue))
        assert order.status is OrderStatus.REJECTED_UNCONFIRMED
        # The watch list's periodic lookup finds it once it shows.
        await step_until(venue, lambda: order.status is OrderStatus.OPEN, "revived")

        kinds = [k for k in await server.kinds(run) if k.startswith("ORDER_")]
        assert kinds == [AlertKind.ORDER_REJECTED_UNCONFIRMED, AlertKind.ORDER_REVIVED]
        revived = (await server.stored(run))[-1]
        assert revived.details.exchange_order_id == order.exchange_order_id is not None
        assert revived.details.status == "open"
        await server.registry.stop(run.run_id)


async def test_an_order_on_the_account_not_the_sessions_raises_external_order_once(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    bid = float(venue.book_ticker("BTCUSDT")["bidPrice"])
    other = venue.add_external_order(SYMBOL, "BUY", "0.001", str(round(bid * 0.5, 2)))
    async with alerting_server(target, venue, tmp_path) as server:
        run = await server.running(venue)  # reconciliation before trading finds it
        assert run.live is not None
        await run.live.reconcile(stale_ms=0)  # found again by the next check: not a new alert

        alerts = await server.stored(run)
        assert [a.kind for a in alerts] == [AlertKind.EXTERNAL_ORDER]
        assert alerts[0].details.external_orders == [str(other.order_id)]
        assert run.live.report.external_orders == 1
        await server.registry.stop(run.run_id)


async def _keep_user_stream_down(venue: TradingVenue, until_done: Any, seconds: int = 180) -> None:
    """A second at a time, close every user-data socket the client reopened (the link keeps failing)."""
    for _ in range(seconds):
        if until_done():
            return
        venue.drop_user_stream()
        await venue.step(1)
        await asyncio.sleep(0.01)
    raise AssertionError("still not done")


async def test_a_user_data_socket_down_for_over_a_minute_raises_stream_disconnected_once(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with alerting_server(target, venue, tmp_path) as server:
        run = await server.running(venue)
        assert run.live is not None
        live = run.live
        start = venue.clock.now_ms()
        await _keep_user_stream_down(venue, lambda: venue.clock.now_ms() - start >= DISCONNECT_ALERT_MS - 1_000)
        assert AlertKind.STREAM_DISCONNECTED not in await server.kinds(run)  # not yet: a minute is not over
        await _keep_user_stream_down(venue, lambda: not server.published.queue.empty())
        await _keep_user_stream_down(venue, lambda: venue.clock.now_ms() - start >= 2 * DISCONNECT_ALERT_MS)

        alerts = await server.stored(run)
        assert [a.kind for a in alerts] == [AlertKind.STREAM_DISCONNECTED]  # once for the outage
        assert alerts[0].details.down_ms is not None and alerts[0].details.down_ms > DISCONNECT_ALERT_MS
        assert alerts[0].details.stream in ("watch_orders", "watch_my_trades")
        assert not live.socket_up
        await server.registry.stop(run.run_id)


async def test_a_reconciliation_the_venue_fails_before_trading_raises_reconciliation_failed(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    venue.fail_next(1, 503, path="/api/v3/openOrders")
    async with alerting_server(target, venue, tmp_path) as server:
        run = await server.start()
        await until(lambda: run.status == "failed", "failed")

        kinds = await server.kinds(run)
    assert run.error_code == "RECONCILIATION_FAILED"
    assert kinds == [AlertKind.RECONCILIATION_FAILED, AlertKind.SESSION_FAILED]


async def test_a_running_reconciliation_that_fails_raises_reconciliation_failed_once_per_streak(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with alerting_server(target, venue, tmp_path) as server:
        run = await server.running(venue, "OneRestingBuy")
        venue.fail_next(2, 503, path="/api/v3/openOrders")  # the next two 30 s checks fail
        await step_until(venue, lambda: not server.published.queue.empty(), "the 30 s check alerted")
        assert run.live is not None
        before = run.live.reconciliations
        await step_until(venue, lambda: run.live is not None and run.live.reconciliations > before, "a check passed")

        alerts = await server.stored(run)
        assert [a.kind for a in alerts] == [AlertKind.RECONCILIATION_FAILED]  # the second failure is the same streak
        assert alerts[0].details.code == "ExchangeNotAvailable" and "tried again" in alerts[0].message
        assert "signature=" not in alerts[0].message  # the venue's URL is shown without its query
        assert run.status == "running"
        await server.registry.stop(run.run_id)


async def test_a_session_that_fails_raises_session_failed_with_its_code(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with alerting_server(target, venue, tmp_path) as server:
        run = await server.start(secret="wrong-secret")
        await until(lambda: run.status == "failed", "failed")

        alerts = await server.stored(run)
    assert [a.kind for a in alerts] == [AlertKind.SESSION_FAILED]
    assert (alerts[0].details.code, alerts[0].user_id) == ("AUTH_FAILED", OWNER)
    assert "refused the credentials" in alerts[0].message
