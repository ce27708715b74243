"""A deterministic test strategy that keeps a resting limit order, priced to be crossed at a known future bar.

It trades the offline `synthetic` exchange, whose candles depend on the bar alone: it reads the generator ahead
(a test device, not a trading idea) and prices each limit so that the first candle to cross it is the one at
`plans[-1]["fill_ts"]`, between `min_ahead` and `max_ahead` bars later, and fills there at the limit price. A
restart test then knows which candle fills the order and can kill the server before it closes. Its plans are
its own state (`state()` / `restore()`), persisted by the session with each bar.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from cracktrader.data.sources.synthetic import generate, price_decimals
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.context import Context
from cracktrader.engine.strategy import Strategy, StrategyParams


class RestingParams(StrategyParams):
    """The candles' timeframe, how far ahead the crossing candle is, and the order size."""

    timeframe: str = Field("1s", description="The session's timeframe (the generator's)")
    min_ahead: int = Field(6, ge=2, le=500, description="Fewest bars between placing a limit and its fill")
    max_ahead: int = Field(60, ge=2, le=5000, description="Most bars between placing a limit and its fill")
    size: float = Field(0.01, gt=0, description="Units bought by each entry")


def plan_limit(symbol: str, timeframe: str, now_ts: int, side: str, min_ahead: int, max_ahead: int) -> dict[str, Any]:
    """The limit that the candle `ahead` bars after `now_ts` is the first to cross (with its open not through it).

    `ahead` is the nearest in [min_ahead, max_ahead] that allows one; the plan has `ahead` 0 when none does.
    """
    tf = parse_timeframe(timeframe)
    start, end = now_ts + tf.ms, now_ts + (max_ahead + 1) * tf.ms
    c = generate(symbol, tf, start, end, end)
    decimals = price_decimals(symbol)
    for k in range(min_ahead - 1, min(max_ahead, c.timestamp.shape[0])):
        if side == "buy":
            before = float(np.min(c.low[:k]))
            if c.low[k] < before:
                limit = round((float(c.low[k]) + before) / 2, decimals)  # on the exchange's price grid
                # It rests until bar k's low trades through it, and fills at the limit.
                if c.low[k] < limit < before and c.open[k] > limit:
                    return {"side": side, "price": limit, "fill_ts": int(c.timestamp[k]), "ahead": k + 1}
        else:
            before = float(np.max(c.high[:k]))
            if c.high[k] > before:
                limit = round((float(c.high[k]) + before) / 2, decimals)
                if before < limit < c.high[k] and c.open[k] < limit:
                    return {"side": side, "price": limit, "fill_ts": int(c.timestamp[k]), "ahead": k + 1}
    return {"side": side, "price": None, "fill_ts": None, "ahead": 0}


class RestingLimit(Strategy):
    """Buys at market once, then alternates resting sell and buy limits that a known future candle crosses."""

    Params = RestingParams

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.plans: list[dict[str, Any]] = []
        self.entered = False
        self.restored = False  # set by `restore`: a test reads it through the state

    def on_bar(self, ctx: Context) -> None:
        p: RestingParams = self.params  # type: ignore[assignment]
        symbol = ctx.symbols[0]
        if ctx.open_orders(symbol):
            return  # the resting limit waits for its candle
        if not self.entered:
            self.entered = True
            ctx.buy(symbol, p.size)
            return
        side = "sell" if ctx.position(symbol) > 0 else "buy"
        plan = plan_limit(symbol, p.timeframe, ctx.timestamp, side, p.min_ahead, p.max_ahead)
        if plan["price"] is None:
            return
        plan["placed_ts"] = ctx.timestamp
        if side == "buy":
            plan["order_id"] = ctx.buy(symbol, p.size, limit=plan["price"])
        else:
            plan["order_id"] = ctx.sell(symbol, ctx.position(symbol), limit=plan["price"])
        self.plans.append(plan)

    def state(self) -> Any:
        return {"plans": self.plans, "entered": self.entered, "restored": self.restored}

    def restore(self, state: Any) -> None:
        self.plans = list(state["plans"])
        self.entered = bool(state["entered"])
        self.restored = True
