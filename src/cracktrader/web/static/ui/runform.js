// The parts of a run's form that the backtest, sweep and walk-forward pages share: the strategy picker with its
// parameter schema (as values, or as values and ranges for a grid), and the market and costs (exchange, symbols,
// timeframe, dates, cash, fee, slippage).
import * as api from "./api.js";
import { h } from "./dom.js";
import { symbolPicker } from "./symbolpicker.js";
import { field, fieldError } from "./forms.js";
import { buildSweepForm } from "./schemaform.js";

const DEFAULTS = { symbols: "BTC/USDT", timeframe: "1h", start: "2024-01-01", end: "2024-07-01", cash: 10000 };

/**
 * The strategy select over `strategies` (classes and presets); `onSchema(detail)` is called with the picked one's
 * detail (its `parameters_schema`, and a preset's `parameters` as its defaults) now and on every change.
 * Returns `{select, help, byName, add(preset), load()}`.
 */
export function strategyPicker(strategies, onSchema) {
  const byName = new Map(strategies.items.map((s) => [s.name, s]));
  const label = (s) => (s.kind === "preset" ? `${s.name} (preset of ${s.base_strategy ?? "?"})` : s.name);
  const select = h("select", { id: "strategy", name: "strategy" },
    strategies.items.map((s) => h("option", { value: s.name }, label(s))));
  const help = h("small", { className: "help" });
  const load = async () => {
    const s = byName.get(select.value);
    const detail = s.parameters_schema ? s : await api.getStrategy(s.name);
    help.textContent = detail.description || "";
    onSchema(detail);
  };
  select.addEventListener("change", load);
  return {
    select, help, byName, load,
    add(made) {
      byName.set(made.name, made);
      select.append(h("option", { value: made.name }, label(made)));
      select.value = made.name;
    },
  };
}

/**
 * The strategy part of a grid's form (sweeps, walk-forwards): the picker, each parameter a value or a range, and
 * the combinations counted before it starts. `from` (a past request: `strategy_name`, `strategy_params`, `grid`)
 * fills it in. Returns `{select, parts, load(), values()}`: `parts` the card's children, `values()` the request's
 * `{strategy_name, strategy_params, grid}`, null while a field is wrong, or `{error}` when nothing is swept.
 */
export function gridStrategy(strategies, from = null) {
  const paramsBox = h("div", { id: "params", className: "grid" });
  const combos = h("p", { id: "combinations", className: "status-line", role: "status" });
  let params = null;
  let detail = null;
  const recount = () => {
    const n = params.count();
    combos.textContent = n === null ? "Fix the fields marked in red to count the combinations"
      : `${n.toLocaleString("en-US")} combination${n === 1 ? "" : "s"}`;
    combos.dataset.count = n === null ? "" : String(n);
  };
  const picked = strategyPicker(strategies, (d) => {
    detail = d;
    const values = from ? from.strategy_params : (d.kind === "preset" ? d.parameters : {});
    params = buildSweepForm(paramsBox, d.parameters_schema, values, recount, from?.grid);
    from = null; // another strategy starts from its own defaults
    recount();
  });
  const select = picked.select;
  if (from && picked.byName.has(from.strategy_name)) { select.value = from.strategy_name; }
  return {
    select, load: picked.load,
    parts: [field("Strategy", select), picked.help,
      h("h3", {}, "Parameters"), h("p", { className: "help" }, "A number: one value or a range (start, end, step; the end is included). A choice: tick the values to try."),
      paramsBox, combos],
    values() {
      const v = params.values();
      if (v === null) { return null; }
      if (!Object.keys(v.grid).length) { return { error: "Sweep at least one parameter: a range, or more than one value ticked" }; }
      // A preset's values are the form's own: its class is swept with them (a name cannot be both fixed and swept,
      // which the preset's stored parameters would make it).
      const name = detail.kind === "preset" ? detail.base_strategy : select.value;
      return { strategy_name: name, strategy_params: v.fixed, grid: v.grid };
    },
  };
}

/**
 * The market and costs fields over `exchanges`, filled in from `initial` (a run request) where it has them.
 * Returns `{el, fields, picker, check(), body()}`: `check()` marks what is wrong and answers the symbols (null when
 * a field is wrong); `body()` the run request's market part.
 */
export function marketFields(exchanges, initial = {}) {
  const chosen = exchanges.items.some((x) => x.id === initial.exchange) ? initial.exchange : "synthetic";
  const exchange = h("select", { id: "exchange", name: "exchange" },
    exchanges.items.map((x) => h("option", { value: x.id, selected: x.id === chosen }, x.name)));
  const timeframe = h("select", { id: "timeframe", name: "timeframe" });
  const fillTimeframes = () => {
    const x = exchanges.items.find((e) => e.id === exchange.value) || exchanges.items[0];
    const keep = timeframe.value || initial.timeframe || DEFAULTS.timeframe;
    timeframe.replaceChildren(...x.timeframes.map((tf) => h("option", { value: tf, selected: tf === keep }, tf)));
  };
  fillTimeframes();
  const picker = symbolPicker(() => exchange.value, initial.symbols?.length ? initial.symbols : [DEFAULTS.symbols]);
  const symbols = picker.input;
  exchange.addEventListener("change", () => { fillTimeframes(); picker.exchangeChanged(); });
  const day = (iso, fallback) => (iso ? String(iso).slice(0, 10) : fallback);
  const start = h("input", { id: "start", name: "start", type: "date", value: day(initial.start_date, DEFAULTS.start) });
  const end = h("input", { id: "end", name: "end", type: "date", value: day(initial.end_date, DEFAULTS.end) });
  const cash = h("input", { id: "cash", name: "cash", type: "number", min: "1", step: "any",
    value: initial.initial_cash ?? DEFAULTS.cash });
  const fee = h("input", { id: "fee", name: "fee", type: "number", min: "0", max: "0.1", step: "any",
    placeholder: "exchange default", value: initial.commission ?? "" });
  const slippage = h("input", { id: "slippage", name: "slippage", type: "number", min: "0", max: "10000", step: "any",
    value: initial.slippage_bps ?? "0" });
  const el = h("section", { className: "card" }, h("h2", {}, "Market and costs"),
    h("div", { className: "grid" },
      field("Exchange", exchange), field("Symbols", symbols, "Pick from the exchange's markets; Enter adds what you typed", picker.el),
      field("Timeframe", timeframe), field("Start", start), field("End", end),
      field("Cash", cash), field("Fee (fraction)", fee, "0.001 = 0.1 % per fill; empty: the exchange's"),
      field("Slippage (bps)", slippage)));
  return {
    el, picker, fields: { exchange, symbols, timeframe, start, end, cash, fee, slippage },
    check() {
      const list = picker.values();
      let bad = fieldError(symbols, list.length ? "" : "At least one symbol");
      bad = fieldError(cash, Number(cash.value) > 0 ? "" : "Must be more than 0") || bad;
      bad = fieldError(end, start.value && end.value && end.value <= start.value ? "After the start" : "") || bad;
      return bad ? null : list;
    },
    body() {
      const out = { symbols: picker.values(), timeframe: timeframe.value, start_date: start.value || null,
        end_date: end.value || null, initial_cash: Number(cash.value), exchange: exchange.value,
        slippage_bps: Number(slippage.value || 0) };
      if (fee.value !== "") { out.commission = Number(fee.value); }
      return out;
    },
  };
}

/** The SDK's typed errors mapped to the market field (and strategy select) they are about. */
export function fieldsOfErrors(market, strategySelect) {
  const f = market.fields;
  return [[api.errors.InvalidSymbolError, f.symbols], [api.errors.InvalidTimeframeError, f.timeframe],
    [api.errors.InvalidDateRangeError, f.end], [api.errors.UnknownExchangeError, f.exchange],
    [api.errors.UnknownStrategyError, strategySelect]];
}

/** The API's field names that differ from the form's inputs. */
export const FIELD_ALIASES = { start_date: "start", end_date: "end" };
