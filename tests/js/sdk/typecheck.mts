// Compiled (never run) by tests/test_js_sdk.py with `tsc --noEmit --strict`: index.d.ts is valid TypeScript,
// the seed 001 example type-checks, and misuse is a type error.
import CrackTrader, {
  CrackTraderError,
  InvalidSymbolError,
  OPERATIONS,
  RateLimitError,
  type CandleEvent,
  type ChannelMessage,
  type DownloadProgressEvent,
  type Results,
  type SessionCandle,
  type SessionCandles,
  type StatusEvent,
  type Sweep,
  type SweepResults,
  type WalkForward,
  type WalkForwardReport,
} from "cracktrader-js";

const BASE = { strategy_name: "SmaCross", symbols: ["BTC/USDT"], timeframe: "1h" };

const api = new CrackTrader({ apiKey: "your_key" });
const balance: Record<string, number> = await api.getBalance();

export async function usage(): Promise<number> {
  const started = await api.startBacktest({ strategy_name: "TestStrategy", symbols: ["BTC/USDT"], timeframe: "1h" });
  const status = await api.waitForCompletion(started.run_id, { timeout: 60_000 });
  const results: Results = await api.getRunResults(status.run_id ?? "", { maxPoints: 100, limit: 10 });
  const events = await api.streamStatus({ runId: "*" });
  for await (const event of events) {
    const e: StatusEvent = event;
    if (e.type === "download_progress") {
      const job = (e as DownloadProgressEvent).payload;
      const fraction: number = job.progress.fraction;
      if (job.status === "completed" && fraction === 1) break;
    }
    if (e.type === "snapshot") break;
  }
  const live = await api.streamStatus({ runId: status.run_id ?? "", candles: true });
  for await (const event of live) {
    if (event.type === "candle") {
      const k: SessionCandle = (event as CandleEvent).payload;
      const t: number = k.t;
      const close: number | null = k.c;
      if (t && close) break;
    }
  }
  const history: SessionCandles = await api.recentCandles(status.run_id ?? "", { symbol: "BTC/USDT", limit: 100 });
  const closes: (number | null)[] = history.candles.close;
  // @ts-expect-error limit is a number
  await api.recentCandles("x", { limit: "100" });
  const messages = await api.subscribe(["trades", "status"], { symbol: "BTC/USDT" });
  const first: ChannelMessage | undefined = await messages.recv({ timeout: 1000 });
  try {
    await api.getRun("x");
  } catch (err) {
    if (err instanceof InvalidSymbolError) return err.details.supported_symbols as never;
    if (err instanceof RateLimitError) return err.retryAfter ?? 0;
    if (err instanceof CrackTraderError) return err.status ?? 0;
  }
  const method: keyof CrackTrader = OPERATIONS["GET /api/v1/status"];
  // @ts-expect-error strategy_name is required
  await api.startBacktest({ symbols: ["BTC/USDT"] });
  // @ts-expect-error not a channel
  await api.subscribe(["nonsense"]);
  // @ts-expect-error revokeApiKey takes the key's numeric id
  await api.revokeApiKey("1");
  const sweep: Sweep = await api.startSweep({ ...BASE, grid: { fast: [5, 10], slow: "20:40:10", x: { start: 1, end: 2 } } });
  const rows: SweepResults = await api.sweepResults(sweep.sweep_id, { sort: "total_return", limit: 10 });
  // @ts-expect-error a sweep needs a grid
  await api.startSweep(BASE);
  const wf: WalkForward = await api.startWalkforward({ ...BASE, grid: { fast: [5, 10] }, train: "30d", test: 24 });
  const report = (await api.waitForWalkforward(wf.walkforward_id)).report as WalkForwardReport | null;
  await api.startWalkforward({ ...BASE, grid: { fast: [5] }, cpcv: { n_folds: 6, n_test_folds: 2 }, embargo: 2 });
  // @ts-expect-error a walk-forward needs a grid
  await api.startWalkforward(BASE);
  // @ts-expect-error cpcv folds are numbers
  await api.startWalkforward({ ...BASE, grid: { fast: [5] }, cpcv: { n_folds: "6" } });
  return (results.final_value ?? 0) + Object.keys(balance).length + (first ? 1 : 0) + method.length + rows.total + (report?.windows.length ?? 0);
}
