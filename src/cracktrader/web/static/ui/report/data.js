// The report file's data source: the functions of ../api.js that pages/results.js calls, answered from the JSON
// embedded in the file (`<script type="application/json" id="report-data">`), so the page needs no server.
// `cracktrader report` puts this module in place of api.js; nothing here fetches anything.

const data = JSON.parse(document.getElementById("report-data").textContent);
// Lists come as named columns and rows of values (report.py `_pack`): back to the API's objects.
const unpack = (v) => v.$rows.map((r) => Object.fromEntries(v.$columns.map((k, i) => [k, r[i]])));
data.round_trips = unpack(data.round_trips);
data.results.trades = unpack(data.results.trades);
data.results.orders = unpack(data.results.orders);
// The CLI stores a marker that is also a round trip once, as its index in `round_trips` (see report.py).
for (const doc of Object.values(data.candles || {})) {
  if (doc.marker_rows) { doc.markers = doc.marker_rows.map((i) => data.round_trips[i]); delete doc.marker_rows; }
}

/** The embedded document: run, results, help, candles by symbol, round trips, breakdowns, errors. */
export const report = data;

/** An error like the SDK's (code and message), for a part the CLI could not fetch. */
class ReportError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

const unavailable = (what) => Promise.reject(new ReportError("report_file", `${what} needs the server: this is a report file`));
const failed = (part) => data.errors?.[part];

export const getRun = async () => data.run;
export const metricsHelp = async () => data.help;

/** The results document, its fills and orders sliced like `GET /runs/{id}/results` (`limit`, `offset`). */
export async function runResults(_id, { limit, offset = 0 } = {}) {
  const r = data.results;
  const end = limit === undefined ? undefined : offset + limit;
  const trades = r.trades.slice(offset, end);
  const orders = r.orders.slice(offset, end);
  // The totals are what the file holds: "Load more" pages through them without a server.
  const page = { ...(r.page || {}), trades: { total: r.trades.length }, orders: { total: r.orders.length } };
  return { ...r, trades, orders, page };
}

/**
 * The embedded candles of `[start, end)` (ms): the buckets that overlap it and the round trips that overlap it,
 * as `GET /runs/{id}/candles` answers a range, but at the file's bucket size (full detail needs the server).
 */
export function sliceCandles(doc, start, end) {
  const c = doc.candles;
  const ts = c.timestamp;
  const last = Date.parse(doc.run_range.end);
  const keep = ts.map((t, i) => (ts[i + 1] ?? last) > start && t < end);
  const pick = (values) => values.filter((_, i) => keep[i]);
  const candles = Object.fromEntries(Object.entries(c).map(([k, v]) => [k, pick(v)]));
  const markers = doc.markers.filter((m) => Date.parse(m.exit_time) >= start && Date.parse(m.entry_time) < end);
  const iso = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");
  return { ...doc, candles, markers, markers_total: markers.length, markers_truncated: false,
    indicators: doc.indicators.map((s) => ({ ...s, values: pick(s.values) })),
    start: iso(Math.max(start, Date.parse(doc.run_range.start))), end: iso(Math.min(end, last)),
    bars: Math.min(doc.bars, candles.timestamp.length * doc.bucket_bars) };
}

/** The candles of one symbol (the first by default) as the CLI fetched them, or the part of `start`-`end`. */
export async function runCandles(_id, { symbol, start, end } = {}) {
  if (failed("candles")) { throw new ReportError(failed("candles").code, failed("candles").message); }
  const doc = data.candles[symbol ?? data.run.symbols[0]];
  if (!doc) { throw new ReportError("not_in_report", `no candles of ${symbol} in this report`); }
  return start === undefined && end === undefined ? doc
    : sliceCandles(doc, start ?? Date.parse(doc.run_range.start), end ?? Date.parse(doc.run_range.end));
}

export async function breakdowns() {
  if (failed("breakdowns")) { throw new ReportError(failed("breakdowns").code, failed("breakdowns").message); }
  return data.breakdowns;
}

// The sort columns of `GET /runs/{id}/roundtrips`: the row's value to compare (duration: seconds).
const SORT_VALUE = { duration: (r) => r.duration_s };

/** A sorted page of the round trips, as the server sorts them: stable, missing values last either way. */
export async function roundTrips(_id, { sort = "exit_time", order = "asc", limit = 100, offset = 0 } = {}) {
  const value = SORT_VALUE[sort] || ((r) => r[sort]);
  const sign = order === "desc" ? -1 : 1;
  const items = [...data.round_trips].sort((a, b) => {
    const x = value(a);
    const y = value(b);
    if (x === y) { return 0; }
    if (x === null || x === undefined) { return 1; }
    if (y === null || y === undefined) { return -1; }
    return (x < y ? -1 : 1) * sign;
  });
  return { items: items.slice(offset, offset + limit), total: items.length, limit, offset, sort, order };
}

export const rerun = () => unavailable("Rerun");
export const deleteRun = () => unavailable("Delete");
