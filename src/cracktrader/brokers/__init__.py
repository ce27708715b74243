"""One Broker interface: simulated (backtest), paper (simulated on live data), ccxt (real orders)."""
