"""Peak memory of the vectorized 1M-bar run above the interpreter's baseline, against the input size.

Each engine runs in a fresh subprocess: imports and a tiny warm-up run (JIT), then the peak-RSS counter
is reset (`/proc/self/clear_refs`) and the baseline RSS read; the 1M-bar arrays are loaded from .npy
files (no temporaries) and the backtest runs; the result is the peak RSS (VmHWM) minus the baseline, so
it includes the input arrays themselves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import (
    BENCH_DIR,
    Market,
    Row,
    Section,
    child_env,
    fmt_mb,
    make_market,
    print_section,
    python_exe,
    reset_peak,
    status_kb,
)

TARGET_RATIO = 3.0


def _engine(name: str) -> Any:
    """A function (Market) -> final value for the named engine, already warmed up."""
    import numpy as np

    if name == "cracktrader":
        from bench_vectorized import cracktrader_runner

        def run_ct(market: Market) -> float:
            return float(cracktrader_runner(market)().final_value)

        run = run_ct
    elif name == "vectorbt":
        from bench_vectorized import vbt_talib_runner

        def run_vbt(market: Market) -> float:
            return float(vbt_talib_runner(market)())

        run = run_vbt
    else:
        raise SystemExit(f"unknown engine {name}")
    rng = np.random.default_rng(0)
    close = 100.0 + np.cumsum(rng.normal(0.0, 0.5, 500))
    tiny = Market(np.arange(500, dtype=np.int64) * 60_000, close, close + 1.0, close - 1.0, close, close * 0 + 1)
    run(tiny)
    return run


def child(engine: str, folder: Path) -> None:
    import gc

    run = _engine(engine)
    gc.collect()
    exact = reset_peak()
    baseline_kb = status_kb("VmRSS")
    market = Market.load(folder)
    value = run(market)
    peak_kb = status_kb("VmHWM")
    if not exact:  # fall back on the process-lifetime peak
        import resource

        peak_kb = max(peak_kb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(
        json.dumps(
            {
                "engine": engine,
                "baseline_kb": baseline_kb,
                "peak_kb": peak_kb,
                "input_bytes": market.nbytes,
                "final_value": value,
                "peak_reset": exact,
            }
        )
    )


def measure(engine: str, folder: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [python_exe(), str(BENCH_DIR / "bench_memory.py"), "--child", engine, str(folder)],
        capture_output=True,
        text=True,
        env=child_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {engine} failed: {proc.stderr.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run(market: Market) -> Section:
    with tempfile.TemporaryDirectory(prefix="ct-bench-mem-") as tmp:
        folder = Path(tmp)
        market.save(folder)
        ct = measure("cracktrader", folder)
        peer = measure("vectorbt", folder)
    inputs = ct["input_bytes"]
    ct_used = (ct["peak_kb"] - ct["baseline_kb"]) * 1024
    peer_used = (peer["peak_kb"] - peer["baseline_kb"]) * 1024
    ratio = ct_used / inputs
    section = Section()
    section.rows.append(
        Row(
            f"3. memory, vectorized {len(market):,} bars",
            f"{fmt_mb(ct_used)} = {ratio:.2f}x input",
            "vectorbt (same SMA)",
            f"{fmt_mb(peer_used)} = {peer_used / inputs:.2f}x input",
            f"{ratio:.2f}x input",
            "<= 3x input",
            ratio <= TARGET_RATIO,
        )
    )
    section.notes += [
        f"input = timestamp + OHLCV arrays = {fmt_mb(inputs)}; peak RSS (VmHWM) minus the RSS after imports "
        "and a 500-bar warm-up, in a fresh subprocess per engine; the input arrays are part of the peak",
        f"cracktrader baseline {ct['baseline_kb'] / 1024:.0f} MiB, peak {ct['peak_kb'] / 1024:.0f} MiB; "
        f"vectorbt baseline {peer['baseline_kb'] / 1024:.0f} MiB, peak {peer['peak_kb'] / 1024:.0f} MiB; "
        f"peak counter reset before loading: {ct['peak_reset'] and peer['peak_reset']}",
    ]
    section.data.update(ct=ct, peer=peer)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    print_section("memory", run(make_market()))


if __name__ == "__main__":
    sys.exit(main())
