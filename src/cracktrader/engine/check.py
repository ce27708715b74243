"""Prove a strategy safe: no look-ahead, and its live window decides what the full history decides.

- Look-ahead: the bars after bar t are replaced (several t, several perturbations); any decision at or before t
  that changes read the future.
- Window: at every bar where the full-history backtest decides something, and at evenly spaced others, a fresh
  strategy given only the live window (`engine.window`) and the same portfolio must decide the same.
A decision is the signals of a vectorized strategy at a bar, or the orders an event strategy places at a bar.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cracktrader.engine.backtest import BacktestResult, run_backtest
from cracktrader.engine.broker import BarContext, OrderDecision, SimSettings
from cracktrader.engine.fills import BUY
from cracktrader.engine.market import MarketData
from cracktrader.engine.records import O_PNL, O_STATUS, STATUS_FILLED
from cracktrader.engine.strategy import Signals, Strategy, Style
from cracktrader.engine.window import WindowContext, window_length, window_of

CheckName = Literal["look_ahead", "window"]
# Where the future is replaced, as fractions of the history, and how; plus bars where the full history decides
# something (a peek one bar ahead changes only the decisions just before the changed bars).
LOOKAHEAD_POINTS = (0.35, 0.6, 0.85)
LOOKAHEAD_DECISION_POINTS = {"vectorized": 12, "event": 3}
PERTURBATIONS = ("random_walk", "mirror")
# Bars whose window decision is compared: every bar the full history decides something at, then evenly spaced
# others up to this many (each costs one evaluation of the strategy on a window).
MAX_WINDOW_PROBES = 20_000
REL_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class Difference:
    """The first decision that differed: where, and what each side decided."""

    bar: int
    timestamp: int
    symbol: str
    expected: str
    found: str


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """One check's verdict."""

    name: CheckName
    passed: bool
    compared: int  # decisions compared (bars x symbols)
    differing: int
    first_difference: Difference | None
    detail: str


@dataclass(slots=True)
class CheckReport:
    """Every check of one strategy on one data set."""

    strategy: str
    style: Style
    bars: int
    symbols: tuple[str, ...]
    window: int
    entries: int  # opening fills of the full-history backtest
    exits: int  # closing fills
    checks: list[CheckOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


StrategyFactory = Callable[[], Strategy]


def check_strategy(
    factory: StrategyFactory,
    data: MarketData,
    settings: SimSettings,
    *,
    seed: int = 0,
    max_window_probes: int = MAX_WINDOW_PROBES,
) -> CheckReport:
    """Run the look-ahead and window checks; `factory` makes a fresh strategy with the checked parameters."""
    began = time.perf_counter()
    strategy = factory()
    baseline = _backtest(strategy, data, settings)
    report = CheckReport(
        strategy.name,
        strategy.style(),
        data.n_bars,
        data.symbols,
        window_length(strategy),
        *_activity(baseline),
    )
    if strategy.style() == "vectorized":
        full = [strategy.signals(data.bars(j)) for j in range(len(data.symbols))]
        tables = [_signal_table(s, data.n_bars) for s in full]
        decided = np.zeros(data.n_bars, dtype=np.bool_)
        for table in tables:
            decided |= table[:, :4].any(axis=1)
        points = _lookahead_points(data.n_bars, decided, LOOKAHEAD_DECISION_POINTS["vectorized"])
        report.checks.append(_vector_lookahead(strategy, data, tables, points, seed))
        report.checks.append(_vector_window(strategy, data, tables, decided, max_window_probes))
    else:
        decided = np.zeros(data.n_bars, dtype=np.bool_)
        for d in baseline.decisions or []:
            decided[d.bar] = True
        points = _lookahead_points(data.n_bars, decided, LOOKAHEAD_DECISION_POINTS["event"])
        report.checks.append(_event_lookahead(factory, data, settings, baseline, points, seed))
        report.checks.append(_event_window(factory, data, settings, decided, max_window_probes))
    report.warnings = _warnings(report)
    report.seconds = time.perf_counter() - began
    return report


def _warnings(report: CheckReport) -> list[str]:
    """Why a pass may prove little."""
    out = []
    if report.entries == 0:
        out.append("the strategy never traded on this data, so the checks prove little: use a longer range")
    if report.bars <= report.window:
        out.append(
            f"only {report.bars} bars for a window of {report.window}: every decision saw the same history in both "
            "runs, so the window check proves nothing; use a longer range"
        )
    return out


def _lookahead_points(n: int, decided: np.ndarray, from_decisions: int) -> list[int]:
    """Bars after which the future is replaced: fixed fractions of the history and some decision bars."""
    points = {min(n - 2, int(n * frac)) for frac in LOOKAHEAD_POINTS}
    bars = np.flatnonzero(decided[: max(0, n - 1)])
    if len(bars) and from_decisions:
        pick = np.linspace(0, len(bars) - 1, num=min(from_decisions, len(bars))).round().astype(np.int64)
        points.update(int(b) for b in bars[pick])
    return sorted(t for t in points if t >= 0)


def _backtest(strategy: Strategy, data: MarketData, settings: SimSettings, probe: object = None) -> BacktestResult:
    if strategy.style() == "vectorized":
        return run_backtest(strategy, data, settings)
    return run_backtest(strategy, data, settings, probe=probe or _no_probe)  # type: ignore[arg-type]


def _no_probe(ctx: BarContext) -> None:
    """Turns on the record of decisions without probing."""


def _activity(res: BacktestResult) -> tuple[int, int]:
    filled = res.orders[res.orders[:, O_STATUS] == STATUS_FILLED]
    closing = int(np.count_nonzero(~np.isnan(filled[:, O_PNL])))
    return len(filled) - closing, closing


# Perturbations -------------------------------------------------------------------------------------------------
def perturb_after(data: MarketData, t: int, kind: str, seed: int) -> MarketData:
    """A copy of `data` whose bars after t are different but valid candles (OHLC order, positive prices)."""
    rng = np.random.default_rng(seed)
    o, h, lo, c, v = (np.array(getattr(data, k), dtype=np.float64) for k in ("open", "high", "low", "close", "volume"))
    after = slice(t + 1, None)
    k = data.n_bars - t - 1
    if k > 0:
        if kind == "random_walk":
            factor = np.exp(np.cumsum(rng.normal(0.0, 0.03, (k, c.shape[1])), axis=0))
            for col in (o, h, lo, c):
                col[after] *= factor
        else:  # mirror: reflect prices around the close at t (x -> ref^2 / x), so highs become lows
            ref2 = c[t] ** 2
            o[after], c[after] = ref2 / o[after], ref2 / c[after]
            h[after], lo[after] = ref2 / lo[after], ref2 / h[after]
        v[after] *= rng.uniform(0.2, 5.0, (k, v.shape[1]))
    return MarketData(data.symbols, data.timestamp, o, h, lo, c, v, data.tradable, data.periods_per_year)


# Vectorized style -----------------------------------------------------------------------------------------------
_SIGNAL_COLUMNS = ("entry", "exit", "short_entry", "short_exit", "size", "stop_loss", "take_profit")


def _column(values: float | np.ndarray | None, n: int, fill: float) -> np.ndarray:
    if values is None:
        return np.full(n, fill)
    arr = np.asarray(values, dtype=np.float64)
    return np.full(n, float(arr)) if arr.ndim == 0 else arr.astype(np.float64)


def _signal_table(sig: Signals, n: int) -> np.ndarray:
    """(n, 7) decisions: the four signals as 0/1, then size and brackets on bars that open a position (else NaN)."""
    table = np.full((n, len(_SIGNAL_COLUMNS)), np.nan)
    flags: tuple[np.ndarray | None, ...] = (sig.entries, sig.exits, sig.short_entries, sig.short_exits)
    for k, values in enumerate(flags):
        table[:, k] = _column(values, n, 0.0) != 0
    opens = (table[:, 0] != 0) | (table[:, 2] != 0)
    levels: tuple[float | np.ndarray | None, ...] = (sig.size, sig.stop_loss, sig.take_profit)
    for k, level in enumerate(levels, start=4):
        col = _column(level, n, math.nan)
        table[opens, k] = col[opens]
    return table


def _mismatch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of two decision tables that differ (NaN equals NaN; levels to REL_TOL)."""
    same = np.isclose(a, b, rtol=REL_TOL, atol=0.0, equal_nan=True)
    return np.asarray(~same.all(axis=1))


def _describe_row(row: np.ndarray) -> str:
    on = [name for name, v in zip(_SIGNAL_COLUMNS[:4], row[:4], strict=True) if v]
    levels = [f"{name}={v:.6g}" for name, v in zip(_SIGNAL_COLUMNS[4:], row[4:], strict=True) if v == v]
    return " ".join(on + levels) or "no signal"


def _vector_lookahead(
    strategy: Strategy, data: MarketData, tables: list[np.ndarray], points: list[int], seed: int
) -> CheckOutcome:
    n, m = data.n_bars, len(data.symbols)
    compared = differing = 0
    first: Difference | None = None
    for p_i, t in enumerate(points):
        for k_i, kind in enumerate(PERTURBATIONS):
            changed = perturb_after(data, t, kind, seed + 31 * p_i + k_i)
            for j in range(m):
                other = _signal_table(strategy.signals(changed.bars(j)), n)
                bad = np.flatnonzero(_mismatch(tables[j][: t + 1], other[: t + 1]))
                compared += t + 1
                differing += len(bad)
                if len(bad) and (first is None or bad[0] < first.bar):
                    b = int(bad[0])
                    first = Difference(
                        b,
                        int(data.timestamp[b]),
                        data.symbols[j],
                        _describe_row(tables[j][b]),
                        f"{_describe_row(other[b])} (after changing the bars after bar {t} by {kind})",
                    )
    return _outcome("look_ahead", compared, differing, first, points=len(points))


def _probe_bars(n: int, decided: np.ndarray, budget: int) -> np.ndarray:
    """Every bar with a decision, then evenly spaced other bars, up to `budget` in all (sorted)."""
    decided_bars = np.flatnonzero(decided)
    if n <= budget:
        return np.arange(n)
    rest = max(0, budget - len(decided_bars))
    spaced = np.linspace(0, n - 1, num=rest, dtype=np.int64) if rest else np.empty(0, dtype=np.int64)
    return np.union1d(decided_bars[:budget], spaced)


def _vector_window(
    strategy: Strategy, data: MarketData, tables: list[np.ndarray], decided: np.ndarray, budget: int
) -> CheckOutcome:
    n, length = data.n_bars, window_length(strategy)
    probes = _probe_bars(n, decided, budget)
    compared = differing = 0
    first: Difference | None = None
    for j in range(len(data.symbols)):
        bars = data.bars(j)
        rows = np.empty((len(probes), len(_SIGNAL_COLUMNS)))
        for r, t in enumerate(probes.tolist()):
            window = window_of(bars, t, length)
            rows[r] = _signal_table(strategy.signals(window), len(window))[-1]
        bad = np.flatnonzero(_mismatch(tables[j][probes], rows))
        compared += len(probes)
        differing += len(bad)
        if len(bad):
            b = int(probes[bad[0]])
            if first is None or b < first.bar:
                first = Difference(
                    b,
                    int(data.timestamp[b]),
                    data.symbols[j],
                    _describe_row(tables[j][b]),
                    f"{_describe_row(rows[bad[0]])} (on a window of {length} bars)",
                )
    return _outcome("window", compared, differing, first, window=length)


# Event style ----------------------------------------------------------------------------------------------------
def _describe_decision(d: OrderDecision | None, symbols: tuple[str, ...]) -> str:
    if d is None:
        return "no order"
    if d.side == 0:
        return f"cancel order {int(d.size or 0)}"
    parts = [f"{'buy' if d.side == BUY else 'sell'} {symbols[d.symbol]}"]
    parts.append("size=all" if d.size is None else f"size={d.size:.6g}")
    for name in ("limit", "stop", "stop_loss", "take_profit"):
        value = getattr(d, name)
        if value is not None:
            parts.append(f"{name}={value:.6g}")
    if d.fraction != 1.0:
        parts.append(f"fraction={d.fraction:.6g}")
    return " ".join(parts)


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=0.0) or (a != a and b != b)


def _same_decision(a: OrderDecision, b: OrderDecision) -> bool:
    return (
        a.bar == b.bar
        and a.symbol == b.symbol
        and a.side == b.side
        and all(_close(getattr(a, k), getattr(b, k)) for k in ("size", "limit", "stop", "stop_loss", "take_profit"))
        and _close(a.fraction, b.fraction)
    )


Group = tuple[int, int]  # (bar, symbol index; -1 for cancels)


def _by_bar(decisions: list[OrderDecision] | None, last: int) -> dict[Group, list[OrderDecision]]:
    """Decisions up to bar `last`, by bar and symbol."""
    out: dict[Group, list[OrderDecision]] = {}
    for d in decisions or []:
        if d.bar <= last:
            out.setdefault((d.bar, d.symbol), []).append(d)
    return out


def _same_bar(a: list[OrderDecision], b: list[OrderDecision]) -> bool:
    return len(a) == len(b) and all(_same_decision(x, y) for x, y in zip(a, b, strict=True))


def _differing(a: dict[Group, list[OrderDecision]], b: dict[Group, list[OrderDecision]]) -> list[Group]:
    """The (bar, symbol) decisions that differ between two runs, in order."""
    return sorted(g for g in a.keys() | b.keys() if not _same_bar(a.get(g, []), b.get(g, [])))


def _event_difference(t: int, a: list[OrderDecision], b: list[OrderDecision], data: MarketData, why: str) -> Difference:
    """The first differing order of bar t, described from both sides."""
    k = next(i for i in range(max(len(a), len(b))) if i >= len(a) or i >= len(b) or not _same_decision(a[i], b[i]))
    x = a[k] if k < len(a) else None
    y = b[k] if k < len(b) else None
    return Difference(
        t,
        int(data.timestamp[t]),
        _symbol_of(x or y, data.symbols),
        _describe_decision(x, data.symbols),
        f"{_describe_decision(y, data.symbols)} ({why})",
    )


def _symbol_of(d: OrderDecision | None, symbols: tuple[str, ...]) -> str:
    return symbols[d.symbol] if d is not None and d.symbol >= 0 else (symbols[0] if len(symbols) == 1 else "")


def _event_lookahead(
    factory: StrategyFactory,
    data: MarketData,
    settings: SimSettings,
    baseline: BacktestResult,
    points: list[int],
    seed: int,
) -> CheckOutcome:
    m = len(data.symbols)
    compared = differing = 0
    first: Difference | None = None
    for p_i, t in enumerate(points):
        mine = _by_bar(baseline.decisions, t)
        for k_i, kind in enumerate(PERTURBATIONS):
            changed = perturb_after(data, t, kind, seed + 31 * p_i + k_i)
            theirs = _by_bar(_decisions_through(factory, changed, settings, t), t)
            bad = _differing(mine, theirs)
            compared += (t + 1) * m
            differing += len(bad)
            if bad and (first is None or bad[0][0] < first.bar):
                why = f"after changing the bars after bar {t} by {kind}"
                first = _event_difference(bad[0][0], mine.get(bad[0], []), theirs.get(bad[0], []), data, why)
    return _outcome("look_ahead", compared, differing, first, points=len(points))


def _decisions_through(
    factory: StrategyFactory, data: MarketData, settings: SimSettings, t: int
) -> list[OrderDecision] | None:
    """An event run's decisions, stopped soon after bar t (later decisions are not compared)."""
    done = [0]

    def progress(bars: int, total: int, cash: float, value: float) -> None:
        done[0] = bars

    result = run_backtest(
        factory(), data, settings, probe=_no_probe, progress=progress, should_stop=lambda: done[0] > t
    )
    return result.decisions


def _event_window(
    factory: StrategyFactory, data: MarketData, settings: SimSettings, decided: np.ndarray, budget: int
) -> CheckOutcome:
    n = data.n_bars
    probes = set(_probe_bars(n, decided, budget).tolist())
    strategy = factory()
    length = window_length(strategy)
    seen: dict[Group, list[OrderDecision]] = {}

    def probe(ctx: BarContext) -> None:
        if ctx.i in probes:
            fresh = factory()
            wctx = WindowContext(ctx, fresh, length, record=True)
            fresh.on_bar(wctx)
            for d in wctx.decisions:
                seen.setdefault((ctx.i, d.symbol), []).append(d)

    run = _backtest(strategy, data, settings, probe)
    full = {g: v for g, v in _by_bar(run.decisions, n).items() if g[0] in probes}
    bad = _differing(full, seen)
    first = None
    if bad:
        t = bad[0]
        first = _event_difference(t[0], full.get(t, []), seen.get(t, []), data, f"on a window of {length} bars")
    return _outcome("window", len(probes) * len(data.symbols), len(bad), first, window=length)


def _outcome(
    name: CheckName, compared: int, differing: int, first: Difference | None, *, window: int = 0, points: int = 0
) -> CheckOutcome:
    if name == "look_ahead":
        detail = f"{points} points x {len(PERTURBATIONS)} perturbations of the future: " + (
            "no decision changed" if first is None else f"a decision at bar {first.bar} read later bars"
        )
    else:
        detail = f"decisions on a rolling window of {window} bars (warmup()) versus the full history: " + (
            "identical"
            if first is None
            else f"first differs at bar {first.bar}: raise warmup() or make the decision depend on fewer bars"
        )
    return CheckOutcome(name, first is None, compared, differing, first, detail)
