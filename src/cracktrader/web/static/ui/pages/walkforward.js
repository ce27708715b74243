// Walk-forward: the sweep's strategy form (values or ranges) with train/test windows or CPCV folds; the
// progress from the stream; past walk-forwards; a report's windows (their ranges, chosen parameters, in- and
// out-of-sample metrics) with the stitched out-of-sample equity, or a CPCV's folds, splits and paths.
import * as api from "../api.js";
import { h, say } from "../dom.js";
import { field, clearErrors, showError as showFormError } from "../forms.js";
import { gridStrategy, marketFields, fieldsOfErrors, FIELD_ALIASES } from "../runform.js";
import { sortableTable, serverTable } from "../table.js";
import { equityChart } from "../charts.js";
import { metricsGrid } from "./results.js";
import * as fmt from "../format.js";

const ACTIVE = ["queued", "running"];
const DEFAULT_METRIC = "sharpe_ratio";
// The out-of-sample metrics shown per window (or path), after the one the windows are chosen by.
const OOS_METRICS = ["total_return", "sharpe_ratio", "max_drawdown", "total_trades"];
const DEFAULTS = { train: "60d", test: "30d", n_folds: 5, n_test_folds: 2 };

const unitOf = (kind) => (kind === "cpcv" ? "splits" : "windows");
/** A span of the report as its times to the minute, from its first bar to its end (exclusive). */
const spanText = (s) => `${fmt.time(s.start_date).slice(0, 16)} → ${fmt.time(s.end_date).slice(0, 16)}`;
/** The same on two lines (start, then end), to keep the windows table narrow. */
const spanCell = (text) => { const [a, b] = text.split(" → "); return h("span", {}, `${a} → `, h("br"), b); };
/** A window length as the API takes it: whole bars as a number, anything else (a duration such as 90d) as text. */
const lengthOf = (text) => (/^\d+$/.test(text.trim()) ? Number(text.trim()) : text.trim());

const WF_COLUMNS = [
  { key: "created_at", label: "Created (UTC)", format: fmt.time },
  { key: "kind", label: "Kind", format: (v) => (v === "cpcv" ? "CPCV" : "Walk-forward") },
  { key: "strategy_name", label: "Strategy" },
  { key: "status", label: "Status", format: (v) => h("span", { className: `pill ${v}` }, v) },
  { key: "total", label: "Windows / splits", num: true },
  { key: "combinations", label: "Combinations", num: true },
  { key: "metric", label: "Chosen by", format: fmt.label },
  { key: "walkforward_id", label: "", format: (v) => h("a", { href: `#/walkforward/${encodeURIComponent(v)}`, className: "button small" }, "Open") },
];

/** The scheme's fields: walk-forward windows or CPCV folds, filled in from `from` (a past request). */
function schemeFields(from) {
  const r = from || {};
  const input = (id, name, value, extra = {}) => h("input", { id, name, value: value ?? "", ...extra });
  const count = { type: "number", min: "0", step: "1" };
  const scheme = h("select", { id: "wf-scheme", name: "scheme" },
    h("option", { value: "walk_forward", selected: !r.cpcv }, "Walk-forward"),
    h("option", { value: "cpcv", selected: Boolean(r.cpcv) }, "CPCV"));
  const f = {
    train: input("wf-train", "train", r.train ?? DEFAULTS.train, { placeholder: "bars, or 90d" }),
    test: input("wf-test", "test", r.test ?? DEFAULTS.test, { placeholder: "bars, or 30d" }),
    step: input("wf-step", "step", r.step, { placeholder: "the test's" }),
    anchored: h("input", { type: "checkbox", id: "wf-anchored", name: "anchored", checked: Boolean(r.anchored) }),
    partial: h("input", { type: "checkbox", id: "wf-partial", name: "partial_last", checked: Boolean(r.partial_last) }),
    folds: input("wf-folds", "n_folds", r.cpcv?.n_folds ?? DEFAULTS.n_folds, { ...count, min: "2" }),
    testFolds: input("wf-test-folds", "n_test_folds", r.cpcv?.n_test_folds ?? DEFAULTS.n_test_folds, { ...count, min: "1" }),
    purge: input("wf-purge", "purge", r.purge ?? 0, count),
    embargo: input("wf-embargo", "embargo", r.embargo ?? 0, count),
  };
  const windows = h("div", { className: "grid", id: "wf-windows" },
    field("Train", f.train, "Bars, or a duration: 90d, 12h, 2w"), field("Test", f.test, "Bars, or a duration"),
    field("Step", f.step, "Between test starts; empty: the test's length"),
    field("Anchored", f.anchored, "Every train window starts at the first bar"),
    field("Keep a short last test", f.partial, "A last test window cut by the end of the data"));
  const folds = h("div", { className: "grid", id: "wf-cpcv" },
    field("Folds", f.folds), field("Test folds", f.testFolds, "Folds tested in each split"),
    field("Embargo (bars)", f.embargo, "Further bars dropped after each test"));
  const shared = h("div", { className: "grid" }, field("Scheme", scheme, "CPCV: combinatorial purged cross-validation"), field("Purge (bars)", f.purge, "Bars dropped from training next to tests"));
  const show = () => { windows.hidden = scheme.value === "cpcv"; folds.hidden = scheme.value !== "cpcv"; };
  scheme.addEventListener("change", show);
  show();
  return {
    scheme, fields: f, parts: [shared, windows, folds],
    /** The request's scheme part. */
    body() {
      const out = { purge: Number(f.purge.value || 0) };
      if (scheme.value === "cpcv") {
        out.cpcv = { n_folds: Number(f.folds.value), n_test_folds: Number(f.testFolds.value) };
        out.embargo = Number(f.embargo.value || 0);
      } else {
        out.train = lengthOf(f.train.value);
        out.test = lengthOf(f.test.value);
        if (f.step.value.trim()) { out.step = lengthOf(f.step.value); }
        out.anchored = f.anchored.checked;
        out.partial_last = f.partial.checked;
      }
      return out;
    },
  };
}

export async function renderWalkforward(view, openId = null) {
  const [strategies, exchanges, help, opened] = await Promise.all([api.listStrategies(), api.listExchanges(),
    api.metricsHelp(), openId ? api.getWalkforward(openId).catch((e) => e) : null]);
  // An opened walk-forward fills the form in with its request: a start for the next one.
  const from = opened && !(opened instanceof Error) ? opened.request : null;
  const strat = gridStrategy(strategies, from);
  const market = marketFields(exchanges, from || {});
  const scheme = schemeFields(from);
  await strat.load();
  const metric = h("select", { id: "wf-metric", name: "metric" },
    Object.keys(help).map((k) => h("option", { value: k, selected: k === (from?.metric ?? DEFAULT_METRIC) }, fmt.label(k))));
  const message = h("p", { id: "message", className: "message", role: "status" });
  const form = h("form", { id: "wf-form", noValidate: true },
    h("section", { className: "card" }, h("h2", {}, "Strategy"), ...strat.parts,
      h("div", { className: "grid" }, field("Choose by", metric, "Each train window's best combination by this"))),
    h("section", { className: "card" }, h("h2", {}, "Windows"), ...scheme.parts),
    market.el,
    h("div", { className: "buttons" }, h("button", { type: "submit", id: "start-walkforward", className: "primary" }, "Start walk-forward")));
  const showError = (e) => showFormError(form, message, e, [...fieldsOfErrors(market, strat.select),
    ["INVALID_WINDOWS", scheme.scheme.value === "cpcv" ? scheme.fields.folds : scheme.fields.train]], FIELD_ALIASES);

  // The walk-forward followed on this page: its progress, then its report.
  let current = null;
  let charts = [];
  const latest = new Map(); // the last progress event of each, also those seen before POST answered
  const progress = h("progress", { id: "wf-progress", max: 1, value: 0 });
  const statusLine = h("p", { id: "wf-status-line", className: "status-line" });
  const cancel = h("button", { type: "button", id: "cancel-walkforward", className: "danger", disabled: true, onclick: async () => {
    try { await follow(await api.cancelWalkforward(current)); } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
  } }, "Cancel");
  const conn = h("span", { className: "pill", id: "stream-state" }, "connecting");
  const progressCard = h("section", { className: "card", id: "wf-progress-card", hidden: true },
    h("h2", {}, "Progress ", conn, " ", h("code", { id: "wf-id" })), progress, statusLine, h("div", { className: "buttons" }, cancel));
  const results = h("div", { id: "wf-results" });
  const past = serverTable(WF_COLUMNS, async (p) => {
    const page = await api.listWalkforwards({ limit: p.limit, offset: p.offset });
    return { ...page, items: page.items.map((d) => ({ ...d, total: d.progress.total, metric: d.request.metric })) };
  }, { id: "walkforwards", empty: "No walk-forwards yet", pageSize: 10 });

  const progressOf = (doc) => ({ walkforward_id: doc.walkforward_id, kind: doc.kind, status: doc.status, ...doc.progress });
  function showProgress(p) {
    progressCard.hidden = false;
    progressCard.querySelector("#wf-id").textContent = p.walkforward_id;
    progress.value = p.fraction || 0;
    statusLine.replaceChildren(
      h("span", { className: `pill ${p.status}`, id: "wf-status" }, p.status),
      h("span", { id: "wf-done" }, ` ${p.done.toLocaleString("en-US")} / ${p.total.toLocaleString("en-US")} ${unitOf(p.kind)}`),
      ` · ${fmt.percent(p.fraction || 0)}`,
      p.eta_seconds !== null && p.eta_seconds !== undefined ? h("span", { id: "wf-eta" }, ` · ETA ${fmt.seconds(p.eta_seconds)}`) : "");
    cancel.disabled = !ACTIVE.includes(p.status);
  }

  let shownEnded = null;
  /** Follow walk-forward `doc`: progress now, its report once it ended. */
  async function follow(doc) {
    current = doc.walkforward_id;
    const seen = latest.get(current);
    // An event newer than the document (it ended meanwhile) wins: done never goes back.
    const p = seen && (seen.done > doc.progress.done || !ACTIVE.includes(seen.status)) ? seen : progressOf(doc);
    showProgress(p);
    if (!ACTIVE.includes(p.status)) { await showReport(ACTIVE.includes(doc.status) ? null : doc); }
  }
  async function showReport(ended) {
    if (shownEnded === current) { return; }
    shownEnded = current;
    const id = current;
    let doc = ended;
    try {
      // A list item or a progress event carries no report: the document is read once, when it ended.
      if (!doc || (doc.status === "completed" && !doc.report)) { doc = await api.getWalkforward(id); }
    } catch (e) {
      if (shownEnded === id) { shownEnded = null; } // the next event or reconnect tries again
      throw e;
    }
    if (id !== current) { return; }
    showProgress(progressOf(doc));
    for (const c of charts) { c.destroy(); }
    charts = [];
    results.replaceChildren(...reportCards(doc, help));
    const box = results.querySelector("#wf-equity");
    if (box) { charts = equityChart(box, stitchedPoints(doc.report.stitched)); }
    requestAnimationFrame(() => { if (id === current) { view.dataset.dataReady = id; } });
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const list = market.check();
    const values = strat.values();
    if (list === null || values === null) { say(message, "Fix the fields marked in red", "error"); return; }
    if (values.error) { say(message, values.error, "error"); return; }
    const body = { ...values, metric: metric.value, ...scheme.body(), ...market.body() };
    try {
      const doc = await api.startWalkforward(body);
      clearErrors(form);
      say(message, `Walk-forward ${doc.walkforward_id} accepted: ${doc.progress.total} ${unitOf(doc.kind)} of `
        + `${doc.combinations.toLocaleString("en-US")} combinations`, "ok");
      results.replaceChildren();
      delete view.dataset.dataReady;
      history.replaceState(null, "", `#/walkforward/${encodeURIComponent(doc.walkforward_id)}`);
      await follow(doc);
      progressCard.scrollIntoView({ block: "nearest" });
      past.load();
    } catch (e) { showError(e); }
  });

  const stop = api.streamStatus(null, (e) => {
    if (e.type !== "walkforward_progress") { return; }
    const p = e.payload;
    latest.set(p.walkforward_id, p);
    if (p.walkforward_id === current) {
      showProgress(p);
      if (!ACTIVE.includes(p.status)) { showReport(null).catch((x) => say(message, `${x.code}: ${x.message}`, "error")); }
    }
    if (!ACTIVE.includes(p.status)) { past.load(); }
  }, (state) => {
    conn.textContent = state;
    // After a (re)connect, one read catches up on what the stream could not say while it was down.
    if (state === "live" && current && shownEnded !== current) {
      api.getWalkforward(current).then(follow).catch(() => {});
    }
  });

  view.append(h("h1", {}, "Walk-forward"), form, message, progressCard, results,
    h("section", { className: "card" }, h("h2", {}, "Past walk-forwards"), past.el));
  past.load();
  if (opened instanceof Error) { say(message, `${opened.code}: ${opened.message}`, "error"); }
  else if (opened) {
    try { await follow(opened); } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
    progressCard.scrollIntoView({ block: "start" });
  }
  return () => { stop(); for (const c of charts) { c.destroy(); } };
}

/** The stitched curve (epoch milliseconds and values) as the equity chart's points. */
function stitchedPoints(stitched) {
  return stitched.timestamp.map((t, i) => ({ timestamp: new Date(t).toISOString(), value: stitched.equity[i] }));
}

/** The metric columns of a report's tables: the one it chose by, then the usual out-of-sample ones it has. */
function metricColumns(chosenBy, sample, help, prefix) {
  const keys = [...new Set([chosenBy, ...OOS_METRICS])].filter((k) => k in sample);
  return keys.map((k) => ({ key: `${prefix}${k}`, label: fmt.label(k), num: true,
    format: (v) => fmt.metric(help[k]?.kind, v) }));
}

/** The report's cards: its summary and windows (or CPCV's folds, splits and paths), or why there is none. */
function reportCards(doc, help) {
  if (doc.status !== "completed" || !doc.report) {
    const why = doc.error ? `${doc.error_code}: ${doc.error}` : `${fmt.label(doc.status)}: no report`;
    return [h("section", { className: "card" }, h("h2", {}, "Report"),
      h("p", { className: `message${doc.error ? " error" : ""}`, id: "wf-error" }, why))];
  }
  const swept = Object.keys(doc.request.grid || {});
  const paramColumns = swept.map((k) => ({ key: `p.${k}`, label: k, num: true, format: fmt.param }));
  const kindOf = (m) => help[m]?.kind;
  const r = doc.report;
  const inSample = { key: "in_sample", label: "In sample", num: true, format: (v) => fmt.metric(kindOf(r.metric), v) };
  const flat = (x) => ({ ...Object.fromEntries(swept.map((k) => [`p.${k}`, x.params[k]])) });
  const oos = (m) => Object.fromEntries(Object.entries(m).map(([k, v]) => [`m.${k}`, v]));
  const table = (columns, rows, id, empty) => {
    const t = sortableTable(columns, { id, empty, pageSize: 25 });
    t.setRows(rows);
    return t.el;
  };
  const base = `${r.strategy} · ${r.symbols.join(", ")} ${r.timeframe} on ${r.exchange} · ${r.bars.toLocaleString("en-US")} bars`
    + ` · ${doc.combinations.toLocaleString("en-US")} combinations · chosen by ${fmt.label(r.metric)}`;
  if (doc.kind === "cpcv") {
    const sample = r.paths[0]?.metrics || {};
    const folds = r.folds.map((s, i) => ({ fold: i, span: spanText(s), bars: s.stop - s.start }));
    const splits = r.splits.map((s) => ({ index: s.index, train: s.train.map(spanText).join("; "), ...flat(s),
      in_sample: s.in_sample, tests: s.tests.map((t) => `fold ${t.fold}: ${fmt.metric(kindOf(r.metric), t.metrics[r.metric])}`).join("; ") }));
    const paths = r.paths.map((p) => ({ index: p.index, splits: p.splits.join(", "), ...oos(p.metrics) }));
    return [h("section", { className: "card", id: "wf-report" }, h("h2", {}, "CPCV report"),
      h("p", { className: "help", id: "wf-summary" }, `${base} · ${r.n_folds} folds, ${r.n_test_folds} tested per split`
        + ` · purge ${r.purge}, embargo ${r.embargo} bars`),
      h("p", { className: "help" }, "A path joins one tested split per fold into a full out-of-sample run; its metrics "
        + `are out of sample. In sample: a split's chosen parameters' ${fmt.label(r.metric).toLowerCase()} on its training folds.`),
      h("h3", {}, "Paths"), table([{ key: "index", label: "Path", num: true }, { key: "splits", label: "Split of each fold" },
        ...metricColumns(r.metric, sample, help, "m.")], paths, "wf-paths", "No paths"),
      h("h3", {}, "Splits"), table([{ key: "index", label: "Split", num: true }, { key: "train", label: "Train" },
        ...paramColumns, inSample, { key: "tests", label: `Tested folds: ${fmt.label(r.metric)}` }], splits, "wf-splits", "No splits"),
      h("h3", {}, "Folds"), table([{ key: "fold", label: "Fold", num: true }, { key: "span", label: "Range (UTC)" },
        { key: "bars", label: "Bars", num: true }], folds, "wf-folds-table", "No folds"))];
  }
  const sample = r.windows[0]?.out_of_sample || {};
  const windows = r.windows.map((w) => ({ index: w.index, train: spanText(w.train), test: spanText(w.test), ...flat(w),
    in_sample: w.in_sample, ...oos(w.out_of_sample) }));
  const columns = [{ key: "index", label: "Window", num: true }, { key: "train", label: "Train (UTC)", format: spanCell },
    { key: "test", label: "Test (UTC)", format: spanCell }, ...paramColumns, inSample, ...metricColumns(r.metric, sample, help, "m.")];
  const scheme = `train ${r.train}, test ${r.test}, step ${r.step} bars${r.anchored ? ", anchored" : ""}`
    + `${r.purge ? `, purge ${r.purge}` : ""}`;
  return [
    h("section", { className: "card", id: "wf-report" }, h("h2", {}, "Windows"),
      h("p", { className: "help", id: "wf-summary" }, `${base} · ${scheme}`),
      h("p", { className: "help" }, `In sample: the chosen parameters' ${fmt.label(r.metric).toLowerCase()} on the train `
        + "window; the metrics after it are out of sample, on the test window."),
      table(columns, windows, "wf-windows-table", "No windows")),
    h("section", { className: "card" }, h("h2", {}, "Stitched out-of-sample equity"),
      h("p", { className: "help" }, "The test windows one after another, each starting with the previous one's final equity"),
      h("div", { id: "wf-equity", className: "chart" }),
      metricsGrid(r.stitched.metrics, help)),
  ];
}
