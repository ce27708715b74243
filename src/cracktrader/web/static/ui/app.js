// The dashboard's entry: a hash router over the pages in pages/; each page renders into <main> and returns a
// cleanup (closing its streams) that runs when the route changes.
import * as api from "./api.js";
import { h } from "./dom.js";
import { renderBacktest } from "./pages/backtest.js";
import { renderResults } from "./pages/results.js";
import { renderHistory } from "./pages/history.js";
import { renderCompare } from "./pages/compare.js";
import { renderSessions, renderSession } from "./pages/sessions.js";
import { renderAccount } from "./pages/account.js";
import { renderStrategies } from "./pages/strategies.js";
import { renderData } from "./pages/data.js";
import { renderLogs } from "./pages/logs.js";
import { renderSweeps } from "./pages/sweeps.js";
import { renderWalkforward } from "./pages/walkforward.js";

const routes = [
  [/^#\/backtest$/, "backtest", () => renderBacktest],
  [/^#\/runs\/([^/]+)$/, "history", () => renderResults],
  [/^#\/sweeps$/, "sweeps", () => renderSweeps],
  [/^#\/sweeps\/([^/]+)$/, "sweeps", () => renderSweeps],
  [/^#\/walkforward$/, "walkforward", () => renderWalkforward],
  [/^#\/walkforward\/([^/]+)$/, "walkforward", () => renderWalkforward],
  [/^#\/history$/, "history", () => renderHistory],
  [/^#\/compare\/([^/]+)$/, "history", () => renderCompare],
  [/^#\/sessions$/, "sessions", () => renderSessions],
  [/^#\/sessions\/([^/]+)$/, "sessions", () => renderSession],
  [/^#\/account$/, "account", () => renderAccount],
  [/^#\/strategies$/, "strategies", () => renderStrategies],
  [/^#\/strategies\/([^/]+)$/, "strategies", () => renderStrategies],
  [/^#\/data$/, "data", () => renderData],
  [/^#\/logs$/, "logs", () => renderLogs],
];

let cleanup = null;
const view = document.getElementById("view");

async function route() {
  const hash = location.hash || "#/backtest";
  if (cleanup) { cleanup(); cleanup = null; }
  const match = routes.find(([re]) => re.test(hash));
  if (!match) { location.hash = "#/backtest"; return; }
  const [re, page, get] = match;
  for (const a of document.querySelectorAll("#nav a")) { a.classList.toggle("active", a.dataset.page === page); }
  const args = hash.match(re).slice(1).map(decodeURIComponent);
  view.replaceChildren();
  delete document.body.dataset.ready;
  delete view.dataset.dataReady;
  try {
    cleanup = (await get()(view, ...args)) || null;
  } catch (e) {
    view.append(h("p", { className: "message error" }, e.message));
  }
  document.body.dataset.ready = page;
}

api.setSignInHandler(() => {
  // Back to where the user was once signed in (pages/account.js reads it).
  if (location.hash !== "#/account") { sessionStorage.setItem("cracktrader.next", location.hash); location.hash = "#/account"; }
});

window.addEventListener("hashchange", route);
api.health().then((x) => {
  const el = document.getElementById("health");
  el.textContent = x.status;
  el.classList.add(x.status === "ok" || x.status === "healthy" ? "ok" : "warn");
}).catch(() => {});
route();
