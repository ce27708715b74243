"""Paper sessions in rows: appended per bar, one owner at a time (fencing token), taken over and resumed.

Real SQLite and PostgreSQL; two registries on separate engines stand for two server processes (the restart with
real processes killed by SIGKILL is in test_session_restart.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from cracktrader.clock import ManualClock
from cracktrader.data.sources.synthetic import generate
from cracktrader.db.session_store import StaleTokenError
from cracktrader.runs.config import LiveConfig
from cracktrader.runs.inputs import strategy_source_sha256
from cracktrader.runs.results import from_backtest, full_document
from cracktrader.runs.session import run_session
from cracktrader.runs.sessions import LiveRun, SessionRegistry, pause
from cracktrader.runs.trade import prepare_paper
from cracktrader.settings import Settings, get_settings
from db_support import DatabaseTarget
from web_support import TEST_STRATEGY_DIR, with_test_strategies

pytestmark = pytest.mark.anyio
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)  # lease time of the first server
TTL_S = 30.0
RESTING = LiveConfig(
    strategy_name="RestingLimit",
    strategy_params={"timeframe": "1m", "min_ahead": 3, "max_ahead": 120},
    symbols=["BTC/USDT"],
    timeframe="1m",
    exchange="synthetic",
    mode="paper",
)
SERVER_A, SERVER_B = "a" * 32, "b" * 32


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _settings() -> Settings:
    return with_test_strategies(get_settings()).model_copy(update={"server_lease_ttl_s": TTL_S})


@contextlib.asynccontextmanager
async def _server(
    target: DatabaseTarget, server_id: str, clock: Any, lease: list[datetime], settings: Settings | None = None
) -> AsyncIterator[SessionRegistry]:
    """A registry on its own engine (one "server process"), with its lease taken at `lease[0]`."""
    store = target.store()
    await store.register_server(server_id, host="test", pid=1, now=lease[0])
    registry = SessionRegistry(
        settings or _settings(), store=store, clock=clock, server_id=server_id, lease_now=lambda: lease[0]
    )
    try:
        yield registry
    finally:
        await registry.close()
        await store.engine.dispose()


async def _written(run: LiveRun) -> None:
    """Until the session's captured rows are written (its writer runs beside the bars)."""
    for _ in range(4000):
        await asyncio.sleep(0)
        if run.pending is None and (run.writer is None or run.writer.done()):
            return
        await asyncio.sleep(0.002)
    raise AssertionError("rows never written")


async def _bars(clock: ManualClock, run: LiveRun, n: int) -> None:
    for _ in range(n):
        await clock.advance(MINUTE)
    await _written(run)


async def _crash(registry: SessionRegistry, run: LiveRun) -> None:
    """What SIGKILL does to a session: it stops between two bars and writes nothing more."""

    async def dead(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionError("the process is gone")

    assert registry.rows is not None
    registry.rows.append = dead  # type: ignore[method-assign]
    for task in (run.task, run.writer):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """A results document without its run's identity and times."""
    return {k: v for k, v in doc.items() if k not in ("run_id", "config", "start_time", "end_time", "status")}


async def _uninterrupted(first_live_ts: int, live_bars: int, config: LiveConfig = RESTING) -> dict[str, Any]:
    """The document of the same session run without a break over the same candles (the synthetic generator's)."""
    plan = prepare_paper(config, clock=ManualClock(first_live_ts + 10, auto=True), settings=_settings())
    await run_session(plan.session, plan.feed, history=plan.history, max_bars=live_bars)
    result = from_backtest(plan.session.result(), run_id="x", config={}, start_time="", end_time="")
    return _comparable(full_document(result))


async def test_fills_are_recorded_once(target: DatabaseTarget) -> None:
    clock, lease = ManualClock(NOW + 10), [T0]
    async with _server(target, SERVER_A, clock, lease) as a:
        run_id = (await a.start(RESTING))["run_id"]
        run = a.runs[run_id]
        await _bars(clock, run, 3)  # the market buy fills
        (fill,) = await a.rows.fills(run_id)  # type: ignore[union-attr]
        duplicate = {k: v for k, v in fill.items() if k != "id"}
        with pytest.raises(IntegrityError):
            async with a.store.engine.begin() as conn:
                from cracktrader.db.models import SessionFillRecord

                await conn.execute(SessionFillRecord.__table__.insert().values(**duplicate))


async def test_a_stale_owner_stops_without_writing_once_another_server_took_over(target: DatabaseTarget) -> None:
    clock_a, lease_a = ManualClock(NOW + 10), [T0]
    async with _server(target, SERVER_A, clock_a, lease_a) as a:
        run_id = (await a.start(RESTING))["run_id"]
        run_a = a.runs[run_id]
        await _bars(clock_a, run_a, 4)
        clock_b = ManualClock(clock_a.now_ms())
        lease_b = [T0 + timedelta(seconds=TTL_S / 2)]  # A's lease is still fresh
        async with _server(target, SERVER_B, clock_b, lease_b) as b:
            assert await b.scan() == [] and await b.rows.owner(run_id) == (SERVER_A, 1)  # type: ignore[union-attr]
            lease_b[0] = T0 + timedelta(seconds=TTL_S + 1)  # A stopped renewing: its lease lapsed
            assert await b.scan() == [run_id]
            assert await b.rows.owner(run_id) == (SERVER_B, 2)  # type: ignore[union-attr]
            run_b = b.runs[run_id]
            await _written(run_b)
            before = await b.rows.load(run_id)  # type: ignore[union-attr]
            # A, unaware, closes another bar: its write finds a stale token, so it writes nothing and stops.
            await _bars(clock_a, run_a, 1)
            for _ in range(2000):
                if run_a.task is not None and run_a.task.done():
                    break
                await asyncio.sleep(0.005)
            assert run_a.fenced and run_a.task is not None and run_a.task.done() and run_id not in a.runs
            after = await b.rows.load(run_id)  # type: ignore[union-attr]
            assert after is not None and before is not None
            assert (after.bars, after.sim_state, after.fencing_token) == (before.bars, before.sim_state, 2)
            with pytest.raises(StaleTokenError):  # any write under the old token is refused
                await a.rows.append(run_id, 1, run_a.recorder.capture(run_a.plan.session.strategy), now=T0)  # type: ignore[union-attr]
            # B alone drives it on.
            await _bars(clock_b, run_b, 2)
            assert (await b.rows.load(run_id)).bars == run_b.plan.session.bars  # type: ignore[union-attr]
            await b.stop(run_id)
            assert run_b.status == "stopped"


async def test_a_session_resumes_after_a_crash_as_if_never_interrupted(target: DatabaseTarget) -> None:
    clock_a, lease = ManualClock(NOW + 10), [T0]
    async with _server(target, SERVER_A, clock_a, lease) as a:
        run_id = (await a.start(RESTING))["run_id"]
        run_a = a.runs[run_id]
        session = run_a.plan.session
        first_live = NOW
        strategy = session.strategy
        await _bars(clock_a, run_a, 2)
        # Bar by bar until a resting limit waits for a candle still ahead; then the server dies.
        for _ in range(200):
            plans = strategy.plans  # type: ignore[attr-defined]
            if plans and session.sim.open_orders and plans[-1]["fill_ts"] > session.last_timestamp:
                break
            await _bars(clock_a, run_a, 1)
        plan = dict(plans[-1])
        crashed_after = session.last_timestamp
        fills_before = await a.rows.fills(run_id)  # type: ignore[union-attr]
        await _crash(a, run_a)
    assert crashed_after is not None and fills_before
    # Down until three bars after the crossing candle closed; the next server's lease clock is past A's TTL.
    resume_ms = plan["fill_ts"] + 4 * MINUTE + 10
    clock_b, lease_b = ManualClock(resume_ms), [T0 + timedelta(seconds=TTL_S + 1)]
    async with _server(target, SERVER_B, clock_b, lease_b) as b:
        assert await b.scan() == [run_id]
        run_b = b.runs[run_id]
        resumed = run_b.plan.session
        assert resumed.strategy.restored  # type: ignore[attr-defined]  # it got its state back
        last_closed = resume_ms // MINUTE * MINUTE - MINUTE
        for _ in range(2000):  # the missed candles are replayed at once, in order
            if resumed.last_timestamp == last_closed:
                break
            await asyncio.sleep(0.002)
        await _written(run_b)
        doc = (await b.store.read_page(run_id, max_points=None, limit=None, offset=0)).document()
        await b.stop(run_id)
        fills = await b.rows.fills(run_id)  # type: ignore[union-attr]
        stored = await b.rows.load(run_id)  # type: ignore[union-attr]
    assert stored is not None and (stored.owner_server_id, stored.fencing_token) == (SERVER_B, 2)
    # The resting limit that the market crossed while the server was down filled at its price, in the downtime.
    crossing = [f for f in fills if f["order_id"] == plan["order_id"]]
    assert len(crossing) == 1 and crossing[0]["price"] == plan["price"] and crossing[0]["ts"] == plan["fill_ts"]
    assert crashed_after < crossing[0]["ts"] < resume_ms - MINUTE
    assert fills[: len(fills_before)] == fills_before  # what was recorded before the crash is intact
    assert len({f["trade_id"] for f in fills}) == len(fills)
    stamps = [int(r[0]) for r in stored.equity]
    assert stamps == list(range(stamps[0], stamps[-1] + MINUTE, MINUTE))  # one point per candle, no gap
    candles = generate("BTC/USDT", "1m", stamps[0], stamps[-1] + MINUTE, stamps[-1] + MINUTE)
    assert [float(r[5]) for r in stored.candles] == candles.close.tolist()  # the missed candles were the real ones
    live_bars = len(stamps) - stored.warmup_bars
    assert _comparable(doc) == await _uninterrupted(first_live, live_bars)


def _order_every_bar(risk: dict[str, Any]) -> LiveConfig:
    """A 1m synthetic session whose strategy orders on every bar, under these risk limits."""
    return LiveConfig(
        strategy_name="SlowStrategy",
        strategy_params={"bar_ms": 0, "trade_every": 1},
        symbols=["BTC/USDT"],
        timeframe="1m",
        exchange="synthetic",
        exchange_config={"risk": risk},
        mode="paper",
    )


async def test_missed_candles_replayed_at_once_keep_their_own_time_for_the_order_rate_limit(
    target: DatabaseTarget,
) -> None:
    # An order on every bar, and at most 2 orders a second: 40 missed candles replayed in one go would be 40 orders
    # in the same second of the server's clock; in their own time they are a minute apart, as they were live.
    every_bar = _order_every_bar({"orders_per_second": 2})
    clock_a = ManualClock(NOW + 10)
    async with _server(target, SERVER_A, clock_a, [T0]) as a:
        run_id = (await a.start(every_bar))["run_id"]
        run_a = a.runs[run_id]
        await _bars(clock_a, run_a, 5)
        await _crash(a, run_a)
    clock_b = ManualClock(clock_a.now_ms() + 40 * MINUTE)
    async with _server(target, SERVER_B, clock_b, [T0 + timedelta(seconds=TTL_S + 1)]) as b:
        assert await b.scan() == [run_id]
        run_b = b.runs[run_id]
        for _ in range(2000):
            if run_b.plan.session.last_timestamp == clock_b.now_ms() // MINUTE * MINUTE - MINUTE:
                break
            await asyncio.sleep(0.002)
        await _written(run_b)
        status = run_b.snapshot()
        doc = (await b.store.read_page(run_id, max_points=None, limit=None, offset=0)).document()
        stored = await b.rows.load(run_id)  # type: ignore[union-attr]
        await b.stop(run_id)
    assert stored is not None
    live_bars = stored.bars - stored.warmup_bars
    assert live_bars >= 45 and status["risk"]["denials"] == {} and status["trade_count"] == live_bars - 1
    assert _comparable(doc) == await _uninterrupted(NOW, live_bars, every_bar)


async def test_a_paused_session_stays_paused_and_keeps_its_denial_counts_when_resumed(target: DatabaseTarget) -> None:
    # Every order is over the notional limit, so each bar counts a denial: the counts must not start afresh on the
    # next server, and a pause set by the operator must hold there (a restart is not a resume command).
    every_bar = _order_every_bar({"max_order_notional": 1.0})
    clock_a = ManualClock(NOW + 10)
    async with _server(target, SERVER_A, clock_a, [T0]) as a:
        run_id = (await a.start(every_bar))["run_id"]
        run_a = a.runs[run_id]
        await _bars(clock_a, run_a, 4)
        pause(run_a)
        await _bars(clock_a, run_a, 1)  # the pause is written with the next bar's state
        denied_before = dict(run_a.plan.session.risk.denials)  # type: ignore[union-attr]
        await _crash(a, run_a)
    assert sum(denied_before.values()) >= 3
    clock_b = ManualClock(clock_a.now_ms())
    async with _server(target, SERVER_B, clock_b, [T0 + timedelta(seconds=TTL_S + 1)]) as b:
        assert await b.scan() == [run_id]
        gate = b.runs[run_id].plan.session.risk
        assert gate is not None and gate.paused
        assert dict(gate.denials) == denied_before
        await b.stop(run_id)


PINNED_SOURCE = """
from cracktrader.engine.context import Context
from cracktrader.engine.strategy import Strategy


class Pinned(Strategy):
    \"\"\"Buys a little on every bar.\"\"\"

    def on_bar(self, ctx: Context) -> None:
        ctx.buy(ctx.symbols[0], 0.001)
"""


def _pinned_setup(tmp_path: Path) -> tuple[Path, Settings, LiveConfig]:
    """A strategy folder holding PINNED_SOURCE, settings that load it, and a session of it."""
    folder = tmp_path / "strategies"
    folder.mkdir()
    source = folder / "pinned.py"
    source.write_text(PINNED_SOURCE)
    settings = _settings().model_copy(update={"strategy_dir": folder, "data_dir": tmp_path / "data"})
    config = LiveConfig(strategy_name="Pinned", symbols=["BTC/USDT"], timeframe="1m", exchange="synthetic")
    return source, settings, config


async def test_a_resumed_session_runs_the_strategy_code_it_started_with_not_the_edited_file(
    target: DatabaseTarget, tmp_path: Path
) -> None:
    source, settings, config = _pinned_setup(tmp_path)
    clock_a = ManualClock(NOW + 10)
    async with _server(target, SERVER_A, clock_a, [T0], settings) as a:
        run_id = (await a.start(config))["run_id"]
        run_a = a.runs[run_id]
        digest = run_a.config["inputs"]["strategy"]["source_sha256"]
        await _bars(clock_a, run_a, 3)
        await _crash(a, run_a)
    # Edited while the server was down: the new code would fail on every bar.
    source.write_text(PINNED_SOURCE.replace("ctx.buy(ctx.symbols[0], 0.001)", "raise RuntimeError('edited')"))
    clock_b = ManualClock(clock_a.now_ms() + 2 * MINUTE)
    async with _server(target, SERVER_B, clock_b, [T0 + timedelta(seconds=TTL_S + 1)], settings) as b:
        assert await b.scan() == [run_id]
        run_b = b.runs[run_id]
        assert strategy_source_sha256(type(run_b.plan.session.strategy)) == digest
        await _bars(clock_b, run_b, 3)
        assert run_b.status == "running" and run_b.error is None
        assert run_b.snapshot()["trade_count"] >= 5  # it kept buying on the missed and the new bars
        await b.stop(run_id)
    assert run_b.status == "stopped"


async def test_a_session_whose_pinned_code_is_gone_fails_to_resume_with_the_reason(
    target: DatabaseTarget, tmp_path: Path
) -> None:
    source, settings, config = _pinned_setup(tmp_path)
    clock_a = ManualClock(NOW + 10)
    async with _server(target, SERVER_A, clock_a, [T0], settings) as a:
        run_id = (await a.start(config))["run_id"]
        await _bars(clock_a, a.runs[run_id], 2)
        await _crash(a, a.runs[run_id])
    source.write_text(PINNED_SOURCE.replace("0.001", "0.002"))
    for kept in (tmp_path / "data" / "pinned_strategies").iterdir():
        kept.unlink()
    async with _server(
        target, SERVER_B, ManualClock(clock_a.now_ms()), [T0 + timedelta(seconds=TTL_S + 1)], settings
    ) as b:
        assert await b.scan() == []
        summary = await b.store.get(run_id)
    assert summary is not None and summary.status == "failed"
    assert "Strategy Pinned changed since the session started" in (summary.error or "")


async def test_a_ccxt_session_resumed_after_a_crash_gets_the_missed_candles_from_rest(
    target: DatabaseTarget, tmp_path: Path
) -> None:
    from fakes.binance import candle
    from fakes.venue import FakeVenue

    t0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z; the venue starts half way through this 1m candle
    config = LiveConfig(
        strategy_name="SlowStrategy",
        strategy_params={"bar_ms": 0, "trade_every": 2},
        symbols=["BTC/USDT"],
        timeframe="1m",
        exchange="binance",
        mode="paper",
    )
    with FakeVenue(now_ms=t0 + 30_000) as venue:
        settings = Settings(
            data_dir=tmp_path / "data",
            exchange_options=venue.exchange_options(),
            strategy_dir=TEST_STRATEGY_DIR,
            server_lease_ttl_s=TTL_S,
        )
        clock: Any = venue.clock
        async with _server(target, SERVER_A, clock, [T0], settings) as a:
            run_id = (await a.start(config))["run_id"]
            run_a = a.runs[run_id]
            await venue.wait_subscribed("btcusdt@kline_1m")
            await venue.settled()
            for step in (30, 60, 60):
                await venue.step(step)
            await _until(lambda: run_a.plan.session.last_timestamp == t0 + 2 * MINUTE)
            await _written(run_a)
            await _crash(a, run_a)
        await venue.step(5 * 60)  # five candles close while no server runs
        async with _server(target, SERVER_B, clock, [T0 + timedelta(seconds=TTL_S + 1)], settings) as b:
            assert await b.scan() == [run_id]
            run_b = b.runs[run_id]
            await _until(lambda: run_b.plan.session.last_timestamp == t0 + 7 * MINUTE)
            await _written(run_b)
            stored = await b.rows.load(run_id)  # type: ignore[union-attr]
            fills = await b.rows.fills(run_id)  # type: ignore[union-attr]
            await b.stop(run_id)
    assert stored is not None
    live = [int(r[0]) for r in stored.candles[stored.warmup_bars :]]
    assert live == [t0 + k * MINUTE for k in range(8)]  # in order, none missing, none twice
    assert [float(r[5]) for r in stored.candles[stored.warmup_bars :]] == [candle("BTC/USDT", "1m", t)[4] for t in live]
    assert len(fills) >= 3 and len({f["trade_id"] for f in fills}) == len(fills)
    assert any(t0 + 3 * MINUTE <= f["ts"] <= t0 + 7 * MINUTE for f in fills)  # traded on the replayed candles


async def _until(condition: Any) -> None:
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition still false after the safety timeout")


async def test_a_control_action_is_written_at_once_not_at_the_next_bar(target: DatabaseTarget) -> None:
    from cracktrader.runs.sessions import close_position

    clock = ManualClock(NOW + 10)
    async with _server(target, SERVER_A, clock, [T0]) as a:
        run_id = (await a.start(RESTING))["run_id"]
        run = a.runs[run_id]
        await _bars(clock, run, 3)  # the market buy filled
        close_position(run, "BTC/USDT")
        await _written(run)
        (position,) = await a.rows.positions(run_id)  # type: ignore[union-attr]
        fills = await a.rows.fills(run_id)  # type: ignore[union-attr]
        doc = (await a.store.read_page(run_id, max_points=None, limit=None, offset=0)).document()
        in_memory = full_document(run.current_results())
        await a.stop(run_id)
    assert position["size"] == 0.0 and [f["side"] for f in fills] == ["buy", "sell"]
    assert _comparable(doc) == _comparable(in_memory)  # the re-marked last equity point included
