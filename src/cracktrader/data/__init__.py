"""Market data: timeframes, candles, the Parquet store, sources and resampling."""
