"""Risk limits of a session (`exchange_config.risk`), the gate every order passes, and the session's condition.

The same gate stands before the paper broker and the live one. It holds little state: the accepted orders of the
last second per exchange account, the UTC day's starting equity, and whether the session is halted or paused.
Everything else it needs (position, open orders, last price) the caller passes with each order.

Limits that bound exposure (notional per order, position notional, open orders, the halt, a pause) never block an
order that only reduces a position; stale data, the rate limit and the price band apply to every order.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cracktrader.engine.accounting import CLOSE_TOLERANCE
from cracktrader.engine.context import OrderKind, Side
from cracktrader.errors import UserInputError

DAY_MS = 86_400_000
RATE_WINDOW_MS = 1_000
# A price exactly on the band's edge is allowed; this absorbs the float residue of computing the edge.
BAND_TOLERANCE = 1e-12

Clock = Callable[[], int]  # ms since the epoch (UTC)


class RiskLimits(BaseModel):
    """`exchange_config.risk`: every limit optional; None switches a limit off."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    max_order_notional: float | None = Field(
        None, gt=0, description="Largest order value in the quote currency (amount × limit, stop or last price)."
    )
    max_position_notional: float | None = Field(
        None,
        gt=0,
        description="Largest position value per symbol in the quote currency, counting same-side open orders.",
    )
    max_open_orders: int | None = Field(50, ge=1, description="Most orders open at once in the session.")
    orders_per_second: int = Field(
        10, ge=1, description="Orders accepted per exchange account in any sliding second (seed 001: 10)."
    )
    price_band: float | None = Field(
        0.05, gt=0, le=1, description="Largest distance of a limit price from the last price, as a fraction."
    )
    daily_loss_limit: float | None = Field(
        None,
        gt=0,
        description="Loss since the UTC day's start, in the quote currency, at which the session halts.",
    )
    daily_loss_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="The same as a fraction of the day's starting equity (0.05: halt after losing 5 %).",
    )
    capital: float | None = Field(
        None,
        gt=0,
        le=1e15,
        description="Live: the quote currency this session may trade with (required); never the whole account.",
    )


class InvalidRiskLimitsError(UserInputError):
    """`exchange_config.risk` that does not validate."""

    code = "VALIDATION_ERROR"
    status_code = 422


def parse_risk_limits(exchange_config: Mapping[str, Any] | None) -> RiskLimits:
    """The `risk` section of an exchange_config as typed limits (defaults when it is absent)."""
    section = (exchange_config or {}).get("risk")
    if section is None:
        return RiskLimits()
    if not isinstance(section, Mapping):
        raise InvalidRiskLimitsError(
            f"exchange_config.risk must be an object, got {type(section).__name__}",
            details={"accepted": sorted(RiskLimits.model_fields)},
        )
    try:
        return RiskLimits.model_validate(dict(section))
    except ValidationError as exc:
        errors = [
            {"loc": "exchange_config.risk." + ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        raise InvalidRiskLimitsError(
            f"Invalid exchange_config.risk: {summary} (accepted keys: {', '.join(RiskLimits.model_fields)})",
            details={"errors": errors, "accepted": list(RiskLimits.model_fields)},
        ) from None


class Condition(StrEnum):
    """A session's health next to its `status`: new orders go out only when `ok` (reducing ones also when halted)."""

    OK = "ok"
    DEGRADED = "degraded"
    HALTED = "halted"


# Market data is stale when no candle closed for one timeframe plus this long (seed: 30 s).
STALE_AFTER_MS = 30_000


class Reason(StrEnum):
    """Why a session is not `ok`."""

    STALE_DATA = "STALE_DATA"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"


# Reasons that halt a session; any other reason degrades it.
HALTING_REASONS = frozenset({Reason.DAILY_LOSS_LIMIT})


@dataclass(slots=True)
class SessionCondition:
    """The session's `condition` and `reasons`, which the runtime and the gate set and clear."""

    reasons: set[str] = field(default_factory=set)

    @property
    def state(self) -> Condition:
        """`halted` if a halting reason is set, else `degraded` if any is, else `ok`."""
        if self.reasons & HALTING_REASONS:
            return Condition.HALTED
        return Condition.DEGRADED if self.reasons else Condition.OK

    def add(self, reason: str) -> bool:
        """Set a reason; True when it was not set (the condition may have changed)."""
        if reason in self.reasons:
            return False
        self.reasons.add(reason)
        return True

    def discard(self, reason: str) -> bool:
        """Clear a reason; True when it was set."""
        if reason not in self.reasons:
            return False
        self.reasons.discard(reason)
        return True

    def to_dict(self) -> dict[str, Any]:
        """`{"condition": ..., "reasons": [...]}` as /status shows it (reasons sorted)."""
        return {"condition": str(self.state), "reasons": sorted(str(r) for r in self.reasons)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionCondition:
        """The condition `to_dict` saved."""
        return cls({str(r) for r in data.get("reasons", ())})


class DenialCode(StrEnum):
    """Why the gate refused an order."""

    STALE_DATA = "STALE_DATA"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    SESSION_HALTED = "SESSION_HALTED"
    ENTRIES_PAUSED = "ENTRIES_PAUSED"
    NO_REFERENCE_PRICE = "NO_REFERENCE_PRICE"
    PRICE_OUT_OF_BAND = "PRICE_OUT_OF_BAND"
    MAX_OPEN_ORDERS = "MAX_OPEN_ORDERS"
    MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
    MAX_POSITION_NOTIONAL = "MAX_POSITION_NOTIONAL"
    ORDER_RATE_LIMITED = "ORDER_RATE_LIMITED"


@dataclass(frozen=True, slots=True)
class RiskDenial:
    """A refused order: a stable code, a message saying what was wrong and what is allowed, and the figures."""

    code: DenialCode
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The denial as the API and the run store record it."""
        return {"code": str(self.code), "message": self.message, "details": self.details}


class ProposedOrder(Protocol):
    """What the gate reads of an order (a `ManagedOrder` is one)."""

    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> Side: ...
    @property
    def type(self) -> OrderKind: ...
    @property
    def amount(self) -> float: ...
    @property
    def price(self) -> float | None: ...
    @property
    def stop(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Exposure:
    """The session's holding in the order's symbol: signed position and the remaining amounts of open orders."""

    position: float = 0.0
    open_buy: float = 0.0
    open_sell: float = 0.0


FLAT = Exposure()


class OrderRateLimiter:
    """Accepted orders per exchange account in a sliding window; sessions on one account share one limiter."""

    def __init__(self, per_second: int = 10, window_ms: int = RATE_WINDOW_MS) -> None:
        self.per_second = per_second
        self.window_ms = window_ms
        self._sent: dict[str, deque[int]] = {}

    def _window(self, account: str, now: int) -> deque[int]:
        sent = self._sent.setdefault(account, deque())
        while sent and sent[0] <= now - self.window_ms:
            sent.popleft()
        return sent

    def acquire(self, account: str, now: int) -> int | None:
        """Take a slot at `now`: None when granted, else the ms until one frees."""
        sent = self._window(account, now)
        if len(sent) >= self.per_second:
            return sent[0] + self.window_ms - now
        sent.append(now)
        return None

    def used(self, account: str, now: int) -> int:
        """Orders accepted for `account` in the window ending at `now`."""
        return len(self._window(account, now))


def _n(x: float) -> str:
    return f"{x:.10g}"


def _base(symbol: str) -> str:
    return symbol.split("/")[0]


def _reduces(order: ProposedOrder, exposure: Exposure) -> bool:
    """Whether the order, with the same side's open orders, can only shrink the position, never flip it."""
    p = exposure.position
    slack = CLOSE_TOLERANCE * abs(p)
    if order.side == "sell":
        return p > 0 and p - exposure.open_sell - order.amount >= -slack
    return p < 0 and p + exposure.open_buy + order.amount <= slack


class RiskGate:
    """Checks each proposed order of one session against its limits; counts every denial by code."""

    def __init__(
        self,
        limits: RiskLimits,
        clock: Clock,
        *,
        account: str = "default",
        limiter: OrderRateLimiter | None = None,
        condition: SessionCondition | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.account = account
        self.limiter = limiter if limiter is not None else OrderRateLimiter(limits.orders_per_second)
        self.condition = condition if condition is not None else SessionCondition()
        self.denials: Counter[str] = Counter()
        self.paused = False
        self._day: int | None = None
        self._day_start_equity: float | None = None
        self._equity: float | None = None

    # --- state set by the runtime -------------------------------------------------------------------------------

    def set_stale(self, stale: bool) -> bool:
        """Mark market data stale or fresh; True when that changed the condition's reasons."""
        if stale:
            return self.condition.add(Reason.STALE_DATA)
        return self.condition.discard(Reason.STALE_DATA)

    def pause(self) -> None:
        """Stop new entries; orders that reduce a position still pass."""
        self.paused = True

    def resume(self) -> None:
        """Lift a pause and a halt; the daily loss counts afresh from the current equity."""
        self.paused = False
        self.condition.discard(Reason.DAILY_LOSS_LIMIT)
        if self._equity is not None:
            self._day_start_equity = self._equity

    def mark_equity(self, equity: float) -> bool:
        """Record the session's equity (cash plus positions at the last price); True when this mark halted it.

        The day's loss is the fall of equity since the day's start: realized and unrealized pnl and fees together
        (a session has no deposits or withdrawals that would also move it).
        """
        self._roll_day(self.clock())
        if self._day_start_equity is None:
            self._day_start_equity = equity
        self._equity = equity
        allowance = self._loss_allowance()
        if allowance is None or self.daily_loss < allowance:
            return False
        return self.condition.add(Reason.DAILY_LOSS_LIMIT)

    @property
    def halted(self) -> bool:
        """Whether only reducing orders may go out."""
        self._roll_day(self.clock())
        return self.condition.state is Condition.HALTED

    @property
    def daily_loss(self) -> float:
        """Loss (positive) or gain (negative) since the UTC day's start, in the quote currency."""
        if self._equity is None or self._day_start_equity is None:
            return 0.0
        return self._day_start_equity - self._equity

    def _loss_allowance(self) -> float | None:
        """Today's loss limit in the quote currency: the tighter of the absolute and the fractional one."""
        caps = []
        if self.limits.daily_loss_limit is not None:
            caps.append(self.limits.daily_loss_limit)
        if self.limits.daily_loss_fraction is not None and self._day_start_equity is not None:
            caps.append(self.limits.daily_loss_fraction * self._day_start_equity)
        return min(caps) if caps else None

    def tick(self) -> bool:
        """Apply the clock without an order (a new UTC day ends a daily-loss halt); True when that lifted a halt."""
        return self._roll_day(self.clock())

    def _roll_day(self, now: int) -> bool:
        day = now // DAY_MS
        if self._day == day:
            return False
        first = self._day is None
        self._day = day
        if first:
            return False
        # A new UTC day: its starting equity is the last one known, and a daily-loss halt ends.
        self._day_start_equity = self._equity
        return self.condition.discard(Reason.DAILY_LOSS_LIMIT)

    # --- the check ----------------------------------------------------------------------------------------------

    def check(
        self,
        order: ProposedOrder,
        *,
        last_price: float | None,
        exposure: Exposure = FLAT,
        open_orders: int = 0,
    ) -> RiskDenial | None:
        """None when the order may go out (it then takes a rate slot), else the first rule it breaks.

        `exposure` is the session's holding in the order's symbol and `open_orders` the count of its open orders.
        """
        now = self.clock()
        self._roll_day(now)
        denial = self._first_denial(order, last_price, exposure, open_orders, now)
        if denial is not None:
            self.denials[denial.code] += 1
        return denial

    def _first_denial(
        self, order: ProposedOrder, last: float | None, exposure: Exposure, open_orders: int, now: int
    ) -> RiskDenial | None:
        reduces = _reduces(order, exposure)
        if Reason.STALE_DATA in self.condition.reasons:
            return RiskDenial(
                DenialCode.STALE_DATA,
                f"market data is stale (no closed candle within its timeframe + 30 s): no order for {order.symbol} "
                "goes out until fresh data arrives; the session recovers by itself",
                {"symbol": order.symbol},
            )
        if self.condition.state is Condition.HALTED and not reduces:
            return self._halt_denial(order, now)
        if self.paused and not reduces:
            return RiskDenial(
                DenialCode.ENTRIES_PAUSED,
                f"new entries are paused: only orders that reduce the {order.symbol} position are allowed until "
                "the session is resumed",
                {"symbol": order.symbol, "position": exposure.position},
            )
        denial = self._band_denial(order, last)
        if denial is None and not reduces:
            denial = self._exposure_denial(order, last, exposure, open_orders)
        if denial is not None:
            return denial
        wait = self.limiter.acquire(self.account, now)
        if wait is not None:
            per_second = self.limiter.per_second
            return RiskDenial(
                DenialCode.ORDER_RATE_LIMITED,
                f"{per_second} orders already went out for account {self.account} in the last second; at most "
                f"{per_second} orders per second are allowed, the next slot frees in {wait} ms",
                {"account": self.account, "limit": per_second, "window_ms": self.limiter.window_ms, "retry_ms": wait},
            )
        return None

    def _halt_denial(self, order: ProposedOrder, now: int) -> RiskDenial:
        if Reason.DAILY_LOSS_LIMIT not in self.condition.reasons:
            reasons = sorted(self.condition.reasons & HALTING_REASONS)
            return RiskDenial(
                DenialCode.SESSION_HALTED,
                f"the session is halted ({', '.join(reasons)}): only orders that reduce a position are allowed",
                {"symbol": order.symbol, "reasons": reasons},
            )
        allowance = self._loss_allowance()
        next_day_ms = (now // DAY_MS + 1) * DAY_MS
        return RiskDenial(
            DenialCode.DAILY_LOSS_LIMIT,
            f"the session is halted: today's loss of {self.daily_loss:.2f} reached the daily loss limit of "
            f"{_n(allowance or 0.0)}; only orders that reduce a position are allowed until 00:00 UTC or a resume",
            {"symbol": order.symbol, "loss": self.daily_loss, "limit": allowance, "resumes_at": next_day_ms},
        )

    def _band_denial(self, order: ProposedOrder, last: float | None) -> RiskDenial | None:
        band = self.limits.price_band
        if band is None or order.price is None:
            return None
        # A limit is compared with the last trade; a stop-limit's limit with its own trigger, where it will rest.
        if order.type == "stop_limit" and order.stop is not None:
            ref, what = order.stop, "its stop price"
        elif last is not None:
            ref, what = last, "the last price"
        else:
            return RiskDenial(
                DenialCode.NO_REFERENCE_PRICE,
                f"no last price for {order.symbol} yet: a limit order can be checked against the price band only "
                "once a candle has closed",
                {"symbol": order.symbol},
            )
        if abs(order.price - ref) <= band * ref * (1 + BAND_TOLERANCE):
            return None
        low, high = ref * (1 - band), ref * (1 + band)
        return RiskDenial(
            DenialCode.PRICE_OUT_OF_BAND,
            f"limit price {_n(order.price)} is {abs(order.price / ref - 1):.2%} from {what} {_n(ref)}; at most "
            f"{band:.2%} is allowed ({_n(low)} to {_n(high)})",
            {"symbol": order.symbol, "price": order.price, "reference": ref, "band": band, "low": low, "high": high},
        )

    def _exposure_denial(
        self, order: ProposedOrder, last: float | None, exposure: Exposure, open_orders: int
    ) -> RiskDenial | None:
        cap = self.limits.max_open_orders
        if cap is not None and open_orders >= cap:
            return RiskDenial(
                DenialCode.MAX_OPEN_ORDERS,
                f"the session already has {open_orders} open orders; at most {cap} are allowed (cancel one first; "
                "orders that reduce a position are not limited)",
                {"open_orders": open_orders, "limit": cap},
            )
        max_order, max_position = self.limits.max_order_notional, self.limits.max_position_notional
        if max_order is None and max_position is None:
            return None
        price = order.price if order.price is not None else order.stop if order.stop is not None else last
        if price is None:
            return RiskDenial(
                DenialCode.NO_REFERENCE_PRICE,
                f"no last price for {order.symbol} yet: a market order's value cannot be checked against the "
                "notional limits until a candle has closed",
                {"symbol": order.symbol},
            )
        notional = order.amount * price
        if max_order is not None and notional > max_order:
            return RiskDenial(
                DenialCode.MAX_ORDER_NOTIONAL,
                f"order value {notional:.2f} ({_n(order.amount)} × {_n(price)}) exceeds the maximum of "
                f"{_n(max_order)} per order; at most {_n(max_order / price)} {_base(order.symbol)} at this price",
                {"symbol": order.symbol, "notional": notional, "limit": max_order},
            )
        if max_position is None:
            return None
        p = exposure.position
        after = p + exposure.open_buy + order.amount if order.side == "buy" else p - exposure.open_sell - order.amount
        mark = last if last is not None else price
        value = abs(after) * mark
        if value > max_position and abs(after) > abs(p):
            return RiskDenial(
                DenialCode.MAX_POSITION_NOTIONAL,
                f"the {order.symbol} position would be worth {value:.2f} ({_n(after)} at {_n(mark)}, open orders "
                f"included); at most {_n(max_position)} per symbol is allowed",
                {"symbol": order.symbol, "position_after": after, "notional": value, "limit": max_position},
            )
        return None

    # --- reporting and persistence ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What /status/detailed shows of risk: condition, reasons, pause, denials by code, today's loss, limits."""
        now = self.clock()
        self._roll_day(now)
        return {
            **self.condition.to_dict(),
            "paused": self.paused,
            "denials": dict(sorted(self.denials.items())),
            "daily_loss": {
                "day_start_equity": self._day_start_equity,
                "equity": self._equity,
                "loss": self.daily_loss,
                "limit": self._loss_allowance(),
            },
            "orders_last_second": self.limiter.used(self.account, now),
            "limits": self.limits.model_dump(),
        }

    def state(self) -> dict[str, Any]:
        """The gate's state to persist with the session (the rate window is not kept: it lasts a second)."""
        return {
            "condition": self.condition.to_dict(),
            "paused": self.paused,
            "denials": dict(self.denials),
            "day": self._day,
            "day_start_equity": self._day_start_equity,
            "equity": self._equity,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what `state` saved (after a restart); a halt from a past UTC day ends on the next check."""
        restored = SessionCondition.from_dict(state.get("condition", {}))
        self.condition.reasons.clear()
        self.condition.reasons.update(restored.reasons)
        self.paused = bool(state.get("paused", False))
        self.denials = Counter({str(k): int(v) for k, v in state.get("denials", {}).items()})
        self._day = state.get("day")
        self._day_start_equity = state.get("day_start_equity")
        self._equity = state.get("equity")
