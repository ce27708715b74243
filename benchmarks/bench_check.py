"""`cracktrader check` speed and the window-parity table of every built-in.

.venv/bin/python benchmarks/bench_check.py            # about a minute
.venv/bin/python benchmarks/bench_check.py --json out.json

1. Speed: each built-in with default parameters on 100,000 one-minute synthetic bars of BTC/USDT (the engine's
   `check_strategy`, both checks, after a small warm-up run that compiles the kernels). Target < 5 s.
2. Window parity: each built-in on 12,000 bars x 2 symbols (BTC/USDT, ETH/USDT) at 1h and at 4h, with every bar
   compared: decisions on the live window of `warmup()` bars versus the full history. Target 0 differing, with
   at least 50 entries and 50 exits (BuyAndHold trades once by design).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from cracktrader.data.sources.synthetic import generate
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.check import check_strategy
from cracktrader.engine.market import MarketData, align
from cracktrader.strategies.builtin import BUILTIN_STRATEGIES

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SPEED_BARS = 100_000
PARITY_BARS = 12_000
TARGET_S = 5.0


def market(timeframe: str, bars: int, symbols: tuple[str, ...]) -> MarketData:
    """Synthetic candles ending at NOW."""
    tf = parse_timeframe(timeframe)
    start = NOW - bars * tf.ms
    return align({s: generate(s, tf, start, NOW, NOW) for s in symbols}, tf.periods_per_year)


def speed() -> list[dict[str, Any]]:
    data = market("1m", SPEED_BARS, ("BTC/USDT",))
    small = market("1m", 2_000, ("BTC/USDT",))
    rows = []
    for cls in BUILTIN_STRATEGIES:
        check_strategy(cls, small, SimSettings())  # warm-up: numba caches, imports
        began = time.perf_counter()
        report = check_strategy(cls, data, SimSettings())
        seconds = time.perf_counter() - began
        rows.append(
            {
                "strategy": cls.name,
                "style": report.style,
                "bars": report.bars,
                "seconds": round(seconds, 3),
                "passed": report.passed,
                "window_compared": report.checks[1].compared,
            }
        )
    return rows


def parity() -> list[dict[str, Any]]:
    rows = []
    for timeframe in ("1h", "4h"):
        data = market(timeframe, PARITY_BARS, ("BTC/USDT", "ETH/USDT"))
        for cls in BUILTIN_STRATEGIES:
            report = check_strategy(cls, data, SimSettings(), max_window_probes=PARITY_BARS)
            window = next(c for c in report.checks if c.name == "window")
            look = next(c for c in report.checks if c.name == "look_ahead")
            rows.append(
                {
                    "strategy": cls.name,
                    "style": report.style,
                    "timeframe": timeframe,
                    "window": report.window,
                    "compared": window.compared,
                    "differing": window.differing,
                    "look_ahead_differing": look.differing,
                    "entries": report.entries,
                    "exits": report.exits,
                }
            )
    return rows


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [headers, *[tuple(str(c) for c in r) for r in rows]]
    widths = [max(len(row[k]) for row in cells) for k in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    fast = speed()
    print(f"check speed: {SPEED_BARS:,} 1m bars, 1 symbol, default parameters (target < {TARGET_S:.0f} s)")
    print(
        _table(
            ("strategy", "style", "seconds", "window decisions compared", "passed", "target"),
            [
                (
                    r["strategy"],
                    r["style"],
                    f"{r['seconds']:.2f}",
                    f"{r['window_compared']:,}",
                    r["passed"],
                    "pass" if r["seconds"] < TARGET_S else "FAIL",
                )
                for r in fast
            ],
        )
    )
    table = parity()
    print()
    print(f"window parity: {PARITY_BARS:,} bars x 2 symbols per timeframe, every bar compared (target 0 differing)")
    print(
        _table(
            ("strategy", "style", "tf", "window", "compared", "differing", "look-ahead differing", "entries", "exits"),
            [
                (
                    r["strategy"],
                    r["style"],
                    r["timeframe"],
                    r["window"],
                    f"{r['compared']:,}",
                    r["differing"],
                    r["look_ahead_differing"],
                    r["entries"],
                    r["exits"],
                )
                for r in table
            ],
        )
    )
    if args.json:
        args.json.write_text(json.dumps({"speed": fast, "parity": table}, indent=1))


if __name__ == "__main__":
    main()
