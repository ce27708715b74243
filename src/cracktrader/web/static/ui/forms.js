// Form fields with a message slot each, and the API's typed errors shown next to the field they are about.
import { h, say } from "./dom.js";

/** A labelled field: `control` (default `input`) with an optional help line and its error slot. */
export function field(text, input, help = null, control = input) {
  return h("div", { className: "field" }, h("label", { htmlFor: input.id }, text), control,
    help ? h("small", { className: "help" }, help) : null, h("span", { className: "field-error", role: "alert" }));
}

/** Mark `input` wrong with `text` ("" clears it); true when marked. */
export function fieldError(input, text) {
  const box = input.closest(".field")?.querySelector(".field-error");
  if (box) { box.textContent = text; }
  input.classList.toggle("invalid", Boolean(text));
  return Boolean(text);
}

/** Unmark every field of `form` (a new answer replaces what the last one said). */
export function clearErrors(form) {
  for (const input of form.querySelectorAll(".invalid")) { fieldError(input, ""); }
}

/**
 * An error answer shown on its form: next to the field it is about, then in `message`. `fields` maps an SDK
 * error class or an error code to the input; a validation list names the field in `loc`, other refusals in
 * `details.field` (`aliases` maps the
 * API's name to the input's when they differ).
 */
export function showError(form, message, e, fields = [], aliases = {}) {
  clearErrors(form);
  let input = (fields.find(([key]) => (typeof key === "string" ? e.code === key : e instanceof key)) || [])[1];
  // `loc` is a list (request validation) or a dotted path (exchange_config sections); `details.field` a path too.
  const loc = e.details?.errors?.[0]?.loc ?? e.details?.field;
  const path = Array.isArray(loc) ? loc : typeof loc === "string" ? loc.split(".") : null;
  const name = path?.length ? String(path[path.length - 1]) : null;
  if (!input && name) { input = form.querySelector(`[name="${aliases[name] ?? name}"]`); }
  if (input) { fieldError(input, e.message); }
  say(message, `${e.code}: ${e.message}`, "error");
}
