"""Live closed candles: ccxt exchanges (WebSocket, REST fallback), the synthetic exchange in real time, replays."""
