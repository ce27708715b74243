// Compare 2 to 5 runs: equity overlaid (as return from each start) and the metrics side by side.
import * as api from "../api.js";
import { h } from "../dom.js";
import { compareChart } from "../charts.js";
import * as fmt from "../format.js";

export async function renderCompare(view, idList) {
  const ids = idList.split(",").filter(Boolean).slice(0, 5);
  const [help, ...docs] = await Promise.all([api.metricsHelp(),
    ...ids.map((id) => Promise.all([api.getRun(id), api.runResults(id, { max_points: 1000, limit: 1 })]))]);
  const label = ([run]) => `${run.strategy_name} ${run.symbols.join(",")} ${run.timeframe} (${run.run_id.slice(0, 6)})`;
  const chart = h("div", { id: "compare-chart", className: "chart" });
  const keys = Object.keys(help).filter((k) => docs.some(([, r]) => r.performance_metrics && k in r.performance_metrics));
  const ordered = Object.keys(docs[0]?.[1].performance_metrics || {}).filter((k) => keys.includes(k));
  const table = h("table", { id: "compare-metrics" },
    h("thead", {}, h("tr", {}, h("th", {}, "Metric"), docs.map((d) => h("th", { className: "num", title: label(d) },
      `${d[0].strategy_name} ${d[0].run_id.slice(0, 6)}`)))),
    h("tbody", {}, ordered.map((k) => h("tr", { dataset: { metric: k } },
      h("th", { scope: "row", title: help[k].help }, fmt.label(k)),
      docs.map(([, r]) => h("td", { className: "num" }, fmt.metric(help[k].kind, r.performance_metrics?.[k])))))));
  view.append(h("h1", {}, `Compare ${ids.length} runs`),
    h("section", { className: "card" }, h("h2", {}, "Equity (return from start, %)"), chart),
    h("section", { className: "card" }, h("h2", {}, "Metrics"), h("div", { className: "scroll" }, table)));
  compareChart(chart, docs.map((d) => ({ label: label(d), points: d[1].equity_curve })));
}
