"""Backtests on imported candles: no dates means the last stored bars; other timeframes are resampled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cracktrader.cli import app
from cracktrader.data import service
from cracktrader.data.resample import resample
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.errors import DataUnavailableError
from cracktrader.runs.inputs import candles_sha256
from cracktrader.settings import Settings

runner = CliRunner()
START_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z: years before "now", as a historical CSV is
MINUTE = 60_000


def _import(tmp_path: Path, symbol: str, timeframe: str, bars: int, step_ms: int, first: int = START_MS) -> None:
    """Import `bars` candles of a wavy price, `step_ms` apart, as a CSV under the `csv` exchange."""
    src = tmp_path / f"{symbol.replace('/', '-')}-{timeframe}.csv"
    rows = []
    for i in range(bars):
        price = 100 + 10 * np.sin(i / 15) + (i % 7) * 0.1
        rows.append(f"{first + i * step_ms},{price:.4f},{price + 1:.4f},{price - 1:.4f},{price + 0.25:.4f},{1 + i % 3}")
    src.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    args = ["data", "import", str(src), "--symbol", symbol, "--timeframe", timeframe]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def _backtest(*args: str) -> dict[str, Any]:
    base = ["backtest", "-s", "SmaCross", "-p", "fast=3", "-p", "slow=8", "--exchange", "csv", "--json"]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_without_dates_a_csv_backtest_uses_the_last_1000_stored_bars(tmp_path: Path) -> None:
    _import(tmp_path, "FOO/USDT", "1h", 3000, 3_600_000)
    doc = _backtest("--symbol", "FOO/USDT", "--timeframe", "1h")
    data = doc["config"]["inputs"]["data"]["FOO/USDT"]
    assert data["count"] == 1000 and data["resampled_from"] is None
    assert data["first"] == "2020-03-24T08:00:00Z"  # bar 2000
    assert data["last"] == "2020-05-04T23:00:00Z"  # bar 2999, the last stored
    inputs = doc["config"]["inputs"]
    assert inputs["start"] == data["first"] and inputs["end"] == "2020-05-05T00:00:00Z"
    assert len(doc["equity_curve"]) == 1000


def test_five_minute_bars_are_resampled_from_stored_one_minute_bars(tmp_path: Path) -> None:
    _import(tmp_path, "FOO/USDT", "1m", 10_003, MINUTE)  # 2,000 whole 5m bars and 3 minutes of a forming one
    doc = _backtest("--symbol", "FOO/USDT", "--timeframe", "5m")
    data = doc["config"]["inputs"]["data"]["FOO/USDT"]
    assert data["resampled_from"] == "1m" and data["timeframe"] == "5m"
    assert data["count"] == 1000 and data["last"] == "2020-01-07T22:35:00Z"  # the 2,000th 5m bar
    minutes = service.open_store().read("csv", "FOO/USDT", "1m")
    expected = resample(minutes, "1m", "5m").slice_time(START_MS + 1000 * 5 * MINUTE, START_MS + 2000 * 5 * MINUTE)
    assert data["sha256"] == candles_sha256(expected)


def test_resampling_picks_the_finest_stored_timeframe_and_drops_partial_first_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1m from minute 2 on (its first hour is partial), 15m from the hour: 1h comes from 1m, without the partial hour.
    _import(tmp_path, "FOO/USDT", "1m", 600, MINUTE, first=START_MS + 2 * MINUTE)
    _import(tmp_path, "FOO/USDT", "15m", 40, 15 * MINUTE)
    loaded = service.load_run_candles("csv", "FOO/USDT", "1h", START_MS, START_MS + 10 * 3_600_000)
    assert loaded.resampled_from == "1m"
    assert loaded.candles.timestamp.tolist() == [START_MS + h * 3_600_000 for h in range(1, 10)]


def test_an_unusable_timeframe_names_what_is_stored_and_how_to_import(tmp_path: Path) -> None:
    _import(tmp_path, "FOO/USDT", "1h", 48, 3_600_000)
    with pytest.raises(DataUnavailableError) as caught:
        service.load_run_candles("csv", "FOO/USDT", parse_timeframe("5m"), START_MS, START_MS + 3_600_000)
    message = caught.value.message
    assert "Stored for csv FOO/USDT: 1h 2020-01-01T00:00:00Z → 2020-01-02T23:00:00Z (48 bars)" in message
    assert "cracktrader data import FILE.csv --exchange csv --symbol FOO/USDT --timeframe 5m" in message
    assert caught.value.details["stored"] == [
        {"timeframe": "1h", "first": "2020-01-01T00:00:00Z", "last": "2020-01-02T23:00:00Z", "count": 48}
    ]
    cli = runner.invoke(app, ["backtest", "-s", "SmaCross", "--exchange", "csv", "--symbol", "FOO/USDT", "-t", "5m"])
    assert cli.exit_code != 0 and "Unknown exchange" not in cli.output and "Stored for csv FOO/USDT: 1h" in cli.output


def test_a_symbol_not_stored_under_an_offline_name_says_what_is(tmp_path: Path) -> None:
    _import(tmp_path, "FOO/USDT", "1h", 48, 3_600_000)
    cli = runner.invoke(app, ["backtest", "-s", "SmaCross", "--exchange", "csv", "--symbol", "BAR/USDT"])
    assert cli.exit_code == 2
    assert "Nothing is stored for csv BAR/USDT (stored: FOO/USDT)" in cli.stderr
    assert "cracktrader data import FILE.csv --exchange csv --symbol BAR/USDT --timeframe 1h" in cli.stderr
    # The API checks symbols before accepting a run, with the same facts.
    with pytest.raises(DataUnavailableError) as caught:
        service.check_symbols("csv", ["FOO/USDT", "BAR/USDT"])
    assert "Nothing is stored for BAR/USDT on 'csv'" in caught.value.message
    assert "stored under it: FOO/USDT" in caught.value.message


def test_synthetic_runs_without_dates_still_end_now() -> None:
    from cracktrader.runs.backtest import resolve_range
    from cracktrader.runs.config import BacktestConfig
    from cracktrader.settings import get_settings

    tf = parse_timeframe("1h")
    config = BacktestConfig(strategy_name="SmaCross", symbols=["BTC/USDT"], exchange="synthetic")
    start, end = resolve_range(config, tf, get_settings())
    import time

    assert end == tf.floor(int(time.time() * 1000)) and end - start == 1000 * tf.ms


def test_a_rerun_of_a_dateless_csv_run_uses_the_range_the_original_resolved(
    tmp_path: Path, db_settings: Settings
) -> None:
    _import(tmp_path, "FOO/USDT", "1h", 1500, 3_600_000)
    saved = runner.invoke(app, ["backtest", "-s", "SmaCross", "--exchange", "csv", "--symbol", "FOO/USDT", "--save"])
    assert saved.exit_code == 0, saved.output
    run_id = next(line for line in saved.stdout.splitlines() if line.startswith("saved run ")).split()[2]
    _import(tmp_path, "FOO/USDT", "1h", 500, 3_600_000, first=START_MS + 1500 * 3_600_000)  # more data arrives
    again = runner.invoke(app, ["rerun", run_id, "--json", "--no-save"])
    assert again.exit_code == 0, again.output
    doc = json.loads(again.stdout)
    assert doc["rerun"]["identical"] is True
    assert doc["config"]["start_date"] == "2020-01-21T20:00:00Z" and doc["config"]["end_date"] == "2020-03-03T12:00:00Z"
    fresh = _backtest("--symbol", "FOO/USDT")  # a new dateless run now ends at the new last bar
    assert fresh["config"]["inputs"]["end"] == "2020-03-24T08:00:00Z"


def test_a_rerun_after_candles_changed_lists_the_data_fingerprint(tmp_path: Path, db_settings: Settings) -> None:
    _import(tmp_path, "FOO/USDT", "1h", 300, 3_600_000)
    saved = runner.invoke(app, ["backtest", "-s", "SmaCross", "--exchange", "csv", "--symbol", "FOO/USDT", "--save"])
    run_id = next(line for line in saved.stdout.splitlines() if line.startswith("saved run ")).split()[2]
    before = json.loads(runner.invoke(app, ["rerun", run_id, "--json", "--no-save"]).stdout)
    src = tmp_path / "fix.csv"
    src.write_text(f"timestamp,open,high,low,close,volume\n{START_MS + 100 * 3_600_000},100,150,99,140,1\n")
    assert runner.invoke(app, ["data", "import", str(src), "--symbol", "FOO/USDT", "--timeframe", "1h"]).exit_code == 0
    doc = json.loads(runner.invoke(app, ["rerun", run_id, "--json", "--no-save"]).stdout)
    fields = {c["field"]: c for c in doc["rerun"]["changes"]}
    old_hash = before["config"]["inputs"]["data"]["FOO/USDT"]["sha256"]
    assert fields["data.FOO/USDT.sha256"]["before"] == old_hash
    assert fields["data.FOO/USDT.sha256"]["after"] == doc["config"]["inputs"]["data"]["FOO/USDT"]["sha256"] != old_hash
    assert "data.FOO/USDT.count" not in fields and "strategy.source_sha256" not in fields
