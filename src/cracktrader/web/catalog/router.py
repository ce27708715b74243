"""Capabilities for UI forms: `GET /exchanges` (strategies live in `web.strategies`)."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from cracktrader.data.timeframes import SUPPORTED_TIMEFRAMES
from cracktrader.exchanges.capabilities import live_support

router = APIRouter()
# The offline generator has no orders: paper sessions only.
SYNTHETIC_LIVE: dict[str, Any] = {"supported": False, "spot": False, "client_order_ids": False,
                                  "order_queries": False, "sandbox": False,
                                  "missing": ["spot", "client_order_ids", "order_queries", "sandbox"]}  # fmt: skip


class LiveTradingInfo(BaseModel):
    """Whether live trading (`mode: "live"`) can use an exchange, and which of its needs it lacks."""

    supported: bool
    spot: bool
    client_order_ids: bool
    order_queries: bool
    sandbox: bool
    missing: list[str]


class ExchangeInfo(BaseModel):
    """An exchange a run can use."""

    id: str
    name: str
    sandbox: bool
    ohlcv: bool
    timeframes: list[str]
    notes: str
    live_trading: LiveTradingInfo


class ExchangeList(BaseModel):
    items: list[ExchangeInfo]
    total: int
    default: str


@lru_cache(maxsize=1)
def exchange_catalog() -> list[dict[str, Any]]:
    """Every ccxt exchange with sandbox support and OHLCV capability, plus the offline `synthetic` one."""
    import ccxt

    items: list[dict[str, Any]] = [
        {
            "id": "synthetic",
            "name": "Synthetic (offline)",
            "sandbox": False,
            "ohlcv": True,
            "timeframes": list(SUPPORTED_TIMEFRAMES),
            "notes": "Built-in offline exchange: deterministic, realistic candles for any BASE/QUOTE symbol.",
            "live_trading": SYNTHETIC_LIVE,
        }
    ]
    for exchange_id in ccxt.exchanges:
        ex = getattr(ccxt, exchange_id)()
        sandbox = bool(ex.urls.get("test"))
        ohlcv = bool(ex.has.get("fetchOHLCV"))
        notes = [] if ohlcv else ["no OHLCV history: cannot be used for backtests"]
        notes.append('sandbox/testnet via exchange_config {"sandbox": true}' if sandbox else "no sandbox")
        items.append(
            {
                "id": exchange_id,
                "name": str(ex.name),
                "sandbox": sandbox,
                "ohlcv": ohlcv,
                "timeframes": [tf for tf in SUPPORTED_TIMEFRAMES if tf in (ex.timeframes or {})],
                "notes": "; ".join(notes),
                "live_trading": live_support(ex).to_dict(),
            }
        )
    return items


@router.get("/exchanges", response_model=ExchangeList, tags=["catalog"])
async def list_exchanges() -> dict[str, Any]:
    """ccxt exchanges with sandbox support and notes, plus `synthetic`."""
    from cracktrader.settings import get_settings

    items = await asyncio.to_thread(exchange_catalog)
    return {"items": items, "total": len(items), "default": get_settings().default_exchange}
