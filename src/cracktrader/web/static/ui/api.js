// Every HTTP and WebSocket call of the dashboard, in one module, as a thin layer over the JavaScript SDK
// (served at /ui/sdk/): pages import only these functions and never call fetch or WebSocket themselves.
// The layer adds what a browser tab needs on top of the SDK: tokens kept in sessionStorage, one shared
// refresh on a 401, a sign-in prompt when that fails, and streams that reconnect.
import CrackTrader, * as errors from "./sdk/index.js";

const { CrackTraderError } = errors;
/** The SDK's error classes (`errors.InvalidSymbolError`, ...) for pages to tell errors apart. */
export { errors };

const TOKEN_KEY = "cracktrader.token";
const REFRESH_KEY = "cracktrader.refresh";

/** An error answer of the API: the SDK's typed errors (status, code, message, details from the envelope). */
export const ApiError = CrackTraderError;

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

// One client for the tab; its token follows sessionStorage (another tab may have refreshed it).
const client = new CrackTrader({ timeout: 120_000 });
const sdk = () => { client.token = tokens.access; return client; };

let refreshing = null;
async function refreshOnce() {
  // Concurrent 401s share one refresh: a refresh token is single-use (reuse revokes the login).
  if (!tokens.refresh) { return false; }
  refreshing ??= (async () => {
    try { tokens.set(await sdk().refresh(tokens.refresh)); return true; }
    catch { tokens.clear(); return false; }
  })().finally(() => { setTimeout(() => { refreshing = null; }, 0); });
  return refreshing;
}

/** One SDK call `fn(client)`; a 401 refreshes once and retries, then asks to sign in. */
async function call(fn, { auth = false } = {}) {
  try {
    return await fn(sdk());
  } catch (e) {
    if (auth || !(e instanceof CrackTraderError) || e.status !== 401) { throw e; }
    if (await refreshOnce()) {
      try { return await fn(sdk()); } catch (again) { if (again.status !== 401) { throw again; } }
    }
    tokens.clear();
    onSignInNeeded();
    throw e;
  }
}

// The SDK takes camelCase options; the pages name filters as the API does.
const camel = (params) => Object.fromEntries(Object.entries(params || {})
  .filter(([, v]) => v !== undefined && v !== null && v !== "")
  .map(([k, v]) => [k.replace(/_([a-z])/g, (_, c) => c.toUpperCase()), v]));

// Meta and catalogues
export const health = () => call((c) => c.getHealth());
export const listStrategies = () => call((c) => c.getStrategies({ limit: 1000, activeOnly: true }));
export const getStrategy = (ref) => call((c) => c.getStrategy(ref));
export const checkStrategy = (ref, body) => call((c) => c.checkStrategy(ref, body));
// The exchange list is fixed while the server runs: asked once per tab (the rate limit counts every request).
let exchangesCache = null;
export function listExchanges() {
  exchangesCache ??= call((c) => c.getExchanges()).catch((e) => { exchangesCache = null; throw e; });
  return exchangesCache;
}
export const createPreset = (body) => call((c) => c.createStrategy(body));
export const getMarkets = (exchange, params) => call((c) => c.getMarkets(exchange, camel(params)));

// The caller's runner slot (the backtest form)
export const slotStatus = () => call((c) => c.getStatus());
export const startBacktest = (body) => call((c) => c.startBacktest(body));
export const stopSlot = () => call((c) => c.stop());
export const resetSlot = () => call((c) => c.reset());

// Runs by id
export const listRuns = (filters) => call((c) => c.listRuns(camel(filters)));
export const getRun = (id) => call((c) => c.getRun(id));
export const runResults = (id, params) => call((c) => c.getRunResults(id, camel(params)));
export const deleteRun = (id) => call((c) => c.deleteRun(id));
export const rerun = (id) => call((c) => c.rerun(id));
export const runStatus = (id) => call((c) => c.runStatus(id));
export const startRun = (body) => call((c) => c.startRun(body));
export const runCandles = (id, params) => call((c) => c.runCandles(id, camel(params)));
export const recentCandles = (id, params) => call((c) => c.recentCandles(id, camel(params)));
export const roundTrips = (id, params) => call((c) => c.roundTrips(id, camel(params)));
export const breakdowns = (id) => call((c) => c.breakdowns(id));

// Sweeps
export const startSweep = (body) => call((c) => c.startSweep(body));
export const listSweeps = (params) => call((c) => c.listSweeps(camel(params)));
export const getSweep = (id) => call((c) => c.getSweep(id));
export const sweepResults = (id, params) => call((c) => c.sweepResults(id, camel(params)));
export const cancelSweep = (id) => call((c) => c.cancelSweep(id));
export const backtestSweepRow = (id, rank) => call((c) => c.backtestSweepRow(id, rank));

// Walk-forwards (and CPCV)
export const startWalkforward = (body) => call((c) => c.startWalkforward(body));
export const listWalkforwards = (params) => call((c) => c.listWalkforwards(camel(params)));
export const getWalkforward = (id) => call((c) => c.getWalkforward(id));
export const cancelWalkforward = (id) => call((c) => c.cancelWalkforward(id));

// Session controls
export const stopRun = (id, flatten = false) => call((c) => c.stopRun(id, { flatten }));
export const pauseRun = (id) => call((c) => c.pauseSession(id));
export const resumeRun = (id) => call((c) => c.resumeSession(id));
export const cancelOrder = (id, orderId) => call((c) => c.cancelOrder(id, orderId));
export const closePosition = (id, symbol) => call((c) => c.closePosition(id, symbol));
export const listAlerts = (params) => call((c) => c.listAlerts(camel(params)));

// Candle data, downloads, logs
export const listCandleSets = (params) => call((c) => c.listCandleSets(camel(params)));
export const startDownload = ({ exchange, symbol, ...rest }) => call((c) => c.startDownload(exchange, symbol, rest));
export const getDownload = (id) => call((c) => c.getDownload(id));
export const cancelDownload = (id) => call((c) => c.cancelDownload(id));
export const getLogs = (params) => call((c) => c.getLogs(camel(params)));

// Accounts
export const me = () => call((c) => c.getMe());
export async function login(username, password) {
  const t = await call((c) => c.login(username, password), { auth: true });
  tokens.set(t);
  return t;
}
export async function logout() {
  try { await call((c) => c.logout(tokens.refresh), { auth: true }); }
  finally { tokens.clear(); }
}
export const refreshTokens = () => refreshOnce();
export const listApiKeys = () => call((c) => c.listApiKeys());
export const createApiKey = ({ name, scopes, expires_at: expiresAt }) => call((c) => c.createApiKey(name, { scopes, expiresAt }));
export const revokeApiKey = (id) => call((c) => c.revokeApiKey(id));
export const listCredentials = () => call((c) => c.listCredentials());
export const createCredentials = ({ name, exchange, ...secrets }) => call((c) => c.createCredentials(name, exchange, secrets));
export const rotateCredentials = (name, secrets) => call((c) => c.rotateCredentials(name, secrets));
export const testCredentials = (name, sandbox) => call((c) => c.testCredentials(name, { sandbox }));
export const deleteCredentials = (name) => call((c) => c.deleteCredentials(name));

/**
 * Follow `/ws/status` (the slot, or one run with `runId`): `onEvent({type, payload})` for every event but
 * heartbeats; with `candles`, a followed session's closed candles too. Reconnects after a drop with a growing
 * delay (a handshake counts against the rate limit). Returns `close()`.
 */
export function streamStatus(runId, onEvent, onState = () => {}, { candles = false } = {}) {
  return follow(() => sdk().streamStatus({ runId, candles }), onEvent, onState);
}

/**
 * Follow `/ws` channels (`orders`, `trades`, ...): `onMessage({channel, data})` for each message, reconnecting as
 * `streamStatus` does. Returns `close()`.
 */
export function streamChannels(channels, onMessage, onState = () => {}) {
  return follow(() => sdk().subscribe(channels), onMessage, onState);
}

/** Open a stream with `opener`, pass on its items, and open it again after a drop with a growing delay. */
function follow(opener, onEvent, onState) {
  let stream = null;
  let closed = false;
  let delay = 1000;
  const again = () => {
    onState("reconnecting");
    setTimeout(() => { if (!closed) { open(); } }, delay);
    delay = Math.min(delay * 2, 30000);
  };
  const open = async () => {
    try {
      stream = await opener();
    } catch { again(); return; }
    if (closed) { stream.close(); return; }
    delay = 1000;
    onState("live");
    try {
      for await (const e of stream) { onEvent(e); }
    } catch (e) {
      if (closed) { return; }
      // 1008: the credential was refused or ended (expiry, logout): refresh once, else ask to sign in again.
      if (e.details?.close_code === 1008 && !(await refreshOnce())) { onState("signed out"); onSignInNeeded(); return; }
    }
    if (!closed) { again(); }
  };
  open();
  return () => { closed = true; if (stream) { stream.close(); } };
}

/** The metric help generated from docs/metrics.md (a static file of the dashboard, not an API call). */
let helpCache = null;
export function metricsHelp() {
  helpCache ??= client.request("GET", "/ui/metrics-help.json");
  return helpCache;
}
