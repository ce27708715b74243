"""Parameter sweeps: a grid of combinations, each with exactly its single backtest's metrics."""
