"""CLI: wall time of `cracktrader backtest` on one year of 1h synthetic candles, start-up and exit included.

If the CLI cannot run the backtest (e.g. a module it needs is not there yet), the failure is reported
and the same work is timed as a `python -c` script instead (the row says so).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import REPO_DIR, Row, Section, child_env, print_section, python_exe

TARGET_S = 2.0
ARGS = [
    "backtest",
    "--exchange",
    "synthetic",
    "--strategy",
    "SmaCross",
    "--symbol",
    "BTC/USDT",
    "--timeframe",
    "1h",
    "--start",
    "2023-01-01",
    "--end",
    "2024-01-01",
]

# What `cracktrader backtest` does, minus the candle store: the CLI module (typer), the strategy
# registry, synthetic candles, the engine, the results document and a printed summary.
EQUIVALENT = """
from cracktrader.cli import app  # noqa: F401  (the CLI's own imports)
from cracktrader.data.candles import to_ms
from cracktrader.data.sources.synthetic import SyntheticSource
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.backtest import run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import align
from cracktrader.settings import get_settings
from cracktrader.strategies.registry import load_registry
settings = get_settings()
strategy = load_registry(settings).get("SmaCross")({})
tf = parse_timeframe("1h")
src = SyntheticSource()
start, end = to_ms("2023-01-01"), to_ms("2024-01-01")
candles = src.fetch("BTC/USDT", tf, start, end)
fee = settings.default_fee_rate
result = run_backtest(strategy, align({"BTC/USDT": candles}, tf.periods_per_year),
                      SimSettings(initial_cash=10000.0, maker_fee=fee, taker_fee=fee))
try:
    from cracktrader.runs.document import build_document
    doc = build_document(result, run_id="bench", config={}, start_time="", end_time="")
    final = doc["final_value"]
except ImportError:
    final = result.final_value
from rich.console import Console
Console().print(f"final value {final:,.2f} after {result.bars_processed} bars")
"""


HIDE_PEER_DEPS = "import sys\nfor _m in ('pandas', 'scipy', 'polars'):\n    sys.modules[_m] = None\n"
RUN_APP = "import sys\nsys.argv = ['cracktrader', *{args!r}]\nfrom cracktrader.cli import app\n"
# The CLI's work followed by os._exit: what skipping the interpreter's teardown would save.
FAST_EXIT = "import os\ntry:\n    app(standalone_mode=False)\nfinally:\n    sys.stdout.flush()\n    os._exit(0)\n"


def cli_command() -> list[str]:
    script = Path(python_exe()).with_name("cracktrader")
    return [str(script), *ARGS] if script.exists() else [python_exe(), "-m", "cracktrader", *ARGS]


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_DIR, check=False)
    return time.perf_counter() - t0, proc


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["(no output)"])[-1]


def run(repeats: int = 3) -> Section:
    section = Section()
    with tempfile.TemporaryDirectory(prefix="ct-bench-cli-") as tmp:
        # Hermetic: a private numba cache, primed by the first run, and a private data folder.
        env = child_env(NUMBA_CACHE_DIR=str(Path(tmp) / "numba"), CRACKTRADER_DATA_DIR=str(Path(tmp) / "data"))
        label = "5. CLI backtest, 1y of 1h synthetic"
        _, first = _timed(cli_command(), env)
        works = first.returncode == 0
        run_app = RUN_APP.format(args=ARGS)
        if works:
            variants = {
                label: cli_command(),
                "5. same, peers' pandas/scipy/polars hidden": [
                    python_exe(), "-c", HIDE_PEER_DEPS + run_app + "app()\n"
                ],
                "5. same, hidden + os._exit after output": [
                    python_exe(), "-c", HIDE_PEER_DEPS + run_app + FAST_EXIT
                ],
            }  # fmt: skip
        else:
            section.notes.append(f"`cracktrader {' '.join(ARGS)}` exits {first.returncode}: {_last_line(first.stderr)}")
            section.notes.append("timed instead: the same work as a `python -c` script (EQUIVALENT in bench_cli.py)")
            variants = {
                label + " (python -c equivalent)": [python_exe(), "-c", EQUIVALENT],
                "5. same, peers' pandas/scipy/polars hidden": [python_exe(), "-c", HIDE_PEER_DEPS + EQUIVALENT],
            }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for name, cmd in variants.items():
            _, proc = _timed(cmd, env)  # priming: numba cache, data folder
            if proc.returncode != 0:
                section.rows.append(Row(name, f"failed: {_last_line(proc.stderr)}", target="< 2 s", passed=False))
                del times[name]
        for _ in range(repeats):  # interleaved, so drifting machine load hits every variant
            for name in times:
                times[name].append(_timed(variants[name], env)[0])
    for k, (name, runs) in enumerate(times.items()):
        best = min(runs)
        headline = k < 2
        section.rows.append(
            Row(
                name,
                f"{best:.2f} s",
                target="< 2 s" if headline else "(info)",
                passed=best < TARGET_S if headline else None,
            )
        )
        section.notes.append(f"{name}: {', '.join(f'{t:.2f}' for t in runs)} s")
    section.notes.append(
        f"wall time from spawn to exit, best of {repeats} after a priming run (fills the numba cache); "
        f"CLI output ends with: {_last_line(first.stdout)!r}"
    )
    section.data.update(times=times, cli_works=works)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    print_section("CLI", run(parser.parse_args().repeats))


if __name__ == "__main__":
    main()
