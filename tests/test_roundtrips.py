"""Round trips of fills: partial closes, adding to a position, shorts and flips; sorting; monthly returns."""

from __future__ import annotations

import numpy as np
import pytest

from cracktrader.engine.records import REASON_SIGNAL, REASON_STOP_LOSS, STATUS_FILLED, STATUS_REJECTED
from cracktrader.runs.breakdowns import monthly
from cracktrader.runs.results import EQUITY_DTYPE, ORDER_DTYPE, RunResults, make_head
from cracktrader.runs.roundtrips import round_trip_dicts, round_trips, sort_round_trips

H = 3_600_000


def _orders(rows: list[tuple[int, int, float, float, float, float | None, int]]) -> np.ndarray:
    """(hour, side, size, price, fee, pnl, reason) fills of symbol 0, numbered from 1."""
    out = np.zeros(len(rows), ORDER_DTYPE)
    for k, (hour, side, size, price, fee, pnl, reason) in enumerate(rows):
        out[k] = (k + 1, hour * H, hour * H, 0, side, 0, STATUS_FILLED, reason, size, price, np.nan, fee,
                  np.nan if pnl is None else pnl, np.nan if pnl is None else pnl / 100, )  # fmt: skip
    return out


def _results(orders: np.ndarray, params: dict[str, float] | None = None) -> RunResults:
    config = {"strategy_params": params or {}}
    head = make_head(run_id="r", config=config, status="completed", symbols=["BTC/USDT"], initial_cash=1000.0)
    return RunResults(head, np.zeros(0, EQUITY_DTYPE), orders)


def test_adding_then_closing_in_two_parts_makes_two_round_trips_at_the_average_entry() -> None:
    orders = _orders(
        [
            (0, 1, 1.0, 100.0, 1.0, None, REASON_SIGNAL),
            (1, 1, 1.0, 110.0, 1.0, None, REASON_SIGNAL),  # average entry 105, entry fees 2
            (2, -1, 0.5, 120.0, 0.5, 7.0, REASON_SIGNAL),  # closes a quarter
            (3, -1, 1.5, 90.0, 1.5, -24.0, REASON_STOP_LOSS),  # closes the rest
        ]
    )
    orders["trigger"][3] = 91.0  # the stop that filled
    trips = round_trip_dicts(round_trips(_results(orders, {"stop_loss": 0.1})), ("BTC/USDT",))
    assert [(t["size"], t["entry_price"], t["exit_price"], t["pnl"]) for t in trips] == [
        (0.5, 105.0, 120.0, 7.0),
        (1.5, 105.0, 90.0, -24.0),
    ]
    assert [t["fees"] for t in trips] == [pytest.approx(0.5 + 0.5), pytest.approx(1.5 + 1.5)]
    assert [t["entry_time"] for t in trips] == ["1970-01-01T00:00:00Z"] * 2
    assert trips[0]["stop_loss"] == pytest.approx(94.5) and trips[1]["stop_loss"] == 91.0
    assert trips[1]["exit_reason"] == "stop_loss" and trips[1]["duration_s"] == 3 * 3600.0
    assert trips[0]["take_profit"] is None  # the run set no take-profit


def test_a_fill_larger_than_the_position_closes_it_and_opens_the_other_side() -> None:
    orders = _orders(
        [
            (0, 1, 1.0, 100.0, 1.0, None, REASON_SIGNAL),
            (1, -1, 3.0, 90.0, 3.0, -11.0, REASON_SIGNAL),  # closes 1 long, opens 2 short at 90
            (2, 1, 2.0, 80.0, 2.0, 16.0, REASON_SIGNAL),
        ]
    )
    trips = round_trip_dicts(round_trips(_results(orders)), ("BTC/USDT",))
    assert [(t["side"], t["size"], t["entry_price"], t["exit_price"]) for t in trips] == [
        ("long", 1.0, 100.0, 90.0),
        ("short", 2.0, 90.0, 80.0),
    ]
    assert trips[0]["fees"] == pytest.approx(1.0 + 1.0) and trips[1]["fees"] == pytest.approx(2.0 + 2.0)
    assert trips[1]["entry_time"] == "1970-01-01T01:00:00Z"


def test_rejected_orders_are_no_round_trips_and_an_open_position_is_none_yet() -> None:
    orders = _orders([(0, 1, 1.0, 100.0, 0.0, None, REASON_SIGNAL), (1, -1, 1.0, 101.0, 0.0, 1.0, REASON_SIGNAL)])
    orders = np.concatenate([orders, orders[:1]])
    orders["status"][2] = STATUS_REJECTED
    assert round_trips(_results(orders)).shape[0] == 1
    assert round_trips(_results(orders[:1])).shape[0] == 0


def test_sorting_is_stable_both_ways() -> None:
    rows = [(2 * k, 1, 1.0, 100.0, 0.0, None, REASON_SIGNAL) for k in range(4)]
    rows = [r for k in range(4) for r in (rows[k], (2 * k + 1, -1, 1.0, 100.0, 0.0, [3.0, 1.0, 3.0, 2.0][k], 0))]
    trips = round_trips(_results(_orders(rows)))
    desc = sort_round_trips(trips, by="pnl", descending=True)
    assert desc["pnl"].tolist() == [3.0, 3.0, 2.0, 1.0] and desc["exit_ts"][0] < desc["exit_ts"][1]
    asc = sort_round_trips(trips, by="pnl", descending=False)
    assert asc["pnl"].tolist() == [1.0, 2.0, 3.0, 3.0] and asc["exit_ts"][2] < asc["exit_ts"][3]


def test_monthly_returns_chain_month_ends() -> None:
    equity = np.zeros(4, EQUITY_DTYPE)
    jan, feb = 1_704_067_200_000, 1_706_745_600_000  # 2024-01-01, 2024-02-01
    equity[:] = [(jan, 1000.0, 0), (jan + H, 1100.0, 0), (feb, 1000.0, 0), (feb + H, 990.0, 0)]
    head = make_head(run_id="r", config={}, status="completed", initial_cash=1000.0)
    months = monthly(RunResults(head, equity, np.zeros(0, ORDER_DTYPE)))
    assert [(m["month"], m["start_value"], m["end_value"]) for m in months] == [
        ("2024-01", 1000.0, 1100.0),
        ("2024-02", 1100.0, 990.0),
    ]
    assert months[0]["return_pct"] == pytest.approx(10.0) and months[1]["return_pct"] == pytest.approx(-10.0)
