"""Candle sources: ccxt exchanges, CSV files and the offline `synthetic` exchange."""
