"""Reproducible runs: recorded inputs, `backtest --save`, `cracktrader rerun` and POST /runs/{id}/rerun."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cracktrader.cli import app
from cracktrader.settings import Settings, get_settings
from web_support import SLOW_RUN, app_client, wait_for_status

runner = CliRunner()
MONTH = ["--exchange", "synthetic", "--symbol", "BTC/USDT", "--timeframe", "1h"]
MONTH += ["--start", "2024-01-01", "--end", "2024-02-01"]
MONTH_BODY = {
    "strategy_name": "SmaCross",
    "symbols": ["BTC/USDT", "ETH/USDT"],
    "timeframe": "1h",
    "start_date": "2024-01-01T00:00:00Z",
    "end_date": "2024-02-01T00:00:00Z",
    "exchange": "synthetic",
    "strategy_params": {"fast": 5},
}

STRATEGY_V1 = '''
from cracktrader.strategies.builtin import SmaCross


class MyCross(SmaCross):
    """SmaCross with its defaults."""
'''
# The same file edited: same name and parameters, other decisions.
STRATEGY_V2 = '''
from cracktrader.strategies.builtin import SmaCross


class MyCross(SmaCross):
    """SmaCross deciding on 5/20 whatever it is given."""

    def signals(self, bars):
        return SmaCross(fast=5, slow=20).signals(bars)
'''


def _saved_id(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("saved run "))
    return line.split()[2]


def _backtest(args: list[str]) -> tuple[dict[str, Any], str]:
    result = runner.invoke(app, ["backtest", *args, "--json", "--save"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), _saved_id(result.stderr)


def _rerun_json(run_id: str) -> tuple[dict[str, Any], str]:
    result = runner.invoke(app, ["rerun", run_id, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), _saved_id(result.stderr)


def test_results_record_the_inputs_that_determine_the_run() -> None:
    result = runner.invoke(app, ["backtest", "-s", "SmaCross", *MONTH, "-p", "fast=5", "--json"])
    assert result.exit_code == 0, result.output
    inputs = json.loads(result.stdout)["config"]["inputs"]
    assert inputs["effective_params"] == {"size": 1.0, "stop_loss": None, "take_profit": None, "fast": 5, "slow": 30}
    import cracktrader.strategies.builtin as builtin

    source = hashlib.sha256(Path(builtin.__file__).read_bytes()).hexdigest()
    assert inputs["strategy"] == {"name": "SmaCross", "class": "SmaCross", "origin": "builtin", "source_sha256": source}
    assert inputs["costs"] == {
        "maker_fee": 0.001,
        "taker_fee": 0.001,
        "slippage": 0.0,
        "latency": 1,
        "allow_short": False,
        "initial_cash": 10000.0,
    }
    assert inputs["start"] == "2024-01-01T00:00:00Z" and inputs["end"] == "2024-02-01T00:00:00Z"
    data = inputs["data"]["BTC/USDT"]
    assert {k: data[k] for k in ("exchange", "timeframe", "first", "last", "count", "resampled_from")} == {
        "exchange": "synthetic",
        "timeframe": "1h",
        "first": "2024-01-01T00:00:00Z",
        "last": "2024-01-31T23:00:00Z",
        "count": 744,
        "resampled_from": None,
    }
    assert len(data["sha256"]) == 64
    assert inputs["cracktrader_version"] == __import__("cracktrader").__version__


def test_candle_fingerprint_is_the_sha256_of_the_timestamp_and_ohlcv_bytes() -> None:
    import numpy as np

    from cracktrader.data.candles import Candles
    from cracktrader.runs.inputs import candles_sha256

    ts = np.array([0, 60_000], dtype=np.int64)
    col = np.array([1.0, 2.0])
    candles = Candles(ts, col, col + 1, col - 0.5, col, col * 10)
    expected = hashlib.sha256(
        ts.astype("<i8").tobytes()
        + b"".join(c.astype("<f8").tobytes() for c in (col, col + 1, col - 0.5, col, col * 10))
    ).hexdigest()
    assert candles_sha256(candles) == expected
    changed = Candles(ts, col, col + 1, col - 0.5, col + 1e-9, col * 10)
    assert candles_sha256(changed) != expected


def test_many_symbols_keep_all_their_inputs_beyond_the_4_kb_config_cap() -> None:
    from cracktrader.runs.sanitize import MAX_CONFIG_BYTES, redact

    data = {f"S{i}/USDT": {"exchange": "x", "sha256": "a" * 64, "count": i} for i in range(50)}
    config = {"strategy_name": "SmaCross", "inputs": {"effective_params": {"blob": list(range(1000))}, "data": data}}
    kept = redact(config)
    assert len(json.dumps(data)) > MAX_CONFIG_BYTES and kept["inputs"]["data"] == data
    assert kept["inputs"]["effective_params"]["blob"].startswith("<list of 1000 items")
    assert redact(kept) == kept


def test_cli_rerun_of_a_saved_run_is_identical(db_settings: Settings) -> None:
    doc, run_id = _backtest(["-s", "SmaCross", *MONTH, "-p", "fast=5"])
    assert run_id == doc["run_id"]
    plain = runner.invoke(app, ["rerun", run_id])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.splitlines()[0] == f"identical to run {run_id}"
    again, new_id = _rerun_json(run_id)
    assert new_id != run_id and again["rerun"] == {"of": run_id, "identical": True, "changes": []}
    assert again["final_value"] == doc["final_value"] and again["config"]["inputs"] == doc["config"]["inputs"]


def test_cli_rerun_of_an_unknown_run_is_a_one_line_error(db_settings: Settings) -> None:
    result = runner.invoke(app, ["rerun", "f" * 32])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: No run with id {'f' * 32!r}"


def test_rerun_after_editing_the_strategy_file_lists_the_code_hash_and_results(
    db_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "strategies"
    folder.mkdir()
    path = folder / "my_cross.py"
    path.write_text(STRATEGY_V1)
    monkeypatch.setenv("CRACKTRADER_STRATEGY_DIR", str(folder))
    get_settings.cache_clear()
    doc, run_id = _backtest(["-s", "MyCross", *MONTH])
    assert doc["config"]["inputs"]["strategy"]["origin"] == str(path)
    path.write_text(STRATEGY_V2)
    again, _ = _rerun_json(run_id)
    changes = {c["field"]: (c["before"], c["after"]) for c in again["rerun"]["changes"]}
    assert again["rerun"]["identical"] is False
    assert changes["strategy.source_sha256"] == (
        hashlib.sha256(STRATEGY_V1.encode()).hexdigest(),
        hashlib.sha256(STRATEGY_V2.encode()).hexdigest(),
    )
    assert changes["final_value"] == (doc["final_value"], again["final_value"])
    assert doc["final_value"] != again["final_value"]
    assert "performance_metrics.total_trades" in changes
    # Same parameters, candles and costs: only the code and what it produced differ.
    assert not [f for f in changes if f.startswith(("effective_params", "data.", "costs", "cracktrader_version"))]
    table = runner.invoke(app, ["rerun", run_id, "--no-save"])
    assert table.exit_code == 0 and "strategy.source_sha256" in table.stdout and "final_value" in table.stdout


def test_a_run_saved_from_the_cli_is_served_by_the_api_and_rerun_over_http(db_settings: Settings) -> None:
    doc, run_id = _backtest(["-s", "SmaCross", *MONTH])
    import anyio

    async def main() -> None:
        async with app_client(db_settings) as c:
            record = (await c.get(f"/api/v1/runs/{run_id}")).json()
            assert record["status"] == "completed" and record["final_value"] == doc["final_value"]
            assert record["rerun_of"] is None
            served = (await c.get(f"/api/v1/runs/{run_id}/results")).json()
            assert served["config"]["inputs"] == doc["config"]["inputs"]
            started = await c.post(f"/api/v1/runs/{run_id}/rerun")
            assert started.status_code == 202, started.text
            new_id = started.json()["run_id"]
            await wait_for_status(c, {"completed", "failed", "stopped"})
            assert (await c.get(f"/api/v1/runs/{new_id}")).json()["rerun_of"] == run_id
            results = (await c.get(f"/api/v1/runs/{new_id}/results")).json()
            assert results["rerun"] == {"of": run_id, "identical": True, "changes": []}

    anyio.run(main)


def test_http_rerun_is_409_when_busy_404_when_unknown_and_repeats_the_run(db_settings: Settings) -> None:
    import anyio

    async def main() -> None:
        async with app_client(db_settings) as c:
            started = await c.post("/api/v1/run/backtest", json=MONTH_BODY)
            run_id = started.json()["run_id"]
            await wait_for_status(c, {"completed"})
            await c.delete("/api/v1/run/reset")
            store = c.app.state.run_store  # type: ignore[attr-defined]
            page = await store.read_page(run_id, max_points=None, limit=None)
            original = page.document()
            assert set(original["config"]["inputs"]["data"]) == {"BTC/USDT", "ETH/USDT"}
            busy = await c.post("/api/v1/run/backtest", json=SLOW_RUN)
            assert busy.status_code == 200
            refused = await c.post(f"/api/v1/runs/{run_id}/rerun")
            assert refused.status_code == 409 and refused.json()["error"]["code"] == "RUN_ALREADY_ACTIVE"
            await c.post("/api/v1/run/stop")
            await wait_for_status(c, {"stopped"})
            await c.delete("/api/v1/run/reset")
            missing = await c.post(f"/api/v1/runs/{'e' * 32}/rerun")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
            started = await c.post(f"/api/v1/runs/{run_id}/rerun")
            assert started.status_code == 202 and started.json()["status"] == "starting"
            await wait_for_status(c, {"completed"})
            rerun = (await c.get(f"/api/v1/runs/{started.json()['run_id']}/results")).json()
            assert rerun["rerun"]["identical"] is True
            assert rerun["config"]["start_date"] == "2024-01-01T00:00:00Z"
            assert rerun["final_value"] == original["final_value"]

    anyio.run(main)


def test_sdk_rerun_sync_and_async(db_settings: Settings) -> None:
    from cracktrader.client import AsyncCrackTraderAPI, CrackTraderAPI
    from web_support import LiveServer

    _, run_id = _backtest(["-s", "SmaCross", *MONTH])
    with LiveServer(db_settings) as server, CrackTraderAPI(server.base_url) as api:
        started = api.rerun(run_id)
        assert started.status == "starting"
        api.wait_for_completion(started.run_id, timeout=120)
        results = api.get_run_results(started.run_id)
        assert results.rerun is not None and results.rerun.of == run_id and results.rerun.identical
        assert api.get_run(started.run_id).rerun_of == run_id
        api.reset()
        import anyio

        async def main() -> None:
            async with AsyncCrackTraderAPI(server.base_url) as client:
                again = await client.rerun(run_id)
                await client.wait_for_completion(again.run_id, timeout=120)
                assert (await client.get_run_results(again.run_id)).rerun.identical  # type: ignore[union-attr]

        anyio.run(main)
