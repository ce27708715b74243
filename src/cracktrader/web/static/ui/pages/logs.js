// Logs: the server's recent log lines by level and run (admins only when auth is on: the API's 403 is shown).
import * as api from "../api.js";
import { h, say } from "../dom.js";
import * as fmt from "../format.js";

const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

export async function renderLogs(view) {
  const level = h("select", { id: "log-level" }, LEVELS.map((l) => h("option", { value: l, selected: l === "INFO" }, l)));
  const runId = h("input", { id: "log-run", placeholder: "run id (optional)", maxLength: 64 });
  const message = h("p", { className: "message", role: "status", id: "log-message" });
  const info = h("p", { className: "help", id: "log-info" });
  const body = h("tbody");
  const load = async () => {
    try {
      const doc = await api.getLogs({ level: level.value, run_id: runId.value.trim() || undefined, limit: 500 });
      say(message, "");
      info.textContent = `${doc.items.length} of ${doc.total} lines (the server keeps the last ${doc.capacity})`;
      body.replaceChildren(...(doc.items.length ? [...doc.items].reverse().map((x) => h("tr", { className: `log ${x.level.toLowerCase()}` },
        h("td", { className: "nowrap" }, fmt.time(x.time)), h("td", {}, x.level), h("td", {}, x.logger),
        h("td", {}, x.run_id ? h("a", { href: `#/runs/${x.run_id}` }, x.run_id.slice(0, 8)) : ""),
        h("td", { className: "log-msg" }, x.message)))
        : [h("tr", {}, h("td", { colSpan: 5, className: "empty" }, "No lines"))]));
    } catch (e) {
      body.replaceChildren();
      info.textContent = "";
      say(message, `${e.code}: ${e.message}`, "error");
    }
  };
  const field = (text, input) => h("div", { className: "field" }, h("label", { htmlFor: input.id }, text), input);
  view.append(h("h1", {}, "Logs"), h("section", { className: "card" },
    h("form", { id: "log-form", onsubmit: (ev) => { ev.preventDefault(); load(); } },
      h("div", { className: "grid" }, field("Level", level), field("Run", runId)),
      h("div", { className: "buttons" }, h("button", { type: "submit", className: "primary", id: "log-refresh" }, "Show"))),
    message, info,
    h("div", { className: "scroll" }, h("table", { id: "log-lines" },
      h("thead", {}, h("tr", {}, ["Time (UTC)", "Level", "Logger", "Run", "Message"].map((t) => h("th", { scope: "col" }, t)))), body))));
  level.addEventListener("change", load);
  await load();
}
