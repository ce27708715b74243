"""How a chunk of combinations is evaluated: a pure function of (candles, strategy, params chunk, costs) -> rows.

Three plans, chosen per sweep:
- `CrossPlan`: the crossover built-ins; each distinct indicator window is computed once per sweep and a compiled
  kernel (`kernel.cross_combo`) derives the signals, simulates and reduces each combination.
- `SignalPlan`: any other vectorized strategy; its own `signals` runs per combination (built-ins read their
  indicators from a per-sweep cache), then the compiled kernel simulates and reduces it.
- `EnginePlan`: event-driven strategies and exchange rules; the ordinary engine runs each combination.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cracktrader.engine import indicators as ta
from cracktrader.engine.backtest import (
    SignalArrays,
    buy_and_hold_return,
    fill_summary,
    run_backtest,
    stack_signals,
    stack_values,
)
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import Bars, MarketData
from cracktrader.engine.metrics import METRIC_KEYS, CurveStats, metrics_from_stats, t_before
from cracktrader.engine.records import N_COLS
from cracktrader.engine.strategy import Strategy, StrategyParams
from cracktrader.runs.strategy_errors import strategy_errors
from cracktrader.strategies import builtin
from cracktrader.sweeps import kernel as k
from cracktrader.sweeps.grid import Combination

Metrics = dict[str, float | int | None]


@dataclass(frozen=True, slots=True)
class SweepRow:
    """One evaluated combination: its index in grid order, its parameters and the chosen metrics."""

    index: int
    params: dict[str, Any]
    metrics: Metrics


@dataclass(frozen=True, slots=True)
class SweepInputs:
    """What every chunk of a sweep shares: the candles, the strategy class, the costs and the metrics kept."""

    strategy_cls: type[Strategy]
    data: MarketData
    sim: SimSettings
    metrics: tuple[str, ...]


class _Scratch:
    """Per-thread arrays of one bar length that each combination overwrites (never bars x combinations)."""

    def __init__(self, n: int, m: int) -> None:
        self.entries = np.zeros((n, m), dtype=np.bool_)
        self.exits = np.zeros((n, m), dtype=np.bool_)
        self.eventful = np.zeros(n, dtype=np.bool_)
        self.equity = np.empty(n)
        self.cash = np.empty(n)
        self.in_market = np.zeros(n, dtype=np.bool_)
        self.orders = np.empty((4096, N_COLS))
        self.segs = np.empty((4096, k.N_SEG))


# The metrics that read the fused kernel's per-bar return stats, and those that read its drawdown (see
# `metrics.metrics_from_stats`); every other metric comes from the final equity, the bars held and the fills.
RETURN_METRICS = frozenset({"sharpe_ratio", "sortino_ratio", "volatility"})
DRAWDOWN_METRICS = frozenset(
    {"max_drawdown", "max_drawdown_duration", "max_drawdown_duration_bars", "max_drawdown_duration_days"}
    | {"calmar_ratio"}
)


def stats_needed(metrics: Sequence[str]) -> int:
    """The parts of the stats row (`kernel.NEED_*`) the chosen metrics read; all of them for a name not known."""
    chosen = set(metrics)
    if not chosen <= set(METRIC_KEYS):
        return k.NEED_ALL
    need = k.NEED_RETURNS if chosen & RETURN_METRICS else 0
    return need | (k.NEED_DRAWDOWN if chosen & DRAWDOWN_METRICS else 0)


@dataclass(slots=True)
class _Base:
    inputs: SweepInputs
    _local: threading.local = field(default_factory=threading.local, init=False)
    _bh: float = field(default=0.0, init=False)
    _t_before: float = field(default=0.0, init=False)
    _need: int = field(default=k.NEED_ALL, init=False)

    def __post_init__(self) -> None:
        data = self.inputs.data
        self._bh = buy_and_hold_return(data, data.n_bars)
        self._t_before = t_before(float(data.timestamp[0]), data.periods_per_year)
        # A row reports only the chosen metrics: the fused kernel skips the passes none of them reads.
        self._need = stats_needed(self.inputs.metrics)

    def scratch(self) -> _Scratch:
        s: _Scratch | None = getattr(self._local, "scratch", None)
        if s is None:
            s = _Scratch(self.inputs.data.n_bars, len(self.inputs.data.symbols))
            self._local.scratch = s
        return s

    def finish(self, combo: Combination, stats: np.ndarray, orders: np.ndarray) -> SweepRow:
        """The row of a combination from its kernel stats and order rows, through the backtest's metric code."""
        data, sim = self.inputs.data, self.inputs.sim
        fills = fill_summary(orders)
        curve = CurveStats(
            float(stats[k.ST_FINAL]),
            bool(stats[k.ST_FINITE]),
            float(stats[k.ST_MEAN]),
            float(stats[k.ST_STD]),
            float(stats[k.ST_DOWNSIDE]),
            float(stats[k.ST_MAX_DD]),
            int(stats[k.ST_MAX_LEN]),
            float(stats[k.ST_MAX_MS]),
        )
        n = data.n_bars
        metrics = metrics_from_stats(
            n=n,
            initial_cash=sim.initial_cash,
            periods_per_year=data.periods_per_year,
            final=curve.final,
            curve=curve,
            trade_pnls=fills.pnls,
            trade_returns=fills.returns,
            fees_paid=fills.fees,
            exposure=int(stats[k.ST_IN_MARKET]) / n,
            buy_and_hold_return=self._bh,
        )
        return SweepRow(combo.index, combo.params, pick(metrics, self.inputs.metrics))


def pick(metrics: Metrics, names: Sequence[str]) -> Metrics:
    """The chosen metrics, in the order asked."""
    return {name: metrics[name] for name in names}


def _market(data: MarketData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return data.open, data.high, data.low, data.close, data.tradable


# Built-ins whose indicator depends on every grid parameter (MACD on all three periods): no two combinations share
# it, so caching would only hold 24 MB per combination (measured: a 100-combination grid slower than serial).
UNSHARED: frozenset[type[Strategy]] = frozenset({builtin.MacdTrend})


# Built-ins whose signals the fused kernel derives bar by bar (`kernel._decide`): the rule and what it reads, from
# the very indicator functions the strategy's `signals` calls (cached per sweep, except UNSHARED ones).
RuleInputs = tuple[int, np.ndarray, np.ndarray, float, float]


def _rsi_rule(p: Any, bars: Bars) -> RuleInputs:
    r = ta.rsi(bars.close, p.period)
    return k.RULE_LEVEL, r, r, p.oversold, p.overbought


def _bollinger_rule(p: Any, bars: Bars) -> RuleInputs:
    middle, variance = ta.band_parts(bars.close, p.period)
    return k.RULE_BAND, middle, variance, p.stdev, 0.0


def _macd_rule(p: Any, bars: Bars) -> RuleInputs:
    line, signal, _ = ta.macd(bars.close, p.fast, p.slow, p.signal)
    return k.RULE_CROSS, line, signal, 0.0, 0.0


def _donchian_rule(p: Any, bars: Bars) -> RuleInputs:
    upper = ta.rolling_max(bars.high, p.entry_period)
    lower = ta.rolling_min(bars.low, p.exit_period)
    return k.RULE_BREAKOUT, upper, lower, 0.0, 0.0


RULE_STRATEGIES: dict[type[Strategy], Callable[[Any, Bars], RuleInputs]] = {
    builtin.RsiMeanReversion: _rsi_rule,
    builtin.BollingerReversion: _bollinger_rule,
    builtin.MacdTrend: _macd_rule,
    builtin.DonchianBreakout: _donchian_rule,
}


@dataclass(slots=True)
class SignalPlan(_Base):
    """A vectorized strategy's own `signals` per combination, then the compiled simulation and reduction."""

    cache: ta.IndicatorCache | None = field(default=None, init=False)
    _bars: list[Bars] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        _Base.__post_init__(self)
        data = self.inputs.data
        # The same Bars objects every combination: the indicator cache keys on the arrays they hold.
        self._bars = [data.bars(j) for j in range(len(data.symbols))]
        if self.inputs.strategy_cls in builtin.BUILTIN_STRATEGIES and self.inputs.strategy_cls not in UNSHARED:
            # Built-ins never write into an indicator array, so combinations can share them.
            self.cache = ta.IndicatorCache()

    def evaluate(self, chunk: Sequence[tuple[Combination, StrategyParams]]) -> list[SweepRow]:
        """Rows of a chunk of combinations, in the chunk's order."""
        data, sim = self.inputs.data, self.inputs.sim
        cls = self.inputs.strategy_cls
        s = self.scratch()
        stats = np.empty(k.N_STATS)
        rows = []
        for combo, params in chunk:
            fused = self._rule_inputs(params)
            if fused is not None:
                rule, x, y, p, q, size = fused
                s.orders, s.segs, n_orders = k.run_rule(
                    rule,
                    x,
                    y,
                    p,
                    q,
                    k.NO_FLAGS,
                    k.NO_FLAGS,
                    data.open,
                    data.close,
                    data.tradable,
                    size,
                    sim.taker_fee,
                    sim.slippage,
                    sim.latency,
                    float(sim.initial_cash),
                    data.timestamp,
                    self._t_before,
                    s.orders,
                    0,
                    s.segs,
                    stats,
                    self._need,
                )
                rows.append(self.finish(combo, stats, s.orders[:n_orders]))
                continue
            strategy = cls(params.model_dump())
            with strategy_errors(cls):
                if self.cache is not None:
                    with ta.cached_indicators(self.cache):
                        sigs = [strategy.signals(b) for b in self._bars]
                else:
                    sigs = [strategy.signals(b) for b in self._bars]
            sig = stack_signals(data, sigs, allow_short=sim.allow_short)
            if _long_only_one_symbol(sig, data.n_bars, sim.allow_short):
                # The fused kernel: no eventful/equity/cash/in-market arrays, the stats from fill segments.
                s.orders, s.segs, n_orders = k.run_flags(
                    sig.entries,
                    sig.exits,
                    data.open,
                    data.close,
                    data.tradable,
                    float(sig.size[0, 0]),
                    sim.taker_fee,
                    sim.slippage,
                    sim.latency,
                    float(sim.initial_cash),
                    data.timestamp,
                    self._t_before,
                    s.orders,
                    0,
                    s.segs,
                    stats,
                    self._need,
                )
                rows.append(self.finish(combo, stats, s.orders[:n_orders]))
                continue
            s.orders, n_orders = k.run_signals(
                *_market(data),
                sig.entries,
                sig.exits,
                sig.short_entries,
                sig.short_exits,
                sig.stop_loss,
                sig.take_profit,
                sig.size,
                sim.maker_fee,
                sim.taker_fee,
                sim.slippage,
                sim.latency,
                sim.allow_short,
                float(sim.initial_cash),
                sig.eventful,
                data.timestamp,
                self._t_before,
                s.equity,
                s.cash,
                s.in_market,
                s.orders,
                0,
                stats,
            )
            rows.append(self.finish(combo, stats, s.orders[:n_orders]))
        return rows

    def _rule_inputs(self, params: StrategyParams) -> tuple[int, np.ndarray, np.ndarray, float, float, float] | None:
        """What `kernel.run_rule` reads for a built-in with a rule, one symbol and no stop or target; else None."""
        derive = RULE_STRATEGIES.get(self.inputs.strategy_cls)
        data = self.inputs.data
        p: Any = params
        if derive is None or len(data.symbols) != 1 or p.stop_loss is not None or p.take_profit is not None:
            return None
        with strategy_errors(self.inputs.strategy_cls):
            if self.cache is not None:
                with ta.cached_indicators(self.cache):
                    rule, x, y, a, b = derive(p, self._bars[0])
            else:
                rule, x, y, a, b = derive(p, self._bars[0])
        if rule == k.RULE_BAND and not float(a) >= 0.0:
            return None  # the band rule's scan assumes the lower band is never above the middle one
        # The (1, 1) broadcast the backtest stacks a built-in's scalar size into.
        size = float(stack_values(data, [p.size], np.float64, 1.0)[0, 0])
        x, y = np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(y, dtype=np.float64)
        return rule, x, y, float(a), float(b), size


def _long_only_one_symbol(sig: SignalArrays, n: int, allow_short: bool) -> bool:
    """Whether `kernel.run_flags` simulates these signals: one symbol, (n, 1) entries/exits, no stop or target,
    one size, and no short entry the run would take."""
    full = (n, 1)
    return (
        sig.entries.shape == full
        and sig.exits.shape == full
        and sig.size.shape == (1, 1)
        and sig.stop_loss.shape == (1, 1)
        and sig.take_profit.shape == (1, 1)
        and bool(np.isnan(sig.stop_loss[0, 0]))
        and bool(np.isnan(sig.take_profit[0, 0]))
        and not (allow_short and bool(sig.short_entries.any()))
    )


# The crossover built-ins: the two indicator series each one crosses, as (function, window) pairs.
CrossKeys = Callable[[Any], tuple[tuple[str, int], tuple[str, int]] | None]
CROSS_STRATEGIES: dict[type[Strategy], CrossKeys] = {
    builtin.SmaCross: lambda p: (("sma", p.fast), ("sma", p.slow)),
    builtin.EmaCross: lambda p: (("ema", p.fast), ("ema", p.slow)),
    builtin.TestStrategy: lambda p: (("sma", p.period), ("sma", p.slow)) if p.slow is not None else None,
}
_INDICATORS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"sma": ta.sma, "ema": ta.ema}


def cross_keys(cls: type[Strategy], params: StrategyParams) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """The (function, window) pairs a crossover built-in crosses with these params, or None when it is not one."""
    keys = CROSS_STRATEGIES.get(cls)
    return keys(params) if keys is not None else None


@dataclass(slots=True)
class CrossPlan(_Base):
    """Crossover built-ins: every distinct window computed once, signals derived in the compiled kernel."""

    combos: Sequence[tuple[Combination, StrategyParams]] = ()
    # Threads computing the distinct windows (the indicator kernels release the GIL); the sweep's workers.
    workers: int = 1
    # One (symbols, bars) series per distinct (function, window), in `index` order.
    series: list[np.ndarray] = field(default_factory=list, init=False)
    index: dict[tuple[str, int], int] = field(default_factory=dict, init=False)
    fallback: SignalPlan | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        _Base.__post_init__(self)
        data = self.inputs.data
        cls = self.inputs.strategy_cls
        for _, params in self.combos:
            for key in cross_keys(cls, params) or ():
                self.index.setdefault(key, len(self.index))
        n, m = data.n_bars, len(data.symbols)
        bars = [data.bars(j) for j in range(m)]
        jobs = list(self.index.items())

        def compute(job: tuple[tuple[str, int], int]) -> np.ndarray:
            (name, window), _ = job
            # The very function the strategy's `signals` calls, on the same close; one symbol's series as it comes
            # (a (1, n) view), several stacked (m, n), each row contiguous for the kernel.
            series = [np.asarray(_INDICATORS[name](b.close, window), dtype=np.float64) for b in bars]
            return series[0].reshape(1, n) if m == 1 else np.stack(series)

        if self.workers > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(min(self.workers, len(jobs)), thread_name_prefix="cracktrader-sweep") as pool:
                self.series = list(pool.map(compute, jobs))
        else:
            self.series = [compute(job) for job in jobs]
        self.fallback = SignalPlan(self.inputs)

    def evaluate(self, chunk: Sequence[tuple[Combination, StrategyParams]]) -> list[SweepRow]:
        """Rows of a chunk of combinations, in the chunk's order."""
        cls = self.inputs.strategy_cls
        data, sim = self.inputs.data, self.inputs.sim
        s = self.scratch()
        stats = np.empty(k.N_STATS)
        out: list[SweepRow] = []
        for combo, params in chunk:
            keys = cross_keys(cls, params)
            if keys is None:
                assert self.fallback is not None
                out += self.fallback.evaluate([(combo, params)])
                continue
            p: Any = params
            # The (1, 1) broadcasts the backtest stacks a built-in's scalar risk params into.
            s.orders, s.segs, n_orders = k.cross_combo(
                self.series[self.index[keys[0]]],
                self.series[self.index[keys[1]]],
                float(stack_values(data, [p.size], np.float64, 1.0)[0, 0]),
                float(stack_values(data, [p.stop_loss], np.float64, np.nan)[0, 0]),
                float(stack_values(data, [p.take_profit], np.float64, np.nan)[0, 0]),
                *_market(data),
                sim.maker_fee,
                sim.taker_fee,
                sim.slippage,
                sim.latency,
                sim.allow_short,
                float(sim.initial_cash),
                data.timestamp,
                self._t_before,
                s.entries,
                s.exits,
                s.eventful,
                s.equity,
                s.cash,
                s.in_market,
                s.orders,
                s.segs,
                stats,
                self._need,
            )
            out.append(self.finish(combo, stats, s.orders[:n_orders]))
        return out


@dataclass(slots=True)
class EnginePlan:
    """Event-driven strategies (and runs with exchange rules): the ordinary engine, one combination at a time."""

    inputs: SweepInputs

    def evaluate(self, chunk: Sequence[tuple[Combination, StrategyParams]]) -> list[SweepRow]:
        """Rows of a chunk of combinations, in the chunk's order."""
        cls = self.inputs.strategy_cls
        rows = []
        for combo, params in chunk:
            with strategy_errors(cls):
                result = run_backtest(cls(params.model_dump()), self.inputs.data, self.inputs.sim)
            rows.append(SweepRow(combo.index, combo.params, pick(result.metrics, self.inputs.metrics)))
        return rows


Plan = CrossPlan | SignalPlan | EnginePlan


def make_plan(inputs: SweepInputs, combos: Sequence[tuple[Combination, StrategyParams]], workers: int = 1) -> Plan:
    """The fastest plan that gives each combination exactly its single backtest's metrics.

    `workers`: threads the plan may use for its once-per-sweep work (the crossover windows).
    """
    cls = inputs.strategy_cls
    if cls.style() != "vectorized" or inputs.sim.rules is not None:
        return EnginePlan(inputs)
    if cls in CROSS_STRATEGIES:
        return CrossPlan(inputs, combos=combos, workers=workers)
    return SignalPlan(inputs)
