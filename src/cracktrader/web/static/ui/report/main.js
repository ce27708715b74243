// The report file's entry: the dashboard's results page, drawn from the embedded data (./data.js stands in for
// ../api.js), into <main>; `body[data-ready]` once it is drawn, as the dashboard marks its pages.
import { renderResults } from "../pages/results.js";
import { h } from "../dom.js";
import { report } from "./data.js";

const view = document.getElementById("view");
try {
  await renderResults(view, report.run.run_id);
} catch (e) {
  view.append(h("p", { className: "message error" }, e.message));
}
document.body.dataset.ready = "report";
