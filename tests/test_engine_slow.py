"""A slow event-driven strategy still reports progress and sees a stop within a few of its bars."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from cracktrader.engine.backtest import EVENT_CHUNK_S, run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import align
from cracktrader.engine.strategy import Strategy
from cracktrader.settings import Settings
from cracktrader.strategies.builtin import SmaCrossEvents
from cracktrader.strategies.registry import load_registry
from engine_helpers import random_walk
from web_support import TEST_STRATEGY_DIR


def slow_strategy(**params: object) -> Strategy:
    """The test folder's SlowStrategy, loaded the way the server loads it."""
    return load_registry(Settings(strategy_dir=TEST_STRATEGY_DIR)).get("SlowStrategy")(params)


def test_a_slow_strategy_reports_progress_every_few_bars_not_every_4096() -> None:
    data = align({"X": random_walk(400)}, 8760.0)
    done: list[int] = []
    result = run_backtest(
        slow_strategy(bar_ms=20), data, SimSettings(), progress=lambda d, *_: done.append(d), should_stop=lambda: True
    )
    # Every bar takes 20 ms or more, so a chunk reaches its 50 ms deadline after three bars at most.
    assert not result.completed and done == [result.bars_processed]
    assert 1 <= result.bars_processed <= int(EVENT_CHUNK_S / 0.020) + 1


def test_stop_requested_during_a_slow_run_returns_within_a_few_bars() -> None:
    data = align({"X": random_walk(100_000)}, 8760.0)  # at least 500 s at 5 ms a bar
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    result = run_backtest(slow_strategy(bar_ms=5, trade_every=7), data, SimSettings(), should_stop=stop.is_set)
    late = time.monotonic() - t0 - 0.3
    assert not result.completed and 0 < result.bars_processed < 100_000
    assert late < 0.5, late
    assert len(result.orders) > 0  # it traded while slow


def test_a_busy_strategy_is_stopped_as_promptly_as_a_sleeping_one() -> None:
    data = align({"X": random_walk(100_000)}, 8760.0)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    result = run_backtest(slow_strategy(bar_ms=5, busy=True), data, SimSettings(), should_stop=stop.is_set)
    assert not result.completed and time.monotonic() - t0 - 0.3 < 0.5


def test_creating_the_release_file_lets_a_slow_run_finish_at_full_speed(tmp_path: Path) -> None:
    gate = tmp_path / "release"
    data = align({"X": random_walk(50_000)}, 8760.0)  # at least 250 s while held

    def progress(done: int, *_: object) -> None:
        if done >= 10:
            gate.touch()

    t0 = time.monotonic()
    result = run_backtest(slow_strategy(bar_ms=5, release_file=str(gate)), data, SimSettings(), progress=progress)
    assert result.completed and result.bars_processed == 50_000
    assert time.monotonic() - t0 < 60  # far below the 250 s the held bars would have taken


def test_a_fast_strategy_still_reports_in_chunks_of_thousands_of_bars() -> None:
    data = align({"X": random_walk(50_000)}, 8760.0)
    done: list[int] = []
    run_backtest(SmaCrossEvents(), data, SimSettings(), progress=lambda d, *_: done.append(d))
    assert done[-1] == 50_000 and len(done) <= 50_000 // 256
