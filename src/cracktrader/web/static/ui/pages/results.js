// Results of one run: candles with trades and indicators, equity and drawdown with buy and hold, formatted
// metrics with help from docs/metrics.md, round trips, breakdowns, fills and orders. Sets the `data-ready`
// performance mark (and `data-data-ready` on <main>) once the charts and first table pages are drawn.
import * as api from "../api.js";
import { h, say, confirmAction } from "../dom.js";
import { equityChart, equityColumns, buyAndHold, candleChart } from "../charts.js";
import { sortableTable, serverTable } from "../table.js";
import * as fmt from "../format.js";

const PAGE = 200;
// The whole run as at most this many candles: a 1 M-bar run stays a light page; zooming loads full detail.
const MAX_CANDLES = 2000;

/** The metrics as a definition grid, each with its help line; `data-metric` carries the key for tests. */
export function metricsGrid(metrics, help) {
  const keys = Object.keys(help).filter((k) => k in metrics);
  const order = Object.keys(metrics).filter((k) => keys.includes(k));
  return h("dl", { className: "metrics", id: "metrics" }, order.map((k) => h("div", { className: "metric", dataset: { metric: k } },
    h("dt", {}, fmt.label(k)),
    h("dd", { className: "value", title: String(metrics[k]) }, fmt.metric(help[k].kind, metrics[k])),
    h("dd", { className: "help" }, help[k].help))));
}

const num = (digits) => (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits }));

export const TRADE_COLUMNS = [
  { key: "timestamp", label: "Time (UTC)", format: fmt.time },
  { key: "symbol", label: "Symbol" },
  { key: "side", label: "Side" },
  { key: "size", label: "Size", num: true, format: num(8) },
  { key: "price", label: "Price", num: true, format: num(8) },
  { key: "value", label: "Value", num: true, format: fmt.money },
  { key: "commission", label: "Fee", num: true, format: fmt.money },
  { key: "pnl", label: "PnL", num: true, format: fmt.money },
  { key: "return_pct", label: "PnL %", num: true, format: fmt.percent },
  { key: "reason", label: "Reason" },
];
const ORDER_COLUMNS = [
  { key: "created_at", label: "Created (UTC)", format: fmt.time },
  { key: "symbol", label: "Symbol" },
  { key: "side", label: "Side" },
  { key: "type", label: "Type" },
  { key: "status", label: "Status" },
  { key: "size", label: "Size", num: true, format: num(8) },
  { key: "price", label: "Fill price", num: true, format: num(8) },
  { key: "trigger_price", label: "Limit/stop", num: true, format: num(8) },
  { key: "commission", label: "Fee", num: true, format: fmt.money },
  { key: "reason", label: "Reason" },
];

const pct = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(2)} %`);

export const ROUNDTRIP_COLUMNS = [
  { key: "symbol", label: "Symbol", sort: "symbol" },
  { key: "side", label: "Side" },
  { key: "entry_time", label: "Entry (UTC)", format: fmt.time, sort: "entry_time" },
  { key: "entry_price", label: "Entry price", num: true, format: num(8), sort: "entry_price" },
  { key: "exit_time", label: "Exit (UTC)", format: fmt.time, sort: "exit_time" },
  { key: "exit_price", label: "Exit price", num: true, format: num(8), sort: "exit_price" },
  { key: "size", label: "Size", num: true, format: num(8), sort: "size" },
  { key: "pnl", label: "PnL", num: true, format: fmt.money, sort: "pnl" },
  { key: "pnl_pct", label: "PnL %", num: true, format: pct, sort: "pnl_pct" },
  { key: "duration_s", label: "Duration", num: true, format: fmt.seconds, sort: "duration" },
  { key: "fees", label: "Fees", num: true, format: fmt.money, sort: "fees" },
  { key: "exit_reason", label: "Exit" },
];

/** A small static table: `cols` [[label, key, format, num]]. */
function plainTable(id, cols, rows, empty) {
  return h("div", { className: "scroll", id }, h("table", {},
    h("thead", {}, h("tr", {}, cols.map(([label, , , isNum]) => h("th", { className: isNum ? "num" : "", scope: "col" }, label)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, cols.map(([, key, f, isNum]) =>
      h("td", { className: isNum ? "num" : "", dataset: { key } }, f ? f(r[key]) : String(r[key] ?? "–")))))
      : h("tr", {}, h("td", { colSpan: cols.length, className: "empty" }, empty)))));
}

function breakdownSection(b) {
  return h("section", { className: "card", id: "breakdowns" }, h("h2", {}, "Breakdowns"),
    h("div", { className: "grid2" },
      h("div", {}, h("h3", {}, "Per symbol"), plainTable("by-symbol", [
        ["Symbol", "symbol"], ["Trades", "trades", null, true], ["Wins", "wins", null, true],
        ["Win rate", "win_rate", fmt.percent, true], ["PnL", "pnl", fmt.money, true], ["Fees", "fees", fmt.money, true],
        ["Return", "return_pct", pct, true]], b.by_symbol, "No symbols")),
      h("div", {}, h("h3", {}, "Monthly"), plainTable("monthly", [
        ["Month", "month"], ["Start", "start_value", fmt.money, true], ["End", "end_value", fmt.money, true],
        ["Return", "return_pct", pct, true]], b.monthly, "No months"))));
}

/** The results page of a run into `view`. `zoomHint`: what the candle line says a bucketed chart does on zoom. */
export async function renderResults(view, runId, { zoomHint = "zoom in for full detail" } = {}) {
  const candlesOf = (symbol, range = {}) => api.runCandles(runId, { symbol, max_points: MAX_CANDLES, ...range });
  const [run, res, help, firstCandles, bd] = await Promise.all([
    api.getRun(runId), api.runResults(runId, { max_points: 2000, limit: PAGE }), api.metricsHelp(),
    api.runCandles(runId, { max_points: MAX_CANDLES }).catch((e) => e), api.breakdowns(runId).catch((e) => e)]);
  const message = h("p", { className: "message", role: "status" });
  const cfg = run.config || {};
  const head = h("section", { className: "card run-head" },
    h("h1", {}, `${run.strategy_name} · ${run.symbols.join(", ")} · ${run.timeframe}`),
    h("p", {}, h("span", { className: `pill ${run.status}` }, run.status), ` ${run.mode} on ${run.exchange} · `,
      `${cfg.start_date ?? "?"} → ${cfg.end_date ?? "?"} · run `, h("code", {}, run.run_id)),
    run.error ? h("p", { className: "message error" }, run.error) : "",
    h("p", { className: "kpis" },
      h("span", {}, "Final value ", h("strong", { id: "final-value" }, fmt.money(res.final_value))),
      h("span", {}, "Return ", h("strong", { id: "total-return" }, fmt.percent(res.performance_metrics?.total_return)))),
    h("div", { className: "buttons" },
      h("button", { type: "button", id: "rerun", onclick: async () => {
        try { const r = await api.rerun(runId); say(message, `Rerun started: ${r.run_id}`, "ok"); }
        catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
      } }, "Rerun"),
      h("button", { type: "button", className: "danger", id: "delete", onclick: async () => {
        if (!(await confirmAction(`Delete run ${runId}?`))) { return; }
        try { await api.deleteRun(runId); location.hash = "#/history"; } catch (e) { say(message, e.message, "error"); }
      } }, "Delete")),
    message);

  const chartBox = h("div", { id: "equity-chart", className: "chart" });
  const bh = res.performance_metrics?.buy_and_hold_return;
  const equity = h("section", { className: "card" }, h("h2", {}, "Equity and drawdown"),
    h("p", { className: "help" }, `${res.equity_curve.length.toLocaleString()} points shown of `,
      `${(res.page?.equity_points_total ?? res.equity_curve.length).toLocaleString()}`,
      bh !== null && bh !== undefined ? ` · buy and hold over the same bars: ${fmt.percent(bh)}` : ""),
    chartBox);
  const candleBox = h("div", { id: "candle-chart", className: "chart candles" });
  const candleInfo = h("p", { className: "help", id: "candle-info" });
  const symbolPick = run.symbols.length > 1 ? h("select", { id: "candle-symbol", "aria-label": "Symbol" },
    run.symbols.map((x) => h("option", { value: x }, x))) : "";
  const candles = h("section", { className: "card", id: "candles" },
    h("div", { className: "row-head" }, h("h2", {}, "Candles and trades"), symbolPick), candleInfo, candleBox);
  const roundTrips = serverTable(ROUNDTRIP_COLUMNS, (p) => api.roundTrips(runId, p),
    { id: "roundtrips", empty: "No round trips", sort: "exit_time", order: "asc" });

  const trades = sortableTable(TRADE_COLUMNS, { id: "trades", empty: "No fills" });
  const orders = sortableTable(ORDER_COLUMNS, { id: "orders", empty: "No orders" });
  const tradeRows = [...res.trades];
  const orderRows = [...res.orders];
  trades.setRows(tradeRows);
  orders.setRows(orderRows);
  const more = (kind, rows, table, total) => {
    const btn = h("button", { type: "button", className: "small", hidden: rows.length >= total, onclick: async () => {
      const page = await api.runResults(runId, { max_points: 2, limit: PAGE, offset: rows.length });
      rows.push(...page[kind]);
      table.setRows(rows);
      btn.hidden = rows.length >= total;
    } }, `Load more (${total.toLocaleString()} in all)`);
    return btn;
  };
  const open = (res.positions || []).length ? h("section", { className: "card", id: "end-positions" },
    h("h2", {}, "Positions still open at the end"),
    h("div", { className: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["Symbol", "Size", "Entry", "Market", "Value", "Unrealized"]
      .map((t, i) => h("th", { className: i ? "num" : "" }, t)))),
    h("tbody", {}, res.positions.map((x) => h("tr", {}, h("td", {}, x.symbol), h("td", { className: "num" }, fmt.number(x.size)),
      h("td", { className: "num" }, fmt.money(x.entry_price)), h("td", { className: "num" }, fmt.money(x.market_price)),
      h("td", { className: "num" }, fmt.money(x.value)), h("td", { className: "num" }, fmt.money(x.unrealized_pnl)))))))) : "";
  view.append(head, candles, equity, open,
    h("section", { className: "card" }, h("h2", {}, "Metrics"), metricsGrid(res.performance_metrics || {}, help)),
    h("section", { className: "card" }, h("h2", {}, "Round trips"), roundTrips.el),
    bd instanceof Error ? h("p", { className: "message error" }, `Breakdowns: ${bd.message}`) : breakdownSection(bd),
    h("section", { className: "card" }, h("h2", {}, "Fills"), trades.el,
      more("trades", tradeRows, trades, res.page?.trades?.total ?? tradeRows.length)),
    h("section", { className: "card" }, h("h2", {}, "Orders"), orders.el,
      more("orders", orderRows, orders, res.page?.orders?.total ?? orderRows.length)));
  const tablesDrawn = roundTrips.load();
  let chart = null;
  const describe = (d) => {
    candleInfo.textContent = `${d.symbol} · ${d.bars.toLocaleString()} bars ${d.bucket_bars > 1 ? `as ${d.candles.timestamp.length.toLocaleString()} candles of ${d.bucket_bars} bars (${zoomHint})` : "at full detail"}`
      + ` · ${d.markers_total.toLocaleString()} round trips${d.indicators.length ? ` · ${d.indicators.map((x) => x.name).join(", ")}` : ""}`
      + (d.indicators_error ? ` · indicators: ${d.indicators_error}` : "");
  };
  if (firstCandles instanceof Error) {
    candleBox.append(h("p", { className: "message error" }, `${firstCandles.code}: ${firstCandles.message}`));
  } else {
    chart = await candleChart(candleBox, firstCandles, (range) => candlesOf(chart.doc.symbol, range), { onLoaded: describe });
    if (symbolPick) {
      symbolPick.addEventListener("change", async () => {
        try {
          const d = await candlesOf(symbolPick.value);
          chart.destroy();
          chart = await candleChart(candleBox, d, (range) => candlesOf(d.symbol, range), { onLoaded: describe });
        } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
      });
    }
  }
  if (res.equity_curve.length) {
    const cash = bd instanceof Error ? cfg.initial_cash : bd.initial_cash;
    const hold = firstCandles instanceof Error || !cash ? null
      : buyAndHold(equityColumns(res.equity_curve)[0], firstCandles.candles, cash);
    equityChart(chartBox, res.equity_curve, { buyAndHold: hold });
  } else { chartBox.append(h("p", { className: "empty" }, "No equity yet")); }
  await tablesDrawn;
  performance.mark("data-ready");
  view.dataset.dataReady = "true";
  return () => { if (chart) { chart.destroy(); } };
}
