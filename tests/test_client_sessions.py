"""The SDK's paper sessions against a real uvicorn: start, status, balances, watch, results, stop and errors.

Live sessions run on the synthetic exchange with a `ManualClock` that never moves, injected into the server's
session registry: a session stays in its warm-up (no new candle ever closes), so what it reports is exact.
Replayed sessions run on the wall clock at a speed that never waits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cracktrader.client import (
    AsyncCrackTraderAPI,
    ConflictError,
    CrackTraderAPI,
    InvalidPaperConfigError,
    NoActiveRunError,
    NotFoundError,
    SessionLimitError,
    SessionStatus,
    TimeoutError,
    ValidationError,
)
from cracktrader.clock import ManualClock, SystemClock
from cracktrader.settings import Settings, get_settings
from web_support import LiveServer

NOW = 1_767_225_600_000 + 10  # 2026-01-01T00:00:00.010Z: the last closed 1m candle opened at 23:59
LAST_CANDLE = datetime(2025, 12, 31, 23, 59, tzinfo=UTC)
LIVE: dict[str, Any] = {"symbols": "BTC/USDT", "timeframe": "1m", "exchange": "synthetic"}
RANGE = {"start": "2024-01-01", "end": "2024-03-01"}
REPLAY: dict[str, Any] = {
    "symbols": ["BTC/USDT"],
    "timeframe": "1h",
    "exchange": "synthetic",
    "exchange_config": {"paper": {"replay": {**RANGE, "speed": 1e9}}},
}
POLL = 0.01


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.contextmanager
def frozen_server(settings: Settings | None = None) -> Iterator[LiveServer]:
    """A started server whose sessions read a clock that never moves (set before any session starts)."""
    with LiveServer(settings) as server:
        server.app.state.sessions.clock = ManualClock(NOW)
        yield server


def backtest_of_the_replay(api: CrackTraderAPI) -> Any:
    """The backtest of REPLAY's strategy, symbols and range, through the same server."""
    return api.backtest(
        strategy_name="SmaCross",
        symbols=["BTC/USDT"],
        timeframe="1h",
        start_date=RANGE["start"],
        end_date=RANGE["end"],
        exchange="synthetic",
        exchange_rules=True,  # as the paper session (its default): like with like
        poll_interval=POLL,
    )


def test_a_replayed_session_completes_with_the_final_value_of_the_backtest_of_its_range() -> None:
    with LiveServer() as srv, CrackTraderAPI(srv.base_url) as api:
        started = api.start_session("SmaCross", **REPLAY)
        assert started.status == "running" and started.run_id
        seen = list(api.watch_session(started.run_id, interval=POLL, timeout=60))
        done = seen[-1]
        assert isinstance(done, SessionStatus) and done.status == "completed" and done.is_finished
        assert all(s.is_active for s in seen[:-1])
        results = api.session_results(started.run_id, limit=1000)
        backtest = backtest_of_the_replay(api)
    assert backtest.final_value is not None and results.final_value == backtest.final_value
    assert [t.price for t in results.trades] == [t.price for t in backtest.trades]
    assert done.trade_count == len(backtest.trades) > 0 and done.condition == "ok" and done.is_ok
    assert done.value == pytest.approx(backtest.final_value)
    assert done.fees_paid > 0 and done.mode == "paper" and results.status == "completed"


def test_get_balance_reads_the_session_this_client_started_then_stop_twice_is_a_conflict() -> None:
    with frozen_server() as srv, CrackTraderAPI(srv.base_url) as api:
        run_id = api.start_session("SmaCross", **LIVE).run_id
        assert run_id
        assert api.get_balance() == {"USDT": 10000.0}  # warming up: nothing traded yet
        assert api.get_balance(run_id) == {"USDT": 10000.0}
        status = api.session_status(run_id)
        assert (status.status, status.phase, status.bars_processed) == ("running", "warming_up", 0)
        assert status.last_candle_time == LAST_CANDLE and status.data_lag_seconds == 0.0
        assert (status.cash, status.value, status.pnl) == (10000.0, 10000.0, 0.0)
        assert (status.realized_pnl, status.unrealized_pnl, status.fees_paid) == (0.0, 0.0, 0.0)
        assert (status.condition, status.reasons, status.positions, status.open_orders) == ("ok", [], [], [])
        assert status.risk is not None and status.risk["denials"] == {} and status.decision_lag_ms is None
        assert api.get_status().status == "idle"  # a session never occupies the runner slot

        stopped = api.stop_session(run_id)
        assert (stopped.run_id, stopped.status) == (run_id, "stopped")
        assert api.session_status(run_id).status == "stopped"
        with pytest.raises(NoActiveRunError) as caught:
            api.stop_session(run_id)
        err = caught.value
        assert isinstance(err, ConflictError) and (err.status_code, err.code) == (409, "NO_ACTIVE_RUN")
        assert err.details == {"run_id": run_id, "status": "stopped"}

        # The client's only session ended: get_balance() says to name one, and still reads it by id.
        with pytest.raises(NoActiveRunError, match=r"pass run_id=") as no_session:
            api.get_balance()
        assert no_session.value.status_code is None and no_session.value.details == {"last_session": run_id}
        assert api.get_balance(run_id) == {"USDT": 10000.0}
        assert api.session_results(run_id).status == "stopped"


def test_get_balance_without_a_session_of_this_client_asks_for_a_run_id() -> None:
    with frozen_server() as srv, CrackTraderAPI(srv.base_url) as mine, CrackTraderAPI(srv.base_url) as other:
        theirs = other.start_session("SmaCross", **LIVE).run_id
        with pytest.raises(NoActiveRunError, match=r"has not started a session; pass run_id=\.\.\."):
            mine.get_balance()
        assert mine.get_balance(theirs) == {"USDT": 10000.0}


def test_get_balance_reads_the_newest_active_session_with_its_own_balance() -> None:
    with frozen_server() as srv, CrackTraderAPI(srv.base_url) as api:
        first = api.start_session("SmaCross", **LIVE).run_id
        paper = {"paper": {"balances": {"USDT": 2500.0}}}
        second = api.start_session("BuyAndHold", **LIVE, exchange_config=paper).run_id
        assert second and api.get_balance() == {"USDT": 2500.0}
        api.stop_session(second, flatten=True)
        assert api.get_balance() == {"USDT": 10000.0}  # back to the newest one still running
        assert api.stop_session(str(first)).status == "stopped"


def test_a_second_session_over_max_live_sessions_raises_session_limit() -> None:
    settings = get_settings().model_copy(update={"max_live_sessions": 1})
    with frozen_server(settings) as srv, CrackTraderAPI(srv.base_url) as api:
        run_id = api.start_session("SmaCross", **LIVE).run_id
        with pytest.raises(SessionLimitError) as caught:
            api.start_session("SmaCross", **LIVE)
        err = caught.value
        assert isinstance(err, ConflictError) and (err.status_code, err.code) == (409, "SESSION_LIMIT")
        assert err.details == {"max_live_sessions": 1} and "CRACKTRADER_MAX_LIVE_SESSIONS" in err.message
        api.stop_session(str(run_id))
        assert api.start_session("SmaCross", **LIVE).status == "running"  # the slot freed


def test_sessions_that_cannot_start_or_do_not_exist_raise_typed_errors() -> None:
    with frozen_server() as srv, CrackTraderAPI(srv.base_url) as api:
        with pytest.raises(NotFoundError) as missing:
            api.session_status("no-such-session")
        assert (missing.value.status_code, missing.value.code) == (404, "NOT_FOUND")
        with pytest.raises(NotFoundError):
            api.stop_session("no-such-session")
        with pytest.raises(ValidationError) as live:
            api.start_session("SmaCross", **LIVE, mode="live")
        assert (live.value.status_code, live.value.code) == (422, "INVALID_LIVE_REQUEST")
        with pytest.raises(InvalidPaperConfigError) as bad:
            api.start_session("SmaCross", **LIVE, exchange_config={"paper": {"balance": 5}})
        assert isinstance(bad.value, ValidationError) and bad.value.status_code == 422
        assert "balances" in bad.value.details["accepted"] and "balance" in bad.value.message
        with pytest.raises(ValidationError) as unknown:
            api.start_session("Nope", **LIVE)
        assert unknown.value.code == "UNKNOWN_STRATEGY"
        with pytest.raises(NoActiveRunError):
            api.get_balance()  # none of the refused starts counts as this client's session


def test_pause_resume_cancel_and_close_control_a_running_session() -> None:
    with frozen_server() as srv, CrackTraderAPI(srv.base_url) as api:
        run_id = str(api.start_session("SmaCross", **LIVE).run_id)
        paused = api.pause_session(run_id)
        assert (paused.status, paused.message) == ("running", "New entries paused")
        risk = api.session_status(run_id).risk
        assert risk is not None and risk["paused"] is True
        assert api.resume_session(run_id).message == "Entries resumed"
        risk = api.session_status(run_id).risk
        assert risk is not None and risk["paused"] is False
        with pytest.raises(NotFoundError) as no_order:
            api.cancel_order(run_id, 99)
        assert no_order.value.code == "ORDER_NOT_FOUND" and no_order.value.details["open_orders"] == []
        with pytest.raises(ConflictError) as flat:
            api.close_position(run_id, "BTC/USDT")  # the slash travels encoded and reaches the route
        assert (flat.value.status_code, flat.value.code) == (409, "NO_POSITION")
        assert flat.value.details == {"symbol": "BTC/USDT"}
        api.stop_session(run_id)
        with pytest.raises(NoActiveRunError):
            api.pause_session(run_id)


def test_watch_session_yields_until_the_session_ends_or_times_out() -> None:
    with frozen_server() as srv, CrackTraderAPI(srv.base_url) as api:
        run_id = str(api.start_session("SmaCross", **LIVE).run_id)
        impatient = api.watch_session(run_id, interval=POLL, timeout=0)
        assert next(impatient).status == "running"
        with pytest.raises(TimeoutError, match="still running after 0s"):
            next(impatient)

        watch = api.watch_session(run_id, interval=POLL)
        assert next(watch).status == "running"
        api.stop_session(run_id)
        assert next(watch).status == "stopped"
        assert list(watch) == []  # it ended with the session


@pytest.mark.anyio
async def test_async_client_runs_the_same_session_lifecycle() -> None:
    settings = get_settings().model_copy(update={"max_live_sessions": 1})
    with frozen_server(settings) as srv:
        async with AsyncCrackTraderAPI(srv.base_url) as api:
            run_id = str((await api.start_session("SmaCross", **LIVE)).run_id)
            assert await api.get_balance() == {"USDT": 10000.0}
            status = await api.session_status(run_id)
            assert (status.phase, status.last_candle_time, status.balances) == (
                "warming_up",
                LAST_CANDLE,
                {"USDT": 10000.0},
            )
            with pytest.raises(SessionLimitError):
                await api.start_session("SmaCross", **LIVE)
            assert (await api.pause_session(run_id)).message == "New entries paused"
            assert (await api.resume_session(run_id)).message == "Entries resumed"
            with pytest.raises(ConflictError, match="holds no BTC/USDT position"):
                await api.close_position(run_id, "BTC/USDT")
            with pytest.raises(NotFoundError, match="no open order 7"):
                await api.cancel_order(run_id, 7)
            assert (await api.stop_session(run_id, flatten=True)).status == "stopped"
            with pytest.raises(NoActiveRunError) as again:
                await api.stop_session(run_id)
            assert again.value.code == "NO_ACTIVE_RUN"
            with pytest.raises(NoActiveRunError, match="pass run_id="):
                await api.get_balance()

            srv.app.state.sessions.clock = SystemClock()  # a replay paces itself by the clock: let it run
            replay = str((await api.start_session("SmaCross", **REPLAY)).run_id)  # the slot is free again
            seen = [s async for s in api.watch_session(replay, interval=POLL, timeout=60)]
            assert seen[-1].status == "completed"
            results = await api.session_results(replay, limit=1000)
            with pytest.raises(NotFoundError):
                await api.session_status("no-such-session")
        with CrackTraderAPI(srv.base_url) as sync_api:
            backtest = backtest_of_the_replay(sync_api)
    assert results.final_value == backtest.final_value and len(results.trades) == len(backtest.trades)
