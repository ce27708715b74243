// cracktrader-js against a live server with authentication off (the default local model).
import test from "node:test";
import assert from "node:assert/strict";
import { WebSocket as NodeWebSocket } from "ws";

import CrackTrader, {
  ConflictError,
  ConnectionError,
  CrackTraderError,
  InvalidSymbolError,
  NoActiveRunError,
  NotFoundError,
  OPERATIONS,
  RunAlreadyActiveError,
  SweepTooLargeError,
  ValidationError,
} from "cracktrader-js";
import { BACKTEST, BASE_URL, RECV_TIMEOUT_MS, RUN_TIMEOUT_MS } from "./support.mjs";

const api = new CrackTrader(); // $CRACKTRADER_BASE_URL

test("the client takes its base URL from the environment and reads health, meta and the catalog", async () => {
  assert.equal(api.baseUrl, BASE_URL);
  const health = await api.getHealth();
  assert.equal(health.status, "healthy");
  assert.equal(health.api_version, "v1");
  const meta = await api.getMeta();
  assert.equal(meta.api_version, "v1");
  const strategies = await api.getStrategies({ limit: 1000 });
  assert.ok(strategies.items.some((s) => s.name === "TestStrategy"));
  const exchanges = await api.getExchanges();
  assert.ok(exchanges.items.some((x) => x.id === "synthetic"));
  const me = await api.getMe();
  assert.equal(me.auth_mode, "off");
  assert.match(await api.getMetrics(), /^# HELP /m);
});

test("a backtest started, polled and its results read", async () => {
  await api.reset();
  const started = await api.startBacktest(BACKTEST);
  assert.equal(started.status, "starting");
  assert.match(started.run_id, /^[0-9a-f]{32}$/);
  const status = await api.waitForCompletion(started.run_id, { timeout: RUN_TIMEOUT_MS, pollInterval: 50 });
  assert.equal(status.status, "completed");
  assert.equal(status.run_id, started.run_id);

  const results = await api.getResults({ maxPoints: 100, limit: 3 });
  assert.equal(results.run_id, started.run_id);
  assert.equal(results.status, "completed");
  assert.equal(results.final_value, status.value);
  assert.ok(results.equity_curve.length <= 100);
  assert.equal(results.page.trades.limit, 3);
  assert.ok(results.page.trades.total > 3 && results.trades.length === 3);

  const byId = await api.getRunResults(started.run_id, { limit: 2, offset: 1 });
  assert.deepEqual(byId.trades, results.trades.slice(1, 3));
  const record = await api.getRun(started.run_id);
  assert.equal(record.status, "completed");
  assert.equal(record.final_value, results.final_value);
  const history = await api.listRuns({ mode: "backtest", limit: 5 });
  assert.ok(history.items.some((r) => r.run_id === started.run_id));
  const csv = await api.tradesCsv(started.run_id);
  assert.equal(csv.split("\n").length - 2, results.page.trades.total); // a header and a final newline
  assert.match((await api.equityCsv(started.run_id)).split("\n")[0], /timestamp/);
  const byIdStatus = await api.runStatus(started.run_id);
  assert.equal(byIdStatus.value, status.value);
});

test("startRun with an idempotencyKey answers a retry with the same run", async () => {
  const key = `js-${Date.now()}`;
  const first = await api.startRun(BACKTEST, { idempotencyKey: key });
  const again = await api.startRun(BACKTEST, { idempotencyKey: key });
  assert.equal(again.run_id, first.run_id);
  await assert.rejects(api.startRun({ ...BACKTEST, initial_cash: 5 }, { idempotencyKey: key }), (error) => {
    assert.ok(error instanceof ValidationError || error instanceof CrackTraderError);
    assert.equal(error.code, "IDEMPOTENCY_KEY_REUSED");
    assert.equal(error.status, 422);
    return true;
  });
  await api.waitForRun(first.run_id, { timeout: RUN_TIMEOUT_MS, pollInterval: 50 });
});

test("a run's chart, round trips and breakdowns agree with its results", async () => {
  await api.reset();
  const started = await api.startBacktest(BACKTEST);
  await api.waitForCompletion(started.run_id, { timeout: RUN_TIMEOUT_MS, pollInterval: 50 });
  const results = await api.getRunResults(started.run_id, { limit: 1 });

  const chart = await api.runCandles(started.run_id, { maxPoints: 500 });
  assert.equal(chart.symbol, "BTC/USDT");
  assert.ok(chart.candles.timestamp.length <= 500 && chart.bucket_bars > 1);
  const trips = await api.roundTrips(started.run_id, { sort: "pnl", order: "desc", limit: 5 });
  assert.equal(trips.total, results.performance_metrics.total_trades);
  assert.equal(chart.markers_total, trips.total);
  assert.ok(trips.items.every((t, i) => i === 0 || (trips.items[i - 1].pnl ?? 0) >= (t.pnl ?? 0)));
  const breakdowns = await api.breakdowns(started.run_id);
  assert.deepEqual(breakdowns.by_symbol.map((b) => [b.symbol, b.trades]), [["BTC/USDT", trips.total]]);
  const markets = await api.getMarkets("synthetic", { q: "btc" });
  assert.ok(markets.items.some((m) => m.symbol === "BTC/USDT"));
  assert.ok(Array.isArray((await api.getLogs({ level: "WARNING", limit: 5 })).items));
});

test("backtest() resets a finished runner, waits and returns the results", async () => {
  const results = await api.backtest(BACKTEST, { timeout: RUN_TIMEOUT_MS, pollInterval: 50, limit: 1 });
  assert.equal(results.status, "completed");
  assert.equal(results.trades.length, 1);
  assert.ok(results.final_value > 0);
});

test("server errors are thrown as their typed classes with the envelope", async () => {
  await api.reset();
  const bad = await api.startBacktest({ ...BACKTEST, symbols: ["BTCUSD"] }).catch((e) => e);
  assert.ok(bad instanceof InvalidSymbolError && bad instanceof ValidationError && bad instanceof CrackTraderError);
  assert.equal(bad.status, 400);
  assert.equal(bad.code, "INVALID_SYMBOL");
  assert.equal(bad.path, "/api/v1/run/backtest");
  assert.deepEqual(bad.details.supported_symbols.slice(0, 3), ["BTC/USDT", "ETH/USDT", "SOL/USDT"]);
  assert.equal(bad.name, "InvalidSymbolError");

  const missing = await api.getRun("no-such-run").catch((e) => e);
  assert.ok(missing instanceof NotFoundError);
  assert.equal(missing.status, 404);
  assert.equal(missing.message, "No run with id 'no-such-run'");

  const stop = await api.stop().catch((e) => e);
  assert.ok(stop instanceof NoActiveRunError && stop instanceof ConflictError);
  assert.equal(stop.code, "NO_ACTIVE_RUN");

  const invalid = await api.startBacktest({ strategy_name: "TestStrategy", symbols: ["BTC/USDT"], initial_cash: "lots" }).catch((e) => e);
  assert.ok(invalid instanceof ValidationError);
  assert.equal(invalid.code, "VALIDATION_ERROR");
  assert.equal(invalid.status, 422);
  assert.ok(Array.isArray(invalid.details.errors));

  const started = await api.startBacktest({ ...BACKTEST, start_date: "2023-01-01" });
  const twice = await api.startBacktest(BACKTEST).catch((e) => e);
  assert.ok(twice instanceof RunAlreadyActiveError);
  assert.equal(twice.details.run_id, started.run_id);
  await api.waitForCompletion(started.run_id, { timeout: RUN_TIMEOUT_MS, pollInterval: 50 });

  const closed = new CrackTrader({ baseUrl: "http://127.0.0.1:9" });
  const unreachable = await closed.getStatus().catch((e) => e);
  assert.ok(unreachable instanceof ConnectionError);
  assert.equal(unreachable.status, null);
});

test("getBalance() reads the session this client started (seed 001), then asks for a run id", async () => {
  const client = new CrackTrader({ apiKey: "your_key" });
  await assert.rejects(client.getBalance(), NoActiveRunError);
  const session = await client.startSession({ strategy_name: "SmaCross", symbols: "BTC/USDT", timeframe: "1m", exchange: "synthetic" });
  assert.deepEqual(await client.getBalance(), { USDT: 10000 });
  const stopped = await client.stopRun(session.run_id);
  assert.equal(stopped.status, "stopped");
  await assert.rejects(client.getBalance(), NoActiveRunError);
  assert.deepEqual(await client.getBalance(session.run_id), { USDT: 10000 });
});

test("the status stream sends a snapshot, then the run's updates until it completes", async () => {
  await api.reset();
  const events = await api.streamStatus();
  const snapshot = await events.recv({ timeout: RECV_TIMEOUT_MS });
  assert.equal(snapshot.type, "snapshot");
  assert.equal(snapshot.payload.status, "idle");
  const started = await api.startBacktest(BACKTEST);
  const seen = new Set();
  let last;
  for await (const event of events) {
    seen.add(event.type);
    if (event.type === "status_update" && event.payload.run_id === started.run_id && ["completed", "failed"].includes(event.payload.status)) {
      last = event.payload;
      break;
    }
  }
  assert.equal(events.closed, true); // leaving the loop closes the socket
  assert.equal(last.status, "completed");
  assert.ok(seen.has("trade_execution"), [...seen].join(","));
  const status = await api.getStatus();
  assert.equal(last.value, status.value);
});

test("one run's stream numbers its events and resumes after a number with exactly what was missed", async () => {
  await api.reset();
  const started = await api.startBacktest(BACKTEST);
  const events = await api.streamStatus({ runId: started.run_id, since: 0 });
  const seen = [];
  for await (const event of events) {
    seen.push(event);
    if (event.type === "status_update" && ["completed", "failed"].includes(event.payload.status)) break;
  }
  assert.equal(seen[0].type, "snapshot");
  assert.deepEqual(seen.map((e) => e.seq), seen.map((_, i) => i));
  const middle = seen[Math.floor(seen.length / 2)].seq;
  const again = await api.streamStatus({ runId: started.run_id, since: middle });
  const resumed = [];
  for await (const event of again) {
    resumed.push(event);
    if (resumed.length === seen.length - middle) break;
  }
  assert.equal(resumed[0].type, "snapshot");
  assert.deepEqual(resumed.slice(1), seen.slice(middle + 1));
  await assert.rejects(api.streamStatus({ since: 3 }), TypeError);
});

test("a download's progress streams as download_progress events, in order, until its last status", async () => {
  const events = await api.streamStatus();
  assert.equal((await events.recv({ timeout: RECV_TIMEOUT_MS })).type, "snapshot");
  const started = await api.startDownload("synthetic", "ADA/USDT", { timeframe: "1d", start: "2024-01-01", end: "2024-02-01" });
  const seen = [];
  for await (const event of events) {
    if (event.type !== "download_progress") continue;
    assert.equal(event.payload.id, started.id);
    seen.push(event.payload);
    if (["completed", "failed", "canceled"].includes(event.payload.status)) break;
  }
  const done = seen.map((job) => job.progress.done);
  assert.deepEqual(done, [...done].sort((a, b) => a - b));
  assert.equal(seen[0].status, "running");
  const last = seen.at(-1);
  assert.equal(last.status, "completed");
  assert.deepEqual(last.progress, { done: 31, total: 31, fraction: 1, eta_s: 0 });
  assert.equal(last.dataset.count, 31);
});

test("channel subscriptions are confirmed, refused ones throw, and messages arrive by channel", async () => {
  await api.reset();
  const messages = await api.subscribe(["trades"], { symbol: "BTC/USDT" });
  assert.deepEqual(messages.subscriptions, [{ channel: "trades", symbol: "BTC/USDT" }]);
  const refused = await messages.subscribe(["nonsense"]).catch((e) => e);
  assert.ok(refused instanceof ValidationError);
  assert.equal(refused.code, "INVALID_CHANNEL");
  const all = await messages.subscribe(["status"]);
  assert.equal(all.length, 2);
  const first = await messages.recv({ timeout: RECV_TIMEOUT_MS }); // the status snapshot of a new subscription
  assert.equal(first.channel, "status");
  await api.startBacktest(BACKTEST);
  let fills = 0;
  for await (const { channel, data } of messages) {
    if (channel === "trades") {
      fills += 1;
      assert.equal(data.symbol, "BTC/USDT");
      assert.equal(typeof data.timestamp, "number");
    } else if (channel === "status" && data.status === "completed") {
      break;
    }
  }
  assert.ok(fills > 0);
});

test("an injected WebSocket (the browser's API) streams too", async () => {
  const browserLike = new CrackTrader({ WebSocket: NodeWebSocket, apiKey: "ignored-with-auth-off" });
  const messages = await browserLike.subscribe(["status"]);
  const first = await messages.recv({ timeout: RECV_TIMEOUT_MS });
  assert.equal(first.channel, "status"); // the auth message's INVALID_ACTION reply (auth is off) was dropped
  messages.close();
  const events = await browserLike.streamStatus({ runId: "*" });
  const snapshot = await events.recv({ timeout: RECV_TIMEOUT_MS });
  assert.equal(snapshot.type, "snapshot");
  assert.ok(Array.isArray(snapshot.payload.runs));
  events.close();
});

test("a walk-forward and a CPCV started, waited for, listed, and their reports read", async () => {
  const request = {
    strategy_name: "SmaCross",
    symbols: "BTC/USDT",
    timeframe: "1h",
    start_date: "2024-01-01",
    end_date: "2024-02-01",
    exchange: "synthetic",
    grid: { fast: [5, 10], slow: "20:30:10" },
  };
  const started = await api.startWalkforward({ ...request, train: 240, test: "5d", purge: 2 });
  assert.equal(started.status, "queued");
  assert.equal(started.kind, "walk_forward");
  const wf = await api.waitForWalkforward(started.walkforward_id, { timeout: RUN_TIMEOUT_MS, pollInterval: 50 });
  assert.equal(wf.status, "completed");
  assert.deepEqual(wf.report.windows.map((w) => [w.test.start, w.test.stop]), [[242, 362], [362, 482], [482, 602], [602, 722]]);
  assert.equal(wf.report.stitched.equity.length, 480);
  const cpcv = await api.startWalkforward({ ...request, cpcv: { n_folds: 4, n_test_folds: 2 }, embargo: 1 });
  const done = await api.waitForWalkforward(cpcv.walkforward_id, { timeout: RUN_TIMEOUT_MS, pollInterval: 50 });
  assert.equal(done.kind, "cpcv");
  assert.equal((await api.getWalkforward(done.walkforward_id)).report.paths.length, 3);
  const listed = await api.listWalkforwards({ limit: 2 });
  assert.deepEqual(listed.items.map((w) => w.walkforward_id), [done.walkforward_id, wf.walkforward_id]);
  assert.equal(listed.items[0].report, null);
  assert.equal((await api.cancelWalkforward(wf.walkforward_id)).status, "completed"); // ended: left as it is
  await assert.rejects(api.startWalkforward({ ...request, train: "abc", test: 24 }), ValidationError);
  await assert.rejects(api.getWalkforward("0".repeat(32)), NotFoundError);
});

test("a sweep started, waited for, paged by another metric, and its best row backtested", async () => {
  const request = {
    strategy_name: "SmaCross",
    symbols: "BTC/USDT",
    timeframe: "1h",
    start_date: "2024-01-01",
    end_date: "2024-03-01",
    exchange: "synthetic",
    grid: { fast: [5, 10, 30], slow: "20:30:10" },
  };
  const started = await api.startSweep(request);
  assert.equal(started.status, "queued");
  const sweep = await api.waitForSweep(started.sweep_id, { timeout: RUN_TIMEOUT_MS, pollInterval: 50 });
  assert.equal(sweep.status, "completed");
  assert.equal(sweep.skipped_count, 2);
  assert.equal(sweep.rows, 4);
  const page = await api.sweepResults(sweep.sweep_id, { sort: "max_drawdown", limit: 2, offset: 1 });
  assert.deepEqual(page.items.map((r) => r.rank), [2, 3]);
  assert.ok(page.items[0].metrics.max_drawdown <= page.items[1].metrics.max_drawdown);
  assert.ok((await api.listSweeps()).items.some((s) => s.sweep_id === sweep.sweep_id));
  await assert.rejects(api.startSweep({ ...request, grid: { fast: "1:200", slow: "201:300" } }), SweepTooLargeError);

  await api.reset();
  const best = (await api.sweepResults(sweep.sweep_id, { limit: 1 })).items[0];
  const run = await api.backtestSweepRow(sweep.sweep_id, 1);
  await api.waitForCompletion(run.run_id, { timeout: RUN_TIMEOUT_MS, pollInterval: 50 });
  const results = await api.getResults({ limit: 1 });
  for (const [name, value] of Object.entries(best.metrics)) assert.equal(results.performance_metrics[name], value, name);
  assert.equal((await api.cancelSweep(sweep.sweep_id)).status, "completed"); // an ended sweep is left as it is
  await api.reset();
});

test("every operation in the table is a method of the client", () => {
  for (const [operation, name] of Object.entries(OPERATIONS)) {
    assert.equal(typeof CrackTrader.prototype[name], "function", `${operation} -> ${name}`);
  }
});

test("a paper session's closed candles stream in order and equal its recent candles", async () => {
  const events = await api.streamStatus({ runId: "*", candles: true });
  assert.equal((await events.recv({ timeout: RECV_TIMEOUT_MS })).type, "snapshot");
  const replay = { start: "2024-01-01T00:00:00Z", end: "2024-01-02T00:00:00Z", speed: 72_000 }; // 24 bars, 50 ms each
  const started = await api.startRun({ mode: "paper", strategy_name: "SmaCross", symbols: ["BTC/USDT"], timeframe: "1h",
    exchange: "synthetic", exchange_config: { paper: { replay } } });
  const candles = [];
  for await (const event of events) {
    if (event.payload.run_id !== started.run_id) continue;
    if (event.type === "candle") candles.push(event.payload);
    if (event.type === "status_update" && event.payload.status === "completed") break;
  }
  events.close();
  const history = await api.recentCandles(started.run_id, { symbol: "BTC/USDT" });
  assert.equal(candles.length, 24);
  assert.deepEqual(candles.map((k) => [k.t, k.o, k.h, k.l, k.c, k.v]),
    history.candles.timestamp.map((t, i) => [t, history.candles.open[i], history.candles.high[i], history.candles.low[i],
      history.candles.close[i], history.candles.volume[i]]));
  assert.ok(candles.every((k) => k.symbol === "BTC/USDT" && k.timeframe === "1h"));
});
