"""Live closed candles: the synthetic exchange in real time, replays of stored candles (exchanges: next)."""
