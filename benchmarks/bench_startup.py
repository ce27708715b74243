"""Compiled-kernel disk cache: fresh `python` process start to the end of a small backtest.

The clock starts in the parent just before the child is spawned and stops when the child's backtest has
returned (the child prints `time.time()`); interpreter shutdown is not included. `NUMBA_CACHE_DIR` points
at a temporary folder: empty for the cold run, then reused (warm) for the timed warm runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Row, Section, child_env, print_section, python_exe

TARGET_WARM_S = 1.0

# One year of 1h synthetic BTC/USDT candles through SmaCross, metrics included.
CHILD = """
import time
{prelude}
from cracktrader.engine.backtest import run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import align
from cracktrader.strategies.builtin import SmaCross
t_imports = time.time()
try:
    from cracktrader.data.sources.synthetic import SyntheticSource
    from cracktrader.data.timeframes import parse_timeframe
    tf = parse_timeframe("1h")
    candles = SyntheticSource(now_ms=1704067200000).fetch("BTC/USDT", tf, 1672531200000, 1704067200000)
    source = "synthetic"
except ImportError:
    import numpy as np
    n = 8760
    close = 30000.0 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, n)))
    class candles:
        timestamp = 1672531200000 + np.arange(n, dtype=np.int64) * 3600000
        open = high = low = close
        volume = np.ones(n)
    source = "random walk"
result = run_backtest(SmaCross(), align({{"BTC/USDT": candles}}, 8760.0), SimSettings())
import json
print(json.dumps({{"t_imports": t_imports, "t_end": time.time(), "final": result.final_value, "source": source}}))
"""

# Block the optional imports that only the peers bring into the bench venv: TA-Lib's wrapper imports
# pandas and polars when present, numba imports scipy for BLAS when present. Without them the process
# looks like an install of cracktrader alone.
HIDE_PEER_DEPS = "import sys\nfor _m in ('pandas', 'scipy', 'polars'):\n    sys.modules[_m] = None\n"


def spawn(cache_dir: Path, *, hide_peer_deps: bool = False) -> dict[str, Any]:
    """Run the child once; returns its JSON plus seconds from spawn to the end of the backtest."""
    code = CHILD.format(prelude=HIDE_PEER_DEPS if hide_peer_deps else "")
    t0 = time.time()
    proc = subprocess.run(
        [python_exe(), "-c", code],
        capture_output=True,
        text=True,
        env=child_env(NUMBA_CACHE_DIR=str(cache_dir)),
        check=False,
    )
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"startup child failed: {proc.stderr.strip().splitlines()[-1:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["to_end"] = out["t_end"] - t0
    out["to_imports"] = out["t_imports"] - t0
    out["wall"] = wall
    return out


def run(repeats: int = 5) -> Section:
    section = Section()
    with tempfile.TemporaryDirectory(prefix="ct-bench-numba-") as tmp:
        cache = Path(tmp)
        cold = spawn(cache)
        warm = [spawn(cache) for _ in range(repeats)]
        lean = [spawn(cache, hide_peer_deps=True) for _ in range(repeats)]
        n_cached = len(list(cache.rglob("*.nbi")))
    best = min(warm, key=lambda r: r["to_end"])
    warm_list = ", ".join(f"{r['to_end']:.2f}" for r in warm)
    lean_list = ", ".join(f"{r['to_end']:.2f}" for r in lean)
    best_lean = min(lean, key=lambda r: r["to_end"])
    section.rows += [
        Row(
            "4. start-up + small backtest, warm numba cache",
            f"{best['to_end']:.2f} s",
            target="< 1 s",
            passed=best["to_end"] < TARGET_WARM_S,
        ),
        Row(
            "4. same, peers' pandas/scipy/polars hidden",
            f"{best_lean['to_end']:.2f} s",
            target="< 1 s",
            passed=best_lean["to_end"] < TARGET_WARM_S,
        ),
        Row("4. same, cold numba cache (compiles)", f"{cold['to_end']:.2f} s", target="(info)"),
    ]
    section.notes += [
        f"small backtest: SmaCross on one year of 1h {best['source']} candles (8,760 bars), metrics included",
        f"warm: best of {repeats} ({warm_list} s); imports done after "
        f"{best['to_imports']:.2f} s, process exit after {best['wall']:.2f} s",
        f"peers hidden: best of {repeats} ({lean_list} s); imports done "
        f"after {best_lean['to_imports']:.2f} s. The bench venv has pandas and scipy only because of the "
        "peers: TA-Lib imports pandas when installed (~0.3 s) and numba's first compiled call imports "
        "scipy.linalg when installed (~0.2 s); a plain cracktrader install has neither",
        f"cold: NUMBA_CACHE_DIR emptied, {cold['to_end']:.2f} s; the cold run wrote {n_cached} cache index files",
    ]
    section.data.update(cold=cold, warm=warm, lean=lean)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    print_section("start-up", run(parser.parse_args().repeats))


if __name__ == "__main__":
    main()
