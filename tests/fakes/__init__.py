"""In-process fake exchanges that the real ccxt client can talk to over loopback HTTP and WebSocket."""

from .binance import FakeBinance, FakeMarket, candle, exchange_options_for
from .clock import VirtualClock
from .okx import OkxVenue, okx_client
from .trading import TradingVenue, trading_client
from .venue import FakeVenue, venue_client

__all__ = [
    "FakeBinance",
    "FakeMarket",
    "FakeVenue",
    "OkxVenue",
    "TradingVenue",
    "VirtualClock",
    "candle",
    "exchange_options_for",
    "okx_client",
    "trading_client",
    "venue_client",
]
