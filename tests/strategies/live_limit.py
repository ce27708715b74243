"""A test strategy for live crash tests: one resting limit buy, far under the market, on its first bar."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cracktrader.engine.context import Context
from cracktrader.engine.strategy import Strategy, StrategyParams


class OneLimitParams(StrategyParams):
    """How far under the close the limit rests, and its size."""

    below: float = Field(0.97, gt=0, lt=1, description="The limit as a fraction of the first bar's close")
    size: float = Field(0.01, gt=0, description="Units bought")


class OneRestingBuy(Strategy):
    """Sends one limit buy at `below` x the first close and nothing else: a crash test knows its only order."""

    Params = OneLimitParams

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.placed = False

    def on_bar(self, ctx: Context) -> None:
        p: OneLimitParams = self.params  # type: ignore[assignment]
        symbol = ctx.symbols[0]
        # The orders the session holds count too: its state is saved with each bar, so after a crash it may be a
        # bar older than the order it sent.
        if self.placed or ctx.open_orders(symbol) or ctx.position(symbol) > 0:
            return
        self.placed = True
        ctx.buy(symbol, p.size, limit=round(ctx.price(symbol) * p.below, 2))

    def state(self) -> Any:
        return {"placed": self.placed}

    def restore(self, state: Any) -> None:
        self.placed = bool(state["placed"])


class OneRestingBuyByItsFlag(OneRestingBuy):
    """OneRestingBuy that trusts only its own saved flag: after a crash it may decide its one order again."""

    def on_bar(self, ctx: Context) -> None:
        p: OneLimitParams = self.params  # type: ignore[assignment]
        if self.placed:
            return
        self.placed = True
        symbol = ctx.symbols[0]
        ctx.buy(symbol, p.size, limit=round(ctx.price(symbol) * p.below, 2))
