// Strategies: the classes and stored presets with their parameters, and `check` (look-ahead, window) run on one.
import * as api from "../api.js";
import { h, say } from "../dom.js";
import * as fmt from "../format.js";
import { field, showError } from "../forms.js";

/** One row per parameter of a JSON Schema: name, type, default, bounds, description. */
function paramRows(schema, values) {
  const props = schema?.properties || {};
  return Object.entries(props).map(([name, p]) => {
    const branch = (p.anyOf || []).find((x) => x.type !== "null") || p;
    const bounds = [["minimum", "≥"], ["exclusiveMinimum", ">"], ["maximum", "≤"], ["exclusiveMaximum", "<"]]
      .filter(([k]) => branch[k] !== undefined).map(([k, s]) => `${s} ${branch[k]}`).join(", ");
    const value = name in (values || {}) ? values[name] : p.default;
    return h("tr", { dataset: { param: name } }, h("td", {}, h("code", {}, name)), h("td", {}, branch.type || "any"),
      h("td", { className: "num", dataset: { key: "value" } }, value === undefined || value === null ? "–" : String(value)),
      h("td", {}, bounds || "–"), h("td", {}, p.description || ""));
  });
}

function checkResult(doc) {
  return h("div", { id: "check-result" },
    h("p", {}, h("span", { className: `pill ${doc.passed ? "completed" : "failed"}`, id: "check-passed" },
      doc.passed ? "passed" : "failed"),
    ` ${doc.bars.toLocaleString()} bars of ${doc.symbols.join(", ")} ${doc.timeframe} on ${doc.exchange} · `,
    `window ${doc.window} · ${doc.entries} entries, ${doc.exits} exits · ${doc.seconds.toFixed(2)} s`),
    doc.entries === 0 ? h("p", { className: "message warn" }, "No entries: the checks pass vacuously") : "",
    h("div", { className: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Check", "Result", "Compared", "Differing", "First difference", "Detail"]
        .map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, doc.checks.map((c) => h("tr", { dataset: { check: c.name } },
        h("td", {}, c.name), h("td", {}, h("span", { className: `pill ${c.passed ? "completed" : "failed"}` }, c.passed ? "passed" : "failed")),
        h("td", { className: "num", dataset: { key: "compared" } }, String(c.compared ?? "–")),
        h("td", { className: "num", dataset: { key: "differing" } }, String(c.differing ?? "–")),
        h("td", {}, c.first_difference ? `bar ${c.first_difference.bar} (${fmt.time(c.first_difference.time)}): expected `
          + `${c.first_difference.expected}, found ${c.first_difference.found}` : "–"),
        h("td", {}, c.detail || "")))))));
}

export async function renderStrategies(view, selected = null) {
  const list = await api.listStrategies();
  const items = list.items;
  const name = selected ?? items[0]?.name;
  view.append(h("h1", {}, "Strategies"),
    h("section", { className: "card" }, h("div", { className: "scroll" }, h("table", { id: "strategy-list" },
      h("thead", {}, h("tr", {}, ["Name", "Kind", "Description"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, items.map((s) => h("tr", { dataset: { strategy: s.name }, className: s.name === name ? "selected" : "" },
        h("td", {}, h("a", { href: `#/strategies/${encodeURIComponent(s.name)}` }, s.name)),
        h("td", {}, s.kind === "preset" ? `preset of ${s.base_strategy ?? "?"}` : s.kind),
        h("td", {}, s.description || ""))))))));
  const chosen = items.find((s) => s.name === name);
  if (!chosen) { return; }
  const detail = chosen.parameters_schema ? chosen : await api.getStrategy(chosen.name);
  const exchanges = await api.listExchanges();
  const message = h("p", { className: "message", role: "status", id: "check-message" });
  const out = h("div");
  const symbol = h("input", { id: "check-symbol", name: "symbols", value: "BTC/USDT" });
  const timeframe = h("input", { id: "check-timeframe", name: "timeframe", value: "1h" });
  const exchange = h("select", { id: "check-exchange" },
    exchanges.items.map((x) => h("option", { value: x.id, selected: x.id === "synthetic" }, x.name)));
  const start = h("input", { id: "check-start", name: "start", type: "date", value: "2024-01-01" });
  const end = h("input", { id: "check-end", name: "end", type: "date", value: "2024-03-01" });
  const run = h("button", { type: "submit", className: "primary", id: "run-check" }, "Run check");
  const form = h("form", { id: "check-form" });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    run.disabled = true;
    say(message, "Checking…");
    try {
      const doc = await api.checkStrategy(chosen.name, { symbols: [symbol.value.trim()], timeframe: timeframe.value.trim(),
        exchange: exchange.value, start_date: start.value || null, end_date: end.value || null });
      out.replaceChildren(checkResult(doc));
      say(message, "");
    } catch (e) {
      showError(form, message, e, [[api.errors.InvalidSymbolError, symbol], [api.errors.InvalidTimeframeError, timeframe],
        [api.errors.UnknownExchangeError, exchange], [api.errors.InvalidDateRangeError, end], ["CHECK_TOO_LARGE", start]],
        { start_date: "start", end_date: "end" });
    } finally { run.disabled = false; }
  });
  form.append(h("div", { className: "grid" }, field("Symbol", symbol), field("Timeframe", timeframe), field("Exchange", exchange),
    field("Start", start), field("End", end)), h("div", { className: "buttons" }, run));
  view.append(h("section", { className: "card", id: "strategy-detail" }, h("h2", {}, detail.name),
    h("p", { className: "help" }, detail.description || ""),
    h("h3", {}, "Parameters"),
    h("div", { className: "scroll" }, h("table", { id: "strategy-params" },
      h("thead", {}, h("tr", {}, ["Name", "Type", detail.kind === "preset" ? "Value" : "Default", "Bounds", "Description"]
        .map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, paramRows(detail.parameters_schema, detail.kind === "preset" ? detail.parameters : {})))),
    h("h3", {}, "Check: look-ahead and window"),
    h("p", { className: "help" }, "Runs the strategy on these candles with the future perturbed (look-ahead) and on its live window only (window)."),
    form, message, out));
}
