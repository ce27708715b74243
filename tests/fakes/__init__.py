"""In-process fake exchanges that the real ccxt client can talk to over loopback HTTP."""

from .binance import FakeBinance, FakeMarket, candle, exchange_options_for

__all__ = ["FakeBinance", "FakeMarket", "candle", "exchange_options_for"]
