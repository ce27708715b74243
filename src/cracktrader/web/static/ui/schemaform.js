// A form generated from a strategy's parameter JSON Schema (pydantic's): typed inputs with defaults, bounds,
// descriptions, and a validation message next to each field.
import { h } from "./dom.js";

/** The non-null branch of `anyOf: [{...}, {type: "null"}]`, and whether null is allowed. */
function unwrap(prop) {
  if (Array.isArray(prop.anyOf)) {
    const nonNull = prop.anyOf.filter((p) => p.type !== "null");
    const nullable = nonNull.length < prop.anyOf.length;
    if (nonNull.length === 1) { return { ...prop, ...nonNull[0], anyOf: undefined, nullable }; }
  }
  return { ...prop, nullable: prop.type === "null" };
}

function boundsText(p) {
  const parts = [];
  if (p.minimum !== undefined) { parts.push(`≥ ${p.minimum}`); }
  if (p.exclusiveMinimum !== undefined) { parts.push(`> ${p.exclusiveMinimum}`); }
  if (p.maximum !== undefined) { parts.push(`≤ ${p.maximum}`); }
  if (p.exclusiveMaximum !== undefined) { parts.push(`< ${p.exclusiveMaximum}`); }
  return parts.join(", ");
}

/** The problem with `raw` for schema `p`, or "" when it is valid. */
export function validate(p, raw) {
  if (raw === "" || raw === undefined) { return p.nullable || p.default !== undefined ? "" : "Required"; }
  if (p.type === "integer" || p.type === "number") {
    const v = Number(raw);
    if (!Number.isFinite(v)) { return "Enter a number"; }
    if (p.type === "integer" && !Number.isInteger(v)) { return "Enter a whole number"; }
    if (p.minimum !== undefined && v < p.minimum) { return `Must be at least ${p.minimum}`; }
    if (p.exclusiveMinimum !== undefined && v <= p.exclusiveMinimum) { return `Must be more than ${p.exclusiveMinimum}`; }
    if (p.maximum !== undefined && v > p.maximum) { return `Must be at most ${p.maximum}`; }
    if (p.exclusiveMaximum !== undefined && v >= p.exclusiveMaximum) { return `Must be less than ${p.exclusiveMaximum}`; }
  }
  if (p.enum && !p.enum.map(String).includes(String(raw))) { return `One of ${p.enum.join(", ")}`; }
  return "";
}

function parse(p, raw) {
  if (p.type === "boolean") { return raw; }
  if (raw === "") { return p.nullable ? null : undefined; }
  if (p.type === "integer" || p.type === "number") { return Number(raw); }
  return raw;
}

/**
 * Build the fields of `schema` into `container`; `values` (a preset's parameters) override the defaults.
 * Returns `{values(): object | null}`: the parameters changed from their initial values, or null when a field is invalid
 * (its message is shown next to it).
 */
export function buildParamsForm(container, schema, values = {}) {
  container.replaceChildren();
  const fields = [];
  for (const [name, raw] of Object.entries(schema?.properties || {})) {
    const p = unwrap(raw);
    const initial = values[name] !== undefined ? values[name] : p.default;
    const id = `param-${name}`;
    const msg = h("span", { className: "field-error", id: `${id}-error`, role: "alert" });
    let input;
    if (p.type === "boolean") {
      input = h("input", { type: "checkbox", id, name, checked: Boolean(initial) });
    } else if (p.enum) {
      input = h("select", { id, name }, p.enum.map((v) => h("option", { value: v, selected: v === initial }, String(v))));
    } else {
      const numeric = p.type === "integer" || p.type === "number";
      input = h("input", {
        id, name, type: numeric ? "number" : "text", inputMode: numeric ? "decimal" : undefined,
        step: p.type === "integer" ? "1" : "any",
        value: initial === null || initial === undefined ? "" : String(initial),
        placeholder: p.nullable ? "off" : "",
      });
    }
    input.setAttribute("aria-describedby", `${id}-error ${id}-help`);
    const check = () => {
      const problem = p.type === "boolean" ? "" : validate(p, input.value);
      msg.textContent = problem;
      input.classList.toggle("invalid", Boolean(problem));
      return problem;
    };
    input.addEventListener("input", check);
    const bounds = boundsText(p);
    const help = [p.description, bounds && `(${bounds})`, p.default !== undefined && `default ${JSON.stringify(p.default)}`]
      .filter(Boolean).join(" ");
    container.append(h("div", { className: "field" },
      h("label", { htmlFor: id }, p.title || name), input, h("small", { id: `${id}-help`, className: "help" }, help), msg));
    fields.push({ name, p, input, check, initial });
  }
  return {
    values() {
      let ok = true;
      const out = {};
      for (const f of fields) {
        if (f.check()) { ok = false; continue; }
        const v = parse(f.p, f.p.type === "boolean" ? f.input.checked : f.input.value);
        // Only what differs from what the field started with (a preset's value, else the default) is sent.
        if (v !== undefined && JSON.stringify(v) !== JSON.stringify(f.initial)) { out[f.name] = v; }
      }
      return ok ? out : null;
    },
  };
}
