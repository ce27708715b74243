"use strict";
const api = "/api/v1";
const $ = (id) => document.getElementById(id);

// With CRACKTRADER_AUTH_MODE=on the API answers 401 until someone signs in; the access token lives for this tab.
let token = sessionStorage.getItem("cracktrader.token");

async function call(method, path, body) {
  const opts = { method, headers: {} };
  if (token) { opts.headers.Authorization = `Bearer ${token}`; }
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const res = await fetch(api + path, opts);
  const data = res.status === 204 ? null : await res.json();
  if (res.status === 401 && path !== "/auth/login") {
    token = null;
    sessionStorage.removeItem("cracktrader.token");
    $("login").hidden = false;
    throw new Error("Sign in to continue");
  }
  if (!res.ok) { throw new Error((data && data.error && data.error.message) || res.statusText); }
  return data;
}

function show(el, obj) {
  el.replaceChildren();
  for (const [k, v] of Object.entries(obj)) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(4)) : (v === null ? "–" : String(v));
    el.append(dt, dd);
  }
}

function say(text, isError) { const m = $("message"); m.textContent = text; m.className = isError ? "error" : ""; }

function renderStatus(s) {
  $("progress").value = s.progress || 0;
  show($("status"), { run: s.run_id, status: s.status, phase: s.phase, progress: s.progress, bars: s.bars_processed,
    cash: s.cash, value: s.value, pnl: s.pnl, trades: s.trade_count, error: s.error });
  if (s.status === "completed" || s.status === "stopped") { loadResults(); }
}

async function loadResults() {
  try {
    const r = await call("GET", "/results?max_points=200&limit=1");
    show($("metrics"), { final_value: r.final_value, ...r.performance_metrics });
  } catch (e) { /* no results yet */ }
}

function logEvent(e) {
  const li = document.createElement("li");
  li.textContent = `${e.timestamp} ${e.type} ${JSON.stringify(e.payload).slice(0, 160)}`;
  $("events").prepend(li);
  while ($("events").children.length > 200) { $("events").lastChild.remove(); }
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${api}/ws/status`);
  ws.onopen = () => {
    // Sent as the first message rather than in the URL, which servers log.
    if (token) { ws.send(JSON.stringify({ action: "auth", token })); }
    $("conn").textContent = "stream: live";
  };
  ws.onclose = () => { $("conn").textContent = "stream: reconnecting"; setTimeout(connect, 2000); };
  ws.onmessage = (msg) => {
    const e = JSON.parse(msg.data);
    if (e.type === "heartbeat") { return; }
    if (e.type === "snapshot" || e.type === "status_update") { renderStatus(e.payload); }
    logEvent(e);
  };
}

async function init() {
  const [health, strategies, exchanges] = await Promise.all([
    call("GET", "/health"), call("GET", "/strategies?limit=1000&active_only=true"), call("GET", "/exchanges")]);
  $("health").textContent = `health: ${health.status}`;
  const byName = new Map();
  for (const s of strategies.items) {
    byName.set(s.name, s);
    $("strategy").add(new Option(s.kind === "preset" ? `${s.name} (preset of ${s.base_strategy ?? "?"})` : s.name, s.name));
  }
  // The box holds overrides; its placeholder shows what the class or preset uses when left empty.
  const showDefaults = () => { $("params").placeholder = JSON.stringify(byName.get($("strategy").value)?.parameters ?? {}); };
  $("strategy").addEventListener("change", showDefaults);
  showDefaults();
  for (const x of exchanges.items) { $("exchange").add(new Option(x.name, x.id, x.id === "synthetic", x.id === "synthetic")); }
  for (const tf of exchanges.items[0].timeframes) { $("timeframe").add(new Option(tf, tf, tf === "1h", tf === "1h")); }
  renderStatus(await call("GET", "/status"));
  connect();
}

$("run-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const body = {
      strategy_name: $("strategy").value, strategy_params: JSON.parse($("params").value || "{}"),
      symbols: $("symbols").value.split(",").map((s) => s.trim()).filter(Boolean), timeframe: $("timeframe").value,
      start_date: $("start").value || null, end_date: $("end").value || null,
      initial_cash: Number($("cash").value), exchange: $("exchange").value };
    const r = await call("POST", "/run/backtest", body);
    say(`${r.message} (${r.run_id})`);
  } catch (e) { say(e.message, true); }
});
$("stop").addEventListener("click", async () => { try { say((await call("POST", "/run/stop")).message); } catch (e) { say(e.message, true); } });
$("reset").addEventListener("click", async () => { try { say((await call("DELETE", "/run/reset")).message); } catch (e) { say(e.message, true); } });
$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const tokens = await call("POST", "/auth/login", { username: $("username").value, password: $("password").value });
    token = tokens.access_token;
    sessionStorage.setItem("cracktrader.token", token);
    $("password").value = "";
    $("login").hidden = true;
    say("Signed in");
    await init();
  } catch (e) { say(e.message, true); }
});
init().catch((e) => say(e.message, true));
