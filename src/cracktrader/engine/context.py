"""What an event-driven strategy sees: the `Context` protocol that backtest, paper and live runtimes implement.

A strategy imports only this module (and `Bars`): it never sees a simulator or an exchange, so the same code
runs in every mode. Orders name their symbol ("BTC/USDT"); the symbol may be left out only when the run trades
exactly one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from cracktrader.engine.market import Bars

Side = Literal["buy", "sell"]
OrderKind = Literal["market", "limit", "stop", "stop_limit"]
OrderState = Literal["accepted", "filled", "cancelled", "rejected"]


@dataclass(frozen=True, slots=True)
class OrderView:
    """A working order as a strategy sees it."""

    id: int
    symbol: str
    side: Side
    type: OrderKind
    size: float | None  # None: all in (opening) or the whole position (closing)
    limit: float | None
    stop: float | None
    reason: str  # "signal", "stop_loss" or "take_profit"


@dataclass(frozen=True, slots=True)
class Fill:
    """An executed order, passed to `Strategy.on_fill`."""

    order_id: int
    symbol: str
    side: Side
    size: float
    price: float
    fee: float
    timestamp: int  # open time (ms) of the bar it filled in
    reason: str


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """A change of an order's state, passed to `Strategy.on_order`; `reason` says why it was rejected or cancelled."""

    order_id: int
    symbol: str
    side: Side
    type: OrderKind
    status: OrderState
    reason: str
    timestamp: int


class Context(Protocol):
    """The current bar, the portfolio and order entry, as every runtime offers them to `on_bar`."""

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols this run trades."""
        ...

    @property
    def timestamp(self) -> int:
        """Open time (ms) of the current (just closed) bar."""
        ...

    @property
    def cash(self) -> float:
        """Free cash in the quote currency."""
        ...

    @property
    def value(self) -> float:
        """Cash plus positions at the current close."""
        ...

    def bars(self, symbol: str | None = None) -> Bars:
        """History of one symbol ending at the current bar; live runtimes keep `warmup()` bars of it."""
        ...

    def indicator(self, name: str, symbol: str | None = None, ago: int = 0) -> float:
        """Value of the strategy's indicator `name` (see `Strategy.indicators`) `ago` bars before the current one.

        NaN (False for boolean indicators) before the history starts.
        """
        ...

    def price(self, symbol: str | None = None) -> float:
        """The current bar's close."""
        ...

    def position(self, symbol: str | None = None) -> float:
        """Signed position size (negative when short)."""
        ...

    def open_orders(self, symbol: str | None = None) -> list[OrderView]:
        """Working orders, optionally of one symbol."""
        ...

    def buy(
        self,
        symbol: str | None = None,
        size: float | None = None,
        *,
        limit: float | None = None,
        stop: float | None = None,
        stop_loss: float | None = None,
        take_profit: float | None = None,
        fraction: float = 1.0,
    ) -> int:
        """Buy `size` units (None: `fraction` of free cash, fee included); returns the order id."""
        ...

    def sell(
        self,
        symbol: str | None = None,
        size: float | None = None,
        *,
        limit: float | None = None,
        stop: float | None = None,
        stop_loss: float | None = None,
        take_profit: float | None = None,
        fraction: float = 1.0,
    ) -> int:
        """Sell `size` units (None: the whole position, or all in short when shorting is on)."""
        ...

    def close_position(self, symbol: str | None = None) -> int | None:
        """Market order that flattens the symbol's position; None when flat."""
        ...

    def cancel(self, order_id: int) -> bool:
        """Cancel a working order; False when it is no longer open."""
        ...
