// Sweeps: the strategy form with ranges instead of values and the number of combinations before it starts;
// progress from the stream; past sweeps; a sweep's rows as a sortable, paged table and a heatmap over two of its
// parameters; any row run as a backtest, whose results open when it ends.
import * as api from "../api.js";
import { h, say } from "../dom.js";
import { field, clearErrors, showError as showFormError } from "../forms.js";
import { gridStrategy, marketFields, fieldsOfErrors, FIELD_ALIASES } from "../runform.js";
import { sortableTable, serverTable } from "../table.js";
import { heatmap } from "../charts.js";
import * as fmt from "../format.js";

const ACTIVE = ["queued", "running"];
const RUN_ENDED = ["completed", "stopped", "failed"];
// A sweep's rows are read whole (the table sorts and the heatmap draws them all), the API's page at a time,
// up to this many (ranked best first, so a larger sweep shows its best rows).
const ROWS_PAGE = 10000;
const MAX_ROWS = 50000;
const DEFAULT_SORT = "sharpe_ratio";

const paramText = fmt.param;

/** The distinct values of a parameter over `rows`, in order (numbers by value, off first). */
function valuesOf(rows, key) {
  const seen = new Map(rows.map((r) => [paramText(r[key]), r[key]]));
  return [...seen.values()].sort((a, b) => {
    if (a === null || a === undefined) { return -1; }
    if (b === null || b === undefined) { return 1; }
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    return String(a).localeCompare(String(b));
  });
}

const SWEEP_COLUMNS = [
  { key: "created_at", label: "Created (UTC)", format: fmt.time },
  { key: "strategy_name", label: "Strategy" },
  { key: "status", label: "Status", format: (v) => h("span", { className: `pill ${v}` }, v) },
  { key: "combinations", label: "Combinations", num: true },
  { key: "rows", label: "Rows", num: true },
  { key: "sort", label: "Ranked by", format: fmt.label },
  { key: "sweep_id", label: "", format: (v) => h("a", { href: `#/sweeps/${encodeURIComponent(v)}`, className: "button small" }, "Open") },
];

export async function renderSweeps(view, openId = null) {
  const [strategies, exchanges, help, opened] = await Promise.all([api.listStrategies(), api.listExchanges(),
    api.metricsHelp(), openId ? api.getSweep(openId).catch((e) => e) : null]);
  // An opened sweep fills the form in with its request: a start for the next one.
  const from = opened && !(opened instanceof Error) ? opened.request : null;
  const strat = gridStrategy(strategies, from);
  const strategy = strat.select;
  const market = marketFields(exchanges, from || {});
  await strat.load();
  const sortBy = h("select", { id: "sweep-sort", name: "sweep-sort" },
    Object.keys(help).map((k) => h("option", { value: k, selected: k === (opened?.sort ?? DEFAULT_SORT) }, fmt.label(k))));
  const topK = h("input", { id: "top-k", name: "top_k", type: "number", min: "1", step: "1", placeholder: "all",
    value: opened?.top_k ?? "" });
  const message = h("p", { id: "message", className: "message", role: "status" });

  const form = h("form", { id: "sweep-form", noValidate: true },
    h("section", { className: "card" }, h("h2", {}, "Strategy"), ...strat.parts,
      h("div", { className: "grid" }, field("Rank by", sortBy), field("Keep the best", topK, "Rows kept (empty: all)"))),
    market.el,
    h("div", { className: "buttons" }, h("button", { type: "submit", id: "start-sweep", className: "primary" }, "Start sweep")));
  const showError = (e) => showFormError(form, message, e, fieldsOfErrors(market, strategy), FIELD_ALIASES);

  // The sweep followed on this page: its progress, then its rows.
  let current = null;
  const latest = new Map(); // the last progress event of each sweep, also those seen before POST answered
  const progress = h("progress", { id: "sweep-progress", max: 1, value: 0 });
  const statusLine = h("p", { id: "sweep-status-line", className: "status-line" });
  const cancel = h("button", { type: "button", id: "cancel-sweep", className: "danger", disabled: true, onclick: async () => {
    // Its answer may be older than the stream's last event: follow() keeps the newer.
    try { await follow(await api.cancelSweep(current)); } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
  } }, "Cancel");
  const conn = h("span", { className: "pill", id: "stream-state" }, "connecting");
  const progressCard = h("section", { className: "card", id: "sweep-progress-card", hidden: true },
    h("h2", {}, "Progress ", conn, " ", h("code", { id: "sweep-id" })), progress, statusLine, h("div", { className: "buttons" }, cancel));
  const results = h("div", { id: "sweep-results" });
  const past = serverTable(SWEEP_COLUMNS, (p) => api.listSweeps({ limit: p.limit, offset: p.offset }),
    { id: "sweeps", empty: "No sweeps yet", pageSize: 10 });

  const progressOf = (doc) => ({ sweep_id: doc.sweep_id, status: doc.status, ...doc.progress, rows: doc.rows });
  function showProgress(p) {
    progressCard.hidden = false;
    progressCard.querySelector("#sweep-id").textContent = p.sweep_id;
    progress.value = p.fraction || 0;
    statusLine.replaceChildren(
      h("span", { className: `pill ${p.status}`, id: "sweep-status" }, p.status),
      h("span", { id: "sweep-done" }, ` ${p.done.toLocaleString("en-US")} / ${p.total.toLocaleString("en-US")} combinations`),
      ` · ${fmt.percent(p.fraction || 0)}`,
      p.eta_seconds !== null && p.eta_seconds !== undefined ? h("span", { id: "sweep-eta" }, ` · ETA ${fmt.seconds(p.eta_seconds)}`) : "");
    cancel.disabled = !ACTIVE.includes(p.status);
  }

  let shownEnded = null;
  /** Follow sweep `id` from its document: progress now, its rows once it ended. */
  async function follow(doc) {
    current = doc.sweep_id;
    const seen = latest.get(doc.sweep_id);
    // An event newer than the document (it ended meanwhile) wins: done never goes back.
    const p = seen && (seen.done > doc.progress.done || !ACTIVE.includes(seen.status)) ? seen : progressOf(doc);
    showProgress(p);
    if (!ACTIVE.includes(p.status)) { await showResults(); }
  }
  async function showResults() {
    if (shownEnded === current) { return; }
    shownEnded = current;
    const id = current;
    let doc;
    const rows = [];
    try {
      doc = await api.getSweep(id);
      if (id !== current) { return; }
      showProgress(progressOf(doc));
      while (rows.length < Math.min(doc.rows, MAX_ROWS)) {
        const page = await api.sweepResults(id, { limit: ROWS_PAGE, offset: rows.length });
        if (!page.items.length) { break; }
        rows.push(...page.items);
      }
    } catch (e) {
      if (shownEnded === id) { shownEnded = null; } // the next event or reconnect tries again
      throw e;
    }
    if (id !== current) { return; }
    results.replaceChildren(...sweepResults(doc, rows, help, { onBacktest: backtestRow }));
    // After the heatmap's first frame (it draws once in the page, at the card's width).
    requestAnimationFrame(() => { if (id === current) { view.dataset.dataReady = id; } });
  }

  // A row's backtest runs in the runner slot; its results open once the slot's stream says it ended.
  let pendingRun = null;
  let slot = null; // the runner slot's status, from the stream
  const endedRuns = new Set();
  async function backtestRow(rank, button) {
    button.disabled = true;
    say(message, `Starting rank ${rank} as a backtest…`);
    let r;
    try {
      // A finished run still holding the slot (the stream says so) is kept in the history: the slot is reset.
      if (slot?.run_id && RUN_ENDED.includes(slot.status)) { await api.resetSlot(); }
      try { r = await api.backtestSweepRow(current, rank); }
      catch (e) {
        // The same when the stream had not said it yet.
        if (e.code !== "RUN_ALREADY_ACTIVE" || !RUN_ENDED.includes(e.details?.status)) { throw e; }
        await api.resetSlot();
        r = await api.backtestSweepRow(current, rank);
      }
    } catch (e) { button.disabled = false; say(message, `${e.code}: ${e.message}`, "error"); return; }
    pendingRun = r.run_id;
    say(message, `Backtest of rank ${rank} running (run ${r.run_id}); its results open when it ends`, "ok");
    if (endedRuns.has(r.run_id)) { location.hash = `#/runs/${r.run_id}`; }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const list = market.check();
    const values = strat.values();
    if (list === null || values === null) { say(message, "Fix the fields marked in red", "error"); return; }
    if (values.error) { say(message, values.error, "error"); return; }
    const body = { ...values, sort: sortBy.value, ...market.body() };
    if (topK.value !== "") { body.top_k = Number(topK.value); }
    try {
      const doc = await api.startSweep(body);
      clearErrors(form);
      say(message, `Sweep ${doc.sweep_id} accepted: ${doc.combinations.toLocaleString("en-US")} combinations`, "ok");
      results.replaceChildren();
      delete view.dataset.dataReady;
      history.replaceState(null, "", `#/sweeps/${encodeURIComponent(doc.sweep_id)}`);
      await follow(doc);
      progressCard.scrollIntoView({ block: "nearest" });
      past.load();
    } catch (e) { showError(e); }
  });

  const stop = api.streamStatus(null, (e) => {
    const p = e.payload;
    if (e.type === "sweep_progress") {
      latest.set(p.sweep_id, p);
      if (p.sweep_id === current) {
        showProgress(p);
        if (!ACTIVE.includes(p.status)) { showResults().catch((x) => say(message, `${x.code}: ${x.message}`, "error")); }
      }
      if (!ACTIVE.includes(p.status)) { past.load(); }
    } else if (e.type === "snapshot" || e.type === "status_update") {
      slot = p;
      if (p?.run_id && RUN_ENDED.includes(p.status)) {
        endedRuns.add(p.run_id);
        if (p.run_id === pendingRun) { location.hash = `#/runs/${p.run_id}`; }
      }
    }
  }, (state) => {
    conn.textContent = state;
    // After a (re)connect, one read catches up on what the stream could not say while it was down.
    if (state === "live" && current && shownEnded !== current) {
      api.getSweep(current).then(follow).catch(() => {});
    }
  });

  view.append(h("h1", {}, "Sweeps"), form, message, progressCard, results,
    h("section", { className: "card" }, h("h2", {}, "Past sweeps"), past.el));
  past.load();
  if (opened instanceof Error) { say(message, `${opened.code}: ${opened.message}`, "error"); }
  else if (opened) {
    try { await follow(opened); } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
    progressCard.scrollIntoView({ block: "start" });
  }
  return stop;
}

/** A sweep's summary, its rows as a sortable, paged table, and the heatmap over two of its swept parameters. */
function sweepResults(doc, rows, help, { onBacktest }) {
  const swept = Object.keys(doc.request.grid || {});
  const fixed = Object.entries(doc.request.strategy_params || {}).filter(([k]) => !swept.includes(k));
  const kindOf = (m) => help[m]?.kind;
  const flat = rows.map((r) => ({ rank: r.rank, index: r.index,
    ...Object.fromEntries(swept.map((k) => [`p.${k}`, r.params[k]])),
    ...Object.fromEntries(doc.metrics.map((m) => [`m.${m}`, r.metrics[m]])) }));
  const columns = [
    { key: "rank", label: "Rank", num: true },
    ...swept.map((k) => ({ key: `p.${k}`, label: k, num: true, format: paramText })),
    ...doc.metrics.map((m) => ({ key: `m.${m}`, label: fmt.label(m), num: true, format: (v) => fmt.metric(kindOf(m), v) })),
    { key: "backtest", label: "", format: (_, r) => h("button", { type: "button", className: "small",
      dataset: { rank: r.rank }, onclick: (ev) => onBacktest(r.rank, ev.currentTarget) }, "Backtest") },
  ];
  const table = sortableTable(columns, { id: "sweep-rows", empty: "No rows", pageSize: 25 });
  table.setRows(flat);
  const summary = h("p", { className: "help", id: "sweep-summary" },
    `${doc.strategy_name} · ${doc.evaluated.toLocaleString("en-US")} evaluated of ${doc.combinations.toLocaleString("en-US")}`,
    doc.skipped_count ? ` · ${doc.skipped_count.toLocaleString("en-US")} skipped by the parameter schema` : "",
    ` · ranked by ${fmt.label(doc.sort)}`, fixed.length ? ` · fixed: ${fixed.map(([k, v]) => `${k} ${paramText(v)}`).join(", ")}` : "",
    rows.length < doc.rows ? ` · the best ${rows.length.toLocaleString("en-US")} of ${doc.rows.toLocaleString("en-US")} rows shown` : "");
  const skipped = doc.skipped.length ? h("details", { className: "help" }, h("summary", {}, "Skipped combinations"),
    h("ul", {}, doc.skipped.map((s) => h("li", {}, `${JSON.stringify(s.params)}: ${s.reason}`)))) : "";
  const failed = doc.error ? h("p", { className: "message error", id: "sweep-error" }, `${doc.error_code}: ${doc.error}`) : "";
  const out = [h("section", { className: "card", id: "sweep-table-card" }, h("h2", {}, "Rows"), failed, summary, skipped,
    table.el)];
  if (swept.length && rows.length) { out.push(heatmapCard(doc, flat, swept, kindOf)); }
  return out;
}

/** The heatmap of a metric over two swept parameters; a cell with several rows (other swept parameters) shows the best-ranked. */
function heatmapCard(doc, flat, swept, kindOf) {
  const pick = (id, label, options, selected) => {
    const s = h("select", { id, name: id }, options.map(([v, t]) => h("option", { value: v, selected: v === selected }, t)));
    return [s, field(label, s)];
  };
  const NONE = "";
  const [xSel, xField] = pick("hm-x", "Columns", swept.map((k) => [k, k]), swept[0]);
  const [ySel, yField] = pick("hm-y", "Rows", [...swept.map((k) => [k, k]), [NONE, "(none)"]], swept[1] ?? NONE);
  const [mSel, mField] = pick("hm-metric", "Colour", doc.metrics.map((m) => [m, fmt.label(m)]), doc.sort);
  const box = h("div", { id: "heatmap", className: "heatmap" });
  let drawn = null;
  const draw = () => {
    if (drawn) { drawn.destroy(); }
    const x = xSel.value;
    const y = ySel.value === x ? NONE : ySel.value;
    const metric = mSel.value;
    const best = new Map();
    for (const r of [...flat].sort((a, b) => a.rank - b.rank)) {
      const key = `${paramText(r[`p.${x}`])}\u0000${y ? paramText(r[`p.${y}`]) : ""}`;
      if (!best.has(key)) { best.set(key, r); }
    }
    const ys = y ? valuesOf(flat, `p.${y}`) : [NONE];
    drawn = heatmap(box, { xs: valuesOf(flat, `p.${x}`), ys, xLabel: x, yLabel: y || metric,
      cell: (xv, yv) => best.get(`${paramText(xv)}\u0000${y ? paramText(yv) : ""}`)?.[`m.${metric}`] ?? null,
      format: (v) => fmt.metric(kindOf(metric), v), tick: paramText });
    box.dataset.metric = metric;
  };
  for (const s of [xSel, ySel, mSel]) { s.addEventListener("change", draw); }
  const card = h("section", { className: "card", id: "heatmap-card" }, h("h2", {}, "Heatmap"),
    h("div", { className: "grid" }, xField, yField, mField),
    swept.length > 2 ? h("p", { className: "help" }, "Each cell shows the best-ranked row among the other swept parameters' values.") : "",
    box);
  // Drawn once the card is in the page (the canvas takes the card's width).
  requestAnimationFrame(draw);
  return card;
}
