"""Parameter sweeps: cracktrader's `sweep` against vectorbt's one-call broadcast, and against one backtest at a time.

Every measurement runs in its own process (a warm-up on 10,000 bars first, for the JIT), so each peak RSS is that
engine's alone: the process's peak (VmHWM) counted from after imports, data loading and warm-up (the counter is
reset there, so compiling into a cold numba cache does not count), and its rise above the RSS at that point.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import (
    FEE,
    INITIAL_CASH,
    PERIODS_PER_YEAR,
    SYMBOL,
    Market,
    Row,
    Section,
    child_env,
    machine_info,
    make_market,
    print_section,
    python_exe,
    rel_diff,
    reset_peak,
    status_kb,
)

SMA_GRID = {"fast": list(range(5, 51, 5)), "slow": list(range(20, 201, 20))}
BIG_GRID = {"fast": list(range(5, 105)), "slow": list(range(110, 309, 2))}
WARMUP_BARS = 10_000
# One 100-combination grid per vectorized built-in.
BUILTIN_GRIDS: dict[str, dict[str, list[Any]]] = {
    "SmaCross": SMA_GRID,
    "EmaCross": SMA_GRID,
    "TestStrategy": {"period": list(range(5, 51, 5)), "slow": list(range(60, 241, 20))},
    "RsiMeanReversion": {"period": list(range(5, 24, 2)), "oversold": [20.0 + 2 * i for i in range(10)]},
    "BollingerReversion": {"period": list(range(10, 56, 5)), "stdev": [1.0 + 0.25 * i for i in range(10)]},
    "MacdTrend": {"fast": list(range(4, 14)), "slow": list(range(20, 39, 2))},
    "DonchianBreakout": {"entry_period": list(range(10, 56, 5)), "exit_period": list(range(5, 51, 5))},
}
# Dask LocalCluster vs in process: 2,000 SmaCross pairs (90 distinct windows) on the first DASK_BARS bars.
DASK_GRID = {"fast": list(range(5, 45)), "slow": list(range(50, 300, 5))}
DASK_BARS = 250_000
DASK_REPEAT = 2
# One backtest at a time is timed on this many combinations of each grid and scaled to the grid's size.
SERIAL_SAMPLE = 20


def _rss_now() -> int:
    return status_kb("VmRSS") * 1024


def _peak_rss() -> int:
    return status_kb("VmHWM") * 1024


def _baseline() -> int:
    """The RSS after imports, data and warm-up, with the peak counter reset to it (the JIT's compile not counted)."""
    if not reset_peak():
        raise SystemExit("cannot reset the peak RSS counter (/proc/self/clear_refs)")
    return _rss_now()


# -- children ------------------------------------------------------------------------------------------


def _ct_inputs(market: Market, strategy: str) -> Any:
    from cracktrader.engine.broker import SimSettings
    from cracktrader.engine.market import align
    from cracktrader.strategies import builtin
    from cracktrader.sweeps.plans import SweepInputs

    settings = SimSettings(initial_cash=INITIAL_CASH, maker_fee=FEE, taker_fee=FEE, slippage=0.0, latency=1)
    return SweepInputs(
        getattr(builtin, strategy), align({SYMBOL: market}, PERIODS_PER_YEAR), settings, ("total_return",)
    )


def _ct_sweep(market: Market, strategy: str, combos_of: Any, workers: int) -> tuple[list[Any], int]:
    from cracktrader.sweeps.plans import make_plan
    from cracktrader.sweeps.sweep import run_plan

    inputs = _ct_inputs(market, strategy)
    combos = combos_of(inputs.strategy_cls)
    plan = make_plan(inputs, combos, workers)  # as `sweep` makes it
    rows, _, _ = run_plan(plan, combos, workers=workers)
    return rows, len(combos)


def _grid_combos(grid: dict[str, list[Any]], keep: Any = None) -> Any:
    def make(cls: Any) -> list[Any]:
        from cracktrader.sweeps.grid import expand

        valid = expand(cls, grid).valid
        return [v for v in valid if keep is None or keep(v[0].params)]

    return make


def _same_windows_1000(params: dict[str, Any]) -> bool:
    """1,000 of BIG_GRID's pairs that still use all its 200 distinct windows."""
    return ((params["slow"] - 110) // 2 - (params["fast"] - 5)) % 10 == 0


def child(job: str, folder: Path, workers: int) -> dict[str, Any]:
    """Run one measurement in this process; returns its figures."""
    market = Market.load(folder)
    small = market.head(WARMUP_BARS)
    out: dict[str, Any] = {}
    if job.startswith("ct:"):
        _, strategy, which = job.split(":")
        if which == "big":
            combos_of = _grid_combos(BIG_GRID)
        elif which == "big1000":
            combos_of = _grid_combos(BIG_GRID, _same_windows_1000)
        else:
            combos_of = _grid_combos(BUILTIN_GRIDS[strategy] if which == "grid" else SMA_GRID)
        _ct_sweep(small, strategy, _grid_combos({k: v[:2] for k, v in BUILTIN_GRIDS[strategy].items()}), 1)
        base = _baseline()
        c0, t0 = time.process_time(), time.perf_counter()
        rows, n = _ct_sweep(market, strategy, combos_of, workers)
        out["seconds"] = time.perf_counter() - t0
        out["cpu"] = time.process_time() - c0
        out["combos"] = n
        out["total_return"] = {":".join(map(str, r.params.values())): r.metrics["total_return"] for r in rows}
    elif job.startswith("serial:"):
        from cracktrader.engine.backtest import run_backtest

        strategy = job.split(":")[1]
        inputs = _ct_inputs(market, strategy)
        combos = _grid_combos(BUILTIN_GRIDS[strategy])(inputs.strategy_cls)
        run_backtest(inputs.strategy_cls(combos[0][1].model_dump()), _ct_inputs(small, strategy).data, inputs.sim)
        base = _baseline()
        sample = combos[:: max(1, len(combos) // SERIAL_SAMPLE)][:SERIAL_SAMPLE]
        c0, t0 = time.process_time(), time.perf_counter()
        for _, params in sample:
            run_backtest(inputs.strategy_cls(params.model_dump()), inputs.data, inputs.sim)
        out["seconds"] = (time.perf_counter() - t0) * len(combos) / len(sample)
        out["cpu"] = (time.process_time() - c0) * len(combos) / len(sample)
        out["combos"] = len(combos)
    elif job == "vbt":
        _vbt(small)
        base = _baseline()
        c0, t0 = time.process_time(), time.perf_counter()
        out["total_return"] = _vbt(market)
        out["seconds"] = time.perf_counter() - t0
        out["cpu"] = time.process_time() - c0
        out["combos"] = len(SMA_GRID["fast"]) * len(SMA_GRID["slow"])
        out["peak_rss"] = _peak_rss()
        out["same_sma"] = _vbt(market, same_sma=True)  # after the peak is read: informational, not timed
    elif job.startswith("dask:"):
        out.update(_dask_job(market.head(DASK_BARS), small, job.split(":")[1], workers))
        base = _rss_now()  # not a memory figure: the workers are other processes
    else:
        raise SystemExit(f"unknown job {job}")
    out.setdefault("peak_rss", _peak_rss())
    out["base_rss"] = base
    return out


def _dask_job(market: Market, small: Market, where: str, workers: int) -> dict[str, Any]:
    """DASK_GRID in process (`where` = local) or on a LocalCluster of `workers` processes (cluster start excluded)."""
    if where == "local":
        _ct_sweep(small, "SmaCross", _grid_combos({"fast": [5], "slow": [50]}), 1)
        t0 = time.perf_counter()
        rows, n = _ct_sweep(market, "SmaCross", _grid_combos(DASK_GRID), workers)
        return {"seconds": time.perf_counter() - t0, "combos": n, "rows": [repr(r.metrics) for r in rows]}
    from distributed import Client, LocalCluster

    from cracktrader.sweeps.code import strategy_code
    from cracktrader.sweeps.executors import run_on_dask

    chunks: list[int] = []

    def on_chunk(rows: list[Any], into: list[Any]) -> None:
        chunks.append(len(rows))
        into.extend(rows)

    def on_cluster(client: Any, m: Market, grid: dict[str, list[Any]]) -> tuple[list[Any], int]:
        chunks.clear()
        inputs = _ct_inputs(m, "SmaCross")
        combos = _grid_combos(grid)(inputs.strategy_cls)
        code = strategy_code(inputs.strategy_cls)
        assert code is not None
        rows: list[Any] = []
        run_on_dask(
            client,
            code=code,
            data=inputs.data,
            sim=inputs.sim,
            metrics=inputs.metrics,
            combos=combos,
            chunk_size=None,
            on_chunk=lambda chunk: on_chunk(chunk, rows),
            cancel=None,
        )
        return sorted(rows, key=lambda r: r.index), len(combos)

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        on_cluster(client, small, {"fast": [5], "slow": [50]})  # the workers load the compiled kernels
        t0 = time.perf_counter()
        rows, n = on_cluster(client, market, DASK_GRID)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "combos": n, "rows": [repr(r.metrics) for r in rows], "tasks": len(chunks)}


def _vbt(market: Market, *, same_sma: bool = False) -> dict[str, float]:
    """vectorbt's one-call broadcast: MA.run with parameter lists, crossovers, from_signals on all columns.

    `same_sma`: the crossovers of cracktrader's exact SMAs instead (vectorbt's simulator only), to show where the
    two disagree: at SMA ties only.
    """
    import vectorbt as vbt

    pairs = [(f, s) for f in SMA_GRID["fast"] for s in SMA_GRID["slow"]]
    if same_sma:
        from cracktrader.engine.indicators import crossed_above, crossed_below, sma

        entries = np.stack([crossed_above(sma(market.close, f), sma(market.close, s)) for f, s in pairs], axis=1)
        exits = np.stack([crossed_below(sma(market.close, f), sma(market.close, s)) for f, s in pairs], axis=1)
    else:
        fast = vbt.MA.run(market.close, [f for f, _ in pairs], short_name="fast")
        slow = vbt.MA.run(market.close, [s for _, s in pairs], short_name="slow")
        entries = np.asarray(fast.ma_crossed_above(slow))
        exits = np.asarray(fast.ma_crossed_below(slow))
    # A decision at bar t's close fills at bar t+1's open, as in cracktrader (vectorbt fills on the signal's bar).
    entries = np.vstack([np.zeros((1, entries.shape[1]), bool), entries[:-1]])
    exits = np.vstack([np.zeros((1, exits.shape[1]), bool), exits[:-1]])
    pf = vbt.Portfolio.from_signals(
        market.close[:, None],
        entries,
        exits,
        price=market.open[:, None],
        fees=FEE,
        size=np.inf,
        init_cash=INITIAL_CASH,
    )
    returns = np.asarray(pf.total_return())
    return {f"{f}:{s}": float(r) for (f, s), r in zip(pairs, returns, strict=True)}


def run_pair(jobs: list[str], folder: Path, workers: int, python: str, repeat: int) -> list[dict[str, Any]]:
    """Each job `repeat` times, interleaved so drifting load hits all; each job's run of median wall time."""
    runs: list[list[dict[str, Any]]] = [[] for _ in jobs]
    for _ in range(repeat):
        for i, job in enumerate(jobs):
            runs[i].append(run_child(job, folder, workers, python))
    out = []
    for job_runs in runs:
        ordered = sorted(job_runs, key=lambda r: r["seconds"])
        med = dict(ordered[len(ordered) // 2])
        med["all_seconds"] = [r["seconds"] for r in job_runs]
        out.append(med)
    return out


def _ratios(slow: dict[str, Any], fast: dict[str, Any]) -> str:
    """Median of the per-repeat wall ratios, and the CPU-time ratio of the median runs (robust to load)."""
    pairs = sorted(a / b for a, b in zip(slow["all_seconds"], fast["all_seconds"], strict=True))
    return f"{pairs[len(pairs) // 2]:.1f}x (CPU {slow['cpu'] / fast['cpu']:.1f}x)"


def run_child(job: str, folder: Path, workers: int, python: str) -> dict[str, Any]:
    cmd = ["nice", "-n", "19", python, __file__, "--child", job, "--data", str(folder), "--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{job} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def run(folder: Path, workers: int, python: str, only: set[str], repeat: int = 1) -> Section:
    section = Section()
    n = len(Market.load(folder))
    if not only or "vbt" in only:
        ct, vb = run_pair(["ct:SmaCross:sma", "vbt"], folder, workers, python, repeat)
        ratio = vb["seconds"] / ct["seconds"]
        mem_ratio = vb["peak_rss"] / ct["peak_rss"]
        common = sorted(set(ct["total_return"]) & set(vb["total_return"]))
        diffs = [rel_diff(ct["total_return"][k], vb["total_return"][k]) for k in common]
        worst = max(diffs)
        within = sum(d <= 1e-9 for d in diffs)
        section.rows += [
            Row(
                f"1. sweep 100 SmaCross pairs x {n:,} bars: time",
                f"{ct['seconds']:.2f} s ({ct['combos']} run, fast>=slow skipped)",
                "vectorbt MA.run + from_signals",
                f"{vb['seconds']:.2f} s ({vb['combos']} columns)",
                _ratios(vb, ct),
                ">= 30x",
                ratio >= 30,
            ),
            Row(
                "1b. same: peak RSS (own process)",
                f"{_mb(ct['peak_rss'])} (+{_mb(ct['peak_rss'] - ct['base_rss'])})",
                "vectorbt",
                f"{_mb(vb['peak_rss'])} (+{_mb(vb['peak_rss'] - vb['base_rss'])})",
                f"1/{mem_ratio:.1f}",
                "<= 1/10",
                mem_ratio >= 10,
            ),
            Row(
                "1c. same: total return vs vectorbt",
                f"max rel diff {worst:.1e}",
                "vectorbt",
                f"{within}/{len(common)} pairs within 1e-9",
                "-",
                "<= 1e-9",
                worst <= 1e-9,
            ),
        ]
        same = [rel_diff(ct["total_return"][k], vb["same_sma"][k]) for k in common]
        section.rows.append(
            Row(
                "1d. total return vs vectorbt given the same SMAs (info)",
                f"max rel diff {max(same):.1e}",
                "vectorbt from_signals",
                f"{sum(d <= 1e-9 for d in same)}/{len(common)} pairs within 1e-9",
                "-",
                "-",
                None,
            )
        )
        section.data["sma100"] = {"ct": {k: v for k, v in ct.items() if k != "total_return"}, "vbt_s": vb["seconds"]}
        if worst > 1e-9:
            bad = sorted(zip(diffs, common, strict=True), reverse=True)[:3]
            section.notes.append(
                "largest total-return differences (fast:slow rel diff): "
                + ", ".join(f"{k} {d:.1e}" for d, k in bad)
                + "; vbt.MA's running-sum rolling mean rounds exact ties (fast SMA == slow SMA on 0.01 prices) either "
                "way, cracktrader's window sums are exact (see bench_vectorized.py's tie diagnostics)"
            )
    if not only or "big" in only:
        big, small = run_pair(["ct:SmaCross:big", "ct:SmaCross:big1000"], folder, workers, python, repeat)
        added = big["peak_rss"] - small["peak_rss"]
        section.rows += [
            Row(
                f"2. sweep 10,000 SmaCross pairs x {n:,} bars",
                f"{big['seconds']:.1f} s (CPU {big['cpu']:.0f} s), peak {_mb(big['peak_rss'])}",
                "-",
                "-",
                f"{big['combos'] / big['seconds']:.0f} combos/s",
                "< 60 s, <= 2.5 GB",
                big["seconds"] < 60 and big["peak_rss"] <= 2.5 * 2**30,
            ),
            Row(
                "2b. 1,000 -> 10,000 pairs, same 200 windows",
                f"+{_mb(added)} peak ({_mb(small['peak_rss'])} -> {_mb(big['peak_rss'])})",
                "-",
                "-",
                f"1,000 in {small['seconds']:.1f} s",
                "< 150 MB added",
                added < 150 * 2**20,
            ),
        ]
    if not only or "dask" in only:
        # Alternated and the best of DASK_REPEAT kept: on a shared machine the load of other processes varies a lot.
        runs = [
            (run_child("dask:local", folder, workers, python), run_child("dask:cluster", folder, workers, python))
            for _ in range(DASK_REPEAT)
        ]
        local = min((r[0] for r in runs), key=lambda r: r["seconds"])
        dask = min((r[1] for r in runs), key=lambda r: r["seconds"])
        ratio = dask["seconds"] / local["seconds"]
        section.rows.append(
            Row(
                f"4. Dask LocalCluster, {workers} workers: {dask['combos']:,} SmaCross pairs x {DASK_BARS:,} bars",
                f"{dask['seconds']:.2f} s ({dask['tasks']} tasks)",
                f"in process, {workers} threads",
                f"{local['seconds']:.2f} s",
                f"{ratio:.2f}x",
                "<= 1.3x",
                ratio <= 1.3,
            )
        )
        if any(r[1]["rows"] != r[0]["rows"] for r in runs):
            section.notes.append("Dask rows differ from the in-process rows")
        section.notes.append(
            f"Dask: best of {DASK_REPEAT} alternated runs each; cluster start and the workers' kernel load excluded, "
            "scatter and plan included"
        )
    if not only or "builtins" in only:
        for strategy in BUILTIN_GRIDS:
            sw, serial = run_pair([f"ct:{strategy}:grid", f"serial:{strategy}"], folder, workers, python, repeat)
            ratio = serial["seconds"] / sw["seconds"]
            section.rows.append(
                Row(
                    f"3. {strategy}: {sw['combos']} combos x {n:,} bars",
                    f"{sw['seconds']:.2f} s",
                    "one backtest at a time",
                    f"{serial['seconds']:.1f} s",
                    _ratios(serial, sw),
                    ">= 10x",
                    ratio >= 10,
                )
            )
    section.notes += [
        f"workers: {workers} threads; each figure from its own process under nice; warm-up on {WARMUP_BARS:,} bars; "
        f"{repeat} interleaved repeat(s): median wall time, median of the per-repeat ratios, and the CPU-time ratio "
        "(process CPU seconds, all threads; less sensitive to other load)",
        f"one backtest at a time: run_backtest per combination, {SERIAL_SAMPLE} combinations timed, scaled to the grid",
        "vectorbt: entries/exits = vbt.MA crossovers shifted one bar, price=open, fees=0.0001, size=np.inf, "
        f"init_cash={INITIAL_CASH:,.0f}; all 100 pairs (cracktrader skips the 10 with fast >= slow)",
        machine_info(),
    ]
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", action="append", default=[], help="vbt, big, dask or builtins (repeatable)")
    parser.add_argument("--python", default=python_exe(), help="interpreter for the children (the bench venv's)")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved repeats of each pair; medians reported")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.workers)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "market"
        make_market().save(folder)
        section = run(folder, args.workers, args.python, set(args.only), args.repeat)
    print_section("sweeps", section)


if __name__ == "__main__":
    main()
