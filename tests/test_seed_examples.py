"""The API docs' examples (seeds 000 and 001) run as printed against a live server, with Binance faked on loopback.

The examples omit `exchange`, so they use the default `binance`; a FakeBinance whose clock is now serves it, so
the default date range has candles and nothing leaves 127.0.0.1. The examples are kept verbatim apart from the
base URL (and the indentation of the Python one, which the seed's text extraction flattened);
`test_embedded_examples_match_seed_000_line_for_line` checks that against the seed when `shared/` is beside the repo.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cracktrader.settings import get_settings
from fakes.binance import FakeBinance
from web_support import LiveServer, live_server

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"
SEEDS = ROOT.parent / "shared" / "seeds"
DOC_BASE = "http://127.0.0.1:8000"
ENVELOPE_KEYS = {"error", "status_code", "path", "detail"}
FINAL_VALUE = re.compile(r"^Final value: \$(\d+(?:\.\d+)?)$", re.MULTILINE)
RUN_TIMEOUT_S = 60

# Seed 000, "Usage Examples / Python Client".
PYTHON_CLIENT = """\
import asyncio
import aiohttp

async def run_backtest():
    async with aiohttp.ClientSession() as session:
        # Start backtest
        async with session.post('http://127.0.0.1:8000/api/v1/run/backtest', json={
            "strategy_name": "TestStrategy",
            "symbols": ["BTC/USDT"],
            "timeframe": "1h",
            "initial_cash": 10000.0
        }) as resp:
            result = await resp.json()
            run_id = result['run_id']

        # Monitor progress
        while True:
            async with session.get('http://127.0.0.1:8000/api/v1/status') as resp:
                status = await resp.json()
                if status['status'] in ['completed', 'failed']:
                    break
            await asyncio.sleep(1)

        # Get results
        async with session.get('http://127.0.0.1:8000/api/v1/results') as resp:
            results = await resp.json()
            print(f"Final value: ${results['final_value']}")

asyncio.run(run_backtest())
"""

# Seed 000, "cURL Examples", exactly as printed: the page shows each line continuation as `\\`.
CURL_EXAMPLES = r"""# Check health
curl http://127.0.0.1:8000/api/v1/health
# Start backtest
curl -X POST http://127.0.0.1:8000/api/v1/run/backtest \\
-H "Content-Type: application/json" \\
-d '{
"strategy_name": "TestStrategy",
"symbols": ["BTC/USDT"],
"timeframe": "1h",
"initial_cash": 10000.0
}'
# Check status
curl http://127.0.0.1:8000/api/v1/status
# Get results
curl http://127.0.0.1:8000/api/v1/results
# Stop run
curl -X POST http://127.0.0.1:8000/api/v1/run/stop
# Reset runner
curl -X DELETE http://127.0.0.1:8000/api/v1/run/reset
"""

# Seed 001, "Examples": the two request bodies.
SEED_001_BACKTEST = {
    "strategy_name": "TestStrategy",
    "strategy_params": {"period": 20, "threshold": 0.02},
    "symbols": ["BTC/USDT"],
    "timeframe": "1h",
    "start_date": "2024-01-01T00:00:00Z",
    "end_date": "2024-03-01T23:59:59Z",
    "initial_cash": 10000.0,
    "exchange": "binance",
}
SEED_001_PAPER = {
    "strategy_name": "TestStrategy",
    "strategy_params": {"period": 10, "slow": 30},
    "symbols": ["BTC/USDT"],
    "timeframe": "5m",
    "exchange": "binance",
    "exchange_config": {"apiKey": "...", "secret": "...", "sandbox": True},
    "mode": "paper",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _binance_at(monkeypatch: pytest.MonkeyPatch, fake: FakeBinance) -> None:
    """Point the default exchange `binance` at `fake` for servers created after this call."""
    monkeypatch.setenv("CRACKTRADER_EXCHANGE_OPTIONS", fake.exchange_options_json())
    monkeypatch.setenv("CRACKTRADER_CCXT_BACKOFF_BASE", "0")
    get_settings.cache_clear()


@pytest.fixture
def binance_now(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeBinance, LiveServer]]:
    """A live server whose `binance` is a FakeBinance with its clock at the real now."""
    with FakeBinance(now_ms=int(time.time() * 1000)) as fake:
        _binance_at(monkeypatch, fake)
        with live_server() as srv:
            yield fake, srv


@pytest.fixture
def binance_2024(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeBinance, LiveServer]]:
    """A live server whose `binance` is a FakeBinance on its default clock (2024-06-01)."""
    with FakeBinance() as fake:
        _binance_at(monkeypatch, fake)
        with live_server() as srv:
            yield fake, srv


def _with_base(text: str, srv: LiveServer) -> str:
    assert DOC_BASE in text
    return text.replace(DOC_BASE, srv.base_url)


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False, **kwargs)


def _final_value(stdout: str) -> float:
    found = FINAL_VALUE.findall(stdout)
    assert len(found) == 1, f"expected one 'Final value: $<number>' line, got:\n{stdout}"
    return float(found[0])


def _last_backtest(srv: LiveServer) -> tuple[dict[str, Any], dict[str, Any]]:
    with httpx.Client(base_url=srv.base_url) as c:
        status = c.get("/api/v1/status").json()
        results = c.get("/api/v1/results").json()
    return status, results


# ------------------------------------------------------------------------------------------ seed 000


def test_python_aiohttp_client_example_runs_a_backtest_and_prints_the_final_value(
    binance_now: tuple[FakeBinance, LiveServer], tmp_path: Path
) -> None:
    fake, srv = binance_now
    script = tmp_path / "client.py"
    script.write_text(_with_base(PYTHON_CLIENT, srv))
    done = _run([sys.executable, str(script)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = _final_value(done.stdout)
    status, results = _last_backtest(srv)
    assert status["status"] == "completed" and results["status"] == "completed"
    assert printed == pytest.approx(results["final_value"]) and results["config"]["exchange"] == "binance"
    assert fake.requests_to("/api/v3/klines"), "the default exchange was not served by the fake"


def test_node_axios_client_example_runs_a_backtest_and_prints_the_final_value(
    binance_now: tuple[FakeBinance, LiveServer], tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: install Node.js, then run scripts/test.sh (it installs axios)")
    if not (JS_DIR / "node_modules" / "axios" / "package.json").is_file():
        pytest.fail(
            "axios is not installed in tests/js/node_modules: run scripts/test.sh (or npm ci --prefix tests/js)"
        )
    fake, srv = binance_now
    example = (JS_DIR / "seed000_client.js").read_text()
    script = tmp_path / "client.js"
    script.write_text(_with_base(example, srv))
    done = _run([node, str(script)], cwd=tmp_path, env={**os.environ, "NODE_PATH": str(JS_DIR / "node_modules")})
    # The example reports errors with `.catch(console.error)` and still exits 0, so stderr must be empty too.
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    status, results = _last_backtest(srv)
    assert lines[0] == f"Backtest started: {results['run_id']}"
    assert lines[-2] == "Status: completed" and all(line.startswith("Status: ") for line in lines[1:-1])
    assert _final_value(done.stdout) == pytest.approx(results["final_value"])
    assert status["status"] == "completed" and fake.requests_to("/api/v3/klines")


def _curl_commands(srv: LiveServer) -> dict[str, str]:
    """The cURL examples by their comment, as runnable bash: `\\` continuations become `\\`, base URL swapped."""
    commands: dict[str, str] = {}
    name = ""
    for line in CURL_EXAMPLES.splitlines():
        if line.startswith("# "):
            name = line[2:]
            commands[name] = ""
        else:
            commands[name] += line + "\n"
    return {k: _with_base(v.replace("\\\\\n", "\\\n").strip(), srv) for k, v in commands.items()}


def _curl(command: str) -> tuple[int, Any]:
    """Run one example with the real curl binary; (HTTP status, JSON body)."""
    done = _run(["bash", "-c", f"{command} --silent --show-error --write-out '\\n%{{http_code}}'"])
    assert done.returncode == 0, (command, done.stderr)
    body, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(body)


def test_curl_examples_check_health_run_a_backtest_then_stop_and_reset(
    binance_now: tuple[FakeBinance, LiveServer],
) -> None:
    assert shutil.which("curl"), "curl is not installed: apt-get install curl"
    _, srv = binance_now
    cmd = _curl_commands(srv)
    assert list(cmd) == ["Check health", "Start backtest", "Check status", "Get results", "Stop run", "Reset runner"]

    code, health = _curl(cmd["Check health"])
    assert code == 200 and health["status"] == "healthy" and health["api_version"] == "v1"

    code, started = _curl(cmd["Start backtest"])
    assert code == 200 and started["status"] == "starting" and re.fullmatch(r"[0-9a-f]{32}", started["run_id"])

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        code, status = _curl(cmd["Check status"])
        assert code == 200 and status["run_id"] == started["run_id"]
        if status["status"] not in ("starting", "running"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["status"] == "completed", status

    code, results = _curl(cmd["Get results"])
    assert code == 200 and results["run_id"] == started["run_id"] and results["status"] == "completed"
    assert results["final_value"] == pytest.approx(status["value"]) and results["config"]["exchange"] == "binance"

    code, stop = _curl(cmd["Stop run"])
    assert code == 409 and set(stop) == ENVELOPE_KEYS
    assert stop["error"]["code"] == "NO_ACTIVE_RUN" and stop["status_code"] == 409
    assert stop["path"] == "/api/v1/run/stop" and stop["error"]["details"] == {"status": "completed"}

    code, reset = _curl(cmd["Reset runner"])
    assert code == 200 and reset == {"run_id": started["run_id"], "status": "idle", "message": "Runner reset to idle"}
    code, status = _curl(cmd["Check status"])
    assert code == 200 and status["status"] == "idle" and status["run_id"] is None


def _seed_lines(pattern: str, first: str, last: str) -> list[str]:
    files = sorted(SEEDS.glob(pattern))
    if not files:
        pytest.skip(f"no {pattern} in {SEEDS}: shared/ is not beside this checkout")
    lines = [line.strip() for line in files[0].read_text().splitlines()]
    start = lines.index(first)
    return lines[start : lines.index(last, start) + 1]


def _significant(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_embedded_examples_match_seed_000_line_for_line() -> None:
    js = (JS_DIR / "seed000_client.js").read_text()
    js = js[js.index("const axios") :]
    assert _significant(PYTHON_CLIENT) == _seed_lines("000_*.txt", "import asyncio", "asyncio.run(run_backtest())")
    assert _significant(js) == _seed_lines(
        "000_*.txt", "const axios = require('axios');", "runBacktest().catch(console.error);"
    )
    curl_last = "curl -X DELETE http://127.0.0.1:8000/api/v1/run/reset"
    assert _significant(CURL_EXAMPLES) == _seed_lines("000_*.txt", "# Check health", curl_last)


def test_seed_001_request_bodies_are_embedded_as_printed() -> None:
    text = "\n".join(_seed_lines("001_*.txt", "Start a backtest", "Stop and reset"))
    bodies = re.findall(r"^\{$.*?^\}$", text, re.MULTILINE | re.DOTALL)
    printed = [json.loads(body) for body in bodies]
    assert printed == [SEED_001_BACKTEST, SEED_001_PAPER]


# ------------------------------------------------------------------------------------------ seed 001


async def _wait_finished(c: httpx.AsyncClient, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = (await c.get("/api/v1/status")).json()
        if status["status"] not in ("starting", "running"):
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)


@pytest.mark.anyio
async def test_seed_001_backtest_body_is_accepted_and_completes_on_its_dates(
    binance_2024: tuple[FakeBinance, LiveServer],
) -> None:
    fake, srv = binance_2024
    async with httpx.AsyncClient(base_url=srv.base_url) as c:
        started = await c.post("/api/v1/run/backtest", json=SEED_001_BACKTEST)
        assert started.status_code == 200, started.text
        status = await _wait_finished(c)
        results = (await c.get("/api/v1/results", params={"max_points": 200_000})).json()
    assert status["status"] == "completed", status
    assert results["run_id"] == started.json()["run_id"] and results["status"] == "completed"
    config = results["config"]
    assert config["strategy_params"] == {"period": 20, "threshold": 0.02} and config["exchange"] == "binance"
    curve = results["equity_curve"]
    # Hourly bars from 2024-01-01T00:00 through the last bar opening before 2024-03-01T23:59:59 (60 days + 1).
    assert curve[0]["timestamp"] == "2024-01-01T00:00:00Z" and curve[-1]["timestamp"] == "2024-03-01T23:00:00Z"
    assert len(curve) == status["bars_total"] == 61 * 24
    assert results["final_value"] == pytest.approx(status["value"])
    assert fake.requests_to("/api/v3/klines")


@pytest.mark.anyio
async def test_seed_001_paper_example_as_printed_trades_binance_paper_and_never_signs_or_stores_its_keys(
    tmp_path: Path,
) -> None:
    from fakes.venue import FakeVenue
    from web_support import app_client

    t0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z, a 5m candle's open; the venue starts 30 s into it
    with FakeVenue(now_ms=t0 + 30_000) as venue:
        settings = get_settings().model_copy(update={"exchange_options": venue.exchange_options()})
        async with app_client(settings) as c:
            c.app.state.sessions.clock = venue.clock  # type: ignore[attr-defined]  # the session runs on the venue's time
            started = await c.post("/api/v1/run/live", json=SEED_001_PAPER)
            assert started.status_code == 200, started.text
            run_id = started.json()["run_id"]
            first = (await c.get("/api/v1/status")).json()
            await venue.wait_subscribed("btcusdt@kline_5m")
            await venue.settled()
            await venue.step(270)  # the 12:00 candle closes
            deadline = time.monotonic() + 30  # a safety net: the bar arrives on the step above
            while (status := (await c.get("/api/v1/status")).json())["last_candle_time"] != "2024-06-01T12:00:00Z":
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.02)
            stop = await c.post("/api/v1/run/stop", json={"flatten": True})
            stopped = (await c.get("/api/v1/status")).json()
            record = await c.get(f"/api/v1/runs/{run_id}")
            results = (await c.get("/api/v1/results")).json()
        signed = venue.credentialed_requests()
        klines = venue.requests_to("/api/v3/klines")
    assert first["run_id"] == run_id and first["status"] == "running" and first["mode"] == "paper"
    assert first["cash"] == 10_000.0 and first["condition"] == "ok"
    assert status["status"] == "running" and status["bars_processed"] == 1
    assert stop.status_code == 200 and stop.json()["status"] == "stopped" and stopped["status"] == "stopped"
    assert results["run_id"] == run_id and results["status"] == "stopped"
    assert signed == [] and klines  # the warm-up came from REST, unsigned; the keys "..." were never used
    run = record.json()
    assert run["mode"] == "paper" and run["status"] == "stopped" and run["exchange"] == "binance"
    assert run["config"]["exchange_config"] == {"sandbox": True}
    assert run["config"]["exchange_config_dropped_keys"] == 2
    assert run["config"]["strategy_params"] == {"period": 10, "slow": 30}
    assert '"..."' not in record.text
