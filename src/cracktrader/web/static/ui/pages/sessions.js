// Paper and live sessions: the list, and a live view fed by the run's streams with confirmed controls.
import * as api from "../api.js";
import { h, say, confirmAction } from "../dom.js";
import * as fmt from "../format.js";
import { liveCandleChart } from "../charts.js";

export async function renderSessions(view) {
  const [paper, live] = await Promise.all([api.listRuns({ mode: "paper", limit: 100 }), api.listRuns({ mode: "live", limit: 100 })]);
  const items = [...paper.items, ...live.items].sort((a, b) =>
    (b.status === "running") - (a.status === "running") || String(b.created_at).localeCompare(String(a.created_at)));
  view.append(h("h1", {}, "Sessions"), h("section", { className: "card" },
    h("p", { className: "help" }, "Start a paper or live session from the Backtest form: pick its mode, risk limits and, for live, stored credentials."),
    h("div", { className: "scroll" }, h("table", { id: "sessions" },
      h("thead", {}, h("tr", {}, ["Started", "Strategy", "Symbols", "TF", "Mode", "Status", "Final value", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, items.length ? items.map((r) => h("tr", { dataset: { run: r.run_id } },
        h("td", {}, fmt.time(r.started_at || r.created_at)), h("td", {}, r.strategy_name), h("td", {}, r.symbols.join(", ")),
        h("td", {}, r.timeframe), h("td", {}, r.mode), h("td", {}, h("span", { className: `pill ${r.status}` }, r.status)),
        h("td", { className: "num" }, fmt.money(r.final_value)),
        h("td", {}, h("a", { className: "button small", href: `#/sessions/${r.run_id}` }, "Open"))))
        : h("tr", {}, h("td", { colSpan: 8, className: "empty" }, "No sessions")))))));
}

const MAX_ROWS = 200;
// An order in one of these states is done: it moves from the open orders to the closed ones.
const CLOSED = new Set(["filled", "canceled", "expired", "rejected", "rejected_unconfirmed"]);

export async function renderSession(view, runId) {
  const message = h("p", { className: "message", role: "status", id: "session-message" });
  const summary = h("dl", { className: "metrics", id: "session-summary" });
  const condition = h("p", { id: "condition" });
  const positions = h("tbody");
  const orders = h("tbody");
  const fills = h("tbody");
  const closed = h("tbody");
  const closedSeen = new Set();
  // Why a filled order was placed (signal, stop_loss, take_profit): its fill says so; the orders channel only
  // gives the reason of a cancel or a rejection. The two streams come in either order.
  const fillReasons = new Map();
  const closedReason = (id) => closed.querySelector(`tr[data-order="${CSS.escape(id)}"] td.reason`);
  const alerts = h("ul", { id: "alerts", className: "alerts" }, h("li", { className: "empty" }, "No alerts"));
  const conn = h("span", { className: "pill", id: "stream-state" }, "connecting");
  let last = null;

  const act = async (text, fn) => {
    if (!(await confirmAction(text))) { return; }
    try { const r = await fn(); say(message, r?.message || "Done", "ok"); }
    catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
  };
  const controls = h("div", { className: "buttons", id: "controls" },
    h("button", { type: "button", id: "pause", onclick: () => act("Pause new entries of this session?", () => api.pauseRun(runId)) }, "Pause"),
    h("button", { type: "button", id: "resume", onclick: () => act("Resume this session?", () => api.resumeRun(runId)) }, "Resume"),
    h("button", { type: "button", id: "flatten", className: "danger",
      onclick: () => act("Stop this session and close every position?", () => api.stopRun(runId, true)) }, "Flatten and stop"),
    h("button", { type: "button", id: "stop", className: "danger",
      onclick: () => act("Stop this session? Open orders are cancelled, positions kept.", () => api.stopRun(runId, false)) }, "Stop"));

  const kv = (k, v, id) => h("div", { className: "metric", dataset: { field: id || k } }, h("dt", {}, k), h("dd", { className: "value" }, v));
  const render = (s) => {
    last = s;
    const ended = ["completed", "stopped", "failed"].includes(s.status);
    for (const b of controls.querySelectorAll("button")) { b.disabled = ended; }
    summary.replaceChildren(
      kv("Status", h("span", { className: `pill ${s.status}`, id: "session-status" }, s.status), "status"),
      kv("Value", fmt.money(s.value), "value"), kv("PnL", fmt.money(s.pnl), "pnl"),
      kv("Realized", fmt.money(s.realized_pnl), "realized_pnl"), kv("Unrealized", fmt.money(s.unrealized_pnl), "unrealized_pnl"),
      kv("Fees", fmt.money(s.fees_paid), "fees_paid"), kv("Fills", String(s.trade_count), "trade_count"),
      kv("Candles", String(s.bars_processed), "bars_processed"), kv("Last candle", fmt.time(s.last_candle_time), "last_candle_time"),
      kv("Balances", Object.entries(s.balances || {}).map(([c, v]) => `${fmt.money(v)} ${c}`).join(", ") || "–", "balances"));
    const reasons = s.reasons?.length ? ` (${s.reasons.join(", ")})` : "";
    condition.replaceChildren("Condition ", h("span", { className: `pill ${s.condition || "ok"}`, id: "condition-value" },
      s.condition || "–"), reasons, s.risk?.paused ? h("span", { className: "pill warn", id: "paused" }, "entries paused") : "",
      s.error ? h("span", { className: "error" }, ` ${s.error}`) : "");
    positions.replaceChildren(...((s.positions || []).length ? s.positions.map((p) => h("tr", {},
      h("td", {}, p.symbol), h("td", { className: "num" }, fmt.number(p.size)), h("td", { className: "num" }, fmt.money(p.entry_price)),
      h("td", { className: "num" }, fmt.money(p.market_price)),
      h("td", {}, h("button", { type: "button", className: "small danger", disabled: ended,
        onclick: () => act(`Close the ${p.symbol} position at market?`, () => api.closePosition(runId, p.symbol)) }, "Close"))))
      : [h("tr", {}, h("td", { colSpan: 5, className: "empty" }, "No positions"))]));
    orders.replaceChildren(...((s.open_orders || []).length ? s.open_orders.map((o) => h("tr", {},
      h("td", {}, String(o.order_id)), h("td", {}, o.symbol), h("td", {}, o.side),
      h("td", { className: "num" }, o.amount === null ? "all" : fmt.number(o.amount)), h("td", {}, o.reason || ""),
      h("td", {}, h("button", { type: "button", className: "small", disabled: ended,
        onclick: () => act(`Cancel order ${o.order_id}?`, () => api.cancelOrder(runId, o.order_id)) }, "Cancel"))))
      : [h("tr", {}, h("td", { colSpan: 6, className: "empty" }, "No open orders"))]));
  };
  // The candle chart: the session's recent candles, then each candle as it closes (from the stream, no polling).
  const chartBox = h("div", { id: "session-chart", className: "chart candles" });
  const chartNote = h("p", { className: "help", id: "session-chart-note" });
  let chart = null;
  let chartSymbol = null;
  let pending = null; // candles streamed while the history loads (null: none loading)
  const fillsSeen = [];
  const markFills = () => { chart?.setFills(fillsSeen.filter((t) => t.symbol === chartSymbol)); };
  const loadHistory = async () => {
    if (!chart) { return; }
    pending = [];
    let doc;
    try { doc = await api.recentCandles(runId, { symbol: chartSymbol, limit: 1000 }); }
    catch { doc = await api.runCandles(runId, { symbol: chartSymbol, max_points: 1000, max_markers: 0 }).catch(() => null); }
    const streamed = pending;
    pending = null;
    if (!doc) { chartNote.textContent = "No candles yet"; return; }
    chart.setHistory(doc);
    for (const k of streamed) { chart.add(k); }
    markFills();
    chartNote.textContent = `${chartSymbol} · ${doc.timeframe} · updated as each candle closes`;
  };
  const addCandle = (k) => {
    if (!chart || k.symbol !== chartSymbol) { return; }
    if (pending) { pending.push(k); } else { chart.add(k); }
  };
  const addFill = (t) => {
    if (t.order_id !== undefined && t.reason) {
      const id = String(t.order_id);
      fillReasons.set(id, t.reason);
      if (fillReasons.size > 2000) { fillReasons.delete(fillReasons.keys().next().value); }
      const cell = closedReason(id);
      if (cell && !cell.textContent) { cell.textContent = t.reason; }
    }
    fillsSeen.push(t);
    if (fillsSeen.length > 2000) { fillsSeen.shift(); }
    if (t.symbol === chartSymbol) { markFills(); }
    fills.prepend(h("tr", {}, h("td", {}, fmt.time(t.timestamp)), h("td", {}, t.symbol), h("td", {}, t.side),
      h("td", { className: "num" }, fmt.number(t.size)), h("td", { className: "num" }, fmt.money(t.price)),
      h("td", { className: "num" }, fmt.money(t.pnl))));
    while (fills.children.length > MAX_ROWS) { fills.lastChild.remove(); }
  };
  // A closed order: a results row (`id`, `size`, ISO time) or an `orders` channel change (`order_id`, `filled`).
  const addClosed = (o) => {
    const id = String(o.id ?? o.order_id);
    if (closedSeen.has(id) || !CLOSED.has(o.status)) { return; }
    closedSeen.add(id);
    closed.querySelector(".empty")?.closest("tr")?.remove();
    const size = "size" in o ? o.size : (o.status === "filled" ? o.filled : o.amount);
    const price = "size" in o ? o.price : (o.status === "filled" ? (o.average_price ?? o.price) : null);
    const at = typeof o.timestamp === "number" ? new Date(o.timestamp).toISOString() : o.timestamp; // the channel's is in ms
    closed.prepend(h("tr", { dataset: { order: id } }, h("td", {}, id), h("td", {}, fmt.time(at)),
      h("td", {}, o.symbol), h("td", {}, o.side), h("td", {}, o.type || ""),
      h("td", {}, h("span", { className: `pill ${o.status}` }, o.status)),
      h("td", { className: "num" }, fmt.number(size)), h("td", { className: "num" }, fmt.money(price)),
      h("td", { className: "reason" }, o.reason || fillReasons.get(id) || "")));
    while (closed.children.length > MAX_ROWS) { closed.lastChild.remove(); }
  };
  const addAlert = (a) => {
    alerts.querySelector(".empty")?.remove();
    alerts.prepend(h("li", { className: a.severity }, `${fmt.time(a.created_at)} ${a.kind}: ${a.message}`));
    while (alerts.children.length > MAX_ROWS) { alerts.lastChild.remove(); }
  };
  const [run, past, recent] = await Promise.all([api.getRun(runId), api.listAlerts({ run_id: runId, limit: 20 }),
    api.runResults(runId, { max_points: 2, limit: 50 }).catch(() => ({ trades: [] }))]);
  chartSymbol = run.symbols[0];
  for (const t of recent.trades) { addFill(t); }
  // The latest orders so far (a long session's last page: one more request), oldest first so the newest ends on
  // top; later ones come from the orders channel.
  const total = recent.page?.orders?.total ?? 0;
  const lastPage = total > (recent.orders || []).length
    ? await api.runResults(runId, { max_points: 2, limit: 50, offset: total - 50 }).catch(() => recent) : recent;
  for (const o of [...(lastPage.orders || [])].sort((a, b) => String(a.timestamp).localeCompare(String(b.timestamp)))) { addClosed(o); }
  if (!closed.children.length) { closed.append(h("tr", {}, h("td", { colSpan: 9, className: "empty" }, "No closed orders"))); }
  for (const a of [...(past.items || past.alerts || [])].reverse()) { addAlert(a); }
  // Headers of numeric columns align with their numbers (a leading "#" marks them).
  const th = (t) => (t.startsWith("#") ? h("th", { className: "num" }, t.slice(1)) : h("th", {}, t));
  const table = (head, body, id) => h("div", { className: "scroll" }, h("table", { id }, h("thead", {}, h("tr", {}, head.map(th))), body));
  view.append(h("h1", {}, `${run.mode} session · ${run.strategy_name} · ${run.symbols.join(", ")} · ${run.timeframe}`),
    h("section", { className: "card" }, h("p", {}, "Stream ", conn, " · run ", h("code", {}, runId), " · ",
      h("a", { href: `#/runs/${runId}`, id: "session-results" }, "results so far")), condition, summary, controls, message),
    h("section", { className: "card" }, h("h2", {}, "Candles"), run.symbols.length > 1
      ? h("label", {}, "Symbol ", h("select", { id: "session-chart-symbol",
        onchange: (ev) => { chartSymbol = ev.target.value; loadHistory(); } }, run.symbols.map((s) => h("option", { value: s }, s))))
      : "", chartBox, chartNote),
    h("section", { className: "card" }, h("h2", {}, "Positions"), table(["Symbol", "#Size", "#Entry", "#Market", ""], positions, "positions")),
    h("section", { className: "card" }, h("h2", {}, "Open orders"), table(["Id", "Symbol", "Side", "#Amount", "Reason", ""], orders, "open-orders")),
    h("section", { className: "card" }, h("h2", {}, "Closed orders"),
      h("p", { className: "help" }, "Filled, cancelled and rejected, newest first; the reason: why it was placed, refused or cancelled"),
      table(["Id", "Time", "Symbol", "Side", "Type", "Status", "#Size", "#Price", "Reason"], closed, "closed-orders")),
    h("section", { className: "card" }, h("h2", {}, "Fills"), table(["Time", "Symbol", "Side", "#Size", "#Price", "#PnL"], fills, "fills")),
    h("section", { className: "card" }, h("h2", {}, "Alerts"), alerts));
  chart = await liveCandleChart(chartBox);
  // Everything after the first paint comes from the stream: its snapshot, then status, candles, fills and alerts.
  // Each snapshot (a connect or reconnect) draws the history again, so candles missed while away are there; the
  // stream shows "live" once that history is drawn.
  let connection = 0;
  const stop = api.streamStatus(runId, (e) => {
    if (e.type === "snapshot") {
      const mine = connection;
      loadHistory().finally(() => { if (mine === connection) { conn.textContent = "live"; } });
    }
    if (e.type === "snapshot" || e.type === "status_update") { if (e.payload.run_id === runId || !e.payload.run_id) { render(e.payload); } }
    else if (e.type === "candle") { addCandle(e.payload); }
    else if (e.type === "trade_execution") { addFill(e.payload); }
    else if (e.type === "alert") { addAlert(e.payload); }
  }, (state) => { connection += 1; conn.textContent = state === "live" ? "loading" : state; }, { candles: true });
  // Orders as they fill, are cancelled or refused: the `orders` channel, this session's only.
  const stopOrders = api.streamChannels(["orders"], (m) => {
    if (m.channel === "orders" && m.data.run_id === runId) { addClosed(m.data); }
  });
  const first = await api.runStatus(runId).catch(() => ({ ...run }));
  if (!last) { render(first); }
  return () => { stop(); stopOrders(); chart?.destroy(); };
}
