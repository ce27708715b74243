"""Performance metrics of a backtest: returns, risk, drawdowns and round-trip trade statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["METRIC_KEYS", "CurveStats", "compute_metrics", "metrics_from_stats"]

# Every key compute_metrics returns, in report order; docs/metrics.md defines each one.
METRIC_KEYS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "sharpe_ratio",
    "sortino_ratio",
    "calmar_ratio",
    "max_drawdown",
    "max_drawdown_duration",
    "max_drawdown_duration_bars",
    "max_drawdown_duration_days",
    "volatility",
    "win_rate",
    "profit_factor",
    "expectancy",
    "total_trades",
    "avg_trade_return",
    "best_trade_return",
    "worst_trade_return",
    "avg_win",
    "avg_loss",
    "exposure",
    "fees_paid",
    "buy_and_hold_return",
    "final_equity",
    "periods",
    "years",
)

_MS_PER_DAY = 86_400_000.0
_MS_PER_YEAR = 365.0 * _MS_PER_DAY
# Below this a per-bar return deviation is floating-point noise (e.g. a constant 1 % growth series
# yields std ~1e-17), and dividing by it would report an absurd ratio instead of "undefined".
_MIN_DEVIATION = 1e-12


def _clean(value: float) -> float | None:
    """The value as a plain float, or None when it is NaN or infinite (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0.0:
        return None
    return _clean(numerator / denominator)


@njit(cache=True, nogil=True, error_model="numpy")
def _drawdown_kernel(eq: np.ndarray, ts: np.ndarray, initial: float, t_before: float) -> tuple[float, int, float]:
    """Max drawdown fraction, longest drawdown in points and in ms over [initial, eq...] (one pass, no copies).

    Point 0 is the initial cash at `t_before`; point i + 1 is eq[i] at ts[i].
    """
    peak = initial
    peak_idx = 0
    peak_t = t_before
    underwater = False
    max_dd = 0.0
    max_len = 0
    max_ms = 0.0
    n = eq.shape[0]
    for k in range(n):
        value = eq[k]
        if value >= peak:
            # Regaining the peak closes the episode; a plain new high without a dip is not one.
            if underwater:
                max_len = max(max_len, k + 1 - peak_idx)
                max_ms = max(max_ms, float(ts[k]) - peak_t)
                underwater = False
            peak = value
            peak_idx = k + 1
            peak_t = float(ts[k])
        else:
            underwater = True
            if peak > 0.0:
                max_dd = max(max_dd, (peak - value) / peak)
    if underwater:
        # Never recovered: the episode runs to the last bar.
        max_len = max(max_len, n - peak_idx)
        max_ms = max(max_ms, float(ts[n - 1]) - peak_t)
    return max_dd, max_len, max_ms


@njit(cache=True, nogil=True, error_model="numpy")
def _return_stats_kernel(eq: np.ndarray, initial: float, buf: np.ndarray) -> tuple[bool, float, float, float]:
    """(all returns finite, mean, std with ddof=1 or NaN, downside deviation) of per-bar simple returns.

    Two passes over the equity without temporaries: numpy's version built four 8 MB arrays per million bars.
    A `buf` as long as `eq` keeps the first pass's returns for the second (a sweep passes a scratch array);
    an empty one recomputes them. Either way each return is the same division, so the results are identical.
    """
    n = eq.shape[0]
    keep = buf.shape[0] == n
    prev = initial
    total = 0.0
    for i in range(n):
        r = eq[i] / prev - 1.0
        if not math.isfinite(r):
            return False, math.nan, math.nan, math.nan
        if keep:
            buf[i] = r
        total += r
        prev = eq[i]
    mean = total / n
    prev = initial
    sq = 0.0
    down = 0.0
    for i in range(n):
        if keep:
            r = buf[i]
        else:
            r = eq[i] / prev - 1.0
            prev = eq[i]
        sq += (r - mean) * (r - mean)
        if r < 0.0:
            down += r * r
    std = math.sqrt(sq / (n - 1)) if n >= 2 else math.nan
    return True, mean, std, math.sqrt(down / n)


_NO_BUFFER = np.empty(0)


def _as_float_array(values: np.ndarray) -> np.ndarray:
    """A contiguous 1-D float64 view or copy."""
    return np.ascontiguousarray(values, dtype=np.float64).reshape(-1)


@dataclass(frozen=True, slots=True)
class CurveStats:
    """What the metrics need of an equity curve: the two kernels' outputs (a sweep computes them in its kernel)."""

    final: float
    finite: bool
    mean: float
    std: float
    downside: float
    max_dd: float
    max_len: int
    max_ms: float


def t_before(first_ts_ms: float, periods_per_year: float) -> float:
    """Time of the initial cash: one nominal bar before the first close (a placeholder without a valid ppy)."""
    ppy = float(periods_per_year)
    return float(first_ts_ms) - (_MS_PER_YEAR / ppy if math.isfinite(ppy) and ppy > 0.0 else 0.0)


def compute_metrics(
    *,
    equity: np.ndarray,
    initial_cash: float,
    timestamps_ms: np.ndarray,
    periods_per_year: float,
    trade_pnls: np.ndarray,
    trade_returns: np.ndarray,
    fees_paid: float,
    in_market: np.ndarray,
    buy_and_hold_return: float,
) -> dict[str, float | int | None]:
    """Summary statistics of one backtest; undefined values are None so the dict is JSON-safe."""
    eq = _as_float_array(equity)
    ts = np.ascontiguousarray(timestamps_ms).reshape(-1)  # int64 ms: no float copy
    market = np.ascontiguousarray(in_market, dtype=np.bool_).reshape(-1)
    n = int(eq.shape[0])
    # Mismatched inputs are a caller bug that would silently skew every number, so fail loudly.
    if ts.shape[0] != n or market.shape[0] != n:
        raise ValueError(
            f"equity, timestamps_ms and in_market must have one entry per bar; "
            f"got {n}, {ts.shape[0]} and {market.shape[0]}"
        )
    initial = float(initial_cash)
    curve = None
    if n and math.isfinite(initial) and initial > 0.0:
        with np.errstate(all="ignore"):
            finite, mean, std, downside = _return_stats_kernel(eq, initial, _NO_BUFFER)
        max_dd, max_len, max_ms = _drawdown_kernel(eq, ts, initial, t_before(float(ts[0]), periods_per_year))
        curve = CurveStats(float(eq[-1]), bool(finite), mean, std, downside, max_dd, int(max_len), max_ms)
    return metrics_from_stats(
        n=n,
        initial_cash=initial,
        periods_per_year=periods_per_year,
        final=float(eq[-1]) if n else initial,
        curve=curve,
        trade_pnls=trade_pnls,
        trade_returns=trade_returns,
        fees_paid=fees_paid,
        exposure=float(market.mean()) if n else None,
        buy_and_hold_return=buy_and_hold_return,
    )


def metrics_from_stats(
    *,
    n: int,
    initial_cash: float,
    periods_per_year: float,
    final: float,
    curve: CurveStats | None,
    trade_pnls: np.ndarray,
    trade_returns: np.ndarray,
    fees_paid: float,
    exposure: float | None,
    buy_and_hold_return: float,
) -> dict[str, float | int | None]:
    """The metrics of a curve already reduced to its `CurveStats` (None without bars or a valid cash)."""
    pnls = _as_float_array(trade_pnls)
    rets = _as_float_array(trade_returns)
    if pnls.shape[0] != rets.shape[0]:
        raise ValueError(
            f"trade_pnls and trade_returns must have one entry per round trip; got {pnls.shape[0]} and {rets.shape[0]}"
        )
    initial = float(initial_cash)
    ppy = float(periods_per_year)
    valid_cash = math.isfinite(initial) and initial > 0.0
    valid_ppy = math.isfinite(ppy) and ppy > 0.0

    out: dict[str, float | int | None] = dict.fromkeys(METRIC_KEYS)
    out["periods"] = n
    out["total_trades"] = int(pnls.shape[0])
    out["final_equity"] = _clean(final)
    out["fees_paid"] = _clean(fees_paid)
    out["buy_and_hold_return"] = _clean(buy_and_hold_return)
    out["exposure"] = exposure

    years = _clean(n / ppy) if valid_ppy and n else None
    out["years"] = years
    if valid_cash:
        growth = final / initial
        out["total_return"] = _clean(growth - 1.0)
        if years is not None and math.isfinite(growth):
            # A non-positive final equity is a total loss; a fractional power of it is undefined.
            out["cagr"] = -1.0 if growth <= 0.0 else _clean(_safe_pow(growth, 1.0 / years) - 1.0)

    if n and valid_cash and curve is not None:
        _return_metrics(out, curve, n, ppy if valid_ppy else None)
        _drawdown_metrics(out, curve, ppy if valid_ppy else None)
    elif valid_cash:
        # No bars: equity never left the initial cash, so there was no drawdown at all.
        out["max_drawdown"] = 0.0
        out["max_drawdown_duration"] = out["max_drawdown_duration_bars"] = 0
        out["max_drawdown_duration_days"] = 0.0 if valid_ppy else None

    cagr, max_dd = out["cagr"], out["max_drawdown"]
    out["calmar_ratio"] = _ratio(
        float(cagr) if cagr is not None else None, float(max_dd) if max_dd is not None else None
    )
    _trade_metrics(out, pnls, rets)
    return out


def _safe_pow(base: float, exponent: float) -> float:
    """base ** exponent, with overflow reported as infinity rather than raised."""
    try:
        return base**exponent
    except OverflowError:
        return math.inf


def _return_metrics(out: dict[str, float | int | None], curve: CurveStats, n: int, ppy: float | None) -> None:
    """Sharpe, Sortino and volatility from per-bar simple returns (equity before bar 0 = initial cash)."""
    # A return after a zero equity is undefined and would poison every statistic; report none.
    if ppy is None or not curve.finite:
        return
    sqrt_ppy = math.sqrt(ppy)
    if n >= 2:
        out["volatility"] = _clean(curve.std * sqrt_ppy)
        if curve.std > _MIN_DEVIATION:
            out["sharpe_ratio"] = _clean(curve.mean / curve.std * sqrt_ppy)
    if curve.downside > _MIN_DEVIATION:
        out["sortino_ratio"] = _clean(curve.mean / curve.downside * sqrt_ppy)


def _drawdown_metrics(out: dict[str, float | int | None], curve: CurveStats, ppy: float | None) -> None:
    """Max drawdown and its durations over the curve [initial cash, equity...]."""
    out["max_drawdown"] = _clean(curve.max_dd)
    # The contract's key, and the same figure under a name that says its unit.
    out["max_drawdown_duration"] = out["max_drawdown_duration_bars"] = int(curve.max_len)
    # Without ppy the time before the first bar is unknown, so the calendar duration is withheld.
    out["max_drawdown_duration_days"] = _clean(curve.max_ms / _MS_PER_DAY) if ppy is not None else None


def _trade_metrics(out: dict[str, float | int | None], pnls: np.ndarray, rets: np.ndarray) -> None:
    """Win rate, profit factor, expectancy and per-trade return statistics over closed round trips."""
    if pnls.shape[0] == 0:
        return
    wins = pnls[pnls > 0.0]
    losses = pnls[pnls < 0.0]
    out["win_rate"] = wins.shape[0] / pnls.shape[0]
    gross_loss = -float(losses.sum())
    out["profit_factor"] = _ratio(float(wins.sum()), gross_loss) if losses.shape[0] else None
    out["expectancy"] = _clean(pnls.mean())
    out["avg_win"] = _clean(wins.mean()) if wins.shape[0] else None
    out["avg_loss"] = _clean(losses.mean()) if losses.shape[0] else None
    out["avg_trade_return"] = _clean(rets.mean())
    out["best_trade_return"] = _clean(rets.max())
    out["worst_trade_return"] = _clean(rets.min())
