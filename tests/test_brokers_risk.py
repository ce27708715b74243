"""Risk limits of a session: each rule denies with its code and a clear message, and allows up to its limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from cracktrader.brokers.orders import ManagedOrder
from cracktrader.brokers.risk import (
    DAY_MS,
    Condition,
    DenialCode,
    Exposure,
    InvalidRiskLimitsError,
    OrderRateLimiter,
    Reason,
    RiskGate,
    RiskLimits,
    SessionCondition,
    parse_risk_limits,
)

DAY1 = 1_640_995_200_000  # 2022-01-01 00:00 UTC
T10 = DAY1 + 10 * 3_600_000  # 10:00 UTC that day
SYM = "BTC/USDT"


class FakeClock:
    """A clock the test moves by hand (ms)."""

    def __init__(self, now: int = T10) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass(frozen=True)
class Order:
    """A proposed order with just the fields the gate reads."""

    side: str = "buy"
    amount: float = 0.01
    type: str = "market"
    price: float | None = None
    stop: float | None = None
    symbol: str = SYM


def gate(clock: FakeClock | None = None, **limits: Any) -> RiskGate:
    return RiskGate(RiskLimits(**limits), clock or FakeClock(), account="binance:main")


def check(g: RiskGate, order: Order, last: float | None = 100_000.0, **kw: Any) -> Any:
    return g.check(order, last_price=last, **kw)  # type: ignore[arg-type]


# --- configuration ----------------------------------------------------------------------------------------------


def test_defaults_are_ten_orders_per_second_a_five_percent_band_and_fifty_open_orders() -> None:
    limits = parse_risk_limits(None)
    assert limits.model_dump() == {
        "capital": None,
        "max_order_notional": None,
        "max_position_notional": None,
        "max_open_orders": 50,
        "orders_per_second": 10,
        "price_band": 0.05,
        "daily_loss_limit": None,
        "daily_loss_fraction": None,
    }
    assert parse_risk_limits({"sandbox": True}) == limits


def test_risk_section_is_read_from_exchange_config() -> None:
    limits = parse_risk_limits({"risk": {"max_order_notional": 1000, "price_band": None, "daily_loss_limit": 250.5}})
    assert (limits.max_order_notional, limits.price_band, limits.daily_loss_limit) == (1000.0, None, 250.5)


@pytest.mark.parametrize(
    ("risk", "fragment"),
    [
        ({"max_orders_per_minute": 5}, "exchange_config.risk.max_orders_per_minute: Extra inputs are not permitted"),
        ({"price_band": 0}, "exchange_config.risk.price_band: Input should be greater than 0"),
        ({"price_band": 1.5}, "exchange_config.risk.price_band: Input should be less than or equal to 1"),
        ({"orders_per_second": True}, "exchange_config.risk.orders_per_second: Input should be a valid integer"),
        ({"max_open_orders": "5"}, "exchange_config.risk.max_open_orders: Input should be a valid integer"),
        ({"daily_loss_limit": float("inf")}, "exchange_config.risk.daily_loss_limit: Input should be a finite number"),
    ],
)
def test_invalid_risk_settings_are_refused_naming_the_key_and_the_accepted_keys(
    risk: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidRiskLimitsError) as err:
        parse_risk_limits({"risk": risk})
    assert fragment in err.value.message
    assert "accepted keys: max_order_notional, max_position_notional, max_open_orders" in err.value.message
    assert (err.value.code, err.value.status_code) == ("VALIDATION_ERROR", 422)


def test_risk_section_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidRiskLimitsError, match=r"exchange_config\.risk must be an object, got list"):
        parse_risk_limits({"risk": [1, 2]})


# --- notional per order -------------------------------------------------------------------------------------------


def test_order_notional_up_to_the_maximum_passes() -> None:
    g = gate(max_order_notional=1000)
    assert check(g, Order(amount=0.0099)) is None
    assert check(g, Order(amount=0.01)) is None  # exactly 1000


def test_order_notional_over_the_maximum_is_denied_with_the_allowed_amount() -> None:
    g = gate(max_order_notional=1000)
    denial = check(g, Order(amount=0.0101))
    assert denial.code is DenialCode.MAX_ORDER_NOTIONAL
    assert denial.message == (
        "order value 1010.00 (0.0101 × 100000) exceeds the maximum of 1000 per order; at most 0.01 BTC at this price"
    )
    assert denial.details == {"symbol": SYM, "notional": 1010.0, "limit": 1000.0}


def test_limit_order_notional_is_valued_at_its_limit_price() -> None:
    g = gate(max_order_notional=1000)
    assert check(g, Order(amount=0.0102, type="limit", price=98_000.0)) is None  # 999.6
    assert check(g, Order(amount=0.0102, type="limit", price=99_000.0)).code is DenialCode.MAX_ORDER_NOTIONAL


def test_market_order_without_a_last_price_is_denied_when_notional_limits_apply() -> None:
    denial = check(gate(max_order_notional=1000), Order(), last=None)
    assert denial.code is DenialCode.NO_REFERENCE_PRICE
    assert "no last price for BTC/USDT yet" in denial.message


# --- position notional per symbol --------------------------------------------------------------------------------


def test_position_notional_up_to_the_maximum_passes() -> None:
    g = gate(max_position_notional=5000)
    assert check(g, Order(amount=0.01), exposure=Exposure(position=0.04)) is None  # 0.05 × 100000 = 5000


def test_position_notional_counts_same_side_open_orders() -> None:
    g = gate(max_position_notional=5000)
    denial = check(g, Order(amount=0.01), exposure=Exposure(position=0.04, open_buy=0.005, open_sell=1.0))
    assert denial.code is DenialCode.MAX_POSITION_NOTIONAL
    assert denial.message == (
        "the BTC/USDT position would be worth 5500.00 (0.055 at 100000, open orders included); "
        "at most 5000 per symbol is allowed"
    )


def test_short_position_notional_is_limited_too() -> None:
    g = gate(max_position_notional=5000)
    assert check(g, Order(side="sell", amount=0.05)) is None
    assert check(g, Order(side="sell", amount=0.051)).code is DenialCode.MAX_POSITION_NOTIONAL


def test_reducing_order_passes_even_when_the_position_is_over_its_limits() -> None:
    g = gate(max_position_notional=5000, max_order_notional=1000, max_open_orders=1)
    big = Exposure(position=0.2)  # worth 20000
    assert check(g, Order(side="sell", amount=0.2), exposure=big, open_orders=5) is None
    flip = check(g, Order(side="sell", amount=0.21), exposure=big)  # would go short: not only reducing
    assert flip.code is DenialCode.MAX_ORDER_NOTIONAL


# --- open orders --------------------------------------------------------------------------------------------------


def test_open_orders_up_to_the_maximum_pass_and_one_more_is_denied() -> None:
    g = gate(max_open_orders=3)
    assert check(g, Order(), open_orders=2) is None
    denial = check(g, Order(), open_orders=3)
    assert denial.code is DenialCode.MAX_OPEN_ORDERS
    assert denial.message.startswith("the session already has 3 open orders; at most 3 are allowed")
    assert check(g, Order(side="sell", amount=0.01), open_orders=3, exposure=Exposure(position=0.01)) is None


# --- price band ---------------------------------------------------------------------------------------------------


def test_limit_within_five_percent_of_the_last_price_passes() -> None:
    g = gate()
    assert check(g, Order(type="limit", price=105.0), last=100.0) is None  # exactly on the edge
    assert check(g, Order(side="sell", type="limit", price=95.0), last=100.0) is None
    assert check(g, Order(type="limit", price=104.99), last=100.0) is None


def test_limit_more_than_five_percent_from_the_last_price_is_denied_with_the_band() -> None:
    g = gate()
    denial = check(g, Order(type="limit", price=105.01), last=100.0)
    assert denial.code is DenialCode.PRICE_OUT_OF_BAND
    assert denial.message == (
        "limit price 105.01 is 5.01% from the last price 100; at most 5.00% is allowed (95 to 105)"
    )
    assert check(g, Order(type="limit", price=94.99), last=100.0).code is DenialCode.PRICE_OUT_OF_BAND


def test_band_applies_to_reducing_orders_too() -> None:
    denial = check(gate(), Order(side="sell", type="limit", price=80.0), last=100.0, exposure=Exposure(position=1))
    assert denial.code is DenialCode.PRICE_OUT_OF_BAND


def test_stop_limit_price_is_banded_around_its_stop() -> None:
    g = gate()
    assert check(g, Order(type="stop_limit", price=126.0, stop=120.0), last=100.0) is None
    denial = check(g, Order(type="stop_limit", price=127.0, stop=120.0), last=100.0)
    assert denial.code is DenialCode.PRICE_OUT_OF_BAND and "from its stop price 120" in denial.message


def test_market_and_stop_orders_have_no_band_and_a_band_of_none_is_off() -> None:
    assert check(gate(), Order(type="stop", stop=150.0), last=100.0) is None
    assert check(gate(), Order(), last=100.0) is None
    assert check(gate(price_band=None), Order(type="limit", price=500.0), last=100.0) is None


def test_limit_without_a_last_price_is_denied_by_the_band() -> None:
    denial = check(gate(), Order(type="limit", price=100.0), last=None)
    assert denial.code is DenialCode.NO_REFERENCE_PRICE


# --- rate limit ---------------------------------------------------------------------------------------------------


def test_ten_orders_in_one_second_pass_the_eleventh_is_rate_limited_then_the_window_slides() -> None:
    clock = FakeClock(T10)
    g = gate(clock)
    for i in range(10):
        clock.now = T10 + i * 100
        assert check(g, Order()) is None
    clock.now = T10 + 999
    denial = check(g, Order())
    assert denial.code is DenialCode.ORDER_RATE_LIMITED
    assert denial.message == (
        "10 orders already went out for account binance:main in the last second; "
        "at most 10 orders per second are allowed, the next slot frees in 1 ms"
    )
    assert denial.details["retry_ms"] == 1
    clock.now = T10 + 1000  # the first order left the window
    assert check(g, Order()) is None
    clock.now = T10 + 1050
    assert check(g, Order()).code is DenialCode.ORDER_RATE_LIMITED
    clock.now = T10 + 1100
    assert check(g, Order()) is None
    assert g.denials == {"ORDER_RATE_LIMITED": 2}


def test_orders_denied_by_another_rule_take_no_rate_slot() -> None:
    clock = FakeClock(T10)
    g = gate(clock, max_order_notional=1)
    for _ in range(20):
        assert check(g, Order()).code is DenialCode.MAX_ORDER_NOTIONAL
    assert check(g, Order(amount=0.00001)) is None  # 1.0
    assert g.status()["orders_last_second"] == 1


def test_sessions_on_one_account_share_its_rate_limit_and_other_accounts_do_not() -> None:
    clock = FakeClock(T10)
    shared = OrderRateLimiter(per_second=10)
    a = RiskGate(RiskLimits(), clock, account="binance:main", limiter=shared)
    b = RiskGate(RiskLimits(), clock, account="binance:main", limiter=shared)
    other = RiskGate(RiskLimits(), clock, account="binance:sub", limiter=shared)
    for _ in range(5):
        assert check(a, Order()) is None and check(b, Order()) is None
    assert check(a, Order()).code is DenialCode.ORDER_RATE_LIMITED
    assert check(other, Order()) is None


def test_configured_orders_per_second_sets_the_gates_own_limiter() -> None:
    clock = FakeClock(T10)
    g = gate(clock, orders_per_second=2)
    assert [check(g, Order()) is None for _ in range(3)] == [True, True, False]


# --- stale data, pause --------------------------------------------------------------------------------------------


def test_stale_data_degrades_the_session_and_denies_every_order_until_fresh() -> None:
    g = gate()
    assert g.set_stale(True) is True and g.set_stale(True) is False
    assert g.condition.to_dict() == {"condition": "degraded", "reasons": ["STALE_DATA"]}
    denial = check(g, Order())
    assert denial.code is DenialCode.STALE_DATA
    assert "market data is stale" in denial.message and "recovers by itself" in denial.message
    assert check(g, Order(side="sell"), exposure=Exposure(position=1)).code is DenialCode.STALE_DATA
    g.set_stale(False)
    assert g.condition.to_dict() == {"condition": "ok", "reasons": []}
    assert check(g, Order()) is None


def test_pause_denies_entries_and_lets_reducing_orders_through_until_resumed() -> None:
    g = gate()
    g.pause()
    denial = check(g, Order())
    assert denial.code is DenialCode.ENTRIES_PAUSED
    assert "only orders that reduce the BTC/USDT position are allowed" in denial.message
    assert check(g, Order(side="sell", amount=0.5), exposure=Exposure(position=0.5)) is None
    g.resume()
    assert check(g, Order()) is None


# --- daily loss ---------------------------------------------------------------------------------------------------


def test_daily_loss_limit_halts_the_session_and_only_reducing_orders_pass() -> None:
    clock = FakeClock(T10)
    g = gate(clock, daily_loss_limit=500)
    assert g.mark_equity(10_000.0) is False
    assert g.mark_equity(9_500.01) is False and not g.halted
    assert g.mark_equity(9_500.0) is True  # a loss of exactly 500 reaches the limit
    assert g.halted and g.condition.to_dict() == {"condition": "halted", "reasons": ["DAILY_LOSS_LIMIT"]}
    assert g.mark_equity(9_400.0) is False  # already halted
    denial = check(g, Order())
    assert denial.code is DenialCode.DAILY_LOSS_LIMIT
    assert denial.message == (
        "the session is halted: today's loss of 600.00 reached the daily loss limit of 500; "
        "only orders that reduce a position are allowed until 00:00 UTC or a resume"
    )
    assert denial.details["resumes_at"] == DAY1 + DAY_MS
    assert check(g, Order(side="sell", amount=0.1), exposure=Exposure(position=0.1)) is None
    assert check(g, Order(side="sell", amount=0.2), exposure=Exposure(position=0.1)).code is DenialCode.DAILY_LOSS_LIMIT
    short = Exposure(position=-0.3, open_buy=0.1)
    assert check(g, Order(amount=0.2), exposure=short) is None  # closes the short with the open buy
    assert check(g, Order(amount=0.25), exposure=short).code is DenialCode.DAILY_LOSS_LIMIT


def test_halt_ends_at_the_next_utc_day_and_the_day_starts_from_the_last_equity() -> None:
    clock = FakeClock(T10)
    g = gate(clock, daily_loss_limit=500)
    g.mark_equity(10_000.0)
    g.mark_equity(9_000.0)
    clock.now = DAY1 + DAY_MS - 1  # 23:59:59.999
    assert check(g, Order()).code is DenialCode.DAILY_LOSS_LIMIT
    clock.now = DAY1 + DAY_MS  # 00:00 UTC the next day
    assert check(g, Order()) is None
    assert g.condition.state is Condition.OK
    assert g.status()["daily_loss"] == {"day_start_equity": 9_000.0, "equity": 9_000.0, "loss": 0.0, "limit": 500.0}
    assert g.mark_equity(8_600.0) is False and g.mark_equity(8_500.0) is True


def test_tick_reports_when_the_new_day_lifted_the_halt() -> None:
    clock = FakeClock(T10)
    g = gate(clock, daily_loss_limit=500)
    g.mark_equity(10_000.0)
    g.mark_equity(9_000.0)
    assert g.tick() is False
    clock.now = DAY1 + DAY_MS + 5
    assert g.tick() is True
    assert g.condition.to_dict() == {"condition": "ok", "reasons": []}
    assert g.tick() is False


def test_resume_lifts_the_halt_and_counts_the_loss_afresh() -> None:
    clock = FakeClock(T10)
    g = gate(clock, daily_loss_limit=500)
    g.mark_equity(10_000.0)
    g.mark_equity(9_400.0)
    assert g.halted
    g.resume()
    assert not g.halted and check(g, Order()) is None
    assert g.mark_equity(9_000.1) is False  # 399.9 below the resumed equity
    assert g.mark_equity(8_900.0) is True


def test_daily_loss_fraction_halts_at_that_share_of_the_days_starting_equity() -> None:
    g = gate(daily_loss_fraction=0.05)
    g.mark_equity(20_000.0)
    assert g.mark_equity(19_000.01) is False
    assert g.mark_equity(19_000.0) is True


def test_the_tighter_of_the_two_daily_loss_limits_applies() -> None:
    g = gate(daily_loss_limit=500, daily_loss_fraction=0.10)
    g.mark_equity(2_000.0)  # 10 % is 200 here
    assert g.mark_equity(1_800.0) is True


def test_gains_never_halt() -> None:
    g = gate(daily_loss_limit=1)
    g.mark_equity(100.0)
    assert g.mark_equity(10_000.0) is False and g.daily_loss == -9_900.0


# --- condition, counts, persistence -------------------------------------------------------------------------------


def test_condition_is_ok_degraded_or_halted_by_its_reasons() -> None:
    c = SessionCondition()
    assert c.state is Condition.OK
    c.add(Reason.STALE_DATA)
    assert c.state is Condition.DEGRADED
    c.add(Reason.DAILY_LOSS_LIMIT)
    assert c.to_dict() == {"condition": "halted", "reasons": ["DAILY_LOSS_LIMIT", "STALE_DATA"]}
    assert SessionCondition.from_dict(c.to_dict()) == c
    assert c.discard(Reason.DAILY_LOSS_LIMIT) is True and c.discard(Reason.DAILY_LOSS_LIMIT) is False
    c.add("EXCHANGE_UNREACHABLE")  # the runtime may add its own reasons: they degrade
    assert c.to_dict() == {"condition": "degraded", "reasons": ["EXCHANGE_UNREACHABLE", "STALE_DATA"]}


def test_denials_are_counted_per_code_for_status_detailed() -> None:
    clock = FakeClock(T10)
    g = gate(clock, max_order_notional=1000, orders_per_second=1)
    check(g, Order(amount=1))
    check(g, Order(amount=2))
    check(g, Order(type="limit", price=1.0))
    check(g, Order(amount=0.001))
    check(g, Order(amount=0.001))
    status = g.status()
    assert status["denials"] == {"MAX_ORDER_NOTIONAL": 2, "ORDER_RATE_LIMITED": 1, "PRICE_OUT_OF_BAND": 1}
    assert (status["condition"], status["reasons"], status["paused"]) == ("ok", [], False)
    assert status["limits"]["max_order_notional"] == 1000.0


def test_a_halted_gate_restored_after_a_restart_stays_halted_until_the_next_day() -> None:
    clock = FakeClock(T10)
    g = gate(clock, daily_loss_limit=500)
    g.mark_equity(10_000.0)
    g.mark_equity(9_000.0)
    check(g, Order())
    revived = gate(clock, daily_loss_limit=500)
    revived.restore(g.state())
    assert revived.halted and revived.denials == {"DAILY_LOSS_LIMIT": 1}
    assert check(revived, Order()).code is DenialCode.DAILY_LOSS_LIMIT
    clock.now = DAY1 + DAY_MS
    assert check(revived, Order()) is None


def test_a_managed_order_is_checked_as_it_is() -> None:
    g = gate(max_order_notional=1000)
    order = ManagedOrder("c1", "binance", SYM, "buy", "limit", 0.02, T10, price=99_000.0)
    denial = g.check(order, last_price=100_000.0)
    assert denial is not None and denial.code is DenialCode.MAX_ORDER_NOTIONAL
    assert denial.to_dict()["code"] == "MAX_ORDER_NOTIONAL"
