"""Cracktrader: fast, look-ahead-free crypto backtesting with paper and live trading."""

__version__ = "0.1.0"

__all__ = ["__version__"]
