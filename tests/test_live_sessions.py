"""Live sessions on the fake venue's sandbox: checks before trading, orders from the strategy, stop, restart.

The real ccxt.pro client (REST and WebSocket) talks to the venue; the registry runs on the venue's virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
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
from fakes.trading import VENUE_STATUS, TradingVenue
from web_support import app_client, wait_for_status, with_test_strategies

pytestmark = pytest.mark.anyio

T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z
MINUTE = 60_000
SYMBOL = "BTC/USDT"
LEASE_T0 = datetime(2026, 12, 1, tzinfo=UTC)
TTL_S = 30.0
SAFETY_S = 20.0  # a net for a broken session only: every wait ends on an event
KEYS = {"apiKey": "test-key", "secret": "test-secret"}
SERVER_A, SERVER_B = "a" * 32, "b" * 32


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[TradingVenue]:
    with TradingVenue(now_ms=T0 + 30_000, balances={"USDT": "10000", "BTC": "0"}) as server:
        yield server


def settings_for(venue: TradingVenue, data_dir: Path) -> Settings:
    options = exchange_options_for(venue.base_url)
    options["binance"]["sandbox_base_url"] = venue.sandbox_base_url
    base = Settings(data_dir=data_dir, exchange_options=options, server_lease_ttl_s=TTL_S)
    return with_test_strategies(base)


def live_config(**exchange_config: Any) -> LiveConfig:
    return LiveConfig(
        strategy_name="BuyAndHold",
        strategy_params={"size": 0.5},
        symbols=[SYMBOL],
        timeframe="1m",
        exchange="binance",
        mode="live",
        exchange_config={**KEYS, "sandbox": True, "risk": {"capital": 1_000.0}, **exchange_config},
    )


class ShiftedClock:
    """The venue's clock seen from a machine whose clock is `offset_ms` off."""

    def __init__(self, venue: TradingVenue, offset_ms: int) -> None:
        self.venue, self.offset_ms = venue, offset_ms

    def now_ms(self) -> int:
        return self.venue.clock.now_ms() + self.offset_ms

    async def sleep_until(self, when_ms: int) -> None:
        await self.venue.clock.sleep_until(when_ms - self.offset_ms)


@contextlib.asynccontextmanager
async def server(
    target: DatabaseTarget, settings: Settings, clock: Any, *, server_id: str = SERVER_A, lease: datetime = LEASE_T0
) -> AsyncIterator[SessionRegistry]:
    store = target.store()
    await store.register_server(server_id, host="test", pid=1, now=lease)
    registry = SessionRegistry(settings, store=store, clock=clock, server_id=server_id, lease_now=lambda: lease)
    try:
        yield registry
    finally:
        await registry.close()
        await store.engine.dispose()


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(int(SAFETY_S * 1000)):
        if condition():
            return
        await asyncio.sleep(0.001)
    import sys

    for t in asyncio.all_tasks():
        t.print_stack(limit=6, file=sys.stdout)
    raise AssertionError(f"still not {what}")


async def crash(registry: SessionRegistry, run: LiveRun) -> None:
    """What SIGKILL does to a session: it stops where it is and writes nothing more (the real kill is in
    test_live_restart.py)."""

    async def dead(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionError("the process is gone")

    assert registry.rows is not None and run.live is not None
    registry.rows.append = dead  # type: ignore[method-assign]
    for method in ("insert_pending", "save_order", "record_fill"):
        setattr(run.live.store, method, dead)
    for task in (run.task, run.writer):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await run.live.close()
    registry.runs.clear()


async def venue_ready(venue: TradingVenue) -> None:
    await venue.wait_subscribed("btcusdt@kline_1m")
    await venue.settled()


def venue_orders(venue: TradingVenue) -> list[Any]:
    return [o for o in venue.account.orders.values() if not o.external]


def assert_ledger_equals_venue(run: LiveRun, venue: TradingVenue) -> None:
    assert run.live is not None and run.live.orders is not None
    ours = {o.exchange_order_id: o for o in run.live.orders.ledger if o.exchange_order_id is not None}
    theirs = {str(o.order_id): o for o in venue_orders(venue)}
    assert set(ours) == set(theirs)
    for xid, o in theirs.items():
        assert (str(ours[xid].status), ours[xid].filled) == (VENUE_STATUS[o.status], float(o.executed)), xid


async def test_a_sandbox_session_trades_its_strategys_orders_and_talks_only_to_the_sandbox(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        started = await registry.start(live_config())
        assert started["status"] == "starting"
        run = registry.get(started["run_id"])
        await until(lambda: run.status == "running", "running")
        assert run.live is not None and run.live.report.looked_up == 0
        await venue_ready(venue)
        await venue.step(30)  # the 12:00 candle closes: BuyAndHold buys half the capital at market
        assert run.live.orders is not None
        orders = run.live.orders
        await until(lambda: any(o.status is OrderStatus.FILLED for o in orders.ledger), "bought")
        await until(lambda: run.plan.session.fills_booked == 1, "booked")  # stored, then booked

        status = run.snapshot()
        assert (status["mode"], status["condition"], status.get("reasons")) == ("live", "ok", [])
        position = status["positions"][0]
        bought = venue_orders(venue)[0]
        assert position["size"] == pytest.approx(float(bought.executed - bought.trades[0].commission))
        assert status["cash"] == pytest.approx(1_000.0 - float(bought.cum_quote))
        stopped = await registry.stop(run.run_id, flatten=True)

    assert stopped["status"] == "stopped"
    assert [o.side for o in venue_orders(venue)] == ["BUY", "SELL"]  # one order per intent
    assert_ledger_equals_venue(run, venue)
    assert venue.sites_used() == {"sandbox"}


@pytest.mark.parametrize(
    ("change", "check", "text"),
    [
        ({"secret": "wrong-secret"}, "AUTH_FAILED", "refused the credentials"),
        ({"clock_offset_ms": 3_000}, "CLOCK_SKEW", "-3000 ms from ours"),
        ({"symbols": ["DOGE/USDT"]}, "INVALID_SYMBOL", "DOGE/USDT is not a market"),
    ],
)
async def test_a_failed_check_before_trading_ends_the_session_failed_with_its_code(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path, change: dict[str, Any], check: str, text: str
) -> None:
    change = dict(change)
    offset = change.pop("clock_offset_ms", 0)
    symbols = change.pop("symbols", [SYMBOL])
    config = live_config(**change).model_copy(update={"symbols": symbols})
    async with server(target, settings_for(venue, tmp_path), ShiftedClock(venue, offset)) as registry:
        if check == "INVALID_SYMBOL":
            with pytest.raises(Exception, match="DOGE"):  # the warm-up already finds no such market
                await registry.start(config)
            return
        run = registry.get((await registry.start(config))["run_id"])
        await until(lambda: run.status == "failed", "failed")

    assert run.error_code == check
    assert run.error is not None and text in run.error
    assert venue_orders(venue) == []


async def test_a_derivative_symbol_is_refused_as_unsupported_before_anything_runs(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        with pytest.raises(Exception, match="spot markets only") as refused:
            await registry.start(live_config().model_copy(update={"symbols": ["BTC/USDT:USDT"]}))
    assert getattr(refused.value, "check", None) == "UNSUPPORTED_MARKET"
    assert venue.sites_used() == set()


async def test_after_a_crash_the_next_server_waits_for_the_keys_then_reconciles_what_changed_meanwhile(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    settings = settings_for(venue, tmp_path)
    async with server(target, settings, venue.clock) as a:
        run_a = a.get((await a.start(live_config(risk={"capital": 5_000.0})))["run_id"])
        await until(lambda: run_a.status == "running", "running")
        assert run_a.live is not None
        live = run_a.live
        price = venue.book_ticker("BTCUSDT")
        bid = float(price["bidPrice"])
        # Three resting buys well under the market, sent through the session's order path.
        placed = [
            await live.place(OrderIntent(SYMBOL, "buy", "limit", 0.01, round(bid * k, 2))) for k in (0.97, 0.96, 0.95)
        ]
        for order in placed:
            assert order.status is OrderStatus.OPEN
        await crash(a, run_a)

    # While no server runs: one order fills, one part-fills, one is cancelled, someone else adds an order.
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
        with pytest.raises(Exception, match="needs its exchange keys again"):
            resume(run_b)
        resume(run_b, dict(KEYS))
        await until(lambda: run_b.status == "running", "running")
        assert run_b.live is not None
        report = run_b.live.report
        assert (report.looked_up, report.updated, report.external_orders) == (3, 3, 1)
        assert_ledger_equals_venue(run_b, venue)
        assert len(venue_orders(venue)) == 3  # nothing was sent again
        await b.stop(run_b.run_id)


async def test_the_seeds_run_live_body_in_mode_live_with_a_sandbox_trades_on_the_fake_and_keeps_no_keys(
    venue: TradingVenue, tmp_path: Path
) -> None:
    # Seed 000/001's body with mode live, plus the capital issue 11 requires of a live session.
    body = {
        "strategy_name": "BuyAndHold",
        "strategy_params": {"size": 0.5},
        "symbols": [SYMBOL],
        "timeframe": "1m",
        "exchange": "binance",
        "exchange_config": {"apiKey": "test-key", "secret": "test-secret", "sandbox": True,
                            "risk": {"capital": 1_000.0}},
        "mode": "live",
    }  # fmt: skip
    async with app_client(settings_for(venue, tmp_path)) as c:
        c.app.state.sessions.clock = venue.clock  # type: ignore[attr-defined]
        r = await c.post("/api/v1/run/live", json=body)
        assert r.status_code == 200, r.text
        run_id = r.json()["run_id"]
        await wait_for_status(c, {"running"})
        await venue_ready(venue)
        await venue.step(30)
        for _ in range(int(SAFETY_S * 100)):
            detailed = (await c.get("/api/v1/status/detailed")).json()
            if detailed["trade_count"] == 1:
                break
            await asyncio.sleep(0.01)
        assert detailed["mode"] == "live" and detailed["condition"] == "ok"
        assert detailed["live"]["reconciliation"]["looked_up"] == 0
        assert detailed["live"]["user_stream"] in ("up", "down") and detailed["live"]["orders_sent"] == 1
        assert (await c.post("/api/v1/run/stop", json={"flatten": True})).json()["status"] == "stopped"
        results = (await c.get("/api/v1/results")).json()
        record = (await c.get(f"/api/v1/runs/{run_id}")).json()
        run = c.app.state.sessions.get(run_id)  # type: ignore[attr-defined]
        ledger = [] if run.live is None or run.live.orders is None else list(run.live.orders.ledger)
        seen = [(o.side, str(o.status), o.filled, o.reason) for o in ledger]
    # The buy and the flattening sell, as the venue filled them.
    assert len(results["trades"]) == 2, (seen, [(o.side, o.status, str(o.executed)) for o in venue_orders(venue)])
    assert "test-secret" not in json.dumps(record) and "test-key" not in json.dumps(record)
    assert record["config"]["exchange_config"] == {"sandbox": True, "risk": {"capital": 1_000.0}}


async def test_a_418_ban_is_honoured_nothing_is_sent_until_it_ends_and_the_session_is_degraded(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        run = registry.get((await registry.start(live_config()))["run_id"])
        await until(lambda: run.status == "running", "running")
        assert run.live is not None
        await venue.wait_user_streams()  # subscribed before the ban (a dial during it fails inside ccxt's own task)
        venue.ban(300)
        intent = OrderIntent(SYMBOL, "buy", "limit", 0.001, 10_000.0)
        first = await run.live.place(intent)
        requests = len(venue.request_log)
        second = await run.live.place(intent)

        assert (first.status, first.reason) == (OrderStatus.REJECTED, "RATE_BANNED")
        assert (second.status, second.reason) == (OrderStatus.REJECTED, "RATE_BANNED")
        assert len(venue.request_log) == requests  # the second was refused here, not sent
        status = run.snapshot()
        assert status["condition"] == "degraded" and "RATE_BANNED" in status["reasons"]
        assert venue_orders(venue) == []
        await registry.stop(run.run_id)


async def _running(registry: SessionRegistry, venue: TradingVenue, **exchange_config: Any) -> LiveRun:
    run = registry.get((await registry.start(live_config(**exchange_config)))["run_id"])
    await until(lambda: run.status == "running", "running")
    await venue.wait_user_streams()  # one socket carries both the orders and the trades streams
    return run


async def _resting_buy(run: LiveRun, venue: TradingVenue, amount: float = 0.01) -> Any:
    assert run.live is not None
    bid = float(venue.book_ticker("BTCUSDT")["bidPrice"])
    order = await run.live.place(OrderIntent(SYMBOL, "buy", "limit", amount, round(bid * 0.97, 2)))
    assert order.status is OrderStatus.OPEN
    return order


async def test_fills_pushed_twice_out_of_order_are_counted_once(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        run = await _running(registry, venue)
        order = await _resting_buy(run, venue)
        venue.duplicate_user_events(4)
        venue.reorder_user_events(2)
        venue.fill_order(order.client_order_id, SYMBOL, qty="0.004")
        venue.fill_order(order.client_order_id, SYMBOL)
        await until(lambda: run.plan.session.fills_booked == 2, "both fills booked")
        await venue.user_settled()

        assert order.status is OrderStatus.FILLED
        assert run.live is not None and run.live.orders is not None
        # The repeats reach the runtime, or ccxt's own trade cache merges them first: either way once each.
        assert run.plan.session.fills_booked == 2
        assert_ledger_equals_venue(run, venue)
        assert len(await run.live.store.fills(run.run_id)) == 2
        await registry.stop(run.run_id)


async def test_an_order_that_fills_while_the_user_data_socket_is_down_is_followed_over_rest(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
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
        assert run.live is not None and run.live.store is not None
        assert len(await run.live.store.fills(run.run_id)) == 1
        await registry.stop(run.run_id)


async def test_a_fill_the_venue_counts_but_the_session_has_not_booked_is_caught_up_not_called_drift(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        run = await _running(registry, venue)
        assert run.live is not None
        order = await _resting_buy(run, venue)
        venue.drop_user_events(10)  # the fill's pushes never come: only the balance shows it
        venue.fill_order(order.client_order_id, SYMBOL)
        assert run.plan.session.fills_booked == 0

        assert await run.live.check_balances() == {}  # what the 30 s check does
        assert run.plan.session.fills_booked == 1 and order.status is OrderStatus.FILLED
        status = run.snapshot()
        assert (status["condition"], status["live"]["balance_drift"]) == ("ok", {})
        assert run.plan.session.no_entries_reason is None
        assert_ledger_equals_venue(run, venue)
        await registry.stop(run.run_id)


async def test_two_sessions_on_one_account_do_not_see_each_others_fills_as_drift_but_both_see_an_outside_change(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        first = await _running(registry, venue)
        second = registry.get((await registry.start(live_config()))["run_id"])
        await until(lambda: second.status == "running", "the second running")
        assert first.live is not None and second.live is not None
        order = await _resting_buy(first, venue)
        venue.fill_order(order.client_order_id, SYMBOL)
        await until(lambda: first.plan.session.fills_booked == 1, "the first session's fill booked")

        assert await first.live.check_balances() == {}
        assert await second.live.check_balances() == {}  # the first one's BTC is the first one's
        held = float(venue.account.balance("BTC").free)
        venue.set_balance("BTC", str(held + 0.5))  # someone else's BTC
        assert await first.live.check_balances() == {"BTC": pytest.approx(0.5)}
        assert await second.live.check_balances() == {"BTC": pytest.approx(0.5)}
        await registry.stop(second.run_id)
        await registry.stop(first.run_id)


async def test_a_balance_that_moved_beyond_a_lot_degrades_the_session_until_it_is_back(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock) as registry:
        run = await _running(registry, venue)
        assert run.live is not None
        venue.set_balance("BTC", "0.5")  # someone moved BTC into the account: not the session's
        await run.live.check_balances()  # what the 30 s check does
        status = run.snapshot()
        assert status["condition"] == "degraded" and "BALANCE_DRIFT" in status["reasons"]
        assert status["live"]["balance_drift"] == {"BTC": pytest.approx(0.5)}
        assert run.plan.session.no_entries_reason == "BALANCE_DRIFT"

        venue.set_balance("BTC", "0")
        await run.live.check_balances()
        assert run.snapshot()["condition"] == "ok" and run.plan.session.no_entries_reason is None
        await registry.stop(run.run_id)
