// Data: the stored candle sets with their ranges and gaps, and a download form with progress and cancel.
import * as api from "../api.js";
import { h, say } from "../dom.js";
import { serverTable } from "../table.js";
import { field, showError } from "../forms.js";
import * as fmt from "../format.js";

const bytes = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : `${Math.ceil(n / 1024)} kB`);
const gapsText = (_, r) => (r.largest_gaps?.length
  ? r.largest_gaps.map((g) => `${fmt.time(g.start)} → ${fmt.time(g.end)} (${g.missing_bars})`).join("; ") : "–");
const SET_COLUMNS = [
  { key: "exchange", label: "Exchange" },
  { key: "symbol", label: "Symbol" },
  { key: "timeframe", label: "TF" },
  { key: "first", label: "First (UTC)", format: fmt.time },
  { key: "last", label: "Last (UTC)", format: fmt.time },
  { key: "count", label: "Bars", num: true, format: (v) => v.toLocaleString() },
  { key: "size_bytes", label: "Size", num: true, format: bytes },
  { key: "gaps", label: "Gaps", num: true },
  { key: "missing_bars", label: "Missing", num: true, format: (v) => v.toLocaleString() },
  { key: "largest_gaps", label: "Largest gaps", format: gapsText },
];
// A download's progress comes from the stream (`download_progress` events), never by polling its job.
const STREAM_WAIT_MS = 5000;
const KEEP_EVENTS = 20;
const FINISHED = ["completed", "failed", "canceled"];

export async function renderData(view) {
  const exchanges = await api.listExchanges();
  const sets = serverTable(SET_COLUMNS, (p) => api.listCandleSets({ limit: p.limit, offset: p.offset }),
    { id: "candle-sets", empty: "No stored candles yet", pageSize: 20 });
  const exchange = h("select", { id: "dl-exchange" },
    exchanges.items.map((x) => h("option", { value: x.id, selected: x.id === "synthetic" }, x.name)));
  const timeframe = h("select", { id: "dl-timeframe" });
  const fillTimeframes = () => {
    const x = exchanges.items.find((e) => e.id === exchange.value) || exchanges.items[0];
    const keep = timeframe.value || "1h";
    timeframe.replaceChildren(...x.timeframes.map((tf) => h("option", { value: tf, selected: tf === keep }, tf)));
  };
  fillTimeframes();
  exchange.addEventListener("change", fillTimeframes);
  const symbol = h("input", { id: "dl-symbol", name: "symbol", value: "BTC/USDT", required: true });
  const start = h("input", { id: "dl-start", name: "start", type: "date", value: "2024-01-01", required: true });
  const end = h("input", { id: "dl-end", name: "end", type: "date", value: "" });
  const message = h("p", { className: "message", role: "status", id: "dl-message" });
  const bar = h("progress", { id: "dl-progress", max: 1, value: 0 });
  const jobLine = h("p", { id: "dl-status", className: "status-line" });
  const cancel = h("button", { type: "button", id: "dl-cancel", className: "danger", disabled: true }, "Cancel");
  let job = null;
  let gone = false;
  // The latest event of each recent job: one may arrive before the POST that started it has answered.
  const latest = new Map();
  const show = (j) => {
    job = j;
    bar.value = j.progress?.fraction ?? 0;
    jobLine.replaceChildren(h("span", { className: `pill ${j.status}`, id: "dl-job-status" }, j.status),
      ` ${j.symbol} ${j.timeframe} on ${j.exchange} · ${(j.progress?.done ?? 0).toLocaleString()} / `,
      `${(j.progress?.total ?? 0).toLocaleString()} bars · ${fmt.percent(j.progress?.fraction ?? 0)}`,
      j.progress?.eta_s ? ` · ETA ${fmt.seconds(j.progress.eta_s)}` : "",
      j.error ? h("span", { className: "error" }, ` · ${j.error.code}: ${j.error.message}`) : "");
    cancel.disabled = FINISHED.includes(j.status);
  };
  /** Show a newer state of the job followed; a job that ended stays as it ended. The set list reloads once. */
  const apply = (j) => {
    if (gone || (job && job.id === j.id && FINISHED.includes(job.status))) { return; }
    show(j);
    if (FINISHED.includes(j.status)) { sets.load().catch((e) => say(message, `${e.code}: ${e.message}`, "error")); }
  };
  let live = false;
  let markLive = () => {};
  let ready = new Promise((resolve) => { markLive = resolve; });
  const closeStream = api.streamStatus(null, (e) => {
    if (e.type !== "download_progress") { return; }
    latest.set(e.payload.id, e.payload);
    if (latest.size > KEEP_EVENTS) { latest.delete(latest.keys().next().value); }
    if (job && e.payload.id === job.id) { apply(e.payload); }
  }, async (state) => {
    live = state === "live";
    if (!live) { ready = new Promise((resolve) => { markLive = resolve; }); return; }
    markLive();
    // Back after a drop: what the stream missed of a running job is read once.
    if (job && !FINISHED.includes(job.status)) {
      try { apply(await api.getDownload(job.id)); } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
    }
  });
  cancel.addEventListener("click", async () => {
    if (!job) { return; }
    // The job ends at its next chunk; its last event says how.
    try { apply(await api.cancelDownload(job.id)); }
    catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
  });
  const form = h("form", { id: "dl-form", noValidate: true });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    // Listen before starting, so that the job's first events are not missed.
    if (!live) { await Promise.race([ready, new Promise((resolve) => { setTimeout(resolve, STREAM_WAIT_MS); })]); }
    try {
      const started = await api.startDownload({ exchange: exchange.value, symbol: symbol.value.trim(),
        timeframe: timeframe.value, start: start.value, end: end.value || undefined });
      apply(latest.get(started.id) ?? started);
      say(message, `Download ${started.id} started`, "ok");
    } catch (e) {
      showError(form, message, e, [[api.errors.InvalidSymbolError, symbol], [api.errors.InvalidTimeframeError, timeframe],
        [api.errors.UnknownExchangeError, exchange], [api.errors.InvalidDateRangeError, end], ["DOWNLOAD_TOO_LARGE", start]]);
    }
  });
  form.append(h("div", { className: "grid" }, field("Exchange", exchange), field("Symbol", symbol), field("Timeframe", timeframe),
    field("Start", start), field("End (empty: now)", end)),
  h("div", { className: "buttons" }, h("button", { type: "submit", className: "primary", id: "dl-start-button" }, "Download"), cancel));
  view.append(h("h1", {}, "Data"),
    h("section", { className: "card" }, h("h2", {}, "Stored candle sets"), sets.el),
    h("section", { className: "card", id: "download" }, h("h2", {}, "Download candles"),
      h("p", { className: "help" }, "Only what the store lacks is fetched, 100,000 bars at a time, each chunk stored as it arrives."),
      form, message, bar, jobLine));
  await sets.load();
  return () => { gone = true; closeStream(); };
}
