"""A broken strategy file is reported with its file, line and error: by the registry, the CLI and the API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cracktrader.cli import app
from cracktrader.errors import UnknownStrategyError
from cracktrader.settings import Settings, get_settings
from cracktrader.strategies.registry import load_registry
from web_support import YEAR_1H, app_client

runner = CliRunner()

# Line 7 is the broken one: `def signals(self, bars)` without its colon.
BROKEN = """from cracktrader.engine.strategy import Signals, Strategy


class MyStrat(Strategy):
    \"\"\"A strategy with a typo.\"\"\"

    def signals(self, bars)
        return Signals(entries=bars.close > 0, exits=bars.close < 0)
"""
# Fails at import time on line 3, inside the user's own code (not a syntax error).
RAISES_ON_IMPORT = """import math

THRESHOLD = math.sqrt(-1)
"""
GOOD = """from cracktrader.engine.strategy import Signals, Strategy


class GoodStrat(Strategy):
    \"\"\"Always long.\"\"\"

    def signals(self, bars):
        return Signals(entries=bars.close > 0, exits=bars.close < 0)
"""
SYNTHETIC = ["--exchange", "synthetic", "--symbol", "BTC/USDT", "--start", "2024-01-01", "--end", "2024-01-10"]


@pytest.fixture
def strategy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A strategy folder with one file holding a syntax error and one good file, set as CRACKTRADER_STRATEGY_DIR."""
    folder = tmp_path / "strats"
    folder.mkdir()
    (folder / "my_strat.py").write_text(BROKEN)
    (folder / "good.py").write_text(GOOD)
    monkeypatch.setenv("CRACKTRADER_STRATEGY_DIR", str(folder))
    get_settings.cache_clear()
    return folder


def test_syntax_error_in_strategy_file_names_file_and_line(strategy_dir: Path) -> None:
    reg = load_registry()
    (error,) = reg.load_errors
    path = str(strategy_dir / "my_strat.py")
    assert (error.source, error.line, error.error) == (path, 7, "SyntaxError: expected ':'")
    assert error.message == f"{path} line 7: SyntaxError: expected ':'"
    assert error.to_dict() == {
        "source": path,
        "line": 7,
        "error": "SyntaxError: expected ':'",
        "message": error.message,
    }
    assert "GoodStrat" in reg.strategies  # the broken file hides nothing else


def test_an_exception_while_importing_a_strategy_file_names_its_line(strategy_dir: Path) -> None:
    (strategy_dir / "my_strat.py").write_text(RAISES_ON_IMPORT)
    (error,) = load_registry().load_errors
    assert (error.line, error.error) == (3, "ValueError: math domain error")


def test_asking_for_a_strategy_whose_file_failed_names_the_file_and_line(strategy_dir: Path) -> None:
    with pytest.raises(UnknownStrategyError) as err:
        load_registry().get("MyStrat")
    path = str(strategy_dir / "my_strat.py")
    assert err.value.message.startswith("Unknown strategy 'MyStrat'. Available: ")
    assert err.value.message.endswith(f"Some strategy sources failed to load: {path} line 7: SyntaxError: expected ':'")
    assert err.value.details["load_errors"] == [
        {
            "source": path,
            "line": 7,
            "error": "SyntaxError: expected ':'",
            "message": f"{path} line 7: " + "SyntaxError: expected ':'",
        }
    ]


def test_cli_backtest_of_a_strategy_in_a_broken_file_prints_one_line_not_a_traceback(strategy_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cracktrader", "backtest", "--strategy", "MyStrat", *SYNTHETIC],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "CRACKTRADER_STRATEGY_DIR": str(strategy_dir)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "AttributeError" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: Unknown strategy 'MyStrat'")
    assert errors[0].endswith(f"{strategy_dir / 'my_strat.py'} line 7: SyntaxError: expected ':'")


def test_cli_strategies_prints_the_load_errors_with_file_and_line(strategy_dir: Path) -> None:
    path = str(strategy_dir / "my_strat.py")
    table = runner.invoke(app, ["strategies"])
    assert table.exit_code == 0, table.output
    assert f"could not load {path} line 7: SyntaxError: expected ':'" in table.stdout
    listed = runner.invoke(app, ["strategies", "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["load_errors"] == [
        {
            "source": path,
            "line": 7,
            "error": "SyntaxError: expected ':'",
            "message": f"{path} line 7: SyntaxError: expected ':'",
        }
    ]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_api_lists_load_errors_and_a_run_of_the_broken_strategy_names_file_and_line(strategy_dir: Path) -> None:
    path = str(strategy_dir / "my_strat.py")
    expected = {
        "source": path,
        "line": 7,
        "error": "SyntaxError: expected ':'",
        "message": f"{path} line 7: SyntaxError: expected ':'",
    }
    settings: Settings = get_settings()
    async with app_client(settings) as c:
        listing = (await c.get("/api/v1/strategies")).json()
        assert listing["load_errors"] == [expected]
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "strategy_name": "MyStrat"})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "UNKNOWN_STRATEGY"
        assert error["message"].endswith(f"Some strategy sources failed to load: {expected['message']}")
        assert error["details"]["load_errors"] == [expected]
        missing = (await c.get("/api/v1/strategies/MyStrat")).json()["error"]
        assert missing["message"].endswith(expected["message"]) and missing["details"]["load_errors"] == [expected]
