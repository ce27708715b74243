// Shared by the SDK's Node tests: the live server's URL (set by tests/test_js_sdk.py) and a small backtest.
export const BASE_URL = process.env.CRACKTRADER_BASE_URL;
if (!BASE_URL) throw new Error("CRACKTRADER_BASE_URL must point at a live server (tests/test_js_sdk.py sets it)");

// Five months of hourly synthetic candles: a few seconds of work, with trades.
export const BACKTEST = {
  strategy_name: "TestStrategy",
  symbols: ["BTC/USDT"],
  timeframe: "1h",
  start_date: "2024-01-01",
  end_date: "2024-06-01",
  initial_cash: 10000,
  exchange: "synthetic",
};

// Safety nets only: runs finish long before these on any machine.
export const RUN_TIMEOUT_MS = 120_000;
export const RECV_TIMEOUT_MS = 30_000;
