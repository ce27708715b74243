// Backtest: a form generated from the strategy's parameter schema, start/stop/reset, progress from the stream; the
// same form starts a paper or live session (mode, risk limits, stored credentials).
import * as api from "../api.js";
import { h, say, confirmAction } from "../dom.js";
import { buildParamsForm } from "../schemaform.js";
import { field, showError as showFormError } from "../forms.js";
import { strategyPicker, marketFields, fieldsOfErrors, FIELD_ALIASES } from "../runform.js";
import { sessionFields } from "../sessionform.js";
import * as fmt from "../format.js";

/** ETA from the progress made since the run started (no clock of the server needed). */
function eta(s) {
  if (!s.progress || s.progress >= 1 || !s.runtime_seconds) { return null; }
  return (s.runtime_seconds * (1 - s.progress)) / s.progress;
}

export async function renderBacktest(view) {
  // Stored credentials are listed by name and exchange only; without them (or the right) live has none to pick.
  const [strategies, exchanges, stored] = await Promise.all([api.listStrategies(), api.listExchanges(),
    api.listCredentials().then((r) => r.credentials).catch(() => [])]);
  const paramsBox = h("div", { id: "params", className: "grid" });
  let params = null;
  // A preset's parameters are its defaults; a class's are the schema's own.
  const picked = strategyPicker(strategies, (detail) => {
    params = buildParamsForm(paramsBox, detail.parameters_schema, detail.kind === "preset" ? detail.parameters : {});
  });
  const { select: strategy, byName } = picked;
  await picked.load();
  const market = marketFields(exchanges);
  const { cash, slippage } = market.fields;
  const session = sessionFields(exchanges, stored, market.fields.exchange);

  const message = h("p", { id: "message", className: "message", role: "status" });
  const presetName = h("input", { id: "preset-name", name: "preset-name", placeholder: "my-sma-10-30", maxLength: 100 });
  const savePreset = async () => {
    const s = byName.get(strategy.value);
    const values = params.values();
    if (values === null || !presetName.value.trim()) {
      say(message, values === null ? "Fix the fields marked in red" : "Name the preset first", "error");
      return;
    }
    const base = s.kind === "preset" ? s.base_strategy : s.name;
    try {
      // A preset stores the whole parameter set it runs with, on top of its class's defaults.
      const merged = { ...(s.kind === "preset" ? s.parameters : {}), ...values };
      const made = await api.createPreset({ name: presetName.value.trim(), base_strategy: base, parameters: merged });
      picked.add(made);
      presetName.value = "";
      await picked.load();
      say(message, `Preset ${made.name} saved`, "ok");
    } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
  };
  const progress = h("progress", { id: "progress", max: 1, value: 0 });
  const statusLine = h("p", { id: "run-status", className: "status-line" });
  const resultLink = h("p", { id: "result-link" });

  const startButton = h("button", { type: "submit", id: "start-run", className: "primary" }, "Start");
  const label = () => { startButton.textContent = { backtest: "Start", paper: "Start paper session", live: "Start live session" }[session.mode.value]; };
  session.mode.addEventListener("change", label);
  label();
  const form = h("form", { id: "run-form", noValidate: true },
    h("section", { className: "card" }, h("h2", {}, "Strategy"),
      field("Strategy", strategy), picked.help, h("h3", {}, "Parameters"), paramsBox,
      h("div", { className: "buttons" }, presetName,
        h("button", { type: "button", id: "save-preset", onclick: savePreset }, "Save as preset"))),
    session.el, market.el,
    h("div", { className: "buttons" },
      startButton,
      h("button", { type: "button", id: "stop-run", onclick: async () => {
        try { say(message, (await api.stopSlot()).message, "ok"); } catch (e) { say(message, e.message, "error"); }
      } }, "Stop"),
      h("button", { type: "button", id: "reset-run", onclick: async () => {
        try { say(message, (await api.resetSlot()).message, "ok"); resultLink.replaceChildren(); } catch (e) { say(message, e.message, "error"); }
      } }, "Reset")));

  // The SDK's typed errors say which field the server refused; a validation list names it in `loc`.
  const showError = (e) => showFormError(form, message, e,
    [...fieldsOfErrors(market, strategy), ["LIVE_TRADING_DISABLED", session.fields.sandbox]], FIELD_ALIASES);
  /** The form's run request, or null after marking what is wrong. */
  const request = () => {
    const list = market.check();
    const values = params.values();
    const sessionOk = session.mode.value === "backtest" || session.check();
    if (list === null || values === null || !sessionOk) { say(message, "Fix the fields marked in red", "error"); return null; }
    return { list, values };
  };
  // A session runs the same strategy and market on candles as they close (dates do not apply). A paper one's cash
  // becomes its balance in the symbols' quote currency; a live one trades the capital of its risk limits.
  const startSession = async (r) => {
    const live = session.live();
    const config = session.exchangeConfig();
    if (!live) {
      const quote = r.list[0].split("/")[1] || "USDT";
      config.paper = { balances: { [quote]: Number(cash.value) }, slippage_bps: Number(slippage.value || 0) };
    } else {
      const where = config.sandbox ? `the test network of ${market.fields.exchange.value}` : `${market.fields.exchange.value} with REAL MONEY`;
      const ok = await confirmAction(`Start a live session? It sends real orders to ${where}, with the stored credentials ${config.credentials}.`);
      if (!ok) { return; }
    }
    try {
      const made = await api.startRun({ mode: live ? "live" : "paper", strategy_name: strategy.value,
        strategy_params: r.values, symbols: r.list, timeframe: market.fields.timeframe.value,
        exchange: market.fields.exchange.value, exchange_config: config });
      location.hash = `#/sessions/${made.run_id}`;
    } catch (e) { showError(e); }
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = request();
    if (!r) { return; }
    if (session.mode.value !== "backtest") { await startSession(r); return; }
    const body = { strategy_name: strategy.value, strategy_params: r.values, ...market.body() };
    try {
      const r = await api.startBacktest(body);
      resultLink.replaceChildren();
      say(message, `${r.message} (${r.run_id})`, "ok");
    } catch (e) { showError(e); }
  });

  const renderStatus = (s) => {
    progress.value = s.progress || 0;
    const left = eta(s);
    statusLine.replaceChildren(
      h("span", { className: `pill ${s.status}`, id: "status-pill" }, s.status),
      s.phase ? h("span", { id: "phase" }, ` phase ${s.phase}`) : "",
      s.bars_total ? ` · ${s.bars_processed.toLocaleString()} / ${s.bars_total.toLocaleString()} bars` : "",
      ` · ${fmt.percent(s.progress || 0)}`,
      left !== null ? h("span", { id: "eta" }, ` · ETA ${fmt.seconds(left)}`) : "",
      s.error ? h("span", { className: "error" }, ` · ${s.error}`) : "");
    if (s.run_id && ["completed", "stopped", "failed"].includes(s.status) && s.mode === "backtest") {
      resultLink.replaceChildren(h("a", { href: `#/runs/${s.run_id}`, id: "open-results", className: "button" },
        `Open results of ${s.run_id.slice(0, 8)}`));
    }
  };
  renderStatus(await api.slotStatus());
  const conn = h("span", { className: "pill", id: "stream-state" }, "connecting");
  const stop = api.streamStatus(null, (e) => {
    if (e.type === "snapshot" || e.type === "status_update") { renderStatus(e.payload); }
  }, (state) => { conn.textContent = state; });
  view.append(h("h1", {}, "Backtest"), form, message,
    h("section", { className: "card", id: "progress-card" }, h("h2", {}, "Progress ", conn), progress, statusLine, resultLink));
  return stop;
}
