// Type definitions of cracktrader-js (hand-written; index.js is the implementation).

export declare const VERSION: string;
export declare const API_PREFIX: "/api/v1";
export declare const DEFAULT_BASE_URL: string;
export declare const BASE_URL_ENV: "CRACKTRADER_BASE_URL";
export declare const SWEEP_FINISHED_STATUSES: readonly ["completed", "cancelled", "failed"];
export declare const FINISHED_STATUSES: readonly ["completed", "failed", "stopped"];
/** Every OpenAPI operation ("METHOD path") and the CrackTrader method that calls it. */
export declare const OPERATIONS: Readonly<Record<string, keyof CrackTrader>>;
/** The WebSocket streams and their methods. */
export declare const STREAMS: Readonly<Record<string, keyof CrackTrader>>;

type JsonObject = Record<string, unknown>;
/** ISO 8601 date or date-time text, or a Date (sent as ISO 8601). */
type DateLike = string | Date;
/** ISO 8601 text in UTC as the server sends it. */
type Timestamp = string;

// Requests ---------------------------------------------------------------------------------------------

export interface BacktestRequest {
  strategy_name: string;
  symbols: string | string[];
  strategy_params?: JsonObject | null;
  timeframe?: string | null;
  start_date?: DateLike | null;
  end_date?: DateLike | null;
  initial_cash?: number | null;
  exchange?: string | null;
  commission?: number | null;
  slippage_bps?: number | null;
  latency_bars?: number | null;
  allow_short?: boolean | null;
  exchange_rules?: boolean | null;
  [field: string]: unknown;
}

export interface LiveRequest {
  strategy_name: string;
  symbols: string | string[];
  strategy_params?: JsonObject | null;
  timeframe?: string | null;
  exchange?: string | null;
  exchange_config?: JsonObject | null;
  mode?: "paper" | "live";
  [field: string]: unknown;
}

/** `POST /runs`: a backtest's fields with `mode: "backtest"`, or a session's with `"paper"` / `"live"`. */
export type RunRequest = (BacktestRequest & { mode?: "backtest" }) | LiveRequest;

export interface CheckRequest {
  strategy_params?: JsonObject | null;
  symbols?: string | string[] | null;
  timeframe?: string | null;
  start_date?: DateLike | null;
  end_date?: DateLike | null;
  exchange?: string | null;
}

export interface StrategyPreset {
  name: string;
  base_strategy?: string | null;
  parameters?: JsonObject;
  description?: string;
  is_active?: boolean;
}

export interface PageOptions {
  /** Thin the equity curve to at most this many points. */
  maxPoints?: number;
  /** Trades and orders per page. */
  limit?: number;
  offset?: number;
}

export interface RunFilter {
  status?: string;
  mode?: string;
  strategy?: string;
  symbol?: string;
  limit?: number;
  offset?: number;
}

export interface ExchangeSecrets {
  apiKey?: string;
  secret?: string;
  password?: string;
  uid?: string;
  [field: string]: string | undefined;
}

// Responses --------------------------------------------------------------------------------------------

export interface RunResponse {
  run_id: string | null;
  status: string;
  message: string;
}

export interface Status {
  run_id: string | null;
  status: "idle" | "starting" | "running" | "completed" | "failed" | "stopped" | string;
  mode: string | null;
  start_time: Timestamp | null;
  end_time: Timestamp | null;
  runtime_seconds: number | null;
  cash: number | null;
  value: number | null;
  pnl: number | null;
  trade_count: number;
  error: string | null;
  error_code?: string | null;
  phase?: string | null;
  progress?: number;
  bars_processed?: number;
  bars_total?: number;
  [field: string]: unknown;
}

export interface Trade {
  id: number;
  order_id: number;
  timestamp: Timestamp;
  symbol: string;
  side: string;
  size: number;
  price: number;
  value: number;
  commission: number;
  pnl?: number | null;
  return_pct?: number | null;
  reason?: string;
  [field: string]: unknown;
}

export interface Order {
  id: number;
  created_at: Timestamp;
  timestamp?: Timestamp | null;
  symbol: string;
  side: string;
  type: string;
  status: string;
  size?: number | null;
  price?: number | null;
  trigger_price?: number | null;
  commission?: number;
  reason?: string;
  [field: string]: unknown;
}

export interface Position {
  symbol: string;
  size: number;
  entry_price: number;
  market_price: number;
  value?: number;
  unrealized_pnl?: number;
  [field: string]: unknown;
}

export interface EquityPoint {
  timestamp: Timestamp;
  value: number;
  cash: number;
  pnl: number;
}

export interface DetailedStatus extends Status {
  recent_orders: Order[];
  recent_trades: Trade[];
  positions: Position[];
  equity_curve: EquityPoint[];
  performance_metrics: JsonObject;
  health: JsonObject;
}

export interface SessionOrder {
  order_id: number;
  symbol: string;
  side: string;
  amount?: number | null;
  reason?: string;
  [field: string]: unknown;
}

export interface SessionStatus extends Status {
  realized_pnl?: number;
  unrealized_pnl?: number;
  fees_paid?: number;
  condition?: "ok" | "degraded" | "halted" | string;
  reasons?: string[];
  last_candle_time?: Timestamp | null;
  data_lag_seconds?: number | null;
  risk?: JsonObject | null;
  balances?: Record<string, number>;
  positions?: Position[];
  open_orders?: SessionOrder[];
}

export interface PageInfo {
  offset: number;
  limit: number;
  total: number;
}

export interface Results {
  run_id: string | null;
  config: JsonObject | null;
  status: string;
  start_time: Timestamp | null;
  end_time: Timestamp | null;
  orders: Order[];
  trades: Trade[];
  positions?: Position[];
  equity_curve: EquityPoint[];
  performance_metrics: JsonObject;
  final_value: number | null;
  error: string | null;
  page?: { trades: PageInfo; orders: PageInfo; equity_points: number; equity_points_total: number } | null;
  rerun?: { of: string; identical: boolean; changes: { field: string; before: unknown; after: unknown }[] } | null;
  [field: string]: unknown;
}

export interface RunSummary {
  run_id: string;
  mode: string;
  status: string;
  strategy_name: string;
  symbols: string[];
  timeframe: string;
  exchange: string;
  config: JsonObject;
  created_at: Timestamp | null;
  started_at: Timestamp | null;
  ended_at: Timestamp | null;
  error: string | null;
  final_value: number | null;
  total_return: number | null;
  metrics?: JsonObject | null;
  rerun_of?: string | null;
  [field: string]: unknown;
}

export interface RunList {
  items: RunSummary[];
  total: number;
  limit: number;
  offset: number;
}

export interface Alert {
  id: string;
  kind: string;
  severity: "critical" | "warning" | string;
  run_id: string;
  user_id?: number | null;
  message: string;
  details: JsonObject;
  created_at: Timestamp;
}

export interface AlertList {
  items: Alert[];
  total: number;
  limit: number;
  offset: number;
}

export type GridEntry = Array<number | string | boolean | null> | string | { start: number; end: number; step?: number };

/** `POST /sweeps`: a backtest request whose `strategy_params` are fixed, plus the grid (no scheduler: the server decides). */
export interface SweepRequest extends BacktestRequest {
  grid: Record<string, GridEntry>;
  metrics?: string[] | null;
  sort?: string | null;
  top_k?: number | null;
}

export interface SweepProgress {
  done: number;
  total: number;
  fraction: number;
  eta_seconds: number | null;
}

export interface Sweep {
  sweep_id: string;
  status: "queued" | "running" | "completed" | "cancelled" | "failed" | string;
  strategy_name: string;
  progress: SweepProgress;
  combinations: number;
  evaluated: number;
  skipped_count: number;
  skipped: Array<{ index: number; params: JsonObject; reason: string }>;
  rows: number;
  sort: string;
  metrics: string[];
  top_k: number | null;
  created_at: Timestamp;
  started_at: Timestamp | null;
  ended_at: Timestamp | null;
  error: string | null;
  error_code: string | null;
  request: JsonObject;
}

export interface SweepRow {
  rank: number;
  index: number;
  params: JsonObject;
  metrics: Record<string, number | null>;
}

export interface SweepResults {
  sweep_id: string;
  status: string;
  sort: string;
  items: SweepRow[];
  total: number;
  limit: number;
  offset: number;
}

export interface SweepList {
  items: Sweep[];
  total: number;
  limit: number;
  offset: number;
}

/** `POST /walkforwards`: a sweep's backtest fields and grid, plus walk-forward windows or `cpcv` folds. */
export interface WalkForwardRequest extends BacktestRequest {
  grid: Record<string, GridEntry>;
  metric?: string | null;
  /** Walk-forward: bars, or a duration such as "90d" (required without `cpcv`). */
  train?: number | string | null;
  test?: number | string | null;
  step?: number | string | null;
  anchored?: boolean | null;
  partial_last?: boolean | null;
  /** Combinatorial purged CV instead (takes no train/test/step/anchored/partial_last). */
  cpcv?: { n_folds: number; n_test_folds: number } | null;
  purge?: number | null;
  /** With `cpcv` only. */
  embargo?: number | null;
}

export interface OosSpan {
  start: number;
  stop: number;
  start_date: string;
  end_date: string;
}

export interface WalkForwardWindow {
  index: number;
  train: OosSpan;
  test: OosSpan;
  params: JsonObject;
  in_sample: number | null;
  out_of_sample: Record<string, number | null>;
}

export interface WalkForwardReport {
  strategy: string;
  symbols: string[];
  timeframe: string;
  exchange: string;
  metric: string;
  bars: number;
  train: number;
  test: number;
  step: number;
  purge: number;
  anchored: boolean;
  partial_last: boolean;
  windows: WalkForwardWindow[];
  stitched: { timestamp: number[]; equity: number[]; metrics: Record<string, number | null> };
}

export interface CpcvReport {
  strategy: string;
  symbols: string[];
  timeframe: string;
  exchange: string;
  metric: string;
  bars: number;
  n_folds: number;
  n_test_folds: number;
  purge: number;
  embargo: number;
  folds: OosSpan[];
  splits: Array<{
    index: number;
    train: OosSpan[];
    params: JsonObject;
    in_sample: number | null;
    tests: Array<{ fold: number; span: OosSpan; metrics: Record<string, number | null> }>;
  }>;
  paths: Array<{ index: number; splits: number[]; metrics: Record<string, number | null> }>;
}

export interface WalkForward {
  walkforward_id: string;
  kind: "walk_forward" | "cpcv" | string;
  status: "queued" | "running" | "completed" | "cancelled" | "failed" | string;
  strategy_name: string;
  /** Windows (CPCV: splits) done of the total. */
  progress: SweepProgress;
  combinations: number;
  created_at: Timestamp;
  started_at: Timestamp | null;
  ended_at: Timestamp | null;
  error: string | null;
  error_code: string | null;
  request: JsonObject;
  /** Once completed (null in lists): a WalkForwardReport for kind "walk_forward", a CpcvReport for "cpcv". */
  report: WalkForwardReport | CpcvReport | null;
}

export interface WalkForwardList {
  items: WalkForward[];
  total: number;
  limit: number;
  offset: number;
}

export interface StrategyInfo {
  id: number | null;
  kind: "class" | "preset" | string;
  name: string;
  description: string;
  base_strategy: string | null;
  parameters: JsonObject;
  parameters_schema?: JsonObject | null;
  style?: string | null;
  origin?: string | null;
  is_active: boolean;
  read_only: boolean;
  created_at?: string | null;
  updated_at?: string | null;
  [field: string]: unknown;
}

export interface StrategyList {
  items: StrategyInfo[];
  total: number;
  skip: number;
  limit: number;
  load_errors?: JsonObject[];
}

export interface CheckItem {
  name: string;
  passed: boolean;
  compared: number;
  differing: number;
  first_difference: { bar: number; time: Timestamp; symbol: string; expected: string; found: string } | null;
  detail: string;
}

export interface CheckResult {
  strategy: string;
  style: string;
  parameters: JsonObject;
  exchange: string;
  symbols: string[];
  timeframe: string;
  start: Timestamp | null;
  end: Timestamp | null;
  bars: number;
  window: number;
  entries: number;
  exits: number;
  passed: boolean;
  warnings: string[];
  seconds: number;
  checks: CheckItem[];
}

export interface ExchangeInfo {
  id: string;
  name: string;
  sandbox: boolean;
  ohlcv: boolean;
  timeframes: string[];
  notes: string;
  live_trading?: {
    supported: boolean;
    spot: boolean;
    client_order_ids: boolean;
    order_queries: boolean;
    sandbox: boolean;
    missing: string[];
  } | null;
}

export interface ExchangeList {
  items: ExchangeInfo[];
  total: number;
  default: string | null;
}

export interface CredentialInfo {
  name: string;
  exchange: string;
  created_at: Timestamp;
  last_used_at: Timestamp | null;
  rotated_at: Timestamp | null;
}

export interface CredentialList {
  credentials: CredentialInfo[];
}

export interface CredentialCheck {
  ok: boolean;
  code: string;
  message: string;
}

export interface Health {
  status: "healthy" | "degraded" | "unhealthy" | string;
  version?: string | null;
  api_version?: string | null;
  checks: JsonObject;
  metrics: JsonObject;
  timestamp: Timestamp | null;
  [field: string]: unknown;
}

export interface Meta {
  api_version: string;
  app_version: string;
  deprecation_policy: JsonObject;
  deprecations: JsonObject[];
  changelog?: string | null;
  [field: string]: unknown;
}

export interface TokenResponse {
  access_token: string;
  token_type: "bearer";
  refresh_token: string;
  /** Seconds until the access token expires. */
  expires_in: number;
}

export interface Me {
  user_id: number | null;
  username: string;
  role: string;
  scopes: string[];
  auth: "local" | "token" | "api_key";
  api_key_id: number | null;
  auth_mode: "off" | "on";
}

export type Scope = "read" | "trade" | "live";

export interface ApiKey {
  id: number;
  name: string;
  prefix: string;
  scopes: string[];
  created_at: Timestamp;
  expires_at: Timestamp | null;
  revoked_at: Timestamp | null;
  user_id: number;
}

export interface ApiKeyCreated extends ApiKey {
  /** The full key: shown in this answer only. */
  key: string;
}

export interface ApiKeyList {
  items: ApiKey[];
}

export interface LogoutResponse {
  revoked: number;
}

// Streams ----------------------------------------------------------------------------------------------

export interface StatusEvent {
  type:
    | "snapshot" | "status_update" | "trade_execution" | "error" | "alert" | "sweep_progress" | "download_progress"
    | "candle" | "heartbeat" | string;
  payload: JsonObject;
  timestamp: Timestamp | null;
  /** The run's event number, on a one-run stream (`runId`): resume after it with `since`. */
  seq?: number;
}

/** The payload of a `candle` event (`streamStatus({ candles: true })`): a session's closed candle; `t` is its open time in UTC ms. */
export interface SessionCandle {
  run_id: string;
  symbol: string;
  timeframe: string;
  t: number;
  o: number | null;
  h: number | null;
  l: number | null;
  c: number | null;
  v: number | null;
}

/** A `/ws/status` event whose payload is a session's closed candle. */
export interface CandleEvent extends StatusEvent {
  type: "candle";
  payload: SessionCandle & JsonObject;
}

/** A `download_progress` event: the caller's download job as `GET /data/downloads/{id}` shows it. */
export interface DownloadProgressEvent extends StatusEvent {
  type: "download_progress";
  payload: DownloadJob & JsonObject;
}

export type Channel = "status" | "orders" | "trades" | "equity" | "alerts";

export interface ChannelMessage {
  channel: Channel | "heartbeat" | "error" | string;
  data: JsonObject;
}

export interface Subscription {
  channel: Channel;
  symbol: string | null;
}

declare class Stream<T> implements AsyncIterable<T> {
  readonly url: string;
  readonly closed: boolean;
  readonly closeCode: number | null;
  /** The next message; `undefined` once the stream closed normally; TimeoutError after `timeout` ms. */
  recv(options?: { timeout?: number | null }): Promise<T | undefined>;
  close(): void;
  [Symbol.asyncIterator](): AsyncIterator<T>;
}

export declare class EventStream extends Stream<StatusEvent> {}

export declare class ChannelStream extends Stream<ChannelMessage> {
  readonly subscriptions: Subscription[];
  subscribe(channels: Iterable<Channel>, options?: { symbol?: string | null }): Promise<Subscription[]>;
  unsubscribe(channels: Iterable<Channel>, options?: { symbol?: string | null }): Promise<Subscription[]>;
}

// Errors -----------------------------------------------------------------------------------------------

export interface ErrorFields {
  status?: number | null;
  code?: string | null;
  details?: JsonObject | null;
  path?: string | null;
  requestId?: string | null;
  body?: unknown;
}

/** Base of every SDK error, carrying the server's envelope. */
// Charts, round trips, breakdowns, candle data, downloads, logs ------------------------------------------------

/** A time as ISO 8601 text or epoch milliseconds. */
export type TimeArg = string | number;

export interface CandleColumns {
  timestamp: number[];
  open: (number | null)[];
  high: (number | null)[];
  low: (number | null)[];
  close: (number | null)[];
  volume: (number | null)[];
}

export interface IndicatorSeries { name: string; values: (number | null)[] }

export interface RoundTrip {
  symbol: string;
  side: "long" | "short";
  entry_time: string;
  exit_time: string;
  entry_price: number | null;
  exit_price: number | null;
  size: number;
  pnl: number | null;
  pnl_pct: number | null;
  duration_s: number;
  fees: number;
  stop_loss?: number | null;
  take_profit?: number | null;
  exit_reason?: string;
  exit_order_id?: number;
}

/** `GET /runs/{id}/recent-candles`: a session's latest closed candles of one symbol, warm-up included. */
export interface SessionCandles {
  run_id: string;
  symbol: string;
  symbols: string[];
  timeframe: string;
  status: string;
  bars: number;
  truncated: boolean;
  candles: CandleColumns;
}

export interface RunCandles {
  run_id: string;
  exchange: string;
  symbol: string;
  symbols: string[];
  timeframe: string;
  run_range: { start: string | null; end: string | null };
  start: string | null;
  end: string | null;
  bars: number;
  bucket_bars: number;
  candles: CandleColumns;
  indicators: IndicatorSeries[];
  indicators_error?: string | null;
  markers: RoundTrip[];
  markers_total: number;
  markers_truncated: boolean;
}

export interface RoundTripList { items: RoundTrip[]; total: number; limit: number; offset: number; sort: string; order: "asc" | "desc" }

export interface SymbolBreakdown {
  symbol: string; trades: number; wins: number; losses: number; win_rate: number | null; pnl: number; fees: number;
  return_pct: number | null;
}

export interface MonthBreakdown { month: string; start_value: number; end_value: number; return_pct: number | null }

export interface Breakdowns { run_id: string; initial_cash: number; by_symbol: SymbolBreakdown[]; monthly: MonthBreakdown[] }

export interface StoredCandles {
  exchange: string; symbol: string; timeframe: string; candles: CandleColumns; count: number; truncated: boolean;
  next_start?: number | null;
}

export interface Market { symbol: string; base: string; quote: string }

export interface MarketList { exchange: string; items: Market[]; total: number; limit: number; any_symbol: boolean }

export interface Gap { start: string; end: string; missing_bars: number }

export interface CandleSet {
  exchange: string; symbol: string; timeframe: string; first: string | null; last: string | null; count: number;
  size_bytes: number; gaps: number; missing_bars: number; largest_gaps: Gap[];
}

export interface CandleSetList { items: CandleSet[]; total: number; limit: number; offset: number }

export interface DownloadJob {
  id: string;
  status: "queued" | "running" | "completed" | "failed" | "canceled";
  exchange: string;
  symbol: string;
  timeframe: string;
  start: string;
  end: string;
  created_at: string;
  finished_at?: string | null;
  progress: { done: number; total: number; fraction: number; eta_s?: number | null };
  error?: Record<string, string> | null;
  dataset?: CandleSet | null;
}

export interface LogLine { time: string; level: string; logger: string; run_id?: string | null; message: string }

export interface LogTail { items: LogLine[]; total: number; capacity: number }

export declare class CrackTraderError extends Error {
  static readonly defaultCode: string;
  constructor(message: string, fields?: ErrorFields);
  /** The HTTP status; null when no response was received. */
  readonly status: number | null;
  readonly code: string;
  readonly details: JsonObject;
  readonly path: string | null;
  /** Quote it when reporting a 500. */
  readonly requestId: string | null;
  readonly body: unknown;
}
export declare class ValidationError extends CrackTraderError {}
export declare class InvalidSymbolError extends ValidationError {}
export declare class InvalidTimeframeError extends ValidationError {}
export declare class InvalidDateRangeError extends ValidationError {}
export declare class UnknownStrategyError extends ValidationError {}
export declare class InvalidStrategyParamsError extends ValidationError {}
export declare class UnknownExchangeError extends ValidationError {}
export declare class CheckTooLargeError extends ValidationError {}
export declare class SweepTooLargeError extends ValidationError {}
export declare class InvalidPaperConfigError extends ValidationError {}
export declare class AuthenticationError extends CrackTraderError {}
export declare class PermissionDeniedError extends CrackTraderError {}
export declare class NotFoundError extends CrackTraderError {}
export declare class ConflictError extends CrackTraderError {}
export declare class RunAlreadyActiveError extends ConflictError {}
export declare class NoActiveRunError extends ConflictError {}
export declare class RunNotResettableError extends ConflictError {}
export declare class DuplicateNameError extends ConflictError {}
export declare class SessionLimitError extends ConflictError {}
export declare class RateLimitError extends CrackTraderError {
  constructor(message: string, fields?: ErrorFields & { retryAfter?: number | null });
  /** Seconds from the Retry-After header, when given. */
  readonly retryAfter: number | null;
}
export declare class ServerError extends CrackTraderError {}
export declare class NotImplementedByServerError extends ServerError {}
export declare class InvalidResponseError extends CrackTraderError {}
export declare class ConnectionError extends CrackTraderError {}
export declare class StreamClosedError extends ConnectionError {}
export declare class TimeoutError extends CrackTraderError {}
export declare class RunFailedError extends CrackTraderError {}
export declare class NotSupportedError extends CrackTraderError {}

export declare function errorClass(status: number | null, code: string | null): typeof CrackTraderError;
export declare function parseRetryAfter(value: string | null): number | null;
export declare function errorFromResponse(
  status: number,
  headers: Headers | Record<string, string>,
  text: string,
  request?: { method?: string; url?: string },
): CrackTraderError;

// The client -------------------------------------------------------------------------------------------

export interface CrackTraderOptions {
  /** The server's root URL; default: the page's origin in a browser, else $CRACKTRADER_BASE_URL, else http://127.0.0.1:8000. */
  baseUrl?: string;
  /** Sent as the X-API-Key header (and on stream handshakes). */
  apiKey?: string | null;
  /** A bearer access token (login() sets one). */
  token?: string | null;
  /** Milliseconds per request and per stream opening; 0 or null: none. Default 30000. */
  timeout?: number | null;
  /** A fetch implementation (default: the global fetch). */
  fetch?: typeof fetch;
  /** A WebSocket constructor with the browser's API (default: ws in Node.js, the global one in a browser). */
  WebSocket?: new (url: string) => WebSocket;
}

export interface RequestOptions {
  json?: unknown;
  form?: Record<string, string>;
  as?: "json" | "text" | "none";
  /** Statuses beyond 2xx whose body is the answer rather than an error. */
  accept?: number[];
  headers?: Record<string, string>;
}

export declare class CrackTrader {
  constructor(options?: CrackTraderOptions);
  readonly baseUrl: string;
  apiKey: string | null;
  token: string | null;
  timeout: number | null;

  headers(): Record<string, string>;
  /** Any request to the server; the path includes /api/v1. */
  request<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<T>;

  // Health, status, meta
  getHealth(): Promise<Health>;
  getStatus(): Promise<Status>;
  getDetailedStatus(): Promise<DetailedStatus>;
  getMeta(): Promise<Meta>;
  getMetrics(): Promise<string>;

  // Accounts
  login(username: string, password: string): Promise<TokenResponse>;
  refresh(refreshToken: string): Promise<TokenResponse>;
  logout(refreshToken?: string | null): Promise<LogoutResponse>;
  getMe(): Promise<Me>;
  listApiKeys(): Promise<ApiKeyList>;
  createApiKey(name: string, options?: { scopes?: Scope[]; expiresAt?: DateLike | null }): Promise<ApiKeyCreated>;
  revokeApiKey(keyId: number): Promise<void>;

  // Run control (the runner slot)
  startBacktest(request: BacktestRequest): Promise<RunResponse>;
  startLive(request: LiveRequest): Promise<RunResponse>;
  stop(options?: { flatten?: boolean }): Promise<RunResponse>;
  reset(): Promise<RunResponse>;
  getResults(page?: PageOptions): Promise<Results>;
  waitForCompletion(runId?: string | null, options?: { timeout?: number | null; pollInterval?: number }): Promise<Status>;
  backtest(
    request: BacktestRequest,
    options?: PageOptions & { reset?: boolean; timeout?: number | null; pollInterval?: number },
  ): Promise<Results>;

  // Runs by id
  listRuns(filter?: RunFilter): Promise<RunList>;
  /** `idempotencyKey`: a retry with the same key answers the same run instead of starting a second. */
  startRun(request: RunRequest, options?: { idempotencyKey?: string }): Promise<RunResponse>;
  startSession(request: Omit<LiveRequest, "mode"> & { mode?: "paper" | "live" }): Promise<RunResponse>;
  getRun(runId: string): Promise<RunSummary>;
  deleteRun(runId: string): Promise<void>;
  rerun(runId: string): Promise<RunResponse>;
  getRunResults(runId: string, page?: PageOptions): Promise<Results>;
  tradesCsv(runId: string): Promise<string>;
  equityCsv(runId: string): Promise<string>;
  runStatus(runId: string): Promise<SessionStatus>;
  runDetailedStatus(runId: string): Promise<DetailedStatus>;
  stopRun(runId: string, options?: { flatten?: boolean }): Promise<RunResponse>;
  waitForRun(runId: string, options?: { timeout?: number | null; pollInterval?: number }): Promise<SessionStatus>;
  cancelOrder(runId: string, orderId: number): Promise<RunResponse>;
  closePosition(runId: string, symbol: string): Promise<RunResponse>;
  pauseSession(runId: string): Promise<RunResponse>;
  resumeSession(runId: string, keys?: { apiKey?: string; secret?: string; password?: string }): Promise<RunResponse>;
  /** Balances by currency of a session: `runId`, else the newest active session this client started (seed 001). */
  getBalance(runId?: string | null): Promise<Record<string, number>>;

  // Sweeps
  startSweep(request: SweepRequest): Promise<Sweep>;
  listSweeps(page?: { limit?: number; offset?: number }): Promise<SweepList>;
  getSweep(sweepId: string): Promise<Sweep>;
  sweepResults(sweepId: string, page?: { sort?: string; limit?: number; offset?: number }): Promise<SweepResults>;
  cancelSweep(sweepId: string): Promise<Sweep>;
  backtestSweepRow(sweepId: string, rank?: number): Promise<RunResponse>;
  waitForSweep(sweepId: string, options?: { timeout?: number | null; pollInterval?: number }): Promise<Sweep>;
  // Walk-forward and CPCV
  startWalkforward(request: WalkForwardRequest): Promise<WalkForward>;
  listWalkforwards(page?: { limit?: number; offset?: number }): Promise<WalkForwardList>;
  getWalkforward(walkforwardId: string): Promise<WalkForward>;
  cancelWalkforward(walkforwardId: string): Promise<WalkForward>;
  waitForWalkforward(
    walkforwardId: string,
    options?: { timeout?: number | null; pollInterval?: number },
  ): Promise<WalkForward>;

  // Strategies, exchanges, credentials, alerts
  getStrategies(options?: { skip?: number; limit?: number; activeOnly?: boolean; kind?: string }): Promise<StrategyList>;
  getStrategy(ref: number | string): Promise<StrategyInfo>;
  createStrategy(preset: StrategyPreset): Promise<StrategyInfo>;
  updateStrategy(strategyId: number, changes: Partial<StrategyPreset>): Promise<StrategyInfo>;
  deleteStrategy(strategyId: number): Promise<void>;
  checkStrategy(ref: number | string, request?: CheckRequest): Promise<CheckResult>;
  getExchanges(): Promise<ExchangeList>;
  listCredentials(): Promise<CredentialList>;
  createCredentials(name: string, exchange: string, secrets: ExchangeSecrets): Promise<CredentialInfo>;
  rotateCredentials(name: string, secrets: ExchangeSecrets): Promise<CredentialInfo>;
  testCredentials(name: string, options?: { sandbox?: boolean }): Promise<CredentialCheck>;
  deleteCredentials(name: string): Promise<void>;
  listAlerts(filter?: { runId?: string; kind?: string; limit?: number; offset?: number }): Promise<AlertList>;

  // Charts, round trips, breakdowns, candle data, downloads, logs
  runCandles(runId: string, options?: { symbol?: string; start?: TimeArg; end?: TimeArg; maxPoints?: number; maxMarkers?: number }): Promise<RunCandles>;
  recentCandles(runId: string, options?: { symbol?: string; limit?: number }): Promise<SessionCandles>;
  roundTrips(runId: string, options?: { sort?: string; order?: "asc" | "desc"; limit?: number; offset?: number }): Promise<RoundTripList>;
  breakdowns(runId: string): Promise<Breakdowns>;
  getCandles(symbol: string, options?: { exchange?: string; timeframe?: string; start?: TimeArg; end?: TimeArg; limit?: number }): Promise<StoredCandles>;
  getMarkets(exchange: string, options?: { q?: string; limit?: number }): Promise<MarketList>;
  listCandleSets(options?: { limit?: number; offset?: number }): Promise<CandleSetList>;
  startDownload(exchange: string, symbol: string, options: { timeframe?: string; start: TimeArg; end?: TimeArg | null }): Promise<DownloadJob>;
  getDownload(jobId: string): Promise<DownloadJob>;
  cancelDownload(jobId: string): Promise<DownloadJob>;
  getLogs(options?: { level?: "DEBUG" | "INFO" | "WARNING" | "ERROR" | "CRITICAL"; runId?: string; limit?: number }): Promise<LogTail>;

  // Streams
  streamStatus(options?: {
    runId?: string | null;
    heartbeats?: boolean;
    candles?: boolean;
    /** With `runId`: resume after this event number (`seq`). */
    since?: number | null;
  }): Promise<EventStream>;
  subscribe(channels?: Channel[], options?: { symbol?: string | null; heartbeats?: boolean }): Promise<ChannelStream>;
  streamAlerts(options?: { heartbeats?: boolean }): Promise<ChannelStream>;
  wsUrl(path: string, search?: string): string;
  /** The WebSocket constructor streams use, and whether it sends handshake headers (ws in Node does). */
  webSocketClass(): Promise<{ Impl: new (url: string, ...rest: unknown[]) => WebSocket; headers: boolean }>;
}

export default CrackTrader;
