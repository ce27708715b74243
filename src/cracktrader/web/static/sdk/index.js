// cracktrader-js: the JavaScript SDK of the Cracktrader web API, one ES module for Node.js 20+ and browsers.
// No build step: this file is what runs, and index.d.ts declares its types by hand.

export const VERSION = "0.1.0";
export const API_PREFIX = "/api/v1";
export const DEFAULT_BASE_URL = "http://127.0.0.1:8000";
export const BASE_URL_ENV = "CRACKTRADER_BASE_URL";
export const FINISHED_STATUSES = Object.freeze(["completed", "failed", "stopped"]);
export const SWEEP_FINISHED_STATUSES = Object.freeze(["completed", "cancelled", "failed"]);

// Every operation of the server's OpenAPI document and the method that calls it, keyed by "METHOD path".
// tests/test_sdk_coverage.py fails when an operation is missing here, in index.d.ts or in the Python SDK.
export const OPERATIONS = Object.freeze({
  "GET /api/v1/health": "getHealth",
  "GET /health": "getHealth", // the same report outside /api/v1, for load balancers
  "POST /api/v1/auth/login": "login",
  "POST /api/v1/auth/refresh": "refresh",
  "POST /api/v1/auth/logout": "logout",
  "GET /api/v1/auth/me": "getMe",
  "GET /api/v1/auth/apikeys": "listApiKeys",
  "POST /api/v1/auth/apikeys": "createApiKey",
  "DELETE /api/v1/auth/apikeys/{key_id}": "revokeApiKey",
  "POST /api/v1/run/backtest": "startBacktest",
  "POST /api/v1/run/live": "startLive",
  "POST /api/v1/run/stop": "stop",
  "DELETE /api/v1/run/reset": "reset",
  "GET /api/v1/status": "getStatus",
  "GET /api/v1/run/status": "getStatus", // deprecated alias of /status
  "GET /api/v1/status/detailed": "getDetailedStatus",
  "GET /api/v1/results": "getResults",
  "GET /api/v1/runs": "listRuns",
  "POST /api/v1/runs": "startRun",
  "GET /api/v1/runs/{run_id}": "getRun",
  "DELETE /api/v1/runs/{run_id}": "deleteRun",
  "POST /api/v1/runs/{run_id}/rerun": "rerun",
  "GET /api/v1/runs/{run_id}/results": "getRunResults",
  "GET /api/v1/runs/{run_id}/trades.csv": "tradesCsv",
  "GET /api/v1/runs/{run_id}/equity.csv": "equityCsv",
  "GET /api/v1/runs/{run_id}/status": "runStatus",
  "GET /api/v1/runs/{run_id}/status/detailed": "runDetailedStatus",
  "POST /api/v1/runs/{run_id}/stop": "stopRun",
  "POST /api/v1/runs/{run_id}/orders/{order_id}/cancel": "cancelOrder",
  "POST /api/v1/runs/{run_id}/positions/{symbol}/close": "closePosition",
  "POST /api/v1/runs/{run_id}/pause": "pauseSession",
  "POST /api/v1/runs/{run_id}/resume": "resumeSession",
  "GET /api/v1/strategies": "getStrategies",
  "POST /api/v1/strategies": "createStrategy",
  "GET /api/v1/strategies/{strategy_ref}": "getStrategy",
  "PUT /api/v1/strategies/{strategy_id}": "updateStrategy",
  "DELETE /api/v1/strategies/{strategy_id}": "deleteStrategy",
  "POST /api/v1/strategies/{strategy_ref}/check": "checkStrategy",
  "GET /api/v1/credentials": "listCredentials",
  "POST /api/v1/credentials": "createCredentials",
  "DELETE /api/v1/credentials/{name}": "deleteCredentials",
  "PUT /api/v1/credentials/{name}": "rotateCredentials",
  "POST /api/v1/credentials/{name}/rotate": "rotateCredentials",
  "POST /api/v1/credentials/{name}/test": "testCredentials",
  "GET /api/v1/exchanges": "getExchanges",
  "GET /api/v1/meta": "getMeta",
  "GET /api/v1/metrics": "getMetrics",
  "GET /metrics": "getMetrics", // the same exposition outside /api/v1, for Prometheus
  "GET /api/v1/alerts": "listAlerts",
  "GET /api/v1/runs/{run_id}/candles": "runCandles",
  "GET /api/v1/runs/{run_id}/recent-candles": "recentCandles",
  "GET /api/v1/runs/{run_id}/roundtrips": "roundTrips",
  "GET /api/v1/runs/{run_id}/breakdowns": "breakdowns",
  "GET /api/v1/candles": "getCandles",
  "GET /api/v1/exchanges/{exchange}/markets": "getMarkets",
  "GET /api/v1/data/sets": "listCandleSets",
  "POST /api/v1/data/downloads": "startDownload",
  "GET /api/v1/data/downloads/{job_id}": "getDownload",
  "DELETE /api/v1/data/downloads/{job_id}": "cancelDownload",
  "GET /api/v1/logs": "getLogs",
  "POST /api/v1/sweeps": "startSweep",
  "GET /api/v1/sweeps": "listSweeps",
  "GET /api/v1/sweeps/{sweep_id}": "getSweep",
  "GET /api/v1/sweeps/{sweep_id}/results": "sweepResults",
  "DELETE /api/v1/sweeps/{sweep_id}": "cancelSweep",
  "POST /api/v1/sweeps/{sweep_id}/rows/{rank}/backtest": "backtestSweepRow",
  "POST /api/v1/walkforwards": "startWalkforward",
  "GET /api/v1/walkforwards": "listWalkforwards",
  "GET /api/v1/walkforwards/{walkforward_id}": "getWalkforward",
  "DELETE /api/v1/walkforwards/{walkforward_id}": "cancelWalkforward",
});

// The WebSocket streams (not in the OpenAPI document) and their methods.
export const STREAMS = Object.freeze({
  "/api/v1/ws/status": "streamStatus",
  "/api/v1/ws": "subscribe",
});

// Errors ----------------------------------------------------------------------------------------------------

/** Base of every SDK error; `status` is null when no HTTP response was received. */
export class CrackTraderError extends Error {
  static defaultCode = "ERROR";

  constructor(message, { status = null, code = null, details = null, path = null, requestId = null, body = null } = {}) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = code ?? new.target.defaultCode;
    this.details = details ?? {};
    this.path = path;
    this.requestId = requestId;
    this.body = body;
  }

  toString() {
    return `${this.name}: [${this.status !== null ? `${this.status} ${this.code}` : this.code}] ${this.message}`;
  }
}

// The class tree and codes mirror the Python SDK (src/cracktrader/client/errors.py).
export class ValidationError extends CrackTraderError { static defaultCode = "VALIDATION_ERROR"; }
export class InvalidSymbolError extends ValidationError { static defaultCode = "INVALID_SYMBOL"; }
export class InvalidTimeframeError extends ValidationError { static defaultCode = "INVALID_TIMEFRAME"; }
export class InvalidDateRangeError extends ValidationError { static defaultCode = "INVALID_DATE_RANGE"; }
export class UnknownStrategyError extends ValidationError { static defaultCode = "UNKNOWN_STRATEGY"; }
export class InvalidStrategyParamsError extends ValidationError { static defaultCode = "INVALID_STRATEGY_PARAMS"; }
export class UnknownExchangeError extends ValidationError { static defaultCode = "UNKNOWN_EXCHANGE"; }
export class CheckTooLargeError extends ValidationError { static defaultCode = "CHECK_TOO_LARGE"; }
export class SweepTooLargeError extends ValidationError { static defaultCode = "SWEEP_TOO_LARGE"; }
export class InvalidPaperConfigError extends ValidationError { static defaultCode = "INVALID_PAPER_CONFIG"; }
export class AuthenticationError extends CrackTraderError { static defaultCode = "UNAUTHORIZED"; }
export class PermissionDeniedError extends CrackTraderError { static defaultCode = "FORBIDDEN"; }
export class NotFoundError extends CrackTraderError { static defaultCode = "NOT_FOUND"; }
export class ConflictError extends CrackTraderError { static defaultCode = "CONFLICT"; }
export class RunAlreadyActiveError extends ConflictError { static defaultCode = "RUN_ALREADY_ACTIVE"; }
export class NoActiveRunError extends ConflictError { static defaultCode = "NO_ACTIVE_RUN"; }
export class RunNotResettableError extends ConflictError { static defaultCode = "RUN_NOT_RESETTABLE"; }
export class DuplicateNameError extends ConflictError { static defaultCode = "DUPLICATE_NAME"; }
export class SessionLimitError extends ConflictError { static defaultCode = "SESSION_LIMIT"; }

/** 429; `retryAfter` is the server's Retry-After in seconds, when given. */
export class RateLimitError extends CrackTraderError {
  static defaultCode = "RATE_LIMITED";

  constructor(message, { retryAfter = null, ...rest } = {}) {
    super(message, rest);
    this.retryAfter = retryAfter;
  }
}

export class ServerError extends CrackTraderError { static defaultCode = "INTERNAL_ERROR"; }
export class NotImplementedByServerError extends ServerError { static defaultCode = "NOT_IMPLEMENTED"; }
export class InvalidResponseError extends CrackTraderError { static defaultCode = "INVALID_RESPONSE"; }
export class ConnectionError extends CrackTraderError { static defaultCode = "CONNECTION_ERROR"; }
export class StreamClosedError extends ConnectionError { static defaultCode = "STREAM_CLOSED"; }
export class TimeoutError extends CrackTraderError { static defaultCode = "TIMEOUT"; }
export class RunFailedError extends CrackTraderError { static defaultCode = "RUN_FAILED"; }
export class NotSupportedError extends CrackTraderError { static defaultCode = "NOT_SUPPORTED"; }

const BY_CODE = Object.fromEntries(
  [
    ValidationError, InvalidSymbolError, InvalidTimeframeError, InvalidDateRangeError, UnknownStrategyError,
    InvalidStrategyParamsError, UnknownExchangeError, CheckTooLargeError, SweepTooLargeError, InvalidPaperConfigError,
    RunAlreadyActiveError, NoActiveRunError, RunNotResettableError, DuplicateNameError, SessionLimitError,
    NotImplementedByServerError, RateLimitError,
  ].map((cls) => [cls.defaultCode, cls]),
);
const BY_STATUS = {
  400: ValidationError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
  409: ConflictError, 413: ValidationError, 415: ValidationError, 422: ValidationError, 429: RateLimitError,
  501: NotImplementedByServerError,
};

/** The most specific error class for a code, else for the HTTP status. */
export function errorClass(status, code) {
  if (code && Object.hasOwn(BY_CODE, code)) return BY_CODE[code];
  if (status === null || status === undefined) return CrackTraderError;
  if (Object.hasOwn(BY_STATUS, status)) return BY_STATUS[status];
  return status >= 500 ? ServerError : CrackTraderError;
}

/** Seconds from a Retry-After header: delta-seconds or an HTTP date. */
export function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

/** The typed error of a failed response, whether or not its body is the server's envelope. */
export function errorFromResponse(status, headers, text, { method = "GET", url = "" } = {}) {
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  let code = null;
  let message = null;
  let details = {};
  let path = null;
  if (body && typeof body === "object" && !Array.isArray(body)) {
    const err = body.error;
    if (err && typeof err === "object") {
      if (typeof err.code === "string") code = err.code;
      if (typeof err.message === "string") message = err.message;
      if (err.details && typeof err.details === "object" && !Array.isArray(err.details)) details = err.details;
    } else if (typeof err === "string") {
      message = err;
    }
    if (message === null && "detail" in body) {
      // FastAPI's plain shape: a message, or a validation list.
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail).slice(0, 500);
      if (typeof body.detail !== "string") details = { errors: body.detail };
    }
    if (typeof body.path === "string") path = body.path;
  }
  if (message === null) {
    const snippet = (text || "").trim().split(/\s+/).join(" ").slice(0, 200);
    message = `HTTP ${status} from ${method} ${url}${snippet ? `: ${snippet}` : ""}`;
  }
  const get = (name) => (typeof headers?.get === "function" ? headers.get(name) : headers?.[name]) ?? null;
  const requestId = get("x-request-id") ?? (typeof details.request_id === "string" ? details.request_id : null);
  const cls = errorClass(status, code);
  const fields = { status, code: code ?? STATUS_CODES[status] ?? null, details, path, requestId, body: body ?? text };
  if (cls === RateLimitError) return new RateLimitError(message, { ...fields, retryAfter: parseRetryAfter(get("retry-after")) });
  return new cls(message, fields);
}

// The server's code for a bare status, used when a body carries no envelope (a proxy's page, an old server).
const STATUS_CODES = {
  400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
  409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "VALIDATION_ERROR",
  429: "RATE_LIMITED", 500: "INTERNAL_ERROR", 501: "NOT_IMPLEMENTED", 502: "BAD_GATEWAY",
  503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT",
};

// Helpers ---------------------------------------------------------------------------------------------------

const IS_BROWSER = typeof window !== "undefined" && typeof window.document !== "undefined";

function defaultBaseUrl() {
  // In a page the server that served it; in Node $CRACKTRADER_BASE_URL, else the local default server.
  if (IS_BROWSER && globalThis.location?.origin?.startsWith("http")) return globalThis.location.origin;
  return globalThis.process?.env?.[BASE_URL_ENV] || DEFAULT_BASE_URL;
}

function seg(value) {
  return encodeURIComponent(String(value));
}

/** A query string of the defined values (camelCase option names become the server's snake_case). */
function query(values) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined || value === null) continue;
    params.set(key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

function paging({ maxPoints, limit, offset } = {}) {
  return query({ maxPoints, limit, offset: offset ? offset : undefined });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function compact(body) {
  return Object.fromEntries(Object.entries(body ?? {}).filter(([, v]) => v !== undefined && v !== null));
}

/** A start request's body: undefined and null drop out so the server's defaults apply; one symbol becomes a list. */
function runBody(body) {
  const out = compact(body);
  if (typeof out.symbols === "string") out.symbols = [out.symbols];
  for (const key of ["start_date", "end_date"]) {
    if (out[key] instanceof Date) out[key] = out[key].toISOString();
  }
  return out;
}

// The client -------------------------------------------------------------------------------------------------

/** Client of a Cracktrader server: run control, status, results, history, accounts and streams. */
export class CrackTrader {
  #fetch;
  #WebSocket;
  #sessions = [];
  #lastSession = null;

  constructor({ baseUrl, apiKey = null, token = null, timeout = 30_000, fetch: fetchImpl, WebSocket: wsImpl } = {}) {
    const url = new URL(baseUrl ?? defaultBaseUrl());
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(`baseUrl must be an http:// or https:// URL, got ${baseUrl}`);
    }
    this.baseUrl = url.href.replace(/\/+$/, "");
    this.apiKey = apiKey;
    this.token = token;
    this.timeout = timeout;
    this.#fetch = fetchImpl ?? globalThis.fetch?.bind(globalThis);
    if (!this.#fetch) throw new TypeError("No fetch: pass { fetch } (Node.js 18+ and browsers have one)");
    this.#WebSocket = wsImpl ?? null;
  }

  /** Headers with the credentials that were given. */
  headers() {
    const headers = { Accept: "application/json" };
    if (this.apiKey) headers["X-API-Key"] = this.apiKey;
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  }

  /** Send one request; resolve with its parsed answer or reject with the typed error of the envelope. */
  async request(method, path, { json, form, as = "json", accept = [], headers = {} } = {}) {
    const url = `${this.baseUrl}${path}`;
    const init = { method, headers: { ...this.headers(), ...headers } };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.headers["Content-Type"] = "application/x-www-form-urlencoded";
      init.body = new URLSearchParams(form).toString();
    }
    const controller = new AbortController();
    const timer = this.timeout ? setTimeout(() => controller.abort(), this.timeout) : null;
    init.signal = controller.signal;
    let response;
    let text;
    try {
      response = await this.#fetch(url, init);
      text = await response.text();
    } catch (err) {
      if (controller.signal.aborted) {
        throw new TimeoutError(`${method} ${url} timed out after ${this.timeout} ms`, { details: { url } });
      }
      throw new ConnectionError(`Cannot reach the Cracktrader server at ${url}: ${err?.cause?.message ?? err?.message ?? err}`, {
        details: { url },
      });
    } finally {
      if (timer) clearTimeout(timer);
    }
    if (!response.ok && !accept.includes(response.status)) {
      throw errorFromResponse(response.status, response.headers, text, { method, url });
    }
    if (as === "none") return undefined;
    if (as === "text") return text;
    try {
      return JSON.parse(text);
    } catch {
      if (accept.includes(response.status)) throw errorFromResponse(response.status, response.headers, text, { method, url });
      const type = response.headers.get("content-type") ?? "no content type";
      throw new InvalidResponseError(`Expected JSON from ${method} ${url}, got ${type}`, {
        status: response.status, body: text.slice(0, 500),
      });
    }
  }

  #api(method, path, options) {
    return this.request(method, `${API_PREFIX}${path}`, options);
  }

  // Health, status, meta ---------------------------------------------------------------------------------------

  /** Server health with checks and metrics (an unhealthy server's 503 report is returned, not thrown). */
  getHealth() { return this.#api("GET", "/health", { accept: [503] }); }

  /** Lifecycle, progress, cash, value and pnl of the caller's runner slot. */
  getStatus() { return this.#api("GET", "/status"); }

  /** Status plus recent orders and trades, positions, equity curve, metrics and health. */
  getDetailedStatus() { return this.#api("GET", "/status/detailed"); }

  /** API and app versions and announced deprecations. */
  getMeta() { return this.#api("GET", "/meta"); }

  /** The server's Prometheus metrics, as exposition text. */
  getMetrics() { return this.#api("GET", "/metrics", { as: "text", headers: { Accept: "text/plain" } }); }

  // Accounts -------------------------------------------------------------------------------------------------

  /** Sign in; the access token is used for this client's later requests and streams. */
  async login(username, password) {
    const tokens = await this.#api("POST", "/auth/login", { json: { username, password } });
    this.token = tokens.access_token;
    return tokens;
  }

  /** Rotate a refresh token; the new access token is used from now on. */
  async refresh(refreshToken) {
    const tokens = await this.#api("POST", "/auth/refresh", { json: { refresh_token: refreshToken } });
    this.token = tokens.access_token;
    return tokens;
  }

  /** End this login (with its refresh token) or every login of the user (without). */
  async logout(refreshToken = null) {
    const result = await this.#api("POST", "/auth/logout", { json: compact({ refresh_token: refreshToken }) });
    this.token = null;
    return result;
  }

  /** Who the credentials belong to, with role and scopes. */
  getMe() { return this.#api("GET", "/auth/me"); }

  /** Your API keys (every key for an admin), without secrets. */
  listApiKeys() { return this.#api("GET", "/auth/apikeys"); }

  /** Create an API key; its `key` is in this answer only. */
  createApiKey(name, { scopes, expiresAt } = {}) {
    const expires = expiresAt instanceof Date ? expiresAt.toISOString() : expiresAt;
    return this.#api("POST", "/auth/apikeys", { json: compact({ name, scopes, expires_at: expires }) });
  }

  /** Revoke an API key; it stops working at once. */
  revokeApiKey(keyId) { return this.#api("DELETE", `/auth/apikeys/${seg(keyId)}`, { as: "none" }); }

  // Run control (the runner slot) -------------------------------------------------------------------------------

  /** Start a backtest in the runner slot; it runs on in the server. */
  startBacktest(request) { return this.#api("POST", "/run/backtest", { json: runBody(request) }); }

  /** Start paper trading in the runner slot (`mode: "live"` answers 501 for now). */
  startLive(request) { return this.#api("POST", "/run/live", { json: runBody(request) }); }

  /** Stop the slot's run; `flatten` also closes a session's positions. */
  stop({ flatten = false } = {}) {
    return this.#api("POST", "/run/stop", flatten ? { json: { flatten: true } } : {});
  }

  /** Return a finished runner slot to idle. */
  reset() { return this.#api("DELETE", "/run/reset"); }

  /** Results of the slot's current or last run, sliced. */
  getResults(page = {}) { return this.#api("GET", `/results${paging(page)}`); }

  /** Poll /status until the run (the current one, or `runId`) completed, failed or stopped. */
  async waitForCompletion(runId = null, { timeout = 300_000, pollInterval = 250 } = {}) {
    const deadline = timeout === null ? null : Date.now() + timeout;
    for (;;) {
      const status = await this.getStatus();
      if (runId !== null && status.run_id !== runId) {
        throw new ConflictError(`The runner no longer holds run ${runId} (now: ${status.run_id ?? "none"}, ${status.status})`, {
          code: "RUN_REPLACED", details: { run_id: runId, current_run_id: status.run_id, status: status.status },
        });
      }
      if (status.status === "idle") throw new NoActiveRunError("No run to wait for: the runner is idle", { details: { status: "idle" } });
      if (FINISHED_STATUSES.includes(status.status)) return status;
      if (deadline !== null && Date.now() >= deadline) throw waitTimeout(status, timeout);
      await sleep(deadline === null ? pollInterval : Math.min(pollInterval, Math.max(0, deadline - Date.now())));
    }
  }

  /** Start a backtest, wait for it and return its results; RunFailedError if it failed. */
  async backtest(request, { reset = true, timeout = 600_000, pollInterval = 250, ...page } = {}) {
    let started;
    try {
      started = await this.startBacktest(request);
    } catch (err) {
      // A runner still holding a finished run is reset; an active run is never touched.
      if (!(reset && err instanceof RunAlreadyActiveError && FINISHED_STATUSES.includes(err.details.status))) throw err;
      await this.reset();
      started = await this.startBacktest(request);
    }
    const status = await this.waitForCompletion(started.run_id, { timeout, pollInterval });
    checkSucceeded(status);
    return this.getRunResults(started.run_id, page);
  }

  // Runs by id -----------------------------------------------------------------------------------------------

  /** Run history, newest first, filtered by status, mode, strategy and symbol. */
  listRuns({ status, mode, strategy, symbol, limit, offset } = {}) {
    return this.#api("GET", `/runs${query({ status, mode, strategy, symbol, limit, offset })}`);
  }

  /** Start a run by id outside the slot (201): a backtest by default, or `mode: "paper"` for a session. */
  startRun(request, { idempotencyKey } = {}) {
    const headers = idempotencyKey === undefined ? undefined : { "Idempotency-Key": idempotencyKey };
    return this.#api("POST", "/runs", { json: runBody({ mode: "backtest", ...request }), headers });
  }

  /** Start a paper session (201); `getBalance()` then reads it. */
  async startSession(request) {
    const started = await this.#api("POST", "/runs", { json: runBody({ mode: "paper", ...request }) });
    this.#sessions.push(started.run_id);
    this.#lastSession = started.run_id;
    return started;
  }

  /** One run's record. */
  getRun(runId) { return this.#api("GET", `/runs/${seg(runId)}`); }

  /** Delete a finished run and its results. */
  deleteRun(runId) { return this.#api("DELETE", `/runs/${seg(runId)}`, { as: "none" }); }

  /** Run a stored backtest again with the same inputs (202). */
  rerun(runId) { return this.#api("POST", `/runs/${seg(runId)}/rerun`); }

  /** A run's results, sliced. */
  getRunResults(runId, page = {}) { return this.#api("GET", `/runs/${seg(runId)}/results${paging(page)}`); }

  /** Every fill of a run as CSV text. */
  tradesCsv(runId) { return this.#api("GET", `/runs/${seg(runId)}/trades.csv`, { as: "text", headers: { Accept: "text/csv" } }); }

  /** The full equity curve of a run as CSV text. */
  equityCsv(runId) { return this.#api("GET", `/runs/${seg(runId)}/equity.csv`, { as: "text", headers: { Accept: "text/csv" } }); }

  /** A run's status by id (a session's with pnl parts, condition, balances and book). */
  runStatus(runId) { return this.#api("GET", `/runs/${seg(runId)}/status`); }

  /** A run's status plus recent orders and trades, positions, equity curve, metrics and health. */
  runDetailedStatus(runId) { return this.#api("GET", `/runs/${seg(runId)}/status/detailed`); }

  /** Stop a run by id; NoActiveRunError once it has ended. */
  stopRun(runId, { flatten = false } = {}) { return this.#api("POST", `/runs/${seg(runId)}/stop`, { json: { flatten } }); }

  /** Poll /runs/{id}/status until the run completed, failed or stopped. */
  async waitForRun(runId, { timeout = 300_000, pollInterval = 250 } = {}) {
    const deadline = timeout === null ? null : Date.now() + timeout;
    for (;;) {
      const status = await this.runStatus(runId);
      if (FINISHED_STATUSES.includes(status.status)) return status;
      if (deadline !== null && Date.now() >= deadline) throw waitTimeout(status, timeout);
      await sleep(deadline === null ? pollInterval : Math.min(pollInterval, Math.max(0, deadline - Date.now())));
    }
  }

  /** Cancel one working order of a session. */
  cancelOrder(runId, orderId) { return this.#api("POST", `/runs/${seg(runId)}/orders/${seg(orderId)}/cancel`); }

  /** Close a session's position in `symbol` at the last close. */
  closePosition(runId, symbol) { return this.#api("POST", `/runs/${seg(runId)}/positions/${seg(symbol)}/close`); }

  /** Refuse a session's new entries until resumed. */
  pauseSession(runId) { return this.#api("POST", `/runs/${seg(runId)}/pause`); }

  /** Allow new entries again (a live session taken over after a restart: with its exchange keys). */
  resumeSession(runId, { apiKey, secret, password } = {}) {
    const keys = compact({ apiKey, secret, password });
    return this.#api("POST", `/runs/${seg(runId)}/resume`, Object.keys(keys).length ? { json: keys } : {});
  }

  /** Balances by currency of a session: `runId`, else the newest active session this client started. */
  async getBalance(runId = null) {
    if (runId !== null) return (await this.runStatus(runId)).balances ?? {};
    for (const candidate of [...this.#sessions].reverse()) {
      let status;
      try {
        status = await this.runStatus(candidate);
      } catch (err) {
        if (err instanceof NotFoundError) continue; // deleted, or a server that does not know it (yet)
        throw err;
      }
      if (!FINISHED_STATUSES.includes(status.status)) return status.balances ?? {};
      this.#sessions = this.#sessions.filter((id) => id !== candidate); // an ended session never runs again
    }
    const last = this.#lastSession;
    const message = last === null
      ? "This client has not started a session; pass a run id to read a session's balances"
      : `No session this client started is active any more (the last one, ${last}, ended); pass a run id`;
    throw new NoActiveRunError(message, { details: { last_session: last } });
  }

  // Sweeps -----------------------------------------------------------------------------------------------------

  /** Start a parameter sweep (202): `grid` maps names to lists, "start:end:step" or {start, end, step}. */
  startSweep(request) { return this.#api("POST", "/sweeps", { json: runBody(request) }); }

  /** Your sweeps, newest first. */
  listSweeps({ limit, offset } = {}) { return this.#api("GET", `/sweeps${query({ limit, offset })}`); }

  /** A sweep's status and progress (done, total, eta_seconds). */
  getSweep(sweepId) { return this.#api("GET", `/sweeps/${seg(sweepId)}`); }

  /** A page of an ended sweep's rows, best first by `sort` (default: the sweep's). */
  sweepResults(sweepId, { sort, limit, offset } = {}) {
    return this.#api("GET", `/sweeps/${seg(sweepId)}/results${query({ sort, limit, offset })}`);
  }

  /** Cancel a sweep (within 2 s), keeping the rows evaluated so far. */
  cancelSweep(sweepId) { return this.#api("DELETE", `/sweeps/${seg(sweepId)}`); }

  /** Run the row of `rank` (by the sweep's sort) as an ordinary backtest in your runner slot. */
  backtestSweepRow(sweepId, rank = 1) { return this.#api("POST", `/sweeps/${seg(sweepId)}/rows/${seg(rank)}/backtest`); }

  /** Poll a sweep until it completed, was cancelled or failed. */
  async waitForSweep(sweepId, { timeout = 600_000, pollInterval = 250 } = {}) {
    const deadline = timeout === null ? null : Date.now() + timeout;
    for (;;) {
      const sweep = await this.getSweep(sweepId);
      if (SWEEP_FINISHED_STATUSES.includes(sweep.status)) return sweep;
      if (deadline !== null && Date.now() >= deadline) {
        throw new TimeoutError(`Sweep ${sweepId} still ${sweep.status} after ${timeout} ms`, {
          details: { sweep_id: sweepId, status: sweep.status, done: sweep.progress.done, total: sweep.progress.total },
        });
      }
      await sleep(deadline === null ? pollInterval : Math.min(pollInterval, Math.max(0, deadline - Date.now())));
    }
  }

  // Walk-forward and CPCV ---------------------------------------------------------------------------------------

  /** Start a walk-forward (train, test, step...) or, with `cpcv: {n_folds, n_test_folds}`, a CPCV (202). */
  startWalkforward(request) { return this.#api("POST", "/walkforwards", { json: runBody(request) }); }

  /** Your walk-forwards, newest first (without their reports). */
  listWalkforwards({ limit, offset } = {}) { return this.#api("GET", `/walkforwards${query({ limit, offset })}`); }

  /** A walk-forward's status, progress (windows done) and, once completed, its report. */
  getWalkforward(walkforwardId) { return this.#api("GET", `/walkforwards/${seg(walkforwardId)}`); }

  /** Cancel a walk-forward: it stops after the sweep chunk (or test backtest) in hand, without a report. */
  cancelWalkforward(walkforwardId) { return this.#api("DELETE", `/walkforwards/${seg(walkforwardId)}`); }

  /** Poll a walk-forward until it completed, was cancelled or failed. */
  async waitForWalkforward(walkforwardId, { timeout = 600_000, pollInterval = 250 } = {}) {
    const deadline = timeout === null ? null : Date.now() + timeout;
    for (;;) {
      const wf = await this.getWalkforward(walkforwardId);
      if (SWEEP_FINISHED_STATUSES.includes(wf.status)) return wf;
      if (deadline !== null && Date.now() >= deadline) {
        throw new TimeoutError(`Walk-forward ${walkforwardId} still ${wf.status} after ${timeout} ms`, {
          details: { walkforward_id: walkforwardId, status: wf.status, done: wf.progress.done, total: wf.progress.total },
        });
      }
      await sleep(deadline === null ? pollInterval : Math.min(pollInterval, Math.max(0, deadline - Date.now())));
    }
  }

  // Strategies, exchanges, credentials, alerts ------------------------------------------------------------------

  /** Strategy classes (with parameter schemas) then your stored strategies, one page. */
  getStrategies({ skip, limit, activeOnly, kind } = {}) {
    return this.#api("GET", `/strategies${query({ skip, limit, activeOnly, kind })}`);
  }

  /** A stored strategy by id, or a strategy class by name. */
  getStrategy(ref) { return this.#api("GET", `/strategies/${seg(ref)}`); }

  /** Store a named preset of a strategy class (201). */
  createStrategy(preset) { return this.#api("POST", "/strategies", { json: compact(preset) }); }

  /** Change a stored strategy; fields left out keep their value. */
  updateStrategy(strategyId, changes) { return this.#api("PUT", `/strategies/${seg(strategyId)}`, { json: compact(changes) }); }

  /** Delete a stored strategy. */
  deleteStrategy(strategyId) { return this.#api("DELETE", `/strategies/${seg(strategyId)}`, { as: "none" }); }

  /** Check a strategy for look-ahead and window dependence; answered when the check is done. */
  checkStrategy(ref, request = {}) { return this.#api("POST", `/strategies/${seg(ref)}/check`, { json: runBody(request) }); }

  /** Exchanges a run can use, with sandbox support and timeframes. */
  getExchanges() { return this.#api("GET", "/exchanges"); }

  /** Your stored exchange credentials: names, exchanges and dates (never a secret). */
  listCredentials() { return this.#api("GET", "/credentials"); }

  /** Store an exchange's keys (`{apiKey, secret, ...}`) encrypted under `name` (201). */
  createCredentials(name, exchange, secrets) {
    return this.#api("POST", "/credentials", { json: { ...secrets, name, exchange } });
  }

  /** Replace the secrets stored under `name`. */
  rotateCredentials(name, secrets) { return this.#api("POST", `/credentials/${seg(name)}/rotate`, { json: { ...secrets } }); }

  /** Read the balance through stored credentials: `ok`, or the exchange's error `code`. */
  testCredentials(name, { sandbox = false } = {}) {
    return this.#api("POST", `/credentials/${seg(name)}/test`, { json: { sandbox } });
  }

  /** Delete stored credentials. */
  deleteCredentials(name) { return this.#api("DELETE", `/credentials/${seg(name)}`, { as: "none" }); }

  /** Alerts of your runs, newest first. */
  listAlerts({ runId, kind, limit, offset } = {}) { return this.#api("GET", `/alerts${query({ runId, kind, limit, offset })}`); }

  // Charts, round trips, breakdowns, candle data, downloads, logs ---------------------------------------------

  /** A run's candles of one symbol (OHLC buckets beyond `maxPoints`), its round trips as markers, its plotted indicators. */
  runCandles(runId, { symbol, start, end, maxPoints, maxMarkers } = {}) {
    return this.#api("GET", `/runs/${seg(runId)}/candles${query({ symbol, start, end, maxPoints, maxMarkers })}`);
  }

  /** A session's latest closed candles of one symbol (warm-up included): a live chart's history before its stream. */
  recentCandles(runId, { symbol, limit } = {}) {
    return this.#api("GET", `/runs/${seg(runId)}/recent-candles${query({ symbol, limit })}`);
  }

  /** A run's round-trip trades, sorted by a column (`pnl`, `duration_s`, ...) and paged. */
  roundTrips(runId, { sort, order, limit, offset } = {}) {
    return this.#api("GET", `/runs/${seg(runId)}/roundtrips${query({ sort, order, limit, offset })}`);
  }

  /** A run's per-symbol figures and monthly returns. */
  breakdowns(runId) { return this.#api("GET", `/runs/${seg(runId)}/breakdowns`); }

  /** Stored candles (generated for `synthetic`); nothing is downloaded. */
  getCandles(symbol, { exchange, timeframe, start, end, limit } = {}) {
    return this.#api("GET", `/candles${query({ symbol, exchange, timeframe, start, end, limit })}`);
  }

  /** An exchange's markets whose symbol contains `q` (any case). */
  getMarkets(exchange, { q, limit } = {}) { return this.#api("GET", `/exchanges/${seg(exchange)}/markets${query({ q, limit })}`); }

  /** The stored candle sets with their ranges and gaps. */
  listCandleSets({ limit, offset } = {}) { return this.#api("GET", `/data/sets${query({ limit, offset })}`); }

  /** Start a download job for what the store lacks of [start, end) (202); follow it with `getDownload`. */
  startDownload(exchange, symbol, { timeframe = "1h", start, end } = {}) {
    const json = { exchange, symbol, timeframe, start: start === undefined ? undefined : String(start) };
    if (end !== undefined && end !== null) json.end = String(end);
    return this.#api("POST", "/data/downloads", { json });
  }

  /** A download job's status and progress. */
  getDownload(jobId) { return this.#api("GET", `/data/downloads/${seg(jobId)}`); }

  /** Cancel a download job (it stops after its current chunk). */
  cancelDownload(jobId) { return this.#api("DELETE", `/data/downloads/${seg(jobId)}`); }

  /** The server's recent log lines (admins only when auth is on). */
  getLogs({ level, runId, limit } = {}) { return this.#api("GET", `/logs${query({ level, runId, limit })}`); }

  // Streams ------------------------------------------------------------------------------------------------

  /**
   * `/ws/status` events (a snapshot first); `runId` follows one run, `"*"` all of yours. With `candles`, also
   * each closed candle of the followed sessions (`candle` events: `{run_id, symbol, timeframe, t, o, h, l, c, v}`).
   * One run's events carry its event number `seq`; `since` resumes after one, with exactly what was missed.
   */
  async streamStatus({ runId = null, heartbeats = false, candles = false, since = null } = {}) {
    if (since !== null && (runId === null || runId === "*")) {
      throw new TypeError("since resumes one run's stream: pass runId too");
    }
    const stream = new EventStream(heartbeats);
    await stream.open(this, "/ws/status", query({ run_id: runId, candles: candles ? "true" : null, since }));
    return stream;
  }

  /** `/ws` channel messages `{channel, data}` (status, orders, trades, equity, alerts). */
  async subscribe(channels = ["status"], { symbol = null, heartbeats = false } = {}) {
    const stream = new ChannelStream(heartbeats);
    await stream.open(this, "/ws", "");
    if (channels.length) await stream.subscribe(channels, { symbol });
    return stream;
  }

  /** Alerts as they are raised: the `alerts` channel of `/ws`. */
  streamAlerts({ heartbeats = false } = {}) { return this.subscribe(["alerts"], { heartbeats }); }

  /** The WebSocket URL of an API path (credentials never go in it: URLs end up in logs). */
  wsUrl(path, search = "") {
    const url = new URL(`${this.baseUrl}${API_PREFIX}${path}${search}`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }

  /** The WebSocket implementation and whether it takes handshake headers (ws in Node; a browser's does not). */
  async webSocketClass() {
    if (this.#WebSocket) return { Impl: this.#WebSocket, headers: false };
    if (!IS_BROWSER && globalThis.process?.versions?.node) {
      let mod;
      try {
        mod = await import("ws");
      } catch (err) {
        // Node 22+ has a global WebSocket (without handshake headers): use it when ws is not installed.
        if (typeof globalThis.WebSocket === "function") return { Impl: globalThis.WebSocket, headers: false };
        throw new NotSupportedError(`Streams in Node.js 20 need the ws package: npm install ws (${err.message})`);
      }
      return { Impl: mod.WebSocket ?? mod.default, headers: true };
    }
    if (typeof globalThis.WebSocket === "function") return { Impl: globalThis.WebSocket, headers: false };
    throw new NotSupportedError("No WebSocket implementation: pass { WebSocket } to the client");
  }
}

function waitTimeout(status, timeout) {
  return new TimeoutError(`Run ${status.run_id} still ${status.status} after ${timeout} ms`, {
    details: { run_id: status.run_id, status: status.status, progress: status.progress },
  });
}

function checkSucceeded(status) {
  if (status.status === "failed") {
    throw new RunFailedError(status.error || "The run failed", {
      code: status.error_code || "RUN_FAILED", details: { run_id: status.run_id, status: status.status },
    });
  }
}

// Streams ----------------------------------------------------------------------------------------------------

const NORMAL_CLOSES = new Set([1000, 1001]);

/** A WebSocket read as an async iterator, with `recv({timeout})` and `close()`. */
class Stream {
  constructor(heartbeats) {
    this.heartbeats = heartbeats;
    this.closed = false;
    this.closeCode = null;
    this.url = null;
    this._queue = [];
    this._waiters = [];
    this._error = null;
    this._ws = null;
    this._swallowAuthReply = false;
  }

  async open(client, path, search) {
    const { Impl, headers } = await client.webSocketClass();
    this.url = client.wsUrl(path);
    const full = client.wsUrl(path, search);
    const credential = client.token || client.apiKey;
    const ws = headers
      ? new Impl(full, { headers: compactHeaders(client), handshakeTimeout: client.timeout || undefined })
      : new Impl(full);
    this._ws = ws;
    ws.addEventListener("message", (event) => this._push(parseMessage(event.data)));
    ws.addEventListener("close", (event) => this._ended(event.code, event.reason));
    await new Promise((resolve, reject) => {
      const timer = client.timeout
        ? setTimeout(() => { reject(new TimeoutError(`Opening ${this.url} timed out`, { details: { url: this.url } })); ws.close(); }, client.timeout)
        : null;
      ws.addEventListener("open", () => {
        if (timer) clearTimeout(timer);
        // A browser cannot send handshake headers: the credentials go in the first message, never in the URL.
        if (!headers && credential) {
          ws.send(JSON.stringify({ action: "auth", token: credential }));
          this._swallowAuthReply = path === "/ws";
        }
        resolve();
      });
      ws.addEventListener("error", (event) => {
        if (timer) clearTimeout(timer);
        reject(handshakeError(event, this.url));
      });
    });
  }

  _push(message) {
    if (message === null) return;
    // With auth off (or handshake credentials) the channel stream answers our auth message as an unknown action.
    if (this._swallowAuthReply && message.channel === "error" && message.data?.code === "INVALID_ACTION") {
      this._swallowAuthReply = false;
      return;
    }
    const item = this.item(message);
    if (item === undefined) return;
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve(item);
    else this._queue.push(item);
  }

  _ended(code, reason) {
    this.closed = true;
    this.closeCode = code;
    if (!NORMAL_CLOSES.has(code) && this._error === null) {
      const text = `The stream ${this.url} closed with code ${code}${reason ? `: ${reason}` : ""}`;
      this._error = code === 1008 ? new AuthenticationError(text, { details: { close_code: code, reason } })
        : new StreamClosedError(text, { details: { close_code: code, reason } });
    }
    for (const waiter of this._waiters.splice(0)) {
      if (this._error) waiter.reject(this._error);
      else waiter.resolve(undefined);
    }
  }

  /** The next message; TimeoutError after `timeout` ms; StreamClosedError (or undefined on a normal close) at the end. */
  recv({ timeout = null } = {}) {
    if (this._queue.length) return Promise.resolve(this._queue.shift());
    if (this.closed) {
      if (this._error) return Promise.reject(this._error);
      return Promise.resolve(undefined);
    }
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (timeout !== null) {
        const timer = setTimeout(() => {
          this._waiters = this._waiters.filter((w) => w !== waiter);
          reject(new TimeoutError(`No message on ${this.url} within ${timeout} ms`, { details: { url: this.url } }));
        }, timeout);
        waiter.resolve = (v) => { clearTimeout(timer); resolve(v); };
        waiter.reject = (e) => { clearTimeout(timer); reject(e); };
      }
      this._waiters.push(waiter);
    });
  }

  send(message) {
    this._ws.send(JSON.stringify(message));
  }

  /** Close the socket; iteration then ends. */
  close() {
    if (this._ws && !this.closed) this._ws.close(1000);
    this.closed = true;
    for (const waiter of this._waiters.splice(0)) waiter.resolve(undefined);
  }

  async *[Symbol.asyncIterator]() {
    try {
      for (;;) {
        const item = await this.recv();
        if (item === undefined) return;
        yield item;
      }
    } finally {
      this.close();
    }
  }
}

/** `/ws/status`: `{type, payload, timestamp}` events; heartbeats skipped unless asked for. */
export class EventStream extends Stream {
  item(message) {
    if (!message || typeof message.type !== "string") return undefined;
    if (message.type === "heartbeat" && !this.heartbeats) return undefined;
    const event = { type: message.type, payload: message.payload ?? {}, timestamp: message.timestamp ?? null };
    if (Number.isInteger(message.seq)) event.seq = message.seq; // one run's stream: resume after it with `since`
    return event;
  }
}

/** `/ws`: `{channel, data}` messages; subscribe and unsubscribe wait for the server's confirmation. */
export class ChannelStream extends Stream {
  subscriptions = [];
  #pendingChange = null;

  item(message) {
    if (!message || typeof message.channel !== "string") return undefined;
    const { channel, data } = message;
    if (this.#pendingChange && (channel === `${this.#pendingChange.action}d` || channel === "error")) {
      const change = this.#pendingChange;
      this.#pendingChange = null;
      if (channel === "error") {
        change.reject(new ValidationError(String(data?.message ?? "The server refused the message"), {
          code: String(data?.code ?? "INVALID_MESSAGE"), details: data?.details ?? {},
        }));
      } else {
        this.subscriptions = data?.subscriptions ?? [];
        change.resolve(this.subscriptions);
      }
      return undefined;
    }
    if (channel === "subscribed" || channel === "unsubscribed" || channel === "pong") return undefined;
    if (channel === "heartbeat" && !this.heartbeats) return undefined;
    return { channel, data: data ?? {} };
  }

  /** Add subscriptions; resolves with all of them once confirmed (ValidationError if refused). */
  subscribe(channels, { symbol = null } = {}) { return this.#change("subscribe", channels, symbol); }

  /** Remove subscriptions; resolves with the remaining ones. */
  unsubscribe(channels, { symbol = null } = {}) { return this.#change("unsubscribe", channels, symbol); }

  async #change(action, channels, symbol) {
    while (this.#pendingChange) await this.#pendingChange.done;
    if (this.closed) throw this._error ?? new StreamClosedError(`The stream ${this.url} is closed`);
    let resolve;
    let reject;
    const done = new Promise((res, rej) => { resolve = res; reject = rej; });
    this.#pendingChange = { action, resolve, reject, done: done.catch(() => {}) };
    this.send(compact({ action, channels: [...channels], symbol }));
    return done;
  }
}

function compactHeaders(client) {
  const headers = {};
  if (client.apiKey) headers["X-API-Key"] = client.apiKey;
  if (client.token) headers.Authorization = `Bearer ${client.token}`;
  return headers;
}

function parseMessage(data) {
  const text = typeof data === "string" ? data : new TextDecoder().decode(data);
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function handshakeError(event, url) {
  // ws reports a refused upgrade as "Unexpected server response: 403"; a browser tells nothing more than "error".
  const message = event?.message ?? event?.error?.message ?? "";
  const match = /Unexpected server response: (\d+)/.exec(message);
  if (match) {
    const status = Number(match[1]);
    const cls = errorClass(status, null);
    return new cls(`Opening ${url} was refused with HTTP ${status}`, { status, code: STATUS_CODES[status] ?? null, details: { url } });
  }
  return new ConnectionError(`Cannot open the stream ${url}${message ? `: ${message}` : ""}`, { details: { url } });
}

export default CrackTrader;
