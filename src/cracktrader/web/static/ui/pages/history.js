// History: every run, paged on the server and filtered; open, rerun, delete; pick 2 to 5 to compare.
import * as api from "../api.js";
import { h, say, confirmAction } from "../dom.js";
import * as fmt from "../format.js";

const LIMIT = 20;
const STATUSES = ["", "starting", "running", "completed", "failed", "stopped"];
const MODES = ["", "backtest", "paper", "live"];

export async function renderHistory(view) {
  const picked = new Set();
  let offset = 0;
  const message = h("p", { className: "message", role: "status" });
  const sel = (id, options) => h("select", { id, name: id }, options.map((o) => h("option", { value: o }, o || "any")));
  const status = sel("f-status", STATUSES);
  const mode = sel("f-mode", MODES);
  const strategies = await api.listStrategies();
  const strategy = sel("f-strategy", ["", ...strategies.items.map((s) => s.name)]);
  const symbol = h("input", { id: "f-symbol", name: "f-symbol", placeholder: "BTC/USDT" });
  const compare = h("button", { type: "button", id: "compare", className: "primary", disabled: true,
    onclick: () => { location.hash = `#/compare/${[...picked].map(encodeURIComponent).join(",")}`; } }, "Compare");
  const tbody = h("tbody");
  const info = h("span", { className: "pager-info", id: "history-info" });
  const prev = h("button", { type: "button", className: "small", onclick: () => { offset -= LIMIT; load(); } }, "‹ Prev");
  const next = h("button", { type: "button", className: "small", onclick: () => { offset += LIMIT; load(); } }, "Next ›");
  const updateCompare = () => {
    compare.disabled = picked.size < 2 || picked.size > 5;
    compare.textContent = `Compare (${picked.size})`;
  };
  const row = (r) => {
    const box = h("input", { type: "checkbox", checked: picked.has(r.run_id), ariaLabel: `pick ${r.run_id}`, onchange: () => {
      if (box.checked) { picked.add(r.run_id); } else { picked.delete(r.run_id); }
      updateCompare();
    } });
    return h("tr", { dataset: { run: r.run_id } },
      h("td", {}, box),
      h("td", { className: "wide-only" }, fmt.time(r.created_at)),
      h("td", {}, r.strategy_name),
      h("td", {}, r.symbols.join(", ")),
      h("td", { className: "wide-only" }, r.timeframe),
      h("td", { className: "wide-only" }, r.mode),
      h("td", {}, h("span", { className: `pill ${r.status}` }, r.status)),
      h("td", { className: "num" }, fmt.percent(r.total_return)),
      h("td", { className: "num" }, fmt.money(r.final_value)),
      h("td", { className: "actions" },
        h("a", { href: r.mode === "backtest" ? `#/runs/${r.run_id}` : `#/sessions/${r.run_id}`, className: "button small" }, "Open"),
        r.mode === "backtest" ? h("button", { type: "button", className: "small", onclick: async () => {
          try { const x = await api.rerun(r.run_id); say(message, `Rerun started: ${x.run_id}`, "ok"); load(); }
          catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
        } }, "Rerun") : "",
        h("button", { type: "button", className: "small danger", onclick: async () => {
          if (!(await confirmAction(`Delete run ${r.run_id}?`))) { return; }
          try { await api.deleteRun(r.run_id); picked.delete(r.run_id); updateCompare(); load(); }
          catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
        } }, "Delete")));
  };
  async function load() {
    offset = Math.max(0, offset);
    try {
      const page = await api.listRuns({ status: status.value, mode: mode.value, strategy: strategy.value,
        symbol: symbol.value.trim(), limit: LIMIT, offset });
      tbody.replaceChildren(...(page.items.length ? page.items.map(row)
        : [h("tr", {}, h("td", { colSpan: 10, className: "empty" }, "No runs match"))]));
      info.textContent = `${page.total ? offset + 1 : 0}–${offset + page.items.length} of ${page.total}`;
      prev.disabled = offset === 0;
      next.disabled = offset + page.items.length >= page.total;
    } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
  }
  const filters = h("form", { id: "filters", className: "grid filters", onsubmit: (ev) => { ev.preventDefault(); offset = 0; load(); } },
    ...[["Status", status], ["Mode", mode], ["Strategy", strategy], ["Symbol", symbol]].map(([t, i]) =>
      h("div", { className: "field" }, h("label", { htmlFor: i.id }, t), i)),
    h("div", { className: "buttons" }, h("button", { type: "submit" }, "Filter"), compare));
  for (const i of [status, mode, strategy]) { i.addEventListener("change", () => { offset = 0; load(); }); }
  updateCompare();
  view.append(h("h1", {}, "History"), h("section", { className: "card" }, filters, message,
    h("div", { className: "scroll" }, h("table", { id: "runs" },
      h("thead", {}, h("tr", {}, ["", "Created", "Strategy", "Symbols", "TF", "Mode", "Status", "Return", "Final value", ""]
        .map((t, i) => h("th", { className: `${i === 7 || i === 8 ? "num" : ""} ${[1, 4, 5].includes(i) ? "wide-only" : ""}` }, t)))), tbody)),
    h("div", { className: "pager" }, prev, info, next)));
  await load();
}
