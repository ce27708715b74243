"""A test strategy whose runs are long by construction, whatever the speed of the machine.

Loaded through the strategy folder (`Settings.strategy_dir`, see `web_support.TEST_STRATEGY_DIR`). Each bar from
`fast_bars` on takes at least `bar_ms` of wall-clock time, until the test creates `release_file`: a run of n slow
bars lasts at least n * bar_ms whatever the machine, and ends early only when the test stops or releases it.
"""

from __future__ import annotations

import os
import time

from pydantic import Field

from cracktrader.engine.context import Context
from cracktrader.engine.strategy import Strategy, StrategyParams


class SlowParams(StrategyParams):
    """How slow each bar is, when the slowness starts and ends, and how often it trades."""

    bar_ms: float = Field(5.0, ge=0, le=1000, description="Least wall-clock milliseconds each slow bar takes")
    fast_bars: int = Field(0, ge=0, description="Bars simulated at full speed before the slow ones")
    trade_every: int = Field(0, ge=0, description="Buy when flat, sell when long, every this many bars (0: never)")
    busy: bool = Field(False, description="Spin on the CPU instead of sleeping: a CPU-heavy run")
    release_file: str = Field("", description="Once this file exists the remaining bars run at full speed")


class SlowStrategy(Strategy):
    """Event-driven test strategy: each bar from `fast_bars` on takes at least `bar_ms`, until released."""

    Params = SlowParams
    released = False
    bars_seen = 0

    def on_bar(self, ctx: Context) -> None:
        p: SlowParams = self.params  # type: ignore[assignment]
        i = self.bars_seen
        self.bars_seen += 1
        if p.trade_every and i % p.trade_every == 0:
            for symbol in ctx.symbols:
                if ctx.position(symbol) == 0.0:
                    ctx.buy(symbol, fraction=0.5 / len(ctx.symbols))
                else:
                    ctx.sell(symbol)
        if i < p.fast_bars or self.released:
            return
        if p.release_file and os.path.exists(p.release_file):
            self.released = True
            return
        if p.busy:
            # Holds the GIL like a heavy computation would (Python hands it over every switch interval).
            until = time.perf_counter() + p.bar_ms / 1000
            while time.perf_counter() < until:
                pass
        else:
            time.sleep(p.bar_ms / 1000)
