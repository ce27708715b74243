"""Cracktrader: fast, look-ahead-free crypto backtesting with paper and live trading."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["AsyncCrackTraderAPI", "CrackTraderAPI", "__version__", "cpcv", "sweep", "walk_forward"]

if TYPE_CHECKING:
    from cracktrader.client import AsyncCrackTraderAPI, CrackTraderAPI
    from cracktrader.sweeps.cpcv import cpcv as cpcv
    from cracktrader.sweeps.sweep import sweep as sweep
    from cracktrader.sweeps.walkforward import walk_forward as walk_forward

# Imported on first access so that `import cracktrader` (the engine, the CLI, the server) never loads httpx or numba.
_LAZY = {
    "CrackTraderAPI": "cracktrader.client",
    "AsyncCrackTraderAPI": "cracktrader.client",
    "sweep": "cracktrader.sweeps",
    "walk_forward": "cracktrader.sweeps",
    "cpcv": "cracktrader.sweeps",
}


def __getattr__(name: str) -> Any:
    """Resolve the SDK's client classes lazily (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cracktrader' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Module attributes including the lazy ones."""
    return sorted({*globals(), *__all__})
