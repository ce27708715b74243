"""The one order model: its state machine, fills applied once with exact averages, and the `orders` channel shape."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cracktrader.brokers.orders import (
    CHANNEL_KEYS,
    TRANSITIONS,
    DuplicateOrderError,
    IllegalTransitionError,
    InvalidOrderError,
    ManagedOrder,
    OrderLedger,
    OrderNotFoundError,
    OrderStatus,
    OverfillError,
    TradeFill,
)

S = OrderStatus
EX = "binance"
SYM = "BTC/USDT"
T0 = 1_640_995_200_000  # 2022-01-01 00:00 UTC, seed 001's example timestamp

# The state machine as the issue states it, written out so that a change to the module's table fails here.
EXPECTED_TRANSITIONS = {
    (S.PENDING_NEW, S.SUBMITTED),
    (S.PENDING_NEW, S.REJECTED),
    (S.PENDING_NEW, S.CANCELED),
    (S.SUBMITTED, S.OPEN),
    (S.SUBMITTED, S.PARTIALLY_FILLED),
    (S.SUBMITTED, S.FILLED),
    (S.SUBMITTED, S.CANCELED),
    (S.SUBMITTED, S.EXPIRED),
    (S.SUBMITTED, S.REJECTED),
    (S.OPEN, S.PARTIALLY_FILLED),
    (S.OPEN, S.FILLED),
    (S.OPEN, S.CANCELED),
    (S.OPEN, S.EXPIRED),
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
    (S.PARTIALLY_FILLED, S.FILLED),
    (S.PARTIALLY_FILLED, S.CANCELED),
    (S.PARTIALLY_FILLED, S.EXPIRED),
    # live: an order sent without a known outcome, a cancel in flight, an unknown order never seen
    (S.SUBMITTED, S.UNKNOWN),
    (S.SUBMITTED, S.PENDING_CANCEL),
    (S.OPEN, S.PENDING_CANCEL),
    (S.PARTIALLY_FILLED, S.PENDING_CANCEL),
    *((S.UNKNOWN, b) for b in (S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED)),
    (S.UNKNOWN, S.REJECTED_UNCONFIRMED),
    (S.UNKNOWN, S.PENDING_CANCEL),
    *((S.PENDING_CANCEL, b) for b in (S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED)),
    (S.PENDING_CANCEL, S.PENDING_CANCEL),
    *((S.REJECTED_UNCONFIRMED, b) for b in (S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED)),
}
ALL_PAIRS = {(a, b) for a in S for b in S}


def limit_order(cid: str = "c1", amount: float = 0.3, price: float = 105.0, side: str = "buy") -> ManagedOrder:
    return ManagedOrder(cid, EX, SYM, side, "limit", amount, T0, price=price)  # type: ignore[arg-type]


def fill(
    trade_id: str, qty: float, price: float, *, cid: str | None = "c1", xid: str | None = None, **kw: Any
) -> TradeFill:
    return TradeFill(EX, SYM, trade_id, qty, price, T0 + 10, client_order_id=cid, exchange_order_id=xid, **kw)


def ledger_with(status: OrderStatus) -> OrderLedger:
    """A ledger holding order c1 (limit buy 0.3 @ 105) driven to `status` through the ledger's own calls."""
    book = OrderLedger()
    book.add(limit_order())
    path = {
        S.PENDING_NEW: [],
        S.SUBMITTED: ["submit"],
        S.OPEN: ["submit", "ack"],
        S.PARTIALLY_FILLED: ["submit", "ack", "half"],
        S.FILLED: ["submit", "ack", "all"],
        S.CANCELED: ["cancel"],
        S.EXPIRED: ["submit", "expire"],
        S.REJECTED: ["reject"],
        S.UNKNOWN: ["submit", "unknown"],
        S.PENDING_CANCEL: ["submit", "ack", "pending_cancel"],
        S.REJECTED_UNCONFIRMED: ["submit", "unknown", "rejected_unconfirmed"],
    }[status]
    for step in path:
        if step == "submit":
            book.submit("c1", T0 + 1)
        elif step == "ack":
            book.acknowledge("c1", "x1", T0 + 2)
        elif step == "half":
            book.apply_fill(fill("t-half", 0.1, 100.0))
        elif step == "all":
            book.apply_fill(fill("t-all", 0.3, 100.0))
        elif step == "cancel":
            book.cancel("c1", T0 + 1)
        elif step == "expire":
            book.expire("c1", T0 + 1)
        elif step == "reject":
            book.reject("c1", T0 + 1, "MAX_ORDER_NOTIONAL")
        else:
            book.transition("c1", OrderStatus(step), T0 + 3)
    assert book.get("c1").status is status
    return book


def move(book: OrderLedger, target: OrderStatus) -> None:
    """Drive c1 to `target` the way the runtime would: fills for the filled states, transitions otherwise."""
    if book.get("c1").status is S.PENDING_CANCEL and target in (S.OPEN, S.PARTIALLY_FILLED):
        if target is S.PARTIALLY_FILLED:  # a fill while the cancel is in flight keeps it pending_cancel
            book.apply_fill(fill("t-move", 0.05, 101.0))
            assert book.get("c1").status is S.PENDING_CANCEL
        book.cancel_refused("c1", T0 + 50)
    elif target is S.PARTIALLY_FILLED:
        book.apply_fill(fill("t-move", 0.05, 101.0))
    elif target is S.FILLED:
        book.apply_fill(fill("t-move", book.get("c1").remaining, 101.0))
    elif target is S.OPEN:
        book.acknowledge("c1", "x1", T0 + 50)
    else:
        book.transition("c1", target, T0 + 50, reason="test")


def test_transition_table_is_the_issues_state_machine() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == EXPECTED_TRANSITIONS
    assert set(TRANSITIONS) == set(S)


def test_final_states_are_filled_canceled_expired_rejected_and_allow_nothing() -> None:
    assert {s for s in S if s.is_final} == {S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED}
    assert all(not TRANSITIONS[s] for s in S if s.is_final)


@pytest.mark.parametrize(("start", "target"), sorted(EXPECTED_TRANSITIONS), ids=lambda s: str(s))
def test_every_allowed_transition_succeeds_and_stamps_the_time(start: OrderStatus, target: OrderStatus) -> None:
    book = ledger_with(start)
    move(book, target)
    order = book.get("c1")
    assert order.status is target
    assert order.updated_at in (T0 + 10, T0 + 50)


@pytest.mark.parametrize(
    ("start", "target"),
    sorted((a, b) for a, b in ALL_PAIRS - EXPECTED_TRANSITIONS if b not in (S.PARTIALLY_FILLED, S.FILLED)),
    ids=lambda s: str(s),
)
def test_every_illegal_transition_raises_naming_both_states(start: OrderStatus, target: OrderStatus) -> None:
    book = ledger_with(start)
    before = book.get("c1").updated_at
    with pytest.raises(IllegalTransitionError) as err:
        book.transition("c1", target, T0 + 50)
    assert f"order c1 cannot go from {start} to {target}" in err.value.message
    assert err.value.details["from"] == start and err.value.details["to"] == target
    assert (book.get("c1").status, book.get("c1").updated_at) == (start, before)


def test_illegal_transition_message_lists_what_is_allowed() -> None:
    book = ledger_with(S.OPEN)
    with pytest.raises(IllegalTransitionError) as err:
        book.transition("c1", S.SUBMITTED, T0 + 5)
    assert err.value.message == (
        "order c1 cannot go from open to submitted: "
        "from open it may go to partially_filled, pending_cancel, filled, canceled, expired"
    )
    assert err.value.code == "ILLEGAL_ORDER_TRANSITION"


def test_cancel_of_a_filled_order_says_filled_is_final() -> None:
    book = ledger_with(S.FILLED)
    with pytest.raises(IllegalTransitionError, match="order c1 cannot go from filled to canceled: filled is final"):
        book.cancel("c1", T0 + 5)


def test_fill_of_a_pending_new_order_is_illegal_because_it_was_never_sent() -> None:
    book = ledger_with(S.PENDING_NEW)
    with pytest.raises(IllegalTransitionError, match="from pending_new to partially_filled"):
        book.apply_fill(fill("t1", 0.1, 100.0))
    assert book.get("c1").filled == 0.0


def test_filled_states_are_reached_only_through_fills() -> None:
    book = ledger_with(S.OPEN)
    with pytest.raises(InvalidOrderError, match="only through a fill"):
        book.transition("c1", S.FILLED, T0 + 5)


def test_acknowledge_records_the_exchange_id_and_opens_the_order() -> None:
    book = ledger_with(S.SUBMITTED)
    event = book.acknowledge("c1", "x1", T0 + 2)
    assert (event.status, event.exchange_order_id, event.timestamp) == (S.OPEN, "x1", T0 + 2)
    assert book.find(EX, "x1") is book.get("c1")
    assert book.find("kraken", "x1") is None


def test_acknowledge_after_a_fill_overtook_it_keeps_the_fill_state() -> None:
    book = ledger_with(S.SUBMITTED)
    book.apply_fill(fill("t1", 0.1, 100.0))
    event = book.acknowledge("c1", "x1", T0 + 20)
    assert (event.status, event.exchange_order_id) == (S.PARTIALLY_FILLED, "x1")


def test_partial_fills_then_fill_give_the_exact_volume_weighted_average() -> None:
    book = ledger_with(S.OPEN)
    first = book.apply_fill(fill("t1", 0.1, 100, fee=0.01, fee_currency="USDT"))
    second = book.apply_fill(fill("t2", 0.2, 103, fee=0.0206, fee_currency="USDT"))
    order = book.get("c1")
    assert first is not None and second is not None
    assert (first.status, first.filled, first.average_price) == (S.PARTIALLY_FILLED, 0.1, 100.0)
    assert (second.status, second.filled) == (S.FILLED, 0.3)
    # 0.1 * 100 + 0.2 * 103 = 30.6 over 0.3: exactly 102 (floats would give 101.99999999999999).
    assert order.average_price_exact == Fraction(102)
    assert order.average_price == 102.0
    assert (0.1 * 100 + 0.2 * 103) / (0.1 + 0.2) != 102.0
    assert order.filled_qty == Fraction(3, 10)
    assert order.remaining == 0.0
    assert order.fees == {"USDT": Fraction("0.0306")}
    assert order.fees_paid == {"USDT": 0.0306}


def test_fees_are_summed_per_currency_and_rebates_subtract() -> None:
    book = ledger_with(S.OPEN)
    book.apply_fill(fill("t1", 0.1, 100, fee=0.0001, fee_currency="BTC"))
    book.apply_fill(fill("t2", 0.1, 100, fee=0.5, fee_currency="BNB"))
    book.apply_fill(fill("t3", 0.05, 100, fee=-0.2, fee_currency="BNB"))
    assert book.get("c1").fees_paid == {"BTC": 0.0001, "BNB": 0.3}


def test_duplicate_trade_id_is_ignored_and_counted() -> None:
    book = ledger_with(S.OPEN)
    assert book.apply_fill(fill("t1", 0.1, 100.0)) is not None
    assert book.apply_fill(fill("t1", 0.1, 100.0)) is None
    assert book.apply_fill(fill("t1", 0.1, 100.0, cid=None, xid="x1")) is None  # the same trade via the exchange id
    order = book.get("c1")
    assert (order.filled, order.status, book.duplicate_fills) == (0.1, S.PARTIALLY_FILLED, 2)


def test_same_trade_id_on_another_symbol_or_exchange_is_a_different_fill() -> None:
    book = OrderLedger()
    book.add(ManagedOrder("c1", EX, SYM, "buy", "market", 1.0, T0))
    book.add(ManagedOrder("c2", EX, "ETH/USDT", "buy", "market", 1.0, T0))
    book.add(ManagedOrder("c3", "kraken", SYM, "buy", "market", 1.0, T0))
    for cid in ("c1", "c2", "c3"):
        book.submit(cid, T0 + 1)
    book.apply_fill(TradeFill(EX, SYM, "7", 1.0, 100.0, T0 + 2, client_order_id="c1"))
    book.apply_fill(TradeFill(EX, "ETH/USDT", "7", 1.0, 10.0, T0 + 2, client_order_id="c2"))
    book.apply_fill(TradeFill("kraken", SYM, "7", 1.0, 101.0, T0 + 2, client_order_id="c3"))
    assert [book.get(c).status for c in ("c1", "c2", "c3")] == [S.FILLED] * 3
    assert book.duplicate_fills == 0


def test_fill_for_an_unknown_order_is_kept_as_an_orphan_and_adopted_once_its_order_is_known() -> None:
    book = ledger_with(S.SUBMITTED)
    early = fill("t1", 0.1, 100.0, cid=None, xid="x1")  # the socket's trade beat the REST create response
    assert book.apply_fill(early) is None
    assert [(o.fill, o.reason) for o in book.orphans] == [(early, "unknown order")]
    assert book.apply_fill(early) is None  # a re-delivery is a duplicate, not a second orphan
    assert (len(book.orphans), book.duplicate_fills) == (1, 1)
    assert book.adopt_orphans() == []  # still unknown
    book.acknowledge("c1", "x1", T0 + 20)
    events = book.adopt_orphans()
    assert [(e.status, e.filled, e.fill) for e in events] == [(S.PARTIALLY_FILLED, 0.1, early)]
    assert book.orphans == []
    assert book.apply_fill(early) is None and book.get("c1").filled == 0.1


def test_fill_after_the_order_was_canceled_is_kept_aside_not_applied() -> None:
    book = ledger_with(S.OPEN)
    book.cancel("c1", T0 + 5)
    late = fill("t9", 0.1, 100.0)
    assert book.apply_fill(late) is None
    assert [(o.fill.trade_id, o.reason) for o in book.orphans] == [("t9", "order c1 is already canceled")]
    assert (book.get("c1").status, book.get("c1").filled) == (S.CANCELED, 0.0)


def test_overfill_is_refused_and_leaves_the_order_unchanged() -> None:
    book = ledger_with(S.OPEN)
    book.apply_fill(fill("t1", 0.2, 100.0))
    with pytest.raises(OverfillError) as err:
        book.apply_fill(fill("t2", 0.2, 100.0))
    assert err.value.code == "ORDER_OVERFILL"
    assert "its amount is 0.3 with 0.1 left" in err.value.message
    order = book.get("c1")
    assert (order.filled, order.status, order.average_price) == (0.2, S.PARTIALLY_FILLED, 100.0)
    # The refused trade is not remembered: the correct remainder under a new id still fills.
    assert book.apply_fill(fill("t3", 0.1, 100.0)) is not None
    assert order.status is S.FILLED


def test_channel_dict_has_exactly_seed_001s_orders_keys() -> None:
    seed = next(Path(__file__).resolve().parents[2].glob("shared/seeds/001_*.txt"), None)
    keys = list(CHANNEL_KEYS)
    if seed is not None:  # the seed's own example, when the spec folder is beside the repo
        text = seed.read_text()
        block = re.search(r'\{\s*"channel": "orders",.*?\n\}', text, re.S)
        assert block is not None
        keys = list(json.loads(block.group(0))["data"])
    book = ledger_with(S.OPEN)
    event = book.apply_fill(fill("t1", 0.3, 50000.0))
    assert event is not None
    assert list(event.to_channel()) == keys == list(CHANNEL_KEYS)
    assert event.to_channel() == {
        "order_id": "c1",
        "status": "filled",
        "symbol": "BTC/USDT",
        "side": "buy",
        "amount": 0.3,
        "price": 105.0,
        "timestamp": T0 + 10,
    }
    json.dumps(event.to_channel())
    extra = event.to_dict()
    assert {k: extra[k] for k in ("type", "filled", "average_price", "exchange_order_id", "trade_id")} == {
        "type": "limit",
        "filled": 0.3,
        "average_price": 50000.0,
        "exchange_order_id": "x1",
        "trade_id": "t1",
    }


def test_market_order_channel_price_is_none_until_filled_then_the_average() -> None:
    book = OrderLedger()
    created = book.add(ManagedOrder("m1", EX, SYM, "sell", "market", 0.5, T0))
    book.submit("m1", T0 + 1)
    done = book.apply_fill(TradeFill(EX, SYM, "t1", 0.5, 46000.5, T0 + 2, client_order_id="m1"))
    assert created.to_channel()["price"] is None and created.to_channel()["status"] == "pending_new"
    assert done is not None and done.to_channel()["price"] == 46000.5


def test_every_change_yields_an_event_with_its_status() -> None:
    book = OrderLedger()
    statuses = [
        book.add(limit_order()).status,
        book.submit("c1", T0 + 1).status,
        book.acknowledge("c1", "x1", T0 + 2).status,
    ]
    event = book.apply_fill(fill("t1", 0.1, 100.0))
    assert event is not None
    statuses.append(event.status)
    statuses.append(book.cancel("c1", T0 + 3, reason="stop requested").status)
    assert statuses == [S.PENDING_NEW, S.SUBMITTED, S.OPEN, S.PARTIALLY_FILLED, S.CANCELED]
    assert book.get("c1").reason == "stop requested"
    assert book.open_orders() == []


def test_reject_records_the_reason() -> None:
    book = ledger_with(S.PENDING_NEW)
    event = book.reject("c1", T0 + 1, "ORDER_RATE_LIMITED")
    assert (event.status, event.reason, event.to_dict()["reason"]) == (
        S.REJECTED,
        "ORDER_RATE_LIMITED",
        "ORDER_RATE_LIMITED",
    )


def test_open_orders_are_the_non_final_ones_by_symbol() -> None:
    book = OrderLedger()
    book.add(limit_order("a"))
    book.add(ManagedOrder("b", EX, "ETH/USDT", "sell", "limit", 1.0, T0, price=3000.0))
    book.add(limit_order("c"))
    book.reject("c", T0 + 1, "test")
    assert [o.client_order_id for o in book.open_orders()] == ["a", "b"]
    assert [o.client_order_id for o in book.open_orders("ETH/USDT")] == ["b"]
    assert len(book) == 3 and "c" in book


def test_open_orders_drop_the_finished_and_keep_an_unconfirmed_one_that_comes_back() -> None:
    book = OrderLedger()
    for cid in ("a", "b", "c", "d"):
        book.add(limit_order(cid))
        book.submit(cid, T0 + 1)
    book.acknowledge("a", "x1", T0 + 2)
    assert [o.client_order_id for o in book.open_orders()] == ["a", "b", "c", "d"]
    book.cancel("b", T0 + 3)
    book.transition("c", S.UNKNOWN, T0 + 3)
    book.transition("c", S.REJECTED_UNCONFIRMED, T0 + 4)
    assert [o.client_order_id for o in book.open_orders()] == ["a", "d"]  # an unconfirmed order holds no slot

    book.acknowledge("c", "x3", T0 + 5)  # found after all: it holds its slot again
    book.load(ManagedOrder("e", EX, SYM, "buy", "limit", 1.0, T0, price=100.0, status=S.OPEN), ())
    book.load(ManagedOrder("f", EX, SYM, "buy", "limit", 1.0, T0, price=100.0, status=S.FILLED), ())

    assert [o.client_order_id for o in book.open_orders()] == ["a", "c", "d", "e"]
    assert [o.client_order_id for o in book] == ["a", "b", "c", "d", "e", "f"]


def test_duplicate_client_order_id_and_unknown_id_are_refused() -> None:
    book = ledger_with(S.PENDING_NEW)
    with pytest.raises(DuplicateOrderError, match="'c1' already exists"):
        book.add(limit_order())
    with pytest.raises(OrderNotFoundError, match="no order with client_order_id 'nope'"):
        book.cancel("nope", T0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"side": "long"}, "side must be one of buy, sell, got 'long'"),
        ({"type": "iceberg"}, "type must be one of market, limit, stop, stop_limit, got 'iceberg'"),
        ({"amount": 0.0}, "amount must be greater than 0, got 0.0"),
        ({"amount": float("nan")}, "amount must be a finite number, got nan"),
        ({"type": "limit"}, "a limit order needs a price"),
        ({"type": "stop_limit", "price": 100.0}, "a stop_limit order needs a stop"),
        ({"type": "market", "price": 100.0}, "a market order takes no price, got 100.0"),
        ({"type": "limit", "price": -1.0}, "price must be greater than 0, got -1.0"),
        ({"client_order_id": ""}, "client_order_id must be a non-empty string"),
    ],
)
def test_invalid_order_fields_are_refused_with_what_is_accepted(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"client_order_id": "c1", "exchange": EX, "symbol": SYM, "side": "buy", "type": "market"}
    fields |= {"amount": 1.0, "created_at": T0} | kwargs
    with pytest.raises(InvalidOrderError) as err:
        ManagedOrder(**fields)
    assert err.value.message == message
    assert err.value.code == "INVALID_ORDER"


def test_fill_with_a_non_positive_quantity_is_refused() -> None:
    book = ledger_with(S.OPEN)
    with pytest.raises(InvalidOrderError, match="fill qty must be greater than 0"):
        book.apply_fill(fill("t1", 0.0, 100.0))
    with pytest.raises(InvalidOrderError, match="fill price must be a finite number"):
        book.apply_fill(fill("t2", 0.1, float("inf")))
    assert book.get("c1").filled == 0.0


# Quantities on an exchange's lot grid (5 decimals) and prices on a tick grid, like real fills.
_lots = st.integers(min_value=1, max_value=10_000).map(lambda n: n / 100_000)
_prices = st.integers(min_value=1, max_value=10_000_000).map(lambda n: n / 100)


@settings(max_examples=300, deadline=None)
@given(fills=st.lists(st.tuples(_lots, _prices), min_size=1, max_size=30), spare=st.integers(0, 3))
def test_any_fills_within_the_amount_keep_filled_bounded_and_average_between_min_and_max(
    fills: list[tuple[float, float]], spare: int
) -> None:
    amount = float(sum(Fraction(repr(q)) for q, _ in fills) + Fraction(spare, 1000))
    book = OrderLedger()
    book.add(ManagedOrder("p", EX, SYM, "buy", "market", amount, T0))
    book.submit("p", T0 + 1)
    for i, (qty, price) in enumerate(fills):
        book.apply_fill(TradeFill(EX, SYM, f"t{i}", qty, price, T0 + 2 + i, client_order_id="p"))
        order = book.get("p")
        assert order.filled_qty <= Fraction(repr(amount))
        avg = order.average_price_exact
        seen = [Fraction(repr(p)) for _, p in fills[: i + 1]]
        assert avg is not None and min(seen) <= avg <= max(seen)
    order = book.get("p")
    assert order.filled_qty == sum(Fraction(repr(q)) for q, _ in fills)
    assert order.status is (S.FILLED if spare == 0 else S.PARTIALLY_FILLED)
