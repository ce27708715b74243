"""The `cracktrader` command line: backtests, strategies and the data commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cracktrader.cli import app

runner = CliRunner()
YEAR_1H = [
    "--exchange",
    "synthetic",
    "--symbol",
    "BTC/USDT",
    "--timeframe",
    "1h",
    "--start",
    "2024-01-01",
    "--end",
    "2025-01-01",
]
# The fake exchange's clock stands at 2024-06-01T12:34:56.789Z.
FAKE_RANGE = ["--start", "2024-05-01T00:00:00Z", "--end", "2024-05-03T00:00:00Z"]


def _json(args: list[str]) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_backtest_prints_a_summary_table() -> None:
    result = runner.invoke(app, ["backtest", "--strategy", "SmaCross", *YEAR_1H])
    assert result.exit_code == 0, result.output
    assert "SmaCross on BTC/USDT 1h (synthetic)" in result.stdout
    assert "│ bars" in result.stdout and "8784 │" in result.stdout  # 2024 is a leap year: 366 * 24
    assert "sharpe_ratio" in result.stdout


def test_backtest_json_is_the_results_document() -> None:
    doc = _json(["backtest", "--strategy", "TestStrategy", "--param", "period=10", "--param", "slow=30", *YEAR_1H])
    assert list(doc) == [
        "run_id",
        "config",
        "status",
        "start_time",
        "end_time",
        "orders",
        "trades",
        "positions",
        "equity_curve",
        "performance_metrics",
        "final_value",
        "error",
    ]
    assert doc["status"] == "completed" and doc["error"] is None
    assert doc["config"]["strategy_params"] == {"period": 10, "slow": 30}
    assert doc["config"]["taker_fee"] == 0.001  # synthetic publishes no fee: the 0.1% default
    assert len(doc["equity_curve"]) == 8784
    assert doc["equity_curve"][0] == {
        "timestamp": "2024-01-01T00:00:00Z",
        "value": 10000.0,
        "cash": 10000.0,
        "pnl": 0.0,
    }
    assert doc["final_value"] == doc["equity_curve"][-1]["value"]
    trade = doc["trades"][0]
    assert set(trade) >= {"id", "timestamp", "symbol", "side", "size", "price", "value", "commission", "pnl"}
    assert trade["value"] == pytest.approx(trade["size"] * trade["price"])
    closing = [t for t in doc["trades"] if t["pnl"] is not None]
    assert doc["performance_metrics"]["total_trades"] == len(closing)


def test_backtest_json_matches_running_twice() -> None:
    first = _json(["backtest", "--strategy", "SmaCross", *YEAR_1H])
    second = _json(["backtest", "--strategy", "SmaCross", *YEAR_1H])
    assert first["final_value"] == second["final_value"]
    assert first["trades"] == second["trades"]


def test_commission_and_slippage_flags_reach_the_fills() -> None:
    doc = _json(["backtest", "--strategy", "BuyAndHold", "--commission", "0.002", "--slippage-bps", "10", *YEAR_1H])
    buy = doc["trades"][0]
    assert doc["config"]["maker_fee"] == doc["config"]["taker_fee"] == 0.002
    assert buy["commission"] == pytest.approx(buy["value"] * 0.002)
    assert buy["size"] == pytest.approx(10_000 / (buy["price"] * 1.002))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "Nope", *YEAR_1H], "Unknown strategy 'Nope'. Available:"),
        (["--strategy", "SmaCross", "--param", "fats=3", *YEAR_1H], "unknown parameter 'fats'"),
        (["--strategy", "SmaCross", "--param", "fast", *YEAR_1H], "--param expects key=value"),
        (
            ["--strategy", "SmaCross", "--exchange", "synthetic", "--symbol", "BTC/USDT", "--timeframe", "7m"],
            "Timeframe '7m' is not supported. Use one of: 1s, 10s",
        ),
        (
            [
                "--strategy",
                "SmaCross",
                "--exchange",
                "synthetic",
                "--symbol",
                "BTC/USDT",
                "--start",
                "2024-02-01",
                "--end",
                "2024-01-01",
            ],
            "must be before",
        ),
        (["--strategy", "SmaCross", "--exchange", "nosuchexchange", "--symbol", "BTC/USDT"], "nosuchexchange"),
        (["--strategy", "SmaCross", "--exchange", "synthetic", "--symbol", "BTCUSDT"], "BTCUSDT"),
    ],
)
def test_user_errors_exit_2_with_a_one_line_message(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["backtest", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ")


def test_user_error_from_a_real_process_has_no_traceback() -> None:
    env = {**os.environ, "CRACKTRADER_DATA_DIR": os.environ["CRACKTRADER_DATA_DIR"]}
    proc = subprocess.run(
        [sys.executable, "-m", "cracktrader", "backtest", "--strategy", "Nope", *YEAR_1H],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: Unknown strategy 'Nope'")


def test_strategies_lists_builtins_with_parameters() -> None:
    result = runner.invoke(app, ["strategies", "--json"])
    assert result.exit_code == 0
    listed = {s["name"]: s for s in json.loads(result.stdout)["strategies"]}
    assert listed["SmaCross"]["parameters_schema"]["properties"]["fast"]["default"] == 10
    assert listed["SmaCross"]["parameters"]["fast"] == 10 and listed["SmaCross"]["kind"] == "class"
    assert listed["SmaCrossEvents"]["style"] == "event"
    table = runner.invoke(app, ["strategies"])
    assert "RsiMeanReversion" in table.stdout and "oversold" in table.stdout


def test_csv_import_then_backtest_then_export_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    lines = ["timestamp,open,high,low,close,volume"]
    for i in range(200):
        price = 100 + (i % 20) - (10 if (i // 20) % 2 else 0)
        lines.append(f"2024-01-01T{i // 60:02d}:{i % 60:02d}:00Z,{price},{price + 1},{price - 1},{price + 0.5},5")
    src.write_text("\n".join(lines) + "\n")
    imported = runner.invoke(app, ["data", "import", str(src), "--symbol", "FOO/USDT", "--timeframe", "1m"])
    assert imported.exit_code == 0, imported.output
    assert "csv FOO/USDT 1m: 200 candles 2024-01-01T00:00:00Z → 2024-01-01T03:19:00Z, 0 gaps" in imported.stdout
    doc = _json(
        [
            "backtest",
            "--strategy",
            "SmaCross",
            "--param",
            "fast=3",
            "--param",
            "slow=8",
            "--exchange",
            "csv",
            "--symbol",
            "FOO/USDT",
            "--timeframe",
            "1m",
            "--start",
            "2024-01-01",
        ]
    )
    assert len(doc["equity_curve"]) == 200
    out = tmp_path / "out.csv"
    exported = runner.invoke(
        app, ["data", "export", str(out), "--exchange", "csv", "--symbol", "FOO/USDT", "--timeframe", "1m"]
    )
    assert exported.exit_code == 0 and "wrote 200 candles" in exported.stdout
    assert out.read_text().splitlines()[1] == "1704067200000,100,101,99,100.5,5"


def test_bad_csv_import_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,open,high,low,close\n1,2,3,4,5\n")
    result = runner.invoke(app, ["data", "import", str(bad), "--symbol", "FOO/USDT", "--timeframe", "1m"])
    assert result.exit_code == 2
    assert "volume" in result.stderr


def test_download_from_exchange_then_backtest_uses_the_store(fake_binance: Any) -> None:
    result = runner.invoke(
        app, ["data", "download", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m", *FAKE_RANGE]
    )
    assert result.exit_code == 0, result.output
    assert "binance BTC/USDT 1m: 2880 candles 2024-05-01T00:00:00Z → 2024-05-02T23:59:00Z, 0 gaps" in result.stdout
    assert len(fake_binance.requests_to("/api/v3/klines")) == 3  # 1000 + 1000 + 880
    before = len(fake_binance.requests_to("/api/v3/klines"))
    doc = _json(
        [
            "backtest",
            "--strategy",
            "SmaCross",
            "--exchange",
            "binance",
            "--symbol",
            "BTC/USDT",
            "--timeframe",
            "1m",
            *FAKE_RANGE,
        ]
    )
    assert len(doc["equity_curve"]) == 2880
    assert len(fake_binance.requests_to("/api/v3/klines")) == before  # served from the store


def test_extending_a_stored_range_downloads_only_the_new_part(fake_binance: Any) -> None:
    base = ["data", "download", "--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe", "1h"]
    assert runner.invoke(app, [*base, "--start", "2024-05-01", "--end", "2024-05-11"]).exit_code == 0
    fake_binance.request_log.clear()
    result = runner.invoke(app, [*base, "--start", "2024-05-01", "--end", "2024-05-21"])
    assert result.exit_code == 0, result.output
    (call,) = fake_binance.requests_to("/api/v3/klines")
    assert int(call["startTime"]) == 1715385600000  # 2024-05-11T00:00Z: the first missing bar
    assert "480 candles" in result.stdout


def test_backtest_on_an_unreachable_exchange_says_how_to_work_offline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cracktrader.settings import get_settings
    from fakes.binance import exchange_options_for
    from support import free_loopback_port

    dead = f"http://127.0.0.1:{free_loopback_port()}"
    monkeypatch.setenv("CRACKTRADER_EXCHANGE_OPTIONS", json.dumps(exchange_options_for(dead)))
    monkeypatch.setenv("CRACKTRADER_CCXT_MAX_RETRIES", "1")
    monkeypatch.setenv("CRACKTRADER_CCXT_BACKOFF_BASE", "0")
    get_settings.cache_clear()
    result = runner.invoke(
        app, ["backtest", "--strategy", "SmaCross", "--exchange", "binance", "--symbol", "BTC/USDT", *FAKE_RANGE]
    )
    assert result.exit_code == 1
    assert "synthetic" in result.stderr and "cracktrader data import" in result.stderr
    assert "Traceback" not in result.output


def test_data_list_and_clear(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("timestamp,open,high,low,close,volume\n1704067200000,1,2,0.5,1.5,1\n1704067260000,1.5,2,1,1.2,1\n")
    assert runner.invoke(app, ["data", "import", str(src), "--symbol", "A/USDT", "--timeframe", "1m"]).exit_code == 0
    listed = runner.invoke(app, ["data", "list"])
    assert "csv A/USDT 1m: 2 candles" in listed.stdout
    cleared = runner.invoke(app, ["data", "clear", "--exchange", "csv", "--yes"])
    assert "removed 1 datasets" in cleared.stdout
    assert "no stored candles" in runner.invoke(app, ["data", "list"]).stdout


def _import_minutes(tmp_path: Path, symbol: str, minutes: list[int], exchange: str = "csv") -> None:
    """Import one-minute candles opening at the given minutes of 2024-01-01."""
    src = tmp_path / f"{symbol.replace('/', '-')}.csv"
    rows = [f"{1704067200000 + m * 60_000},1,2,0.5,1.5,1" for m in minutes]
    src.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    args = ["data", "import", str(src), "--symbol", symbol, "--timeframe", "1m", "--exchange", exchange]
    assert runner.invoke(app, args).exit_code == 0


def test_data_info_prints_first_last_count_missing_bars_and_the_largest_gap(tmp_path: Path) -> None:
    # Bars 0-9, then 3 missing (10-12), bars 13-19, then 5 missing (20-24), bar 25.
    _import_minutes(tmp_path, "A/USDT", [*range(10), *range(13, 20), 25])
    args = ["data", "info", "--exchange", "csv", "--symbol", "A/USDT", "--timeframe", "1m"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "csv A/USDT 1m: first 2024-01-01T00:00:00Z, last 2024-01-01T00:25:00Z, 18 candles, "
        "2 gaps, 8 missing bars, largest 5 bars from 2024-01-01T00:20:00Z to 2024-01-01T00:25:00Z\n"
    )
    (doc,) = _json_list([*args])
    assert {k: v for k, v in doc.items() if k not in ("path", "size_bytes")} == {
        "exchange": "csv",
        "symbol": "A/USDT",
        "timeframe": "1m",
        "first": "2024-01-01T00:00:00Z",
        "last": "2024-01-01T00:25:00Z",
        "count": 18,
        "gaps": 2,
        "missing_bars": 8,
        "largest_gap": {"start": "2024-01-01T00:20:00Z", "end": "2024-01-01T00:25:00Z", "bars": 5},
    }
    assert doc["path"].endswith("1m.parquet") and doc["size_bytes"] > 0


def test_data_info_without_filters_covers_every_stored_series_and_filters_narrow_it(tmp_path: Path) -> None:
    _import_minutes(tmp_path, "A/USDT", list(range(5)))
    _import_minutes(tmp_path, "B/USDT", [0, 1, 3])
    _import_minutes(tmp_path, "A/USDT", list(range(3)), exchange="other")
    every = _json_list(["data", "info"])
    assert [(d["exchange"], d["symbol"], d["count"], d["missing_bars"]) for d in every] == [
        ("csv", "A/USDT", 5, 0),
        ("csv", "B/USDT", 3, 1),
        ("other", "A/USDT", 3, 0),
    ]
    assert every[0]["largest_gap"] is None and every[1]["largest_gap"]["bars"] == 1
    text = runner.invoke(app, ["data", "info"]).stdout.splitlines()
    assert len(text) == 3 and text[0].endswith("5 candles, no gaps")
    assert [d["exchange"] for d in _json_list(["data", "info", "--symbol", "a/usdt"])] == ["csv", "other"]
    assert [d["symbol"] for d in _json_list(["data", "info", "--exchange", "csv", "-t", "1m"])] == ["A/USDT", "B/USDT"]


def test_data_info_of_nothing_stored_says_so() -> None:
    assert runner.invoke(app, ["data", "info"]).stdout == "no stored candles\n"
    assert _json_list(["data", "info"]) == []
    missing = runner.invoke(app, ["data", "info", "--exchange", "csv", "--symbol", "Z/USDT"])
    assert missing.exit_code == 2 and "no stored candles for csv Z/USDT" in missing.stderr
    bad = runner.invoke(app, ["data", "info", "--timeframe", "7x"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def _json_list(args: list[str]) -> list[dict[str, Any]]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


@pytest.mark.parametrize("args", [["runs", "status", "abc"], ["report", "abc", "-o", "never.html"]])
def test_commands_that_need_a_server_look_for_the_local_one_by_default(
    args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CRACKTRADER_SERVER", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "http://127.0.0.1:8000/api/v1/runs/abc" in result.output
    assert not (tmp_path / "never.html").exists()
