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

/** How many values `start, start + step, ... ≤ end` has, as the server counts a range (its float tolerance). */
export function rangeCount(start, end, step) {
  if (!(step > 0) || end < start) { return 0; }
  return Math.floor((end - start) / step + 1e-9) + 1;
}

/** A grid entry as {start, end, step}: a range object, "a:b:c", or a list of evenly spaced numbers; else null. */
function asRange(entry) {
  if (entry && typeof entry === "object" && !Array.isArray(entry)) { return { step: 1, ...entry }; }
  if (typeof entry === "string" && entry.includes(":")) {
    const [start, end, step = 1] = entry.split(":").map(Number);
    return [start, end, step].every(Number.isFinite) ? { start, end, step } : null;
  }
  if (Array.isArray(entry) && entry.length > 1 && entry.every((v) => typeof v === "number")) {
    const step = entry[1] - entry[0];
    const even = step > 0 && entry.every((v, i) => Math.abs(v - (entry[0] + i * step)) < 1e-9 * Math.max(1, Math.abs(v)));
    return even ? { start: entry[0], end: entry[entry.length - 1], step } : null;
  }
  return null;
}

/** The problem with a range of schema `p` (each end within the bounds, a positive step), or "". */
function rangeProblem(p, start, end, step) {
  for (const [what, raw] of [["Start", start], ["End", end], ["Step", step]]) {
    if (raw === "") { return `${what}: required`; }
    if (!Number.isFinite(Number(raw))) { return `${what}: enter a number`; }
    if (p.type === "integer" && !Number.isInteger(Number(raw))) { return `${what}: enter a whole number`; }
  }
  const bound = validate({ ...p, nullable: false }, start) || validate({ ...p, nullable: false }, end);
  if (bound) { return bound; }
  if (Number(step) <= 0) { return "The step must be more than 0"; }
  if (Number(end) < Number(start)) { return "The end is below the start"; }
  return "";
}

/**
 * The fields of `schema` for a sweep: each number a single value or a range (start, end, step, end inclusive),
 * each enum or boolean a set of values to try. `values` and `grid` (a past sweep's request) fill it in;
 * `onChange()` runs on every edit. Returns `{values(): {fixed, grid} | null, count(): number | null}`: `fixed` the
 * single values other than the schema's defaults, `grid` the swept ones as the API takes them; `count()` the
 * combinations (null while a field is wrong).
 */
export function buildSweepForm(container, schema, values = {}, onChange = () => {}, grid = {}) {
  container.replaceChildren();
  const fields = [];
  for (const [name, raw] of Object.entries(schema?.properties || {})) {
    const p = unwrap(raw);
    const initial = values[name] !== undefined ? values[name] : p.default;
    const id = `param-${name}`;
    const msg = h("span", { className: "field-error", id: `${id}-error`, role: "alert" });
    const bounds = boundsText(p);
    const help = [p.description, bounds && `(${bounds})`, p.default !== undefined && `default ${JSON.stringify(p.default)}`]
      .filter(Boolean).join(" ");
    const numeric = p.type === "integer" || p.type === "number";
    let f;
    if (p.type === "boolean" || p.enum) {
      // A set of values: one ticked is a fixed value, more are swept.
      const options = p.type === "boolean" ? [true, false] : p.enum;
      const ticked = Array.isArray(grid[name]) ? grid[name] : [p.type === "boolean" ? Boolean(initial) : initial];
      const boxes = options.map((v, i) => h("input", { type: "checkbox", id: `${id}-opt-${i}`, name, value: String(v),
        checked: ticked.includes(v) }));
      const control = h("div", { className: "choices", id, role: "group", "aria-describedby": `${id}-error ${id}-help` },
        boxes.map((b, i) => h("label", { className: "choice", htmlFor: b.id }, b, String(options[i]))));
      f = {
        name, control,
        check() { return boxes.some((b) => b.checked) ? "" : "Pick at least one"; },
        picked() { return options.filter((_, i) => boxes[i].checked); },
        count() { return this.picked().length; },
        entry() { const v = this.picked(); return v.length > 1 ? { grid: v } : { fixed: v[0] }; },
      };
    } else {
      const single = h("input", {
        id, name, type: numeric ? "number" : "text", inputMode: numeric ? "decimal" : undefined,
        step: p.type === "integer" ? "1" : "any", value: initial === null || initial === undefined ? "" : String(initial),
        placeholder: p.nullable ? "off" : "", "aria-describedby": `${id}-error ${id}-help` });
      if (!numeric) {
        f = { name, control: single, check() { return validate(p, single.value); }, count() { return 1; },
          entry() { return { fixed: parse(p, single.value) }; } };
      } else {
        const mode = h("select", { id: `${id}-mode`, name: `${name}-mode`, className: "mode", "aria-label": `${name}: value or range` },
          h("option", { value: "value" }, "value"), h("option", { value: "range" }, "range"));
        const part = (what, value) => h("input", { id: `${id}-${what}`, name: `${name}-${what}`, type: "number",
          inputMode: "decimal", step: p.type === "integer" ? "1" : "any", placeholder: what, "aria-label": `${name} ${what}`,
          value: value === null || value === undefined ? "" : String(value) });
        const swept = asRange(grid[name]);
        const start = part("start", swept ? swept.start : initial);
        const end = part("end", swept ? swept.end : initial);
        const step = part("step", swept ? swept.step : (p.type === "integer" ? 1 : ""));
        const range = h("div", { className: "range", hidden: true },
          ["start", "end", "step"].map((w) => h("small", { className: "help" }, w)), start, end, step);
        if (swept) { mode.value = "range"; single.hidden = true; range.hidden = false; }
        const isRange = () => mode.value === "range";
        mode.addEventListener("change", () => { single.hidden = isRange(); range.hidden = !isRange(); f.show(); onChange(); });
        f = {
          name, control: h("div", { className: "sweep-value" }, mode, single, range),
          check() { return isRange() ? rangeProblem(p, start.value, end.value, step.value) : validate(p, single.value); },
          count() { return isRange() ? rangeCount(Number(start.value), Number(end.value), Number(step.value)) : 1; },
          entry() {
            if (!isRange()) { return { fixed: parse(p, single.value) }; }
            return { grid: { start: Number(start.value), end: Number(end.value), step: Number(step.value) } };
          },
        };
      }
    }
    f.show = () => {
      const problem = f.check();
      msg.textContent = problem;
      for (const input of f.control.querySelectorAll("input")) { input.classList.toggle("invalid", Boolean(problem)); }
      if (f.control.tagName === "INPUT") { f.control.classList.toggle("invalid", Boolean(problem)); }
      return problem;
    };
    f.baseline = p.default;
    f.control.addEventListener("input", () => { f.show(); onChange(); });
    f.control.addEventListener("change", () => { f.show(); onChange(); });
    container.append(h("div", { className: "field" },
      h("label", { htmlFor: id }, p.title || name), f.control, h("small", { id: `${id}-help`, className: "help" }, help), msg));
    fields.push(f);
  }
  return {
    count() {
      if (fields.some((f) => f.check())) { return null; }
      return fields.reduce((n, f) => n * f.count(), 1);
    },
    values() {
      let ok = true;
      const fixed = {};
      const grid = {};
      for (const f of fields) {
        if (f.show()) { ok = false; continue; }
        const e = f.entry();
        if ("grid" in e) { grid[f.name] = e.grid; }
        // A fixed value is sent when it is not the schema's default (a preset's values are the form's own here).
        else if (e.fixed !== undefined && JSON.stringify(e.fixed) !== JSON.stringify(f.baseline)) { fixed[f.name] = e.fixed; }
      }
      return ok ? { fixed, grid } : null;
    },
  };
}
