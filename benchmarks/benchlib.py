"""Shared pieces of the benchmarks: the workload, the market data, timing and the results table."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The workload of the issue: SMA(10, 30) crossover on 1,000,000 one-minute bars, 0.01 % commission,
# all in, decisions at a bar's close filled at the next bar's open.
N_BARS = 1_000_000
FAST = 10
SLOW = 30
FEE = 0.0001
INITIAL_CASH = 100_000.0
SYMBOL = "BTC/USDT"
TIMEFRAME = "1m"
BAR_MS = 60_000
PERIODS_PER_YEAR = 365.0 * 24 * 60
START_MS = 1_640_995_200_000  # 2022-01-01T00:00:00Z

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Market:
    """One symbol's candles as numpy columns (satisfies cracktrader's OHLCV protocol)."""

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the timestamp and OHLCV arrays: the input size the memory target refers to."""
        return sum(int(getattr(self, c).nbytes) for c in COLUMNS)

    def head(self, n: int) -> Market:
        return Market(*(getattr(self, c)[:n] for c in COLUMNS), source=self.source)

    def save(self, folder: Path) -> None:
        """Write each column as .npy so a subprocess can load exactly these arrays and nothing else."""
        folder.mkdir(parents=True, exist_ok=True)
        for c in COLUMNS:
            np.save(folder / f"{c}.npy", getattr(self, c))

    @classmethod
    def load(cls, folder: Path) -> Market:
        return cls(*(np.load(folder / f"{c}.npy") for c in COLUMNS), source=f"npy files in {folder}")


def make_market(n_bars: int = N_BARS, start_ms: int = START_MS) -> Market:
    """Deterministic 1m candles: cracktrader's synthetic exchange, or a seeded random walk without it."""
    end_ms = start_ms + n_bars * BAR_MS
    try:
        from cracktrader.data.sources.synthetic import SyntheticSource
        from cracktrader.data.timeframes import parse_timeframe
    except ImportError:
        return random_walk_market(n_bars, start_ms)
    candles = SyntheticSource(now_ms=end_ms).fetch(SYMBOL, parse_timeframe(TIMEFRAME), start_ms, end_ms)
    return Market(
        *(np.ascontiguousarray(getattr(candles, c)) for c in COLUMNS),
        source=f"cracktrader SyntheticSource {SYMBOL} {TIMEFRAME} from 2022-01-01",
    )


def random_walk_market(n_bars: int, start_ms: int = START_MS, seed: int = 42) -> Market:
    """A seeded log-normal random walk with valid OHLC (high >= max(open, close), low <= min)."""
    rng = np.random.default_rng(seed)
    log_close = np.log(30_000.0) + np.cumsum(rng.normal(0.0, 0.0008, n_bars))
    close = np.round(np.exp(log_close), 2)
    open_ = np.empty(n_bars)
    open_[0] = close[0]
    open_[1:] = close[:-1]
    open_ = np.round(open_ * (1.0 + rng.normal(0.0, 0.00005, n_bars)), 2)
    wick = np.abs(rng.normal(0.0, 0.0004, (2, n_bars)))
    high = np.round(np.maximum(open_, close) * (1.0 + wick[0]), 2)
    low = np.round(np.minimum(open_, close) * (1.0 - wick[1]), 2)
    volume = np.round(rng.lognormal(1.0, 0.5, n_bars), 6)
    timestamp = start_ms + np.arange(n_bars, dtype=np.int64) * BAR_MS
    return Market(timestamp, open_, high, low, close, volume, source=f"seeded random walk (seed {seed})")


# -- timing -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Timings:
    """Wall times of repeated runs of one thing."""

    runs: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def describe(self, n_bars: int | None = None) -> str:
        if n_bars is None:
            return f"best {self.best * 1e3:.1f} ms, median {self.median * 1e3:.1f} ms of {len(self.runs)}"
        return (
            f"best {fmt_rate(n_bars / self.best)} ({self.best * 1e3:.1f} ms), "
            f"median {fmt_rate(n_bars / self.median)} of {len(self.runs)} runs"
        )


def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call (after a garbage collection, so earlier garbage is not charged to it)."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Timings]:
    """Time several functions in turn, `repeats` rounds, so drifting machine load hits all of them."""
    out = {name: Timings() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name].runs.append(time_call(fn)[0])
    return out


# -- formatting ---------------------------------------------------------------------------------------


def fmt_rate(bars_per_s: float) -> str:
    if bars_per_s >= 1e6:
        return f"{bars_per_s / 1e6:.2f} M bars/s"
    return f"{bars_per_s / 1e3:.1f} k bars/s"


def fmt_mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


@dataclass(slots=True)
class Row:
    """One line of the results table."""

    benchmark: str
    cracktrader: str
    peer: str = "-"
    peer_value: str = "-"
    ratio: str = "-"
    target: str = "-"
    passed: bool | None = None


@dataclass(slots=True)
class Section:
    """What one benchmark contributes: table rows and explanatory lines."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


HEADERS = ("benchmark", "cracktrader", "peer", "peer value", "ratio", "target", "pass")


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table that survives copy and paste."""
    cells = [
        [
            r.benchmark,
            r.cracktrader,
            r.peer,
            r.peer_value,
            r.ratio,
            r.target,
            "-" if r.passed is None else ("PASS" if r.passed else "FAIL"),
        ]
        for r in rows
    ]
    return format_columns(HEADERS, cells)


def format_columns(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A plain-text (markdown) table of `cells` under `headers`, columns padded to their widest cell."""
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    sep = "|-" + "-|-".join("-" * w for w in widths) + "-|"
    return "\n".join([line(headers), sep, *(line(c) for c in cells)])


def print_section(title: str, section: Section) -> None:
    print(f"\n== {title} ==")
    print(format_table(section.rows))
    for note in section.notes:
        print(f"  - {note}")


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now, VmHWM: peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so a JIT warm-up's peak is not counted; False when refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine_info() -> str:
    """Interpreter, library versions and machine load: context for every number printed."""
    import numba

    parts = [
        f"python {platform.python_version()}",
        f"numpy {np.__version__}",
        f"numba {numba.__version__}",
        f"{os.cpu_count()} CPUs",
        f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        platform.platform(),
    ]
    return "; ".join(parts)


def python_exe() -> str:
    """The interpreter running the benchmarks (the bench venv's, when started from it)."""
    return sys.executable


def child_env(**overrides: str) -> dict[str, str]:
    """Environment for benchmark subprocesses: this one, without a caller's NUMBA_CACHE_DIR unless given."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(overrides)
    return env
