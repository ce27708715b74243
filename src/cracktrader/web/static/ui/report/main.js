// The report file's entry: the dashboard's results page, drawn from the embedded data (./data.js stands in for
// ../api.js), into <main>; `body[data-ready]` once it is drawn, as the dashboard marks its pages.
import { renderResults } from "../pages/results.js";
import { h } from "../dom.js";
import { report } from "./data.js";

const view = document.getElementById("view");
try {
  // The file holds the buckets only: full detail on zoom needs the server's dashboard.
  await renderResults(view, report.run.run_id, { zoomHint: "the report's buckets; full detail in the dashboard" });
} catch (e) {
  view.append(h("p", { className: "message error" }, e.message));
}
document.body.dataset.ready = "report";
