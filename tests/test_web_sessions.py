"""Paper sessions over HTTP: `POST /api/v1/runs`, `/runs/{id}/status`, `/runs/{id}/stop`, several at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from cracktrader.brokers.paper import PaperSession
from cracktrader.clock import ManualClock
from cracktrader.data.feeds.base import BarBatch
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.broker import SimSettings
from cracktrader.runs.backtest import execute_backtest
from cracktrader.runs.config import BacktestConfig
from cracktrader.runs.results import full_document
from cracktrader.runs.sessions import LiveRun
from cracktrader.runs.trade import PaperPlan
from cracktrader.settings import get_settings
from cracktrader.strategies.builtin import SmaCross
from web_support import app_client

pytestmark = pytest.mark.anyio
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
LIVE = {
    "strategy_name": "SmaCross",
    "symbols": ["BTC/USDT"],
    "timeframe": "1m",
    "exchange": "synthetic",
    "mode": "paper",
}
REPLAY = {
    **LIVE,
    "timeframe": "1h",
    "exchange_config": {"paper": {"replay": {"start": "2024-01-01", "end": "2024-03-01", "speed": 1e9}}},
}


async def _until(c: httpx.AsyncClient, run_id: str, status: str) -> dict[str, Any]:
    """Poll the session's status until it is `status` (the replay runs without real waiting)."""
    for _ in range(2000):
        doc = (await c.get(f"/api/v1/runs/{run_id}/status")).json()
        if doc["status"] == status:
            return doc
        await asyncio.sleep(0.005)
    raise AssertionError(f"session never became {status}: {doc}")


async def test_a_replayed_paper_session_completes_with_the_backtests_trades() -> None:
    async with app_client() as c:
        r = await c.post("/api/v1/runs", json=REPLAY)
        assert r.status_code == 201, r.text
        run_id = r.json()["run_id"]
        done = await _until(c, run_id, "completed")
        results = (await c.get(f"/api/v1/runs/{run_id}/results", params={"limit": 1000})).json()
        record = (await c.get(f"/api/v1/runs/{run_id}")).json()
    config = BacktestConfig(
        strategy_name="SmaCross",
        symbols=["BTC/USDT"],
        timeframe="1h",
        exchange="synthetic",
        start_date="2024-01-01",
        end_date="2024-03-01",
        exchange_rules=True,  # as the paper session (its default): like with like
    )
    backtest = full_document(execute_backtest(config))
    assert results["final_value"] == backtest["final_value"]
    assert [t["price"] for t in results["trades"]] == [t["price"] for t in backtest["trades"]]
    assert done["trade_count"] == len(backtest["trades"]) and done["condition"] == "ok"
    assert record["mode"] == "paper" and record["status"] == "completed"


async def test_a_live_synthetic_session_warms_up_then_acts_on_each_closed_candle_and_stops() -> None:
    async with app_client() as c:
        clock = ManualClock(NOW + 10)
        c.app.state.sessions.clock = clock  # type: ignore[attr-defined]
        r = await c.post("/api/v1/runs", json=LIVE)
        run_id = r.json()["run_id"]
        first = (await c.get(f"/api/v1/runs/{run_id}/status")).json()
        assert (first["status"], first["phase"], first["bars_processed"]) == ("running", "warming_up", 0)
        assert first["last_candle_time"] == "2025-12-31T23:59:00Z"  # the last closed 1m bar of the warm-up
        for _ in range(3):
            await clock.advance(60_000)
        now = (await c.get(f"/api/v1/runs/{run_id}/status")).json()
        assert now["bars_processed"] == 3 and now["last_candle_time"] == "2026-01-01T00:02:00Z"
        assert now["balances"] == {"USDT": now["cash"]} and now["data_lag_seconds"] == 0.0
        # Each candle was decided on at the clock's time: 10 ms (virtual) after its close.
        assert now["decision_lag_ms"] == {"last": 10.0, "p50": 10.0, "p99": 10.0, "max": 10.0, "samples": 3.0}
        # The runner slot stays free for backtests meanwhile.
        assert (await c.get("/api/v1/status")).json()["status"] == "idle"
        stopped = await c.post(f"/api/v1/runs/{run_id}/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        again = await c.post(f"/api/v1/runs/{run_id}/stop")
        assert again.status_code == 409 and again.json()["error"]["code"] == "NO_ACTIVE_RUN"
        record = (await c.get(f"/api/v1/runs/{run_id}")).json()
        assert record["status"] == "stopped"
        pinned = record["config"]["inputs"]["strategy"]
        assert pinned["class"] == "SmaCross" and len(pinned["source_sha256"]) == 64


async def test_stop_with_flatten_closes_the_positions_and_cancels_open_orders() -> None:
    async with app_client() as c:
        clock = ManualClock(NOW + 10)
        c.app.state.sessions.clock = clock  # type: ignore[attr-defined]
        run_id = (await c.post("/api/v1/runs", json={**LIVE, "strategy_name": "BuyAndHold"})).json()["run_id"]
        await clock.advance(60_000)  # first live bar: the buy is placed
        await clock.advance(60_000)  # it fills at the next bar's open
        held = (await c.get(f"/api/v1/runs/{run_id}/status")).json()
        assert len(held["positions"]) == 1 and held["trade_count"] == 1
        r = await c.post(f"/api/v1/runs/{run_id}/stop", json={"flatten": True})
        assert r.json()["status"] == "stopped"
        final = (await c.get(f"/api/v1/runs/{run_id}/status")).json()
        assert final["positions"] == [] and final["open_orders"] == [] and final["trade_count"] == 2
        assert final["realized_pnl"] == pytest.approx(final["pnl"]) and final["unrealized_pnl"] == 0.0


async def test_sessions_over_the_limit_are_refused_with_409_session_limit() -> None:
    settings = get_settings().model_copy(update={"max_live_sessions": 2})
    async with app_client(settings) as c:
        c.app.state.sessions.clock = ManualClock(NOW)  # type: ignore[attr-defined]
        ids = [(await c.post("/api/v1/runs", json=LIVE)).json()["run_id"] for _ in range(2)]
        third = await c.post("/api/v1/runs", json=LIVE)
        assert third.status_code == 409 and third.json()["error"]["code"] == "SESSION_LIMIT"
        assert third.json()["error"]["details"] == {"max_live_sessions": 2}
        await c.post(f"/api/v1/runs/{ids[0]}/stop")
        assert (await c.post("/api/v1/runs", json=LIVE)).status_code == 201  # a slot freed


@pytest.mark.parametrize(
    ("body", "status", "code", "text"),
    [
        ({**LIVE, "mode": "live"}, 422, "INVALID_LIVE_REQUEST", "synthetic exchange has no orders"),
        ({**LIVE, "exchange": "binanse"}, 400, "UNKNOWN_EXCHANGE", "Did you mean binance"),
        (
            {**REPLAY, "exchange_config": {"paper": {**REPLAY["exchange_config"]["paper"], "fill_model": "quote"}}},  # type: ignore[index]
            422,
            "INVALID_PAPER_CONFIG",
            "A replay has no live quotes",
        ),
        ({**LIVE, "exchange_config": {"paper": {"balance": 5}}}, 422, "INVALID_PAPER_CONFIG", "balance"),
        ({**LIVE, "strategy_name": "Nope"}, 400, "UNKNOWN_STRATEGY", "Nope"),
    ],
)
async def test_sessions_that_cannot_start_get_a_clear_error(body: dict, status: int, code: str, text: str) -> None:
    async with app_client() as c:
        r = await c.post("/api/v1/runs", json=body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code and text in r.json()["error"]["message"]


async def test_an_unknown_session_is_not_found() -> None:
    async with app_client() as c:
        r = await c.get("/api/v1/runs/nope/status")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


class _Stalled:
    """A feed whose next candle never comes."""

    async def __aiter__(self) -> AsyncIterator[BarBatch]:
        await asyncio.Event().wait()
        yield BarBatch(0, {})  # pragma: no cover


async def test_no_candle_for_a_timeframe_plus_30_s_reports_stale_data() -> None:
    tf = parse_timeframe("1m")
    clock = ManualClock(NOW)
    session = PaperSession(SmaCross(), ("BTC/USDT",), SimSettings(), tf.periods_per_year)
    from cracktrader.data.feeds.base import ClosedCandle

    session.warm(NOW - tf.ms, {"BTC/USDT": ClosedCandle(1.0, 1.0, 1.0, 1.0, 1.0)})
    run = LiveRun("r", None, {}, PaperPlan(session, _Stalled(), [], tf, "USDT", replay=False), clock)
    assert run.snapshot()["condition"] == "ok"
    await clock.advance(tf.ms + 30_000)  # the next candle was due at NOW + 1m; 30 s later it still is not there
    assert run.snapshot()["condition"] == "ok"
    await clock.advance(1)
    late = run.snapshot()
    assert (late["condition"], late["reasons"]) == ("degraded", ["STALE_DATA"])
    assert late["data_lag_seconds"] == pytest.approx(30.001)


async def test_risk_limits_refuse_orders_over_them_and_count_each_denial() -> None:
    body = {**REPLAY, "exchange_config": {**REPLAY["exchange_config"], "risk": {"max_order_notional": 100.0}}}
    async with app_client() as c:
        run_id = (await c.post("/api/v1/runs", json=body)).json()["run_id"]
        done = await _until(c, run_id, "completed")
        results = (await c.get(f"/api/v1/runs/{run_id}/results", params={"limit": 1000})).json()
    assert done["trade_count"] == 0 and done["pnl"] == 0.0
    denials = done["risk"]["denials"]
    assert list(denials) == ["MAX_ORDER_NOTIONAL"] and denials["MAX_ORDER_NOTIONAL"] >= 10
    last = done["risk"]["last_denials"][-1]
    assert last["code"] == "MAX_ORDER_NOTIONAL" and "100" in last["message"]
    rejected = [o for o in results["orders"] if o["status"] == "rejected"]
    assert len(rejected) == denials["MAX_ORDER_NOTIONAL"]
    assert {o["reason"] for o in rejected} == {"refused by a risk limit"}


async def test_bad_risk_limits_are_refused_naming_the_key() -> None:
    body = {**LIVE, "exchange_config": {"risk": {"max_order_notional": -1}}}
    async with app_client() as c:
        r = await c.post("/api/v1/runs", json=body)
    assert r.status_code == 422, r.text
    assert "max_order_notional" in r.json()["error"]["message"]


async def test_close_one_position_cancel_an_order_and_pause_then_resume_entries() -> None:
    async with app_client() as c:
        clock = ManualClock(NOW + 10)
        c.app.state.sessions.clock = clock  # type: ignore[attr-defined]
        run_id = (await c.post("/api/v1/runs", json={**LIVE, "strategy_name": "BuyAndHold"})).json()["run_id"]
        base = f"/api/v1/runs/{run_id}"
        await clock.advance(60_000)
        await clock.advance(60_000)  # bought at this bar's open
        assert len((await c.get(f"{base}/status")).json()["positions"]) == 1
        missing = await c.post(f"{base}/orders/999/cancel")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "ORDER_NOT_FOUND"
        assert (await c.post(f"{base}/pause")).status_code == 200
        closed = await c.post(f"{base}/positions/BTC/USDT/close")
        assert closed.status_code == 200, closed.text
        flat = (await c.get(f"{base}/status")).json()
        assert flat["positions"] == [] and flat["trade_count"] == 2
        again = await c.post(f"{base}/positions/BTC/USDT/close")
        assert again.status_code == 409 and again.json()["error"]["code"] == "NO_POSITION"
        await clock.advance(60_000)  # flat again: BuyAndHold would buy, but entries are paused
        paused = (await c.get(f"{base}/status")).json()
        assert paused["risk"]["denials"] == {"ENTRIES_PAUSED": 1} and paused["risk"]["paused"] is True
        assert (await c.post(f"{base}/resume")).status_code == 200
        await clock.advance(60_000)  # the buy goes out
        await clock.advance(60_000)  # and fills
        assert len((await c.get(f"{base}/status")).json()["positions"]) == 1
        await c.post(f"{base}/stop")
        ended = await c.post(f"{base}/pause")
        assert ended.status_code == 409 and ended.json()["error"]["code"] == "NO_ACTIVE_RUN"


def _replay_of(bars_speed: float) -> dict[str, Any]:
    replay = {"start": "2024-01-01", "end": "2024-01-05", "speed": bars_speed}
    return {**LIVE, "timeframe": "1h", "exchange_config": {"paper": {"replay": replay}}}


async def test_a_session_stream_follows_it_by_run_id_and_the_slot_stream_never_sees_it() -> None:
    from websockets.asyncio.client import connect

    from web_support import live_server

    # 96 hourly bars at speed 72,000: one bar each 50 ms, about 5 s in all (the stream connects long before).
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws/status") as slot:
            await slot.recv()  # the slot's snapshot
            async with httpx.AsyncClient(base_url=srv.base_url) as c:
                run_id = (await c.post("/api/v1/runs", json=_replay_of(72_000))).json()["run_id"]
            async with connect(f"{srv.ws_url}/api/v1/ws/status?run_id={run_id}") as ws:
                seen = []
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                    seen.append(event)
                    if event["payload"].get("status") == "completed":
                        break
            slot_events = []
            with contextlib.suppress(TimeoutError):
                while True:
                    slot_events.append(json.loads(await asyncio.wait_for(slot.recv(), timeout=0.3)))
        async with connect(f"{srv.ws_url}/api/v1/ws/status?run_id=nope") as bad:
            with pytest.raises(ConnectionClosed) as closed:
                await bad.recv()
    assert seen[0]["type"] == "snapshot" and seen[0]["payload"]["run_id"] == run_id
    assert all(e["payload"]["run_id"] == run_id for e in seen[1:])
    assert {e["type"] for e in seen[1:]} == {"status_update", "trade_execution"}  # its fills too
    updates = [e["payload"] for e in seen[1:] if e["type"] == "status_update"]
    bars = [u["bars_processed"] for u in updates]
    assert bars == sorted(bars) and bars[-1] == 96
    assert all(e["payload"].get("run_id") != run_id for e in slot_events)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_realized_plus_unrealized_is_the_pnl_with_a_position_open() -> None:
    async with app_client() as c:
        clock = ManualClock(NOW + 10)
        c.app.state.sessions.clock = clock  # type: ignore[attr-defined]
        run_id = (await c.post("/api/v1/runs", json={**LIVE, "strategy_name": "BuyAndHold"})).json()["run_id"]
        for _ in range(3):
            await clock.advance(60_000)
        s = (await c.get(f"/api/v1/runs/{run_id}/status")).json()
        assert len(s["positions"]) == 1 and s["fees_paid"] > 0
        assert s["realized_pnl"] + s["unrealized_pnl"] == pytest.approx(s["pnl"], abs=1e-9)
        await c.post(f"/api/v1/runs/{run_id}/stop")


@pytest.mark.parametrize(
    ("paper", "text"),
    [
        ([], "exchange_config.paper must be an object, got list"),
        ({"balances": {"USDT": 1e308}}, "balances.USDT"),
        ({"balances": {"USDT": float("inf")}}, "balances"),
        ({"replay": {"start": "2024-01-01"}}, "replay.end: Field required"),
    ],
)
async def test_a_malformed_paper_config_is_refused_naming_the_field(paper: object, text: str) -> None:
    async with app_client() as c:
        r = await c.post("/api/v1/runs", content=json.dumps({**LIVE, "exchange_config": {"paper": paper}}),
                         headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422, r.text
    assert text in r.json()["error"]["message"]


async def test_a_running_session_writes_each_bar_and_its_results_come_from_the_rows() -> None:
    async with app_client() as c:
        clock = ManualClock(NOW + 10)
        c.app.state.sessions.clock = clock  # type: ignore[attr-defined]
        run_id = (await c.post("/api/v1/runs", json={**LIVE, "strategy_name": "BuyAndHold"})).json()["run_id"]
        store = c.app.state.run_store  # type: ignore[attr-defined]
        sessions = c.app.state.sessions  # type: ignore[attr-defined]
        run = sessions.runs[run_id]
        for _ in range(3):
            await clock.advance(60_000)
        await _written(run)
        stored = await sessions.rows.load(run_id)
        assert stored.bars == run.plan.session.bars and stored.last_bar_ts == run.plan.session.last_timestamp
        page = await store.read_page(run_id, max_points=None, limit=None, offset=0)
        from_rows, in_memory = page.document(), full_document(run.current_results())
        for key in in_memory:
            if key != "end_time":  # a running session's: the last write's time, or now
                assert from_rows[key] == in_memory[key], key
        assert from_rows["status"] == "running" and len(from_rows["trades"]) == 1  # the buy
        record = (await c.get(f"/api/v1/runs/{run_id}")).json()
        assert record["status"] == "running" and record["ended_at"] is None
        await c.post(f"/api/v1/runs/{run_id}/stop", json={"flatten": True})
        final = (await store.read_page(run_id, max_points=None, limit=None, offset=0)).document()
        assert final == full_document(run.results)  # field by field, the flatten at the stop included
        assert final["status"] == "stopped" and len(final["trades"]) == 2
        fills = await sessions.rows.fills(run_id)
        assert [f["trade_id"] for f in fills] == [str(t["order_id"]) for t in final["trades"]]
        (balance,) = await sessions.rows.balances(run_id)
        assert balance["currency"] == "USDT" and balance["total"] == final["equity_curve"][-1]["cash"]


async def _written(run: LiveRun) -> None:
    """Until the session's captured rows are written (the writer runs beside the bars)."""
    for _ in range(2000):
        if run.pending is None and (run.writer is None or run.writer.done()):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the session's rows were never written")


async def test_a_sessions_orders_trades_and_equity_stream_on_the_channels_in_seed_001s_shape() -> None:
    from websockets.asyncio.client import connect

    from web_support import live_server

    # 96 hourly bars at speed 72,000 (one bar each 50 ms): SmaCross trades a few times in them.
    messages: list[dict[str, Any]] = []
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws") as ws:
            await ws.send(json.dumps({"action": "subscribe", "channels": ["orders", "trades", "equity"]}))
            assert json.loads(await ws.recv())["channel"] == "subscribed"
            async with httpx.AsyncClient(base_url=srv.base_url) as c:
                body = {**_replay_of(72_000), "strategy_params": {"fast": 3, "slow": 8}}
                run_id = (await c.post("/api/v1/runs", json=body)).json()["run_id"]
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                    if message["channel"] in ("orders", "trades", "equity"):
                        messages.append(message["data"])
                    if message["channel"] == "equity" and message["data"]["bar"] == 96:
                        break
                await _until(c, run_id, "completed")
                results = (await c.get(f"/api/v1/runs/{run_id}/results", params={"limit": 1000})).json()
    orders = [m for m in messages if "order_id" in m and "status" in m and "trade_id" in m]
    trades = [m for m in messages if "commission" in m and "order_id" in m and "trade_id" not in m]
    equity = [m for m in messages if "value" in m and "bar" in m]
    assert results["trades"] and all(m["run_id"] == run_id for m in messages)
    # Every order goes through the state machine, each change once; the filled ones match the results' trades.
    by_order: dict[str, list[str]] = {}
    for o in orders:
        assert set(o) >= {"order_id", "status", "symbol", "side", "amount", "price", "timestamp"}
        by_order.setdefault(o["order_id"], []).append(o["status"])
    assert all(s == ["pending_new", "submitted", "filled"] for s in by_order.values()), by_order
    filled = [o for o in orders if o["status"] == "filled"]
    assert [(o["side"], o["amount"], o["price"]) for o in filled] == [
        (t["side"], t["size"], t["price"]) for t in results["trades"]
    ]
    assert [t["price"] for t in trades] == [t["price"] for t in results["trades"]]
    assert [p["bar"] for p in equity] == list(range(1, 97))
    assert equity[-1]["value"] == pytest.approx(results["final_value"])
