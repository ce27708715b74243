// Small DOM helpers: elements are built with properties, never from HTML strings (no injection, CSP-clean).

/** `h("button", {className: "x", onclick}, "text", child)`: an element with properties and children. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) { continue; }
    if (k.startsWith("on")) { el.addEventListener(k.slice(2), v); }
    else if (k === "dataset") { Object.assign(el.dataset, v); }
    else if (k in el && k !== "list" && k !== "form") { el[k] = v; }
    else { el.setAttribute(k, v === true ? "" : v); }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) { continue; }
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** A status line: `say(el, text, "error" | "ok" | "")`. */
export function say(el, text, kind = "") {
  el.textContent = text;
  el.className = `message ${kind}`;
}

/** Ask before an action that changes a running session; resolves true on OK. */
export function confirmAction(text) {
  return new Promise((resolve) => {
    const dlg = h("dialog", { className: "confirm" },
      h("p", {}, text),
      h("div", { className: "buttons" },
        h("button", { type: "button", className: "danger", onclick: () => { dlg.close(); resolve(true); } }, "Confirm"),
        h("button", { type: "button", onclick: () => { dlg.close(); resolve(false); } }, "Cancel")));
    dlg.addEventListener("close", () => { dlg.remove(); resolve(false); });
    document.body.append(dlg);
    dlg.showModal();
  });
}
