// Every HTTP and WebSocket call of the dashboard, in one module: the JS SDK (static/sdk/) replaces this file's
// internals later, so pages import only these functions and never call fetch or WebSocket themselves.

const BASE = "/api/v1";
const TOKEN_KEY = "cracktrader.token";
const REFRESH_KEY = "cracktrader.refresh";

/** An error answer of the API, from its envelope. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

let onSignInNeeded = () => {};
/** Called when the API answers 401 and no refresh helped (the app shows the sign-in form). */
export function setSignInHandler(fn) { onSignInNeeded = fn; }

export const tokens = {
  get access() { return sessionStorage.getItem(TOKEN_KEY); },
  get refresh() { return sessionStorage.getItem(REFRESH_KEY); },
  set(t) {
    sessionStorage.setItem(TOKEN_KEY, t.access_token);
    if (t.refresh_token) { sessionStorage.setItem(REFRESH_KEY, t.refresh_token); }
  },
  clear() { sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem(REFRESH_KEY); },
};

async function send(method, path, body) {
  const headers = {};
  if (tokens.access) { headers.Authorization = `Bearer ${tokens.access}`; }
  const opts = { method, headers };
  if (body !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  return fetch(BASE + path, opts);
}

let refreshing = null;
async function refreshOnce() {
  // Concurrent 401s share one refresh: a refresh token is single-use (reuse revokes the login).
  if (!tokens.refresh) { return false; }
  refreshing ??= (async () => {
    const res = await send("POST", "/auth/refresh", { refresh_token: tokens.refresh });
    if (!res.ok) { tokens.clear(); return false; }
    tokens.set(await res.json());
    return true;
  })().finally(() => { setTimeout(() => { refreshing = null; }, 0); });
  return refreshing;
}

/** One API call: JSON in, JSON out; an error answer throws ApiError. */
export async function call(method, path, body) {
  let res = await send(method, path, body);
  if (res.status === 401 && !path.startsWith("/auth/") && (await refreshOnce())) {
    res = await send(method, path, body);
  }
  const text = res.status === 204 ? "" : await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const err = (data && data.error) || {};
    if (res.status === 401 && path !== "/auth/login") { tokens.clear(); onSignInNeeded(); }
    throw new ApiError(res.status, err.code || `HTTP_${res.status}`, err.message || res.statusText, err.details);
  }
  return data;
}

const q = (params) => {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) { if (v !== undefined && v !== null && v !== "") { u.set(k, v); } }
  const s = u.toString();
  return s ? `?${s}` : "";
};
const enc = encodeURIComponent;

// Meta and catalogues
export const health = () => call("GET", "/health");
export const listStrategies = () => call("GET", "/strategies?limit=1000&active_only=true");
export const getStrategy = (ref) => call("GET", `/strategies/${enc(ref)}`);
// The exchange list is fixed while the server runs: asked once per tab (the rate limit counts every request).
let exchangesCache = null;
export function listExchanges() {
  exchangesCache ??= call("GET", "/exchanges").catch((e) => { exchangesCache = null; throw e; });
  return exchangesCache;
}
export const createPreset = (body) => call("POST", "/strategies", body);

// The caller's runner slot (the backtest form)
export const slotStatus = () => call("GET", "/status");
export const startBacktest = (body) => call("POST", "/run/backtest", body);
export const stopSlot = () => call("POST", "/run/stop", {});
export const resetSlot = () => call("DELETE", "/run/reset");

// Runs by id
export const listRuns = (filters) => call("GET", `/runs${q(filters)}`);
export const getRun = (id) => call("GET", `/runs/${enc(id)}`);
export const runResults = (id, params) => call("GET", `/runs/${enc(id)}/results${q(params)}`);
export const deleteRun = (id) => call("DELETE", `/runs/${enc(id)}`);
export const rerun = (id) => call("POST", `/runs/${enc(id)}/rerun`);
export const runStatus = (id) => call("GET", `/runs/${enc(id)}/status`);
export const startRun = (body) => call("POST", "/runs", body);

// Session controls
export const stopRun = (id, flatten = false) => call("POST", `/runs/${enc(id)}/stop`, { flatten });
export const pauseRun = (id) => call("POST", `/runs/${enc(id)}/pause`);
export const resumeRun = (id) => call("POST", `/runs/${enc(id)}/resume`);
export const cancelOrder = (id, orderId) => call("POST", `/runs/${enc(id)}/orders/${enc(orderId)}/cancel`);
export const closePosition = (id, symbol) => call("POST", `/runs/${enc(id)}/positions/${enc(symbol)}/close`);
export const listAlerts = (params) => call("GET", `/alerts${q(params)}`);

// MERGE POINT (candles): another branch adds GET /runs/{id}/candles (candles + trade markers), /roundtrips and
// /breakdowns. Their calls belong here; results.js has the matching place for the candle chart.
export const runCandles = (id, params) => call("GET", `/runs/${enc(id)}/candles${q(params)}`);

// Accounts
export const me = () => call("GET", "/auth/me");
export async function login(username, password) {
  const t = await call("POST", "/auth/login", { username, password });
  tokens.set(t);
  return t;
}
export async function logout() {
  try { await call("POST", "/auth/logout", tokens.refresh ? { refresh_token: tokens.refresh } : undefined); }
  finally { tokens.clear(); }
}
export const refreshTokens = () => refreshOnce();
export const listApiKeys = () => call("GET", "/auth/apikeys");
export const createApiKey = (body) => call("POST", "/auth/apikeys", body);
export const revokeApiKey = (id) => call("DELETE", `/auth/apikeys/${enc(id)}`);
export const listCredentials = () => call("GET", "/credentials");
export const createCredentials = (body) => call("POST", "/credentials", body);
export const rotateCredentials = (name, body) => call("PUT", `/credentials/${enc(name)}`, body);
export const testCredentials = (name, sandbox) => call("POST", `/credentials/${enc(name)}/test`, { sandbox });
export const deleteCredentials = (name) => call("DELETE", `/credentials/${enc(name)}`);

/**
 * Follow `/ws/status` (the slot, or one run with `runId`): `onEvent({type, payload})` for every event but
 * heartbeats. Reconnects after a drop with a growing delay (a handshake counts against the rate limit).
 * Returns `close()`.
 */
export function streamStatus(runId, onEvent, onState = () => {}) {
  let ws = null;
  let closed = false;
  let delay = 1000;
  const open = () => {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${proto}://${location.host}${BASE}/ws/status${q({ run_id: runId })}`);
    ws.onopen = () => {
      // The token goes in the first message, not the URL (servers log URLs).
      if (tokens.access) { ws.send(JSON.stringify({ action: "auth", token: tokens.access })); }
      delay = 1000;
      onState("live");
    };
    ws.onmessage = (msg) => {
      const e = JSON.parse(msg.data);
      if (e.type !== "heartbeat") { onEvent(e); }
    };
    ws.onclose = async (ev) => {
      if (closed) { return; }
      // 1008: the credential was refused or ended (expiry, logout): refresh once, else ask to sign in again.
      if (ev.code === 1008 && !(await refreshOnce())) { onState("signed out"); onSignInNeeded(); return; }
      onState("reconnecting");
      setTimeout(() => { if (!closed) { open(); } }, delay);
      delay = Math.min(delay * 2, 30000);
    };
  };
  open();
  return () => { closed = true; if (ws) { ws.close(); } };
}

/** The metric help generated from docs/metrics.md (a static file of the dashboard, not an API call). */
let helpCache = null;
export function metricsHelp() {
  helpCache ??= fetch("/ui/metrics-help.json").then((r) => r.json());
  return helpCache;
}
