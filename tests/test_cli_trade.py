"""`cracktrader trade --mode paper`: a foreground paper session, over replayed candles or the synthetic exchange."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from cracktrader.cli import app

runner = CliRunner()
REPLAY = ["--replay-start", "2024-01-01", "--replay-end", "2024-03-01", "--speed", "1e9"]
BASE = ["trade", "--strategy", "SmaCross", "--symbol", "BTC/USDT", "--timeframe", "1h"]


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_paper_replay_ends_with_the_backtests_results() -> None:
    paper = _json([*BASE, *REPLAY, "--json"])
    backtest = _json(["backtest", "--strategy", "SmaCross", "--symbol", "BTC/USDT", "--timeframe", "1h",
                      "--exchange", "synthetic", "--start", "2024-01-01", "--end", "2024-03-01", "--exchange-rules",
                      "--json"])  # fmt: skip
    assert paper["final_value"] == backtest["final_value"]
    assert paper["trades"] == backtest["trades"]
    assert paper["performance_metrics"] == backtest["performance_metrics"]
    assert paper["config"]["mode"] == "paper" and paper["status"] == "stopped"


def test_a_paper_session_on_the_synthetic_exchange_warms_up_then_trades_live_candles() -> None:
    # One live 1s candle: the run waits at most a second for it, whatever the machine.
    doc = _json(["trade", "--strategy", "SmaCross", "--symbol", "BTC/USDT", "--timeframe", "1s", "--bars", "1",
                 "--json"])  # fmt: skip
    assert doc["config"]["warmup_bars"] == 31  # SmaCross(10, 30): warmup() = 31
    assert doc["performance_metrics"]["periods"] == 32


def test_the_starting_balance_sets_the_cash() -> None:
    doc = _json([*BASE, *REPLAY, "--balance", "USDT=2500", "--json"])
    assert doc["config"]["initial_cash"] == 2500.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*BASE, "--mode", "live"], "use mode paper"),
        ([*BASE, "--exchange", "binanse"], "Unknown exchange 'binanse'"),
        ([*BASE, *REPLAY, "--balance", "USDT"], "--balance expects CUR=amount such as USDT=10000"),
        ([*BASE, *REPLAY, "--balance", "BTC=1"], "other than the quote currency USDT are not supported yet"),
        ([*BASE, "--symbol", "ETH/BTC"], "symbols of one quote currency"),
        ([*BASE, *REPLAY[:4], "--speed", "0"], "speed"),
    ],
)
def test_bad_trade_requests_fail_with_one_clear_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_trade_on_a_server_starts_the_session_there_and_ends_with_its_results() -> None:
    from cracktrader.settings import get_settings
    from web_support import LiveServer

    with LiveServer(get_settings()) as srv:
        paper = _json([*BASE, *REPLAY, "--server", srv.base_url, "--json"])
        runs = httpx.get(f"{srv.base_url}/api/v1/runs", params={"mode": "paper"}).json()["items"]
    backtest = _json(["backtest", "--strategy", "SmaCross", "--symbol", "BTC/USDT", "--timeframe", "1h",
                      "--exchange", "synthetic", "--start", "2024-01-01", "--end", "2024-03-01", "--exchange-rules",
                      "--json"])  # fmt: skip
    assert paper["final_value"] == backtest["final_value"]
    assert paper["status"] == "completed" and paper["run_id"] in {r["run_id"] for r in runs}


def test_trade_on_a_server_that_is_not_there_fails_with_one_line() -> None:
    result = runner.invoke(app, [*BASE, *REPLAY, "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "127.0.0.1:9" in result.output
