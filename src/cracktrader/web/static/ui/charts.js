// Charts: uPlot for long series (equity, drawdown, comparisons); lightweight-charts for candles.
import uPlot from "./vendor/uplot/uPlot.esm.js";

const COLORS = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#a855f7"];

/** Equity points of a results document as uPlot columns: [seconds], [value], [drawdown fraction]. */
export function equityColumns(points) {
  const xs = new Array(points.length);
  const eq = new Array(points.length);
  const dd = new Array(points.length);
  let peak = -Infinity;
  points.forEach((p, i) => {
    xs[i] = Date.parse(p.timestamp) / 1000;
    eq[i] = p.value;
    peak = Math.max(peak, p.value);
    dd[i] = peak > 0 ? -(peak - p.value) / peak * 100 : 0;
  });
  return [xs, eq, dd];
}

function sizeOf(el, height) {
  return { width: Math.max(280, el.clientWidth || 600), height };
}

function autoResize(plot, el, height) {
  const ro = new ResizeObserver(() => plot.setSize(sizeOf(el, height)));
  ro.observe(el);
  return plot;
}

const axisStyle = { stroke: "#9aa4b2", grid: { stroke: "#2a3140", width: 1 }, ticks: { stroke: "#2a3140" } };

/** Equity (top) and drawdown (bottom) of one run, into `el`. */
export function equityChart(el, points, { buyAndHold = null } = {}) {
  const [xs, eq, dd] = equityColumns(points);
  el.replaceChildren();
  const top = document.createElement("div");
  const bottom = document.createElement("div");
  el.append(top, bottom);
  const series = [{}, { label: "Equity", stroke: COLORS[0], width: 2 }];
  const data = [xs, eq];
  if (buyAndHold) { series.push({ label: "Buy & hold", stroke: COLORS[1], width: 1, dash: [6, 4] }); data.push(buyAndHold); }
  const sync = uPlot.sync(`eq-${Math.random()}`);
  const cursor = { sync: { key: sync.key } };
  const a = new uPlot({ ...sizeOf(top, 260), series, cursor, axes: [axisStyle, { ...axisStyle, size: 70 }],
    legend: { live: true } }, data, top);
  const b = new uPlot({ ...sizeOf(bottom, 140), cursor,
    series: [{}, { label: "Drawdown %", stroke: "#ef4444", fill: "rgba(239,68,68,0.25)", width: 1 }],
    axes: [axisStyle, { ...axisStyle, size: 70 }] }, [xs, dd], bottom);
  autoResize(a, top, 260);
  autoResize(b, bottom, 140);
  return [a, b];
}

/** Several runs' equity overlaid as returns from their start (%), aligned on time. */
export function compareChart(el, runs) {
  el.replaceChildren();
  const all = new Set();
  const maps = runs.map((r) => {
    const m = new Map();
    const first = r.points.length ? r.points[0].value : 1;
    for (const p of r.points) { const t = Date.parse(p.timestamp) / 1000; all.add(t); m.set(t, (p.value / first - 1) * 100); }
    return m;
  });
  const xs = [...all].sort((a, b) => a - b);
  const data = [xs, ...maps.map((m) => xs.map((t) => (m.has(t) ? m.get(t) : null)))];
  const series = [{}, ...runs.map((r, i) => ({ label: r.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true }))];
  const plot = new uPlot({ ...sizeOf(el, 320), series, axes: [axisStyle, { ...axisStyle, size: 60 }] }, data, el);
  return autoResize(plot, el, 320);
}

/**
 * MERGE POINT (candles): the candlestick chart of a run with its trade markers, on lightweight-charts, once
 * GET /runs/{id}/candles lands (api.runCandles). `candles`: [{time (s), open, high, low, close}], `markers`:
 * lightweight-charts series markers. Kept here so results.js only calls it.
 */
export async function candleChart(el, candles, markers = []) {
  const lw = await import("./vendor/lightweight-charts/lightweight-charts.standalone.production.mjs");
  el.replaceChildren();
  const chart = lw.createChart(el, {
    height: 360, autoSize: true,
    layout: { background: { color: "transparent" }, textColor: "#cbd5e1", attributionLogo: true },
    grid: { vertLines: { color: "#2a3140" }, horzLines: { color: "#2a3140" } },
  });
  const series = chart.addSeries(lw.CandlestickSeries);
  series.setData(candles);
  if (markers.length) { lw.createSeriesMarkers(series, markers); }
  chart.timeScale().fitContent();
  return chart;
}
