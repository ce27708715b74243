// Results of one run: equity and drawdown, formatted metrics with help from docs/metrics.md, trades and orders.
import * as api from "../api.js";
import { h, say, confirmAction } from "../dom.js";
import { equityChart } from "../charts.js";
import { sortableTable } from "../table.js";
import * as fmt from "../format.js";

const PAGE = 1000;

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

export async function renderResults(view, runId) {
  const [run, res, help] = await Promise.all([
    api.getRun(runId), api.runResults(runId, { max_points: 2000, limit: PAGE }), api.metricsHelp()]);
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
  // MERGE POINT (candles): GET /runs/{id}/candles (api.runCandles) feeds charts.candleChart(el, candles, markers)
  // here, with the trade markers; until that endpoint lands this section stays empty.
  const candles = h("section", { className: "card", id: "candles", hidden: true }, h("h2", {}, "Candles"),
    h("div", { id: "candle-chart", className: "chart" }));

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
  view.append(head, equity, candles, open,
    h("section", { className: "card" }, h("h2", {}, "Metrics"), metricsGrid(res.performance_metrics || {}, help)),
    h("section", { className: "card" }, h("h2", {}, "Fills"), trades.el,
      more("trades", tradeRows, trades, res.page?.trades?.total ?? tradeRows.length)),
    h("section", { className: "card" }, h("h2", {}, "Orders"), orders.el,
      more("orders", orderRows, orders, res.page?.orders?.total ?? orderRows.length)));
  if (res.equity_curve.length) { equityChart(chartBox, res.equity_curve); }
  else { chartBox.append(h("p", { className: "empty" }, "No equity yet")); }
}
