"""Performance metrics of a backtest: returns, risk, drawdowns and round-trip trade statistics."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["METRIC_KEYS", "compute_metrics"]

# Every key compute_metrics returns, in report order; docs/metrics.md defines each one.
METRIC_KEYS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "sharpe_ratio",
    "sortino_ratio",
    "calmar_ratio",
    "max_drawdown",
    "max_drawdown_duration",
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


@njit(cache=True, nogil=True)
def _drawdown_kernel(curve: np.ndarray, times: np.ndarray) -> tuple[float, int, float]:
    """Max drawdown fraction, longest drawdown in points, longest drawdown in ms (one pass)."""
    peak = curve[0]
    peak_idx = 0
    underwater = False
    max_dd = 0.0
    max_len = 0
    max_ms = 0.0
    last = curve.shape[0] - 1
    for i in range(1, curve.shape[0]):
        value = curve[i]
        if value >= peak:
            # Regaining the peak closes the episode; a plain new high without a dip is not one.
            if underwater:
                max_len = max(max_len, i - peak_idx)
                max_ms = max(max_ms, times[i] - times[peak_idx])
                underwater = False
            peak = value
            peak_idx = i
        else:
            underwater = True
            if peak > 0.0:
                max_dd = max(max_dd, (peak - value) / peak)
    if underwater:
        # Never recovered: the episode runs to the last bar.
        max_len = max(max_len, last - peak_idx)
        max_ms = max(max_ms, times[last] - times[peak_idx])
    return max_dd, max_len, max_ms


def _as_float_array(values: np.ndarray) -> np.ndarray:
    """A contiguous 1-D float64 view or copy."""
    return np.ascontiguousarray(values, dtype=np.float64).reshape(-1)


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
    ts = _as_float_array(timestamps_ms)
    pnls = _as_float_array(trade_pnls)
    rets = _as_float_array(trade_returns)
    market = np.ascontiguousarray(in_market, dtype=np.bool_).reshape(-1)
    n = int(eq.shape[0])
    # Mismatched inputs are a caller bug that would silently skew every number, so fail loudly.
    if ts.shape[0] != n or market.shape[0] != n:
        raise ValueError(
            f"equity, timestamps_ms and in_market must have one entry per bar; "
            f"got {n}, {ts.shape[0]} and {market.shape[0]}"
        )
    if pnls.shape[0] != rets.shape[0]:
        raise ValueError(
            f"trade_pnls and trade_returns must have one entry per round trip; got {pnls.shape[0]} and {rets.shape[0]}"
        )

    initial = float(initial_cash)
    ppy = float(periods_per_year)
    valid_cash = math.isfinite(initial) and initial > 0.0
    valid_ppy = math.isfinite(ppy) and ppy > 0.0
    final = float(eq[-1]) if n else initial

    out: dict[str, float | int | None] = dict.fromkeys(METRIC_KEYS)
    out["periods"] = n
    out["total_trades"] = int(pnls.shape[0])
    out["final_equity"] = _clean(final)
    out["fees_paid"] = _clean(fees_paid)
    out["buy_and_hold_return"] = _clean(buy_and_hold_return)
    out["exposure"] = float(market.mean()) if n else None

    years = _clean(n / ppy) if valid_ppy and n else None
    out["years"] = years
    if valid_cash:
        growth = final / initial
        out["total_return"] = _clean(growth - 1.0)
        if years is not None and math.isfinite(growth):
            # A non-positive final equity is a total loss; a fractional power of it is undefined.
            out["cagr"] = -1.0 if growth <= 0.0 else _clean(_safe_pow(growth, 1.0 / years) - 1.0)

    if n and valid_cash:
        _return_metrics(out, eq, initial, ppy if valid_ppy else None)
        _drawdown_metrics(out, eq, ts, initial, ppy if valid_ppy else None)
    elif valid_cash:
        # No bars: equity never left the initial cash, so there was no drawdown at all.
        out["max_drawdown"] = 0.0
        out["max_drawdown_duration"] = 0
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


def _return_metrics(out: dict[str, float | int | None], eq: np.ndarray, initial: float, ppy: float | None) -> None:
    """Sharpe, Sortino and volatility from per-bar simple returns (equity before bar 0 = initial cash)."""
    prev = np.empty_like(eq)
    prev[0] = initial
    prev[1:] = eq[:-1]
    # Degenerate input (zero or absurd equity) may overflow; results are screened by _clean instead.
    with np.errstate(all="ignore"):
        r = eq / prev - 1.0
        # A return after a zero equity is undefined and would poison every statistic; report none.
        if ppy is None or not np.isfinite(r).all():
            return
        _annualised_return_stats(out, r, ppy)


def _annualised_return_stats(out: dict[str, float | int | None], r: np.ndarray, ppy: float) -> None:
    """Volatility, Sharpe and Sortino of finite per-bar returns."""
    sqrt_ppy = math.sqrt(ppy)
    mean = float(r.mean())
    if r.shape[0] >= 2:
        std = float(r.std(ddof=1))
        out["volatility"] = _clean(std * sqrt_ppy)
        if std > _MIN_DEVIATION:
            out["sharpe_ratio"] = _clean(mean / std * sqrt_ppy)
    downside = np.minimum(r, 0.0)
    downside_dev = math.sqrt(float(np.dot(downside, downside)) / r.shape[0])
    if downside_dev > _MIN_DEVIATION:
        out["sortino_ratio"] = _clean(mean / downside_dev * sqrt_ppy)


def _drawdown_metrics(
    out: dict[str, float | int | None],
    eq: np.ndarray,
    ts: np.ndarray,
    initial: float,
    ppy: float | None,
) -> None:
    """Max drawdown and its durations over the curve [initial cash, equity...]."""
    curve = np.empty(eq.shape[0] + 1, dtype=np.float64)
    curve[0] = initial
    curve[1:] = eq
    # The initial cash is the state one nominal bar before the first close; without ppy that time is
    # unknown, so the kernel gets a placeholder and the calendar duration is withheld below.
    times = np.empty_like(curve)
    times[0] = ts[0] - (_MS_PER_YEAR / ppy if ppy is not None else 0.0)
    times[1:] = ts
    max_dd, max_len, max_ms = _drawdown_kernel(curve, times)
    out["max_drawdown"] = _clean(max_dd)
    out["max_drawdown_duration"] = int(max_len)
    out["max_drawdown_duration_days"] = _clean(max_ms / _MS_PER_DAY) if ppy is not None else None


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
