"""Whether the live order path can trade on an exchange, read from ccxt's capability flags (no request is made)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cracktrader.exchanges.client_ids import CLIENT_ID_PARAMS

# What reconciliation calls besides the client-id lookup (see exchanges/order_calls.py).
RECONCILE_CALLS: tuple[str, ...] = ("fetchOpenOrders", "fetchMyTrades")


def _camel(method: str) -> str:
    head, *rest = method.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True, slots=True)
class LiveSupport:
    """What live trading needs of an exchange, each part on its own, and whether it has them all."""

    supported: bool
    spot: bool  # spot markets (live trading supports spot only)
    client_order_ids: bool  # a known client-order-id field, so an unanswered order is found, never re-sent
    order_queries: bool  # the lookup by client id, the open orders and the account's trades
    sandbox: bool  # a test network (urls['test']): inline keys are accepted only there
    missing: list[str]  # the parts above that it lacks, by name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def live_support(exchange: Any) -> LiveSupport:
    """`exchange` (a ccxt instance)'s support for live trading, from its `has` flags, `urls['test']` and id."""
    has = exchange.has or {}
    ids = CLIENT_ID_PARAMS.get(str(exchange.id))
    lookup = _camel(ids.lookup_call) if ids is not None else "fetchOrder"
    parts = {
        "spot": bool(has.get("spot")) and bool(has.get("createOrder")),
        "client_order_ids": ids is not None,
        "order_queries": all(has.get(call) for call in (lookup, *RECONCILE_CALLS)),
        "sandbox": bool((exchange.urls or {}).get("test")),
    }
    missing = [name for name, ok in parts.items() if not ok]
    return LiveSupport(supported=not missing, missing=missing, **parts)
