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

/** Index of the last time in sorted `times` at or before `t` (0 when `t` is before them all). */
export function bucketIndex(times, t) {
  let lo = 0;
  let hi = times.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (times[mid] <= t) { lo = mid; } else { hi = mid - 1; }
  }
  return lo;
}

/** Buy and hold on the equity curve's times: the first close scaled to `cash`, from columnar candles (ms). */
export function buyAndHold(xs, candles, cash) {
  const ts = candles.timestamp;
  if (!ts.length || !candles.close[0]) { return null; }
  const first = candles.close[0];
  let j = 0;
  return xs.map((x) => {
    const ms = x * 1000;
    while (j + 1 < ts.length && ts[j + 1] <= ms) { j += 1; }
    const c = candles.close[j];
    return c === null || c === undefined ? null : cash * c / first;
  });
}

const UP = "#10b981";
const DOWN = "#ef4444";
const INDICATOR_COLORS = ["#f59e0b", "#a855f7", "#38bdf8", "#f472b6", "#84cc16", "#eab308"];

/** Lightweight-charts data of one `/runs/{id}/candles` answer: candles, volume, indicators, levels, markers. */
export function candleSeriesData(doc) {
  const c = doc.candles;
  const times = c.timestamp.map((ms) => Math.floor(ms / 1000));
  const bars = [];
  const volume = [];
  for (let i = 0; i < times.length; i += 1) {
    if (c.open[i] === null) { bars.push({ time: times[i] }); volume.push({ time: times[i] }); continue; }
    bars.push({ time: times[i], open: c.open[i], high: c.high[i], low: c.low[i], close: c.close[i] });
    volume.push({ time: times[i], value: c.volume[i] ?? 0,
      color: c.close[i] >= c.open[i] ? "rgba(16,185,129,0.35)" : "rgba(239,68,68,0.35)" });
  }
  const indicators = doc.indicators.map((s) => ({ name: s.name,
    data: times.map((t, i) => (s.values[i] === null || s.values[i] === undefined ? { time: t } : { time: t, value: s.values[i] })) }));
  // Stop-loss and take-profit levels: a line over each trade's bars, a gap between trades.
  const sl = new Array(times.length).fill(null);
  const tp = new Array(times.length).fill(null);
  const markers = [];
  for (const m of doc.markers) {
    const a = bucketIndex(times, Date.parse(m.entry_time) / 1000);
    const b = bucketIndex(times, Date.parse(m.exit_time) / 1000);
    for (let i = a; i <= b; i += 1) {
      if (m.stop_loss !== null) { sl[i] = m.stop_loss; }
      if (m.take_profit !== null) { tp[i] = m.take_profit; }
    }
    const long = m.side === "long";
    markers.push({ time: times[a], position: long ? "belowBar" : "aboveBar", shape: long ? "arrowUp" : "arrowDown",
      color: "#3b82f6", text: long ? "L" : "S" });
    markers.push({ time: times[b], position: long ? "aboveBar" : "belowBar", shape: long ? "arrowDown" : "arrowUp",
      color: (m.pnl ?? 0) >= 0 ? UP : DOWN, text: `${(m.pnl_pct ?? 0).toFixed(1)}%` });
  }
  markers.sort((x, y) => x.time - y.time);
  const level = (vals) => times.map((t, i) => (vals[i] === null ? { time: t } : { time: t, value: vals[i] }));
  return { times, bars, volume, indicators, stopLoss: level(sl), takeProfit: level(tp), markers,
    hasLevels: { sl: sl.some((v) => v !== null), tp: tp.some((v) => v !== null) } };
}

/**
 * The candlestick chart of a run: volume, entry/exit markers of every round trip, stop-loss and take-profit
 * levels and the strategy's indicators. `load({start, end})` answers `/runs/{id}/candles` for a range (none:
 * the whole run); on zoom or pan the visible range is loaded again at full detail when the shown candles are
 * buckets. Returns `{chart, doc, destroy()}`.
 */
export async function candleChart(el, first, load, { onLoaded = () => {} } = {}) {
  const lw = await import("./vendor/lightweight-charts/lightweight-charts.standalone.production.mjs");
  el.replaceChildren();
  const chart = lw.createChart(el, {
    height: 380, autoSize: true,
    layout: { background: { color: "transparent" }, textColor: "#cbd5e1", attributionLogo: true },
    grid: { vertLines: { color: "#2a3140" }, horzLines: { color: "#2a3140" } },
    timeScale: { timeVisible: true, secondsVisible: false },
    rightPriceScale: { scaleMargins: { top: 0.05, bottom: 0.25 } },
  });
  const candles = chart.addSeries(lw.CandlestickSeries, { upColor: UP, downColor: DOWN, wickUpColor: UP,
    wickDownColor: DOWN, borderVisible: false });
  const volume = chart.addSeries(lw.HistogramSeries, { priceScaleId: "volume", priceFormat: { type: "volume" },
    lastValueVisible: false, priceLineVisible: false });
  chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  const line = (color, style = 0) => chart.addSeries(lw.LineSeries, { color, lineWidth: 1, lineStyle: style,
    lastValueVisible: false, priceLineVisible: false, crosshairMarkerVisible: false });
  const stopLoss = line(DOWN, 2);
  const takeProfit = line(UP, 2);
  const indicatorSeries = new Map();
  const markers = lw.createSeriesMarkers(candles, []);
  let doc = first;
  let times = [];
  let busy = false;

  const draw = (d) => {
    doc = d;
    const data = candleSeriesData(d);
    times = data.times;
    candles.setData(data.bars);
    volume.setData(data.volume);
    stopLoss.setData(data.hasLevels.sl ? data.stopLoss : []);
    takeProfit.setData(data.hasLevels.tp ? data.takeProfit : []);
    data.indicators.forEach((s, i) => {
      if (!indicatorSeries.has(s.name)) {
        indicatorSeries.set(s.name, chart.addSeries(lw.LineSeries, { color: INDICATOR_COLORS[i % INDICATOR_COLORS.length],
          lineWidth: 1, title: s.name, lastValueVisible: false, priceLineVisible: false }));
      }
      indicatorSeries.get(s.name).setData(s.data);
    });
    markers.setMarkers(data.markers);
    el.dataset.bucketBars = String(d.bucket_bars);
    el.dataset.candles = String(times.length);
    onLoaded(d);
  };
  draw(first);
  chart.timeScale().fitContent();

  const runStart = Date.parse(first.run_range.start);
  const runEnd = Date.parse(first.run_range.end);
  let timer = null;
  const reload = async () => {
    const range = chart.timeScale().getVisibleLogicalRange();
    if (!range || busy || !times.length) { return; }
    const n = times.length;
    const partial = Date.parse(doc.start) > runStart || Date.parse(doc.end) < runEnd;
    const beyond = range.from < -1 || range.to > n;
    const zoomedIn = doc.bucket_bars > 1 && (range.to - range.from) < n * 0.6;
    if (!zoomedIn && !(partial && beyond)) { return; }
    const at = (i) => times[Math.min(n - 1, Math.max(0, Math.round(i)))] * 1000;
    const step = n > 1 ? (times[n - 1] - times[0]) * 1000 / (n - 1) : 0;
    // Beyond the loaded candles the time is extrapolated from their spacing.
    const from = range.from < 0 ? at(0) + range.from * step : at(range.from);
    const to = range.to > n - 1 ? at(n - 1) + (range.to - n + 1) * step : at(range.to) + step;
    const start = Math.max(runStart, Math.floor(from));
    const end = Math.min(runEnd, Math.ceil(to));
    if (start >= end) { return; }
    busy = true;
    try {
      const d = await load({ start, end });
      draw(d);
      chart.timeScale().setVisibleRange({ from: Math.floor(from / 1000), to: Math.floor(to / 1000) });
    } catch { /* a failed reload keeps what is shown */ }
    finally { setTimeout(() => { busy = false; }, 0); }
  };
  // Debounced: one request per settled zoom or pan, well inside the rate limit.
  chart.timeScale().subscribeVisibleLogicalRangeChange(() => {
    if (busy) { return; }
    clearTimeout(timer);
    timer = setTimeout(reload, 400);
  });
  return { chart, get doc() { return doc; }, destroy() { clearTimeout(timer); chart.remove(); } };
}

/** A fill (`trade_execution` payload, or a results trade) as a marker on the candle at or before its time. */
function fillMarker(times, fill) {
  const buy = fill.side === "buy";
  return { time: times[bucketIndex(times, Math.floor(Date.parse(fill.timestamp) / 1000))],
    position: buy ? "belowBar" : "aboveBar", shape: buy ? "arrowUp" : "arrowDown", color: buy ? "#3b82f6" : "#f59e0b",
    text: buy ? "B" : "S" };
}

/**
 * The live candle chart of a session: `setHistory(doc)` draws a `/runs/{id}/recent-candles` answer, `add(candle)`
 * appends (or replaces) a streamed `candle` payload, `setFills(fills)` marks fills. `el.dataset.candles` counts
 * the candles drawn, `last` is the last one's open time (ms) and `markers` counts the fills marked.
 * Returns `{chart, setHistory, add, setFills, destroy()}`.
 */
export async function liveCandleChart(el) {
  const lw = await import("./vendor/lightweight-charts/lightweight-charts.standalone.production.mjs");
  el.replaceChildren();
  const chart = lw.createChart(el, {
    height: 340, autoSize: true,
    layout: { background: { color: "transparent" }, textColor: "#cbd5e1", attributionLogo: true },
    grid: { vertLines: { color: "#2a3140" }, horzLines: { color: "#2a3140" } },
    timeScale: { timeVisible: true, secondsVisible: false },
    rightPriceScale: { scaleMargins: { top: 0.05, bottom: 0.25 } },
  });
  const candles = chart.addSeries(lw.CandlestickSeries, { upColor: UP, downColor: DOWN, wickUpColor: UP,
    wickDownColor: DOWN, borderVisible: false });
  const volume = chart.addSeries(lw.HistogramSeries, { priceScaleId: "volume", priceFormat: { type: "volume" },
    lastValueVisible: false, priceLineVisible: false });
  chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  const markers = lw.createSeriesMarkers(candles, []);
  let times = [];
  let fills = [];
  const volumeBar = (time, o, c, v) => ({ time, value: v ?? 0,
    color: c >= o ? "rgba(16,185,129,0.35)" : "rgba(239,68,68,0.35)" });
  const mark = () => {
    if (!times.length) { return; }
    const shown = fills.filter((f) => Date.parse(f.timestamp) >= times[0] * 1000).map((f) => fillMarker(times, f));
    markers.setMarkers(shown.sort((x, y) => x.time - y.time));
    el.dataset.markers = String(shown.length);
  };
  const count = () => {
    el.dataset.candles = String(times.length);
    el.dataset.last = times.length ? String(times[times.length - 1] * 1000) : "";
  };
  return {
    chart,
    /** Draw the history (a reconnect draws it again: candles missed meanwhile are in it). */
    setHistory(doc) {
      const c = doc.candles;
      // Second candles need seconds on the time axis to tell them apart.
      chart.applyOptions({ timeScale: { secondsVisible: /^\d+s$/.test(doc.timeframe || "") } });
      times = c.timestamp.map((ms) => Math.floor(ms / 1000));
      candles.setData(times.map((time, i) => ({ time, open: c.open[i], high: c.high[i], low: c.low[i], close: c.close[i] })));
      volume.setData(times.map((time, i) => volumeBar(time, c.open[i], c.close[i], c.volume[i])));
      chart.timeScale().fitContent();
      mark();
      count();
    },
    /** A closed candle from the stream; one older than the last drawn is already in the history. */
    add(k) {
      const time = Math.floor(k.t / 1000);
      const lastTime = times.length ? times[times.length - 1] : -Infinity;
      if (time < lastTime) { return; }
      candles.update({ time, open: k.o, high: k.h, low: k.l, close: k.c });
      volume.update(volumeBar(time, k.o, k.c, k.v));
      if (time > lastTime) { times.push(time); }
      mark();
      count();
    },
    /** The fills to mark (of the chart's symbol). */
    setFills(list) { fills = list.slice(-2000); mark(); },
    destroy() { chart.remove(); },
  };
}

// A perceptual scale (viridis' stops): low values dark blue, high ones yellow; nothing says good or bad.
const HEAT_STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const HEAT_EMPTY = "#2a3140";

/** The colour of `t` in 0..1 on the heatmap's scale, as [r, g, b]. */
export function heatColour(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (HEAT_STOPS.length - 1);
  const i = Math.min(HEAT_STOPS.length - 2, Math.floor(x));
  const f = x - i;
  return HEAT_STOPS[i].map((c, k) => Math.round(c + (HEAT_STOPS[i + 1][k] - c) * f));
}

const rgb = ([r, g, b]) => `rgb(${r},${g},${b})`;

/**
 * A heatmap drawn on a canvas in `el`: columns `xs`, rows `ys` (values of two parameters, in order), `cell(x, y)`
 * the number of that cell (null: none), shown with `format` (the parameters' values with `tick`). A legend gives the scale; hovering (or touching) a
 * cell writes its parameters and value to the hover line. Redraws when `el` changes width. Returns
 * `{canvas, min, max, destroy()}`.
 */
export function heatmap(el, { xs, ys, cell, xLabel, yLabel, format = String, tick = String }) {
  el.replaceChildren();
  const canvas = document.createElement("canvas");
  canvas.className = "heatmap-canvas";
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${yLabel} by ${xLabel}`);
  const grid = ys.map((y) => xs.map((x) => {
    const v = cell(x, y);
    return v === null || v === undefined || !Number.isFinite(v) ? null : v;
  }));
  const finite = grid.flat().filter((v) => v !== null);
  const min = finite.length ? Math.min(...finite) : 0;
  const max = finite.length ? Math.max(...finite) : 0;
  const t = (v) => (max > min ? (v - min) / (max - min) : 0.5);

  const legendBar = document.createElement("canvas");
  legendBar.className = "heatmap-legend-bar";
  legendBar.width = 256;
  legendBar.height = 1;
  const lctx = legendBar.getContext("2d");
  for (let i = 0; i < 256; i += 1) { lctx.fillStyle = rgb(heatColour(i / 255)); lctx.fillRect(i, 0, 1, 1); }
  const span = (cls, text) => { const s = document.createElement("span"); s.className = cls; s.textContent = text; return s; };
  const legend = document.createElement("div");
  legend.className = "heatmap-legend";
  legend.append(span("heatmap-min", finite.length ? format(min) : "–"), legendBar,
    span("heatmap-max", finite.length ? format(max) : "–"));
  const hover = span("heatmap-hover help", "Point at (or tap) a cell for its value");
  el.append(canvas, legend, hover);

  let geometry = null;
  let hovered = null;
  const draw = () => {
    const width = Math.max(240, el.clientWidth || 600);
    const ctx = canvas.getContext("2d");
    ctx.font = "12px system-ui, sans-serif";
    const labelW = Math.max(...ys.map((y) => ctx.measureText(tick(y)).width), 0);
    const left = Math.ceil(labelW) + 30;
    const bottom = 40;
    const top = 6;
    const right = 8;
    const plotW = width - left - right;
    const cellH = Math.max(14, Math.min(44, 360 / ys.length));
    const height = top + cellH * ys.length + bottom;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = "12px system-ui, sans-serif";
    const cellW = plotW / xs.length;
    geometry = { left, top, cellW, cellH };
    ys.forEach((y, r) => {
      xs.forEach((x, c) => {
        const v = grid[r][c];
        const px = left + c * cellW;
        // The first row at the bottom: values grow upwards, as on a chart's y axis.
        const py = top + (ys.length - 1 - r) * cellH;
        ctx.fillStyle = v === null ? HEAT_EMPTY : rgb(heatColour(t(v)));
        ctx.fillRect(px, py, Math.ceil(cellW), Math.ceil(cellH));
        if (v !== null && cellW >= 48 && cellH >= 18) {
          const [cr, cg, cb] = heatColour(t(v));
          ctx.fillStyle = cr * 0.299 + cg * 0.587 + cb * 0.114 > 140 ? "#0f1420" : "#f8fafc";
          ctx.textAlign = "center";
          ctx.textBaseline = "middle";
          ctx.fillText(format(v), px + cellW / 2, py + cellH / 2, cellW - 4);
        }
      });
    });
    if (hovered) {
      ctx.strokeStyle = "#f8fafc";
      ctx.lineWidth = 2;
      ctx.strokeRect(left + hovered.c * cellW + 1, top + (ys.length - 1 - hovered.r) * cellH + 1, cellW - 2, cellH - 2);
    }
    // Axis labels: every k-th value so that they do not overlap.
    ctx.fillStyle = "#9aa4b2";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    const everyY = Math.max(1, Math.ceil(16 / cellH));
    ys.forEach((y, r) => { if (r % everyY === 0) { ctx.fillText(tick(y), left - 6, top + (ys.length - 1 - r + 0.5) * cellH); } });
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const widest = Math.max(...xs.map((x) => ctx.measureText(tick(x)).width), 1) + 8;
    const everyX = Math.max(1, Math.ceil(widest / cellW));
    xs.forEach((x, c) => { if (c % everyX === 0) { ctx.fillText(tick(x), left + (c + 0.5) * cellW, top + ys.length * cellH + 4); } });
    ctx.fillText(xLabel, left + plotW / 2, top + ys.length * cellH + 22);
    ctx.save();
    ctx.translate(10, top + (ys.length * cellH) / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle";
    ctx.fillText(yLabel, 0, 0);
    ctx.restore();
  };
  const at = (ev) => {
    if (!geometry) { return null; }
    const box = canvas.getBoundingClientRect();
    const c = Math.floor((ev.clientX - box.left - geometry.left) / geometry.cellW);
    const r = ys.length - 1 - Math.floor((ev.clientY - box.top - geometry.top) / geometry.cellH);
    return c >= 0 && c < xs.length && r >= 0 && r < ys.length ? { c, r } : null;
  };
  const onMove = (ev) => {
    const hit = at(ev);
    if ((hit?.c ?? -1) === (hovered?.c ?? -1) && (hit?.r ?? -1) === (hovered?.r ?? -1)) { return; }
    hovered = hit;
    if (hit) {
      const v = grid[hit.r][hit.c];
      // One unnamed row: a heatmap over one parameter.
      const row = tick(ys[hit.r]) === "" ? "" : ` · ${yLabel} ${tick(ys[hit.r])}`;
      hover.textContent = `${xLabel} ${tick(xs[hit.c])}${row}: ${v === null ? "no row" : format(v)}`;
      canvas.dataset.hover = `${hit.c},${hit.r}`;
    } else {
      hover.textContent = "Point at (or tap) a cell for its value";
      delete canvas.dataset.hover;
    }
    draw();
  };
  canvas.addEventListener("pointermove", onMove);
  canvas.addEventListener("pointerdown", onMove);
  canvas.addEventListener("pointerleave", () => onMove({ clientX: -1e9, clientY: -1e9 }));
  draw();
  let lastWidth = el.clientWidth;
  const ro = new ResizeObserver(() => { if (el.clientWidth !== lastWidth) { lastWidth = el.clientWidth; draw(); } });
  ro.observe(el);
  return { canvas, min, max, destroy() { ro.disconnect(); } };
}
