"""Capabilities for UI forms: `GET /strategies` and `GET /exchanges`."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from cracktrader.data.timeframes import SUPPORTED_TIMEFRAMES
from cracktrader.strategies.registry import load_registry

router = APIRouter()


class StrategyInfo(BaseModel):
    """A strategy class with its parameter JSON Schema."""

    name: str
    description: str
    style: str
    parameters: dict[str, Any]
    defaults: dict[str, Any]
    origin: str
    read_only: bool = True


class StrategyList(BaseModel):
    """Strategies available to runs (built-in and user classes); later also stored presets."""

    items: list[StrategyInfo]
    total: int
    skip: int
    limit: int
    load_errors: list[dict[str, str]]


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


@router.get("/strategies", response_model=StrategyList, tags=["catalog"])
async def list_strategies() -> dict[str, Any]:
    """Built-in, folder and plugin strategies with their parameters; load failures are listed, not fatal."""
    reg = await asyncio.to_thread(load_registry)
    items = [{**cls.describe(), "origin": reg.origins[name], "read_only": True} for name, cls in reg.strategies.items()]
    return {
        "items": items,
        "total": len(items),
        "skip": 0,
        "limit": len(items),
        "load_errors": [{"source": e.source, "error": e.error} for e in reg.load_errors],
    }


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
