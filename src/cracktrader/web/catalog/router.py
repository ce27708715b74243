"""Capabilities for UI forms: `GET /exchanges` (strategies live in `web.strategies`)."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from cracktrader.data.timeframes import SUPPORTED_TIMEFRAMES

router = APIRouter()


class ExchangeInfo(BaseModel):
    """An exchange a run can use."""

    id: str
    name: str
    sandbox: bool
    ohlcv: bool
    timeframes: list[str]
    notes: str


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
            }
        )
    return items


@router.get("/exchanges", response_model=ExchangeList, tags=["catalog"])
async def list_exchanges() -> dict[str, Any]:
    """ccxt exchanges with sandbox support and notes, plus `synthetic`."""
    from cracktrader.settings import get_settings

    items = await asyncio.to_thread(exchange_catalog)
    return {"items": items, "total": len(items), "default": get_settings().default_exchange}
