// Symbols picked from an exchange's markets with search (GET /exchanges/{ex}/markets?q=); on an exchange that
// takes any symbol (synthetic: `any_symbol`), free text too. Picked symbols are chips that can be removed.
import * as api from "./api.js";
import { h } from "./dom.js";

const WELL_FORMED = /^[A-Z0-9]{1,20}\/[A-Z0-9]{1,20}$/;

/** `symbolPicker(exchangeOf, initial)`: `{el, input, values(), onChange(fn)}`; `input` is the search box. */
export function symbolPicker(exchangeOf, initial = []) {
  let picked = [...initial];
  let anySymbol = true;
  let shown = [];
  let timer = null;
  let asked = 0;
  const cache = new Map();
  const chips = h("div", { className: "chips", id: "symbol-chips" });
  const input = h("input", { id: "symbols", name: "symbols", autocomplete: "off", placeholder: "Search markets, e.g. eth",
    role: "combobox", "aria-controls": "symbol-options", "aria-expanded": "false" });
  const list = h("ul", { id: "symbol-options", className: "options", role: "listbox", hidden: true });
  const hint = h("small", { className: "help", id: "symbol-hint" });

  const drawChips = () => {
    chips.replaceChildren(...picked.map((s) => h("span", { className: "chip", dataset: { symbol: s } }, s,
      h("button", { type: "button", className: "chip-x", "aria-label": `Remove ${s}`,
        onclick: () => { picked = picked.filter((x) => x !== s); drawChips(); } }, "×"))));
  };
  const add = (symbol) => {
    const s = symbol.trim().toUpperCase();
    if (!s) { return false; }
    const known = shown.some((m) => m.symbol === s);
    if (!known && !(anySymbol && WELL_FORMED.test(s))) {
      hint.textContent = anySymbol ? `${s}: write BASE/QUOTE` : `${s} is not a market of ${exchangeOf()}`;
      return false;
    }
    if (!picked.includes(s)) { picked.push(s); }
    input.value = "";
    close();
    drawChips();
    return true;
  };
  const close = () => { list.hidden = true; input.setAttribute("aria-expanded", "false"); };
  const draw = (doc) => {
    anySymbol = doc.any_symbol;
    shown = doc.items;
    list.replaceChildren(...doc.items.map((m) => h("li", { role: "option" },
      h("button", { type: "button", className: "option", dataset: { symbol: m.symbol }, onclick: () => add(m.symbol) },
        m.symbol))));
    // Opened only while the picker has the focus (an exchange change searches too, and the list would stay open).
    list.hidden = !doc.items.length || !el.contains(document.activeElement);
    input.setAttribute("aria-expanded", String(!list.hidden));
    hint.textContent = `${doc.total.toLocaleString()} markets match${doc.total > doc.items.length ? `, ${doc.items.length} shown` : ""}`
      + (doc.any_symbol ? " · any BASE/QUOTE works here" : "");
  };
  const search = async () => {
    const q = input.value.trim();
    const key = `${exchangeOf()}|${q.toLowerCase()}`;
    const n = ++asked;
    try {
      if (!cache.has(key)) { cache.set(key, api.getMarkets(exchangeOf(), { q, limit: 20 })); }
      const doc = await cache.get(key);
      if (n === asked) { draw(doc); }
    } catch (e) {
      cache.delete(key);
      if (n === asked) { hint.textContent = `${e.code}: ${e.message}`; close(); }
    }
  };
  // Debounced: one request per pause in typing (the rate limit counts each).
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(search, 250); });
  input.addEventListener("focus", () => { if (!shown.length) { search(); } else { list.hidden = !shown.length; } });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); add(input.value); }
    if (ev.key === "Escape") { close(); }
  });
  drawChips();
  const el = h("div", { className: "symbol-picker" }, chips, input, list, hint);
  // Leaving the picker (a click or tab elsewhere) closes the list; moving into one of its options does not.
  el.addEventListener("focusout", (ev) => { if (!el.contains(ev.relatedTarget)) { close(); } });
  return {
    el, input,
    values() { return input.value.trim() && !add(input.value) ? [...picked, input.value.trim()] : [...picked]; },
    exchangeChanged() { cache.clear(); shown = []; close(); search(); },
  };
}
