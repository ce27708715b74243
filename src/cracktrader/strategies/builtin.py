"""The built-in strategies.

Each one's `warmup()` is exact (see `engine.window`): on that many bars it decides what it decides on the
whole history, and each acts on every symbol it is given.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from cracktrader.engine import indicators as ta
from cracktrader.engine.context import Context
from cracktrader.engine.market import Bars
from cracktrader.engine.strategy import Signals, Strategy, StrategyParams


class RiskParams(StrategyParams):
    """Position sizing and protective exits shared by the built-ins."""

    size: float = Field(1.0, gt=0.0, le=1.0, description="Fraction of available cash per entry (1 = all in)")
    stop_loss: float | None = Field(None, gt=0.0, lt=1.0, description="Stop-loss as a fraction below entry")
    take_profit: float | None = Field(None, gt=0.0, description="Take-profit as a fraction above entry")


def _signals(p: RiskParams, entries: np.ndarray, exits: np.ndarray) -> Signals:
    return Signals(entries=entries, exits=exits, stop_loss=p.stop_loss, take_profit=p.take_profit, size=p.size)


class CrossParams(RiskParams):
    fast: int = Field(10, ge=1, le=10_000, description="Fast moving-average period")
    slow: int = Field(30, ge=2, le=10_000, description="Slow moving-average period")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> CrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        return self


class SmaCross(Strategy):
    """Buy when the fast SMA crosses above the slow SMA; sell when it crosses below."""

    Params = CrossParams

    def warmup(self) -> int:
        return ta.cross_warmup(ta.sma_warmup(self.params.slow))  # type: ignore[attr-defined]

    def signals(self, bars: Bars) -> Signals:
        p: CrossParams = self.params  # type: ignore[assignment]
        fast, slow = ta.sma(bars.close, p.fast), ta.sma(bars.close, p.slow)
        return _signals(p, ta.crossed_above(fast, slow), ta.crossed_below(fast, slow))

    def plot(self, bars: Bars) -> dict[str, np.ndarray]:
        p: CrossParams = self.params  # type: ignore[assignment]
        return {f"sma_{p.fast}": ta.sma(bars.close, p.fast), f"sma_{p.slow}": ta.sma(bars.close, p.slow)}


class EmaCrossParams(CrossParams):
    fast: int = Field(12, ge=1, le=10_000, description="Fast EMA period")
    slow: int = Field(26, ge=2, le=10_000, description="Slow EMA period")


class EmaCross(Strategy):
    """Buy when the fast EMA crosses above the slow EMA; sell when it crosses below."""

    Params = EmaCrossParams

    def warmup(self) -> int:
        return ta.cross_warmup(ta.ema_warmup(self.params.slow))  # type: ignore[attr-defined]

    def signals(self, bars: Bars) -> Signals:
        p: EmaCrossParams = self.params  # type: ignore[assignment]
        fast, slow = ta.ema(bars.close, p.fast), ta.ema(bars.close, p.slow)
        return _signals(p, ta.crossed_above(fast, slow), ta.crossed_below(fast, slow))

    def plot(self, bars: Bars) -> dict[str, np.ndarray]:
        p: EmaCrossParams = self.params  # type: ignore[assignment]
        return {f"ema_{p.fast}": ta.ema(bars.close, p.fast), f"ema_{p.slow}": ta.ema(bars.close, p.slow)}


class RsiParams(RiskParams):
    period: int = Field(14, ge=2, le=1000, description="RSI period")
    oversold: float = Field(30.0, gt=0.0, lt=100.0, description="Buy when RSI crosses up through this level")
    overbought: float = Field(70.0, gt=0.0, lt=100.0, description="Sell when RSI rises above this level")

    @model_validator(mode="after")
    def _ordered(self) -> RsiParams:
        if self.oversold >= self.overbought:
            raise ValueError(f"oversold ({self.oversold}) must be below overbought ({self.overbought})")
        return self


class RsiMeanReversion(Strategy):
    """Buy when RSI crosses up out of oversold; sell when it reaches overbought."""

    Params = RsiParams

    def warmup(self) -> int:
        # The entry is a cross (one bar more); the exit a level.
        return ta.cross_warmup(ta.rsi_warmup(self.params.period))  # type: ignore[attr-defined]

    def signals(self, bars: Bars) -> Signals:
        p: RsiParams = self.params  # type: ignore[assignment]
        r = ta.rsi(bars.close, p.period)
        return _signals(p, ta.crossed_above(r, p.oversold), r > p.overbought)


class BollingerParams(RiskParams):
    period: int = Field(20, ge=2, le=1000, description="Band period")
    stdev: float = Field(2.0, gt=0.0, le=10.0, description="Band width in standard deviations")


class BollingerReversion(Strategy):
    """Buy a close below the lower band; sell when the close returns above the middle band."""

    Params = BollingerParams

    def warmup(self) -> int:
        return ta.sma_warmup(self.params.period)  # type: ignore[attr-defined]

    def signals(self, bars: Bars) -> Signals:
        p: BollingerParams = self.params  # type: ignore[assignment]
        _, middle, lower = ta.bollinger(bars.close, p.period, p.stdev)
        return _signals(p, bars.close < lower, bars.close > middle)

    def plot(self, bars: Bars) -> dict[str, np.ndarray]:
        p: BollingerParams = self.params  # type: ignore[assignment]
        upper, middle, lower = ta.bollinger(bars.close, p.period, p.stdev)
        return {"bb_upper": upper, "bb_middle": middle, "bb_lower": lower}


class MacdParams(RiskParams):
    fast: int = Field(12, ge=1, le=1000, description="Fast EMA period")
    slow: int = Field(26, ge=2, le=1000, description="Slow EMA period")
    signal: int = Field(9, ge=1, le=1000, description="Signal line period")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> MacdParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        return self


class MacdTrend(Strategy):
    """Buy when MACD crosses above its signal line; sell when it crosses below."""

    Params = MacdParams

    def warmup(self) -> int:
        p: MacdParams = self.params  # type: ignore[assignment]
        return ta.cross_warmup(ta.macd_warmup(p.fast, p.slow, p.signal))

    def signals(self, bars: Bars) -> Signals:
        p: MacdParams = self.params  # type: ignore[assignment]
        line, sig, _ = ta.macd(bars.close, p.fast, p.slow, p.signal)
        return _signals(p, ta.crossed_above(line, sig), ta.crossed_below(line, sig))


class DonchianParams(RiskParams):
    entry_period: int = Field(20, ge=2, le=1000, description="Breakout above the high of this many bars")
    exit_period: int = Field(10, ge=2, le=1000, description="Exit below the low of this many bars")


class DonchianBreakout(Strategy):
    """Buy a close above the previous N-bar high; sell a close below the previous M-bar low."""

    Params = DonchianParams

    def warmup(self) -> int:
        # Each level is the previous bar's high or low over its period.
        return max(int(self.params.entry_period), int(self.params.exit_period)) + 1  # type: ignore[attr-defined]

    def signals(self, bars: Bars) -> Signals:
        p: DonchianParams = self.params  # type: ignore[assignment]
        upper = ta.shift(ta.rolling_max(bars.high, p.entry_period))
        lower = ta.shift(ta.rolling_min(bars.low, p.exit_period))
        return _signals(p, bars.close > upper, bars.close < lower)

    def plot(self, bars: Bars) -> dict[str, np.ndarray]:
        p: DonchianParams = self.params  # type: ignore[assignment]
        return {
            f"high_{p.entry_period}": ta.shift(ta.rolling_max(bars.high, p.entry_period)),
            f"low_{p.exit_period}": ta.shift(ta.rolling_min(bars.low, p.exit_period)),
        }


class BuyAndHoldParams(StrategyParams):
    size: float = Field(1.0, gt=0.0, le=1.0, description="Fraction of cash to invest")


class BuyAndHold(Strategy):
    """Buy every symbol on the first bar, in equal parts of `size` of the cash, and hold to the end."""

    Params = BuyAndHoldParams

    def warmup(self) -> int:
        return 1

    def on_bar(self, ctx: Context) -> None:
        # "Buy whatever is not held yet": the first bar in a backtest, the first live bar in live trading.
        todo = [s for s in ctx.symbols if ctx.position(s) == 0.0 and not ctx.open_orders(s)]
        if len(todo) < len(ctx.symbols) or not todo:
            return  # a symbol still waiting for its first tradable bar keeps its order
        weight = self.params.size / len(todo)  # type: ignore[attr-defined]
        for k, symbol in enumerate(todo):
            # Fills take cash in this order, so each takes `weight` of the starting cash.
            ctx.buy(symbol, fraction=min(1.0, weight / (1.0 - k * weight)))


class TestParams(RiskParams):
    period: int = Field(20, ge=2, le=10_000, description="Moving-average period")
    threshold: float = Field(0.02, ge=0.0, lt=1.0, description="Band around the SMA as a fraction")
    slow: int | None = Field(None, ge=3, le=10_000, description="If set: cross SMA(period) with SMA(slow)")

    @model_validator(mode="after")
    def _period_below_slow(self) -> TestParams:
        if self.slow is not None and self.period >= self.slow:
            raise ValueError(f"period ({self.period}) must be smaller than slow ({self.slow})")
        return self


class TestStrategy(Strategy):
    """The seeds' example: SMA band breakout, or an SMA crossover when `slow` is given."""

    __test__ = False  # not a pytest test class despite its name
    Params = TestParams

    def warmup(self) -> int:
        p: TestParams = self.params  # type: ignore[assignment]
        return ta.cross_warmup(ta.sma_warmup(p.slow)) if p.slow is not None else ta.sma_warmup(p.period)

    def signals(self, bars: Bars) -> Signals:
        p: TestParams = self.params  # type: ignore[assignment]
        fast = ta.sma(bars.close, p.period)
        if p.slow is not None:
            slow = ta.sma(bars.close, p.slow)
            return _signals(p, ta.crossed_above(fast, slow), ta.crossed_below(fast, slow))
        return _signals(p, bars.close > fast * (1 + p.threshold), bars.close < fast * (1 - p.threshold))

    def plot(self, bars: Bars) -> dict[str, np.ndarray]:
        p: TestParams = self.params  # type: ignore[assignment]
        fast = ta.sma(bars.close, p.period)
        if p.slow is not None:
            return {f"sma_{p.period}": fast, f"sma_{p.slow}": ta.sma(bars.close, p.slow)}
        return {f"sma_{p.period}": fast, "band_upper": fast * (1 + p.threshold), "band_lower": fast * (1 - p.threshold)}


class SmaCrossEvents(Strategy):
    """SmaCross written in the event-driven style: an example of `indicators` and `on_bar`."""

    Params = CrossParams

    def warmup(self) -> int:
        return ta.cross_warmup(ta.sma_warmup(self.params.slow))  # type: ignore[attr-defined]

    def indicators(self, bars: Bars) -> dict[str, np.ndarray]:
        p: CrossParams = self.params  # type: ignore[assignment]
        fast, slow = ta.sma(bars.close, p.fast), ta.sma(bars.close, p.slow)
        # +1 on a cross up, -1 on a cross down: one int8 series, so on_bar reads one value a bar.
        return {"cross": ta.crossed_above(fast, slow).view(np.int8) - ta.crossed_below(fast, slow).view(np.int8)}

    def plot(self, bars: Bars) -> dict[str, np.ndarray]:
        p: CrossParams = self.params  # type: ignore[assignment]
        return {f"sma_{p.fast}": ta.sma(bars.close, p.fast), f"sma_{p.slow}": ta.sma(bars.close, p.slow)}

    def on_bar(self, ctx: Context) -> None:
        for symbol in ctx.symbols:
            cross = ctx.indicator("cross", symbol)
            if not cross:
                continue
            if cross > 0:
                if ctx.position(symbol) == 0.0:
                    p: CrossParams = self.params  # type: ignore[assignment]
                    ctx.buy(symbol, fraction=p.size, stop_loss=p.stop_loss, take_profit=p.take_profit)
            elif ctx.position(symbol) > 0.0:
                ctx.sell(symbol)


BUILTIN_STRATEGIES: tuple[type[Strategy], ...] = (
    TestStrategy,
    SmaCross,
    EmaCross,
    RsiMeanReversion,
    BollingerReversion,
    MacdTrend,
    DonchianBreakout,
    BuyAndHold,
    SmaCrossEvents,
)
