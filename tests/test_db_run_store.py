"""RunStore against real SQLite and PostgreSQL databases migrated to head."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from cracktrader.db import run_store
from cracktrader.db.run_store import RunExistsError, RunNotFoundError, RunStore, decode_document, encode_document
from cracktrader.db.session_store import SessionStore
from cracktrader.engine.records import STATUS_FILLED, STATUS_REJECTED
from cracktrader.runs.config import BacktestConfig, redact
from cracktrader.runs.results import (
    EQUITY_DTYPE,
    ORDER_DTYPE,
    RunResults,
    empty_results,
    full_document,
    make_head,
    page_of,
)
from db_support import DatabaseTarget, row_count

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the only loop the app uses)."""
    return "asyncio"


@pytest.fixture
async def store(target: DatabaseTarget) -> AsyncIterator[RunStore]:
    """A RunStore on the migrated database."""
    store = target.store()
    try:
        yield store
    finally:
        await store.engine.dispose()


def new_id() -> str:
    """A fresh run id."""
    return uuid.uuid4().hex


async def add_run(
    store: RunStore,
    *,
    run_id: str | None = None,
    mode: str = "backtest",
    status: str = "starting",
    strategy_name: str = "sma_cross",
    symbols: list[str] | None = None,
    user_id: int | None = None,
    created_at: datetime = T0,
) -> str:
    """Create a run with defaults for everything the test does not care about."""
    run_id = run_id or new_id()
    await store.create(
        run_id=run_id,
        mode=mode,
        status=status,
        config={"strategy_name": strategy_name},
        strategy_name=strategy_name,
        symbols=symbols or ["BTC/USDT"],
        timeframe="1h",
        exchange="binance",
        user_id=user_id,
        created_at=created_at,
    )
    return run_id


def sample_results(run_id: str, points: int = 3, orders: int = 2) -> RunResults:
    """Columnar results like a backtest's: an hourly curve and alternating buy/sell fills."""
    head = make_head(
        run_id=run_id,
        config={"strategy_name": "sma_cross"},
        status="completed",
        start_time="2024-03-01T12:00:00Z",
        end_time="2024-03-01T12:05:00Z",
        symbols=["BTC/USDT"],
        initial_cash=10_000.0,
        performance_metrics={"total_return": 0.0123, "sharpe_ratio": 1.5, "total_trades": 1, "win_rate": None},
        final_value=10_123.0,
    )
    equity = np.zeros(points, EQUITY_DTYPE)
    equity["ts"] = np.arange(points, dtype=np.int64) * 3_600_000 + 1_704_067_200_000
    equity["value"] = 10_000.0 + np.arange(points) * 0.1
    equity["cash"] = 5_000.25
    rows = np.zeros(orders, ORDER_DTYPE)
    rows["id"] = np.arange(1, orders + 1)
    rows["created"] = 1_704_067_200_000 + np.arange(orders) * 3_600_000
    rows["ts"] = rows["created"] + 3_600_000
    rows["side"] = np.where(np.arange(orders) % 2 == 0, 1, -1)
    rows["status"] = np.where(np.arange(orders) % 3 == 2, STATUS_REJECTED, STATUS_FILLED)
    rows["size"] = 0.123456789
    rows["price"] = 42_000.5
    rows["trigger"] = np.nan
    rows["fee"] = 0.5
    rows["pnl"] = np.where(rows["side"] < 0, 12.5, np.nan)
    rows["ret"] = np.where(rows["side"] < 0, 0.01, np.nan)
    return RunResults(head, equity, rows)


def sample_document(run_id: str, points: int = 3) -> dict[str, Any]:
    """The whole results document of `sample_results`."""
    return full_document(sample_results(run_id, points))


async def test_created_run_reads_back_with_exact_values(store: RunStore) -> None:
    config = BacktestConfig(strategy_name="sma_cross", symbols=["BTC/USDT", "ETH/USDT"], strategy_params={"p": 3})
    secret_config = {**config.model_dump(), "exchange_config": {"apiKey": "k", "secret": "s"}}
    run_id = new_id()
    created = datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    await store.create(
        run_id=run_id,
        mode="paper",
        status="starting",
        config=redact(secret_config),
        strategy_name="sma_cross",
        symbols=["ETH/USDT", "BTC/USDT"],
        timeframe="15m",
        exchange="kraken",
        user_id=7,
        created_at=created,
    )

    run = await store.get(run_id)

    assert run is not None
    assert run.id == run_id
    assert run.user_id == 7
    assert (run.mode, run.status, run.strategy_name, run.timeframe, run.exchange) == (
        "paper",
        "starting",
        "sma_cross",
        "15m",
        "kraken",
    )
    assert run.symbols == ("ETH/USDT", "BTC/USDT")  # request order, not sorted
    assert run.config == redact(secret_config)
    assert run.config["exchange_config"] == {} and run.config["exchange_config_dropped_keys"] == 2
    assert run.created_at == datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert run.created_at.tzinfo is UTC
    assert (run.started_at, run.ended_at, run.error) == (None, None, None)
    assert (run.final_value, run.total_return, run.metrics) == (None, None, None)


async def test_create_without_created_at_uses_now(store: RunStore) -> None:
    before = datetime.now(UTC)
    run_id = new_id()
    await store.create(
        run_id=run_id,
        mode="backtest",
        status="starting",
        config={},
        strategy_name="s",
        symbols=["BTC/USDT"],
        timeframe="1h",
        exchange="binance",
    )
    run = await store.get(run_id)
    assert run is not None
    assert before - timedelta(seconds=1) <= run.created_at <= datetime.now(UTC) + timedelta(seconds=1)


async def test_create_with_a_taken_id_raises_run_exists(store: RunStore) -> None:
    run_id = await add_run(store)
    with pytest.raises(RunExistsError) as info:
        await add_run(store, run_id=run_id)
    assert info.value.status_code == 409
    assert (await store.list())[1] == 1


async def test_create_rejects_bad_ids_modes_statuses_and_naive_datetimes(store: RunStore) -> None:
    with pytest.raises(ValueError, match="run_id"):
        await add_run(store, run_id="not-hex")
    with pytest.raises(ValueError, match="mode"):
        await add_run(store, mode="dry-run")
    with pytest.raises(ValueError, match="status"):
        await add_run(store, status="paused")
    with pytest.raises(ValueError, match="timezone-aware"):
        await add_run(store, created_at=datetime(2024, 1, 1))
    assert (await store.list())[1] == 0


async def test_update_status_sets_only_the_fields_given(store: RunStore) -> None:
    run_id = await add_run(store)
    started = T0 + timedelta(seconds=1)
    await store.update_status(run_id, status="running", started_at=started)
    run = await store.get(run_id)
    assert run is not None
    assert (run.status, run.started_at, run.ended_at, run.error) == ("running", started, None, None)

    ended = T0 + timedelta(minutes=5)
    await store.update_status(run_id, status="failed", ended_at=ended, error="boom")
    run = await store.get(run_id)
    assert run is not None
    assert (run.status, run.started_at, run.ended_at, run.error) == ("failed", started, ended, "boom")


async def test_update_status_of_an_unknown_run_raises_not_found(store: RunStore) -> None:
    with pytest.raises(RunNotFoundError):
        await store.update_status(new_id(), status="running")
    with pytest.raises(ValueError, match="status"):
        await store.update_status(await add_run(store), status="idle")


async def test_saved_results_round_trip_exactly_and_fill_the_summary(store: RunStore) -> None:
    run_id = await add_run(store)
    results = sample_results(run_id, points=50)
    document = full_document(results)
    ended = T0 + timedelta(minutes=5)

    await store.save_results(run_id, results=results, status="completed", ended_at=ended)

    assert await store.get_results(run_id) == document
    run = await store.get(run_id)
    assert run is not None
    assert (run.status, run.ended_at, run.error) == ("completed", ended, None)
    assert run.final_value == 10_123.0
    assert run.total_return == 0.0123
    assert run.metrics == {"total_return": 0.0123, "sharpe_ratio": 1.5, "total_trades": 1, "win_rate": None}


async def test_saving_results_again_replaces_the_document(store: RunStore, target: DatabaseTarget) -> None:
    run_id = await add_run(store)
    await store.save_results(run_id, results=sample_results(run_id), status="stopped", ended_at=T0)
    second = empty_results(run_id=run_id, config=None, status="failed", error="exchange down")

    await store.save_results(run_id, results=second, status="failed", ended_at=T0, error="exchange down")

    assert await store.get_results(run_id) == full_document(second)
    run = await store.get(run_id)
    assert run is not None
    assert (run.status, run.error, run.final_value, run.total_return, run.metrics) == (
        "failed",
        "exchange down",
        None,
        None,
        {},
    )
    assert await row_count(target, "run_results") == 1
    assert await row_count(target, "run_series") == 0


async def test_results_of_a_run_without_results_or_of_no_run_are_none(store: RunStore) -> None:
    run_id = await add_run(store)
    assert await store.get_results(run_id) is None
    assert await store.get_results(new_id()) is None
    with pytest.raises(RunNotFoundError):
        await store.save_results(new_id(), results=sample_results("x"), status="completed", ended_at=T0)


async def test_nan_and_infinity_are_stored_as_null(store: RunStore) -> None:
    run_id = await add_run(store)
    results = sample_results(run_id, points=70_000)  # two stored chunks
    results.equity["value"][30_001] = math.nan
    results.equity["cash"][69_999] = -math.inf
    results.head["performance_metrics"] = {"total_return": math.nan, "sharpe_ratio": math.inf, "np": np.float64("nan")}
    results.head["final_value"] = math.inf

    await store.save_results(run_id, results=results, status="completed", ended_at=T0)

    loaded = await store.get_results(run_id)
    assert loaded is not None
    assert loaded["equity_curve"][30_001]["value"] is None
    assert loaded["equity_curve"][69_999]["cash"] is None
    assert loaded["equity_curve"][30_000] == full_document(results)["equity_curve"][30_000]
    assert loaded["performance_metrics"] == {"total_return": None, "sharpe_ratio": None, "np": None}
    assert loaded["final_value"] is None
    run = await store.get(run_id)
    assert run is not None
    assert (run.final_value, run.total_return) == (None, None)
    assert run.metrics == {"total_return": None, "sharpe_ratio": None, "np": None}


async def test_a_page_reads_only_the_chunks_it_shows(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = await add_run(store)
    results = sample_results(run_id, points=200_000, orders=50_000)
    await store.save_results(run_id, results=results, status="completed", ended_at=T0)
    decoded: list[int] = []
    real = run_store.decode_chunk

    def counting(blob: bytes, dtype: np.dtype[Any]) -> np.ndarray:
        rows = real(blob, dtype)
        if dtype == ORDER_DTYPE:
            decoded.append(rows.shape[0])
        return rows

    monkeypatch.setattr(run_store, "decode_chunk", counting)

    page = await store.read_page(run_id, max_points=1_000, limit=100, offset=20_000)

    assert page is not None
    expected = page_of(results, max_points=1_000, limit=100, offset=20_000)
    assert page.document() == expected.document()
    assert (page.orders_total, page.trades_total, page.equity_total) == (50_000, results.n_fills, 200_000)
    assert page.document()["orders"][0]["id"] == 20_001
    # Orders 20,000-20,099 lie in the second 16,384-row chunk; fill 20,000 lies in the second or third.
    assert len(decoded) <= 3 and all(n == run_store.ORDER_CHUNK for n in decoded)


async def test_appended_series_read_back_as_one(store: RunStore) -> None:
    run_id = await add_run(store)
    results = sample_results(run_id, points=10, orders=9)
    head_only = RunResults(results.head, results.equity[:0], results.orders[:0])
    await store.save_results(run_id, results=head_only, status="running", ended_at=T0)

    for k in range(0, 10, 4):
        await store.append_series(run_id, equity=results.equity[k : k + 4], orders=results.orders[k : k + 4])

    assert await store.get_results(run_id) == {**full_document(results), "status": "running"}
    page = await store.read_page(run_id, max_points=None, limit=2, offset=3)
    assert page is not None
    assert [t["id"] for t in page.document()["trades"]] == [4, 5]
    assert [o["id"] for o in page.document()["orders"]] == [4, 5]


async def test_results_stored_as_one_document_are_still_served_sanitized(
    store: RunStore, target: DatabaseTarget
) -> None:
    # Runs saved before the columnar store kept the whole document in run_results; they must stay readable.
    run_id = await add_run(store)
    document = sample_document(run_id, points=30)
    document["config"] = {"strategy_name": "sma_cross", "exchange_config": {"sandbox": True, "apiKey": "LEAKED"}}
    blob, size = encode_document(document)
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO run_results (run_id, document, size_bytes) VALUES (:r, :d, :s)"),
            {"r": run_id, "d": blob, "s": size},
        )

    loaded = await store.get_results(run_id)
    assert loaded is not None
    # Served with the config sanitized as it would be stored today.
    assert "LEAKED" not in json.dumps(loaded)
    assert loaded["config"]["exchange_config"] == {"sandbox": True}
    assert {**loaded, "config": document["config"]} == document
    page = await store.read_page(run_id, max_points=10, limit=1, offset=1)
    assert page is not None and page.document()["trades"] == document["trades"][1:2]
    chunks = [rows async for rows in store.iter_series(run_id, "equity")]
    assert sum(c.shape[0] for c in chunks) == 30


async def test_list_filters_by_status_mode_and_strategy(store: RunStore) -> None:
    a = await add_run(store, mode="backtest", status="completed", strategy_name="sma")
    b = await add_run(store, mode="paper", status="running", strategy_name="sma")
    c = await add_run(store, mode="live", status="completed", strategy_name="rsi")

    async def ids(**filters: Any) -> set[str]:
        runs, total = await store.list(**filters)
        assert total == len(runs)
        return {r.id for r in runs}

    assert await ids() == {a, b, c}
    assert await ids(status="completed") == {a, c}
    assert await ids(mode="paper") == {b}
    assert await ids(strategy="sma") == {a, b}
    assert await ids(strategy="sm") == set()
    assert await ids(status="completed", strategy="rsi", mode="live") == {c}
    assert await ids(status="failed") == set()


async def test_symbol_filter_matches_whole_symbols_only(store: RunStore) -> None:
    exact = await add_run(store, symbols=["ETH/USDT", "BTC/USDT"])
    longer = await add_run(store, symbols=["BTC/USDTX"])
    prefixed = await add_run(store, symbols=["XBTC/USDT"])
    perp = await add_run(store, symbols=["BTC/USDT:USDT"])

    async def ids(symbol: str) -> set[str]:
        runs, total = await store.list(symbol=symbol)
        assert total == len(runs)
        return {r.id for r in runs}

    assert await ids("BTC/USDT") == {exact}
    assert await ids("BTC/USDTX") == {longer}
    assert await ids("XBTC/USDT") == {prefixed}
    assert await ids("BTC/USDT:USDT") == {perp}
    assert await ids("BTC") == set()
    assert await ids("BTC/%") == set()  # LIKE wildcards are plain characters here
    assert await ids("ETH/USDT") == {exact}


async def test_list_pages_newest_first_with_the_total(store: RunStore) -> None:
    ids = [await add_run(store, created_at=T0 + timedelta(minutes=i)) for i in range(7)]
    newest_first = ids[::-1]

    page1, total1 = await store.list(limit=3)
    page2, total2 = await store.list(limit=3, offset=3)
    page3, total3 = await store.list(limit=3, offset=6)
    empty, total4 = await store.list(limit=3, offset=9)
    count_only, total5 = await store.list(limit=0)
    far, total6 = await store.list(limit=2**63, offset=2**70)
    tail, _ = await store.list(limit=2**63, offset=5)

    assert [r.id for r in page1 + page2 + page3] == newest_first
    assert (total1, total2, total3, total4, total5, total6) == (7, 7, 7, 7, 7, 7)
    assert empty == [] and count_only == [] and far == []
    assert [r.id for r in tail] == newest_first[5:]
    assert [r.symbols for r in page1] == [("BTC/USDT",)] * 3
    with pytest.raises(ValueError):
        await store.list(offset=-1)


async def test_runs_created_in_the_same_instant_page_without_overlap(store: RunStore) -> None:
    ids = {await add_run(store, created_at=T0) for _ in range(5)}
    seen = [r.id for offset in range(0, 5, 2) for r in (await store.list(limit=2, offset=offset))[0]]
    assert sorted(seen) == sorted(ids)


async def test_delete_removes_the_run_its_symbols_and_its_results(store: RunStore, target: DatabaseTarget) -> None:
    keep = await add_run(store, symbols=["BTC/USDT"])
    gone = await add_run(store, symbols=["BTC/USDT", "ETH/USDT"])
    for run_id in (keep, gone):
        await store.save_results(run_id, results=sample_results(run_id), status="completed", ended_at=T0)

    assert await store.delete(gone) is True

    assert await store.get(gone) is None
    assert await store.get_results(gone) is None
    assert await store.delete(gone) is False
    assert await row_count(target, "run_results") == 1
    assert await row_count(target, "run_symbols") == 1
    assert await store.get_results(keep) is not None


async def test_a_user_cannot_read_or_delete_another_users_run(store: RunStore) -> None:
    mine = await add_run(store, user_id=1)
    theirs = await add_run(store, user_id=2)
    unowned = await add_run(store, user_id=None)
    await store.save_results(theirs, results=sample_results(theirs), status="completed", ended_at=T0)

    assert await store.get(theirs, user_id=1) is None
    assert await store.get_results(theirs, user_id=1) is None
    assert await store.delete(theirs, user_id=1) is False
    assert await store.get(unowned, user_id=1) is None
    runs, total = await store.list(user_id=1)
    assert ([r.id for r in runs], total) == ([mine], 1)

    # Still there for its owner, and for callers that do not scope by user (single-user mode, admin tools).
    assert (await store.get(theirs, user_id=2)) is not None
    assert await store.get_results(theirs, user_id=2) is not None
    assert (await store.get(theirs)) is not None
    assert await store.delete(theirs, user_id=2) is True


async def test_mark_interrupted_fails_only_runs_that_were_still_active(store: RunStore) -> None:
    starting = await add_run(store, status="starting")
    running = await add_run(store, status="running")
    done = await add_run(store, status="completed")
    stopped = await add_run(store, status="stopped")
    now = T0 + timedelta(hours=1)

    assert await store.mark_interrupted(now=now) == 2

    for run_id in (starting, running):
        run = await store.get(run_id)
        assert run is not None
        assert (run.status, run.error, run.ended_at) == ("failed", "interrupted", now)
    for run_id, status in ((done, "completed"), (stopped, "stopped")):
        run = await store.get(run_id)
        assert run is not None
        assert (run.status, run.error, run.ended_at) == (status, None, None)
    assert await store.mark_interrupted(now=now) == 0


async def test_concurrent_writers_all_succeed(store: RunStore) -> None:
    # The API creates runs while other runs report status and save results; SQLite must wait, not fail.
    async def lifecycle(i: int) -> str:
        run_id = await add_run(store, created_at=T0 + timedelta(seconds=i))
        await store.update_status(run_id, status="running", started_at=T0)
        await store.save_results(run_id, results=sample_results(run_id, 2_000), status="completed", ended_at=T0)
        return run_id

    ids = await asyncio.gather(*(lifecycle(i) for i in range(20)))

    runs, total = await store.list(status="completed", limit=100)
    assert total == 20
    assert {r.id for r in runs} == set(ids)


async def test_ping_measures_a_select_round_trip(store: RunStore) -> None:
    seconds = await store.ping()
    assert 0 < seconds < 5


@pytest.mark.slow
async def test_million_point_equity_curve_saves_and_loads(store: RunStore, target: DatabaseTarget) -> None:
    points = 1_000_000
    run_id = await add_run(store)
    rng = np.random.default_rng(7)
    results = sample_results(run_id, points=points, orders=0)
    results.equity["value"] = 10_000 + np.cumsum(rng.normal(0, 5, points))
    results.equity["cash"] = rng.random(points) * 1_000

    started = time.perf_counter()
    await store.save_results(run_id, results=results, status="completed", ended_at=T0)
    saved = time.perf_counter()
    page = await store.read_page(run_id, max_points=2_000, limit=10, offset=0)
    done = time.perf_counter()

    assert page is not None
    assert page.equity_total == points and page.equity.shape[0] <= 2_000
    assert page.document() == page_of(results, max_points=2_000, limit=10, offset=0).document()
    chunks = [rows async for rows in store.iter_series(run_id, "equity")]
    assert np.array_equal(np.concatenate(chunks), results.equity)
    # Shown with `pytest -s`; the numbers go in the report, the bound only catches pathological regressions.
    print(f"\n[{target.backend}] 1M-point equity curve: save {saved - started:.2f}s, thinned read {done - saved:.2f}s")
    assert done - started < 120


def test_documents_encode_to_compact_json_and_decode_to_equal_dicts() -> None:
    document = sample_document("r", points=41_000)
    document["unicode"] = "μ €"

    blob, size = encode_document(document)

    assert decode_document(blob) == document
    raw = zlib.decompress(blob)
    assert len(raw) == size
    assert json.loads(raw) == document
    assert b": " not in raw[:200]


async def test_mark_interrupted_spares_paper_and_live_sessions_with_rows_for_the_next_server(store: RunStore) -> None:
    sessions = SessionStore(store.engine)
    live, paper, backtest, bare_live = (
        await add_run(store, mode="live", status="running"),
        await add_run(store, mode="paper", status="running"),
        await add_run(store, mode="backtest", status="running"),
        await add_run(store, mode="live", status="starting"),  # cut short before it had rows
    )
    for run_id in (live, paper):
        await sessions.create(run_id, server_id="a" * 32, start_time="", now=T0)

    assert await store.mark_interrupted(now=T0 + timedelta(hours=1)) == 2

    runs = {run_id: await store.get(run_id) for run_id in (live, paper, backtest, bare_live)}
    statuses = {run_id: None if run is None else run.status for run_id, run in runs.items()}
    assert statuses == {live: "running", paper: "running", backtest: "failed", bare_live: "failed"}
