"""Web API: stored candles, an exchange's markets, the stored candle sets and download jobs."""
