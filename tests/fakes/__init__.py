"""In-process fake exchanges that the real ccxt client can talk to over loopback HTTP and WebSocket."""

from .binance import FakeBinance, FakeMarket, candle, exchange_options_for
from .clock import VirtualClock
from .venue import FakeVenue, venue_client

__all__ = ["FakeBinance", "FakeMarket", "FakeVenue", "VirtualClock", "candle", "exchange_options_for", "venue_client"]
