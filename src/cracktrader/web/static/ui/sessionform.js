// The session part of the run form: the mode (backtest, paper, live), the risk settings of `exchange_config.risk`,
// and for live the stored credentials and the test network. The limits mirror the server's RiskLimits (names,
// bounds, defaults and descriptions; tests/test_ui_browser.py checks them against its JSON Schema).
import { h } from "./dom.js";
import { field, fieldError } from "./forms.js";

/** `exchange_config.risk`: name, label, bounds (`gt`: exclusive minimum), integer or not, default, description. */
export const RISK_FIELDS = [
  { name: "capital", label: "Capital", gt: 0, max: 1e15, description: "Live: the quote currency this session may trade with (required); never the whole account." },
  { name: "max_order_notional", label: "Max order notional", gt: 0, description: "Largest order value in the quote currency (amount × limit, stop or last price)." },
  { name: "max_position_notional", label: "Max position notional", gt: 0, description: "Largest position value per symbol in the quote currency, counting same-side open orders." },
  { name: "max_open_orders", label: "Max open orders", min: 1, integer: true, default: 50, description: "Most orders open at once in the session." },
  { name: "orders_per_second", label: "Orders per second", min: 1, integer: true, default: 10, description: "Orders accepted per exchange account in any sliding second (seed 001: 10)." },
  { name: "price_band", label: "Price band", gt: 0, max: 1, default: 0.05, description: "Largest distance of a limit price from the last price, as a fraction." },
  { name: "daily_loss_limit", label: "Daily loss limit", gt: 0, description: "Loss since the UTC day's start, in the quote currency, at which the session halts." },
  { name: "daily_loss_fraction", label: "Daily loss fraction", gt: 0, max: 1, description: "The same as a fraction of the day's starting equity (0.05: halt after losing 5 %)." },
];

/** The message for a risk input's value, "" when it is fine (empty is the server's default). */
function riskProblem(spec, raw) {
  if (raw === "") { return ""; }
  const v = Number(raw);
  if (!Number.isFinite(v)) { return "A number"; }
  if (spec.integer && !Number.isInteger(v)) { return "A whole number"; }
  if (spec.gt !== undefined && !(v > spec.gt)) { return `More than ${spec.gt}`; }
  if (spec.min !== undefined && v < spec.min) { return `At least ${spec.min}`; }
  if (spec.max !== undefined && v > spec.max) { return `At most ${spec.max}`; }
  return "";
}

/**
 * The mode select and the session settings over `exchanges` (their `live_trading`) and `credentials` (the stored
 * ones' names and exchanges, never secrets). `exchangeSelect` is the market's exchange: live is offered only on
 * one the server can trade live. Returns `{mode, el, check(), exchangeConfig(), live()}`.
 */
export function sessionFields(exchanges, credentials, exchangeSelect) {
  const mode = h("select", { id: "mode", name: "mode" },
    h("option", { value: "backtest" }, "Backtest"), h("option", { value: "paper" }, "Paper session"),
    h("option", { value: "live", id: "mode-live" }, "Live session"));
  const modeHelp = h("small", { className: "help", id: "mode-help" });
  const inputs = RISK_FIELDS.map((f) => h("input", { id: `risk-${f.name}`, name: f.name, type: "number",
    step: f.integer ? "1" : "any", min: f.gt ?? f.min, max: f.max, placeholder: f.default === undefined ? "off" : String(f.default),
    title: f.description, inputMode: f.integer ? "numeric" : "decimal" }));
  const credential = h("select", { id: "credentials", name: "credentials" });
  const sandbox = h("input", { id: "sandbox", name: "sandbox", type: "checkbox", checked: true });
  const liveBox = h("div", { className: "grid", id: "live-fields", hidden: true },
    field("Stored credentials", credential, "Stored on the server (Account page); their secrets are never shown"),
    field("Test network", sandbox, "The exchange's sandbox; unticked trades real money (the server must allow it)"));
  const riskBox = h("div", { id: "risk-fields", hidden: true }, h("h3", {}, "Risk limits"),
    h("p", { className: "help" }, "Empty: the server's default (greyed; off: no limit). An order a limit refuses is recorded as rejected, with its reason."),
    h("div", { className: "grid" }, RISK_FIELDS.map((f, i) => field(f.label, inputs[i], f.description))));
  const el = h("section", { className: "card", id: "session-card" }, h("h2", {}, "Mode"),
    h("div", { className: "grid" }, field("Mode", mode)), modeHelp, liveBox, riskBox);

  const liveInfo = () => exchanges.items.find((x) => x.id === exchangeSelect.value)?.live_trading;
  const fillCredentials = () => {
    const mine = credentials.filter((c) => c.exchange === exchangeSelect.value);
    credential.replaceChildren(...(mine.length ? mine.map((c) => h("option", { value: c.name }, `${c.name} (${c.exchange})`))
      : [h("option", { value: "" }, `No stored credentials for ${exchangeSelect.value}`)]));
  };
  const refresh = () => {
    const info = liveInfo();
    const canLive = Boolean(info?.supported);
    mode.querySelector("#mode-live").disabled = !canLive;
    if (!canLive && mode.value === "live") { mode.value = "paper"; }
    modeHelp.textContent = mode.value === "backtest" ? "Over the dates below"
      : mode.value === "paper" ? "On candles as they close, against a simulated exchange (the cash is its balance)"
        : "Real orders on the exchange";
    if (!canLive) {
      modeHelp.textContent += ` · live: not on ${exchangeSelect.value}` + (info?.missing?.length ? ` (lacks ${info.missing.join(", ")})` : "");
    }
    riskBox.hidden = mode.value === "backtest";
    liveBox.hidden = mode.value !== "live";
    fillCredentials();
  };
  mode.addEventListener("change", refresh);
  exchangeSelect.addEventListener("change", refresh);
  refresh();
  return {
    mode, el, fields: { credential, sandbox, inputs },
    /** Mark the risk inputs that are wrong (and live without credentials); true when all are fine. */
    check() {
      let bad = false;
      RISK_FIELDS.forEach((f, i) => { bad = fieldError(inputs[i], riskProblem(f, inputs[i].value)) || bad; });
      if (mode.value === "live") { bad = fieldError(credential, credential.value ? "" : "Store credentials first (Account page)") || bad; }
      return !bad;
    },
    /** The risk section and, for live, the credentials' name and the test network flag. */
    exchangeConfig() {
      const risk = {};
      RISK_FIELDS.forEach((f, i) => { if (inputs[i].value !== "") { risk[f.name] = Number(inputs[i].value); } });
      const out = Object.keys(risk).length ? { risk } : {};
      if (mode.value === "live") { Object.assign(out, { credentials: credential.value, sandbox: sandbox.checked }); }
      return out;
    },
    live: () => mode.value === "live",
  };
}
