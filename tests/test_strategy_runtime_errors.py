"""An exception in a strategy's code names the exception, the strategy file and line: API, results, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cracktrader.settings import get_settings
from web_support import YEAR_1H, app_client, wait_for_status

# `signals` fails on line 10 (a typo: `closes`); the class itself loads fine.
TYPO = """from cracktrader.engine.strategy import Signals, Strategy


class Typo(Strategy):
    \"\"\"Reads a field that does not exist.\"\"\"

    def signals(self, bars):
        fast = bars.close
        # the next line has the typo
        slow = bars.closes
        return Signals(entries=fast > slow, exits=fast < slow)
"""
ERROR = "AttributeError: 'Bars' object has no attribute 'closes'"
SYNTHETIC = ["--exchange", "synthetic", "--symbol", "BTC/USDT", "--start", "2024-01-01", "--end", "2024-01-10"]
PACKAGE_DIR = str(Path(__file__).resolve().parent.parent / "src" / "cracktrader")


@pytest.fixture
def strategy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A strategy folder whose Typo strategy raises in `signals`, set as CRACKTRADER_STRATEGY_DIR."""
    folder = tmp_path / "strats"
    folder.mkdir()
    path = folder / "typo.py"
    path.write_text(TYPO)
    monkeypatch.setenv("CRACKTRADER_STRATEGY_DIR", str(folder))
    get_settings.cache_clear()
    return path.resolve()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_exception_in_signals_names_exception_file_and_line_in_status_and_results(strategy_file: Path) -> None:
    expected = f"Strategy Typo failed in signals() at {strategy_file} line 10: {ERROR}"
    async with app_client(get_settings()) as c:
        errors = c.app.state.manager.bus.subscribe(frozenset({"error"}))  # type: ignore[attr-defined]
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "strategy_name": "Typo"})
        assert r.status_code == 200, r.text
        status = await wait_for_status(c, {"completed", "failed", "stopped"})
        results = (await c.get("/api/v1/results")).json()
        history = (await c.get(f"/api/v1/runs/{status['run_id']}")).json()
    assert (status["status"], status["error_code"], status["error"]) == ("failed", "STRATEGY_ERROR", expected)
    assert results["status"] == "failed" and results["error"] == expected
    assert history["error"] == expected
    event = (await errors.get()).payload  # type: ignore[union-attr]
    assert (event["code"], event["message"]) == ("STRATEGY_ERROR", expected)
    assert event["details"] == {
        "strategy": "Typo",
        "exception": "AttributeError",
        "error": ERROR,
        "file": str(strategy_file),
        "line": 10,
        "function": "signals",
    }
    for text in (status["error"], results["error"]):
        assert "Internal error" not in text and PACKAGE_DIR not in text and "site-packages" not in text


def test_cli_backtest_of_a_raising_strategy_prints_one_line_and_exits_non_zero(strategy_file: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cracktrader", "backtest", "--strategy", "Typo", *SYNTHETIC],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CRACKTRADER_STRATEGY_DIR": str(strategy_file.parent)},
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: Strategy Typo failed in signals() at {strategy_file} line 10: {ERROR}"
    ]


def test_an_internal_error_outside_the_strategy_file_is_not_blamed_on_the_strategy(strategy_file: Path) -> None:
    from cracktrader.runs.strategy_errors import locate_strategy_error
    from cracktrader.strategies.builtin import SmaCross
    from cracktrader.strategies.registry import load_registry

    typo = load_registry().get("Typo")
    try:
        raise KeyError("not from the strategy")
    except KeyError as exc:
        assert locate_strategy_error(exc, typo) is None  # no frame in typo.py
        assert locate_strategy_error(exc, SmaCross) is None  # a built-in's source is the server's own
