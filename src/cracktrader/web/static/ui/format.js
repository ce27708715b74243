// How numbers are shown: one place, so every page formats a metric the same way.

const nf = (digits) => new Intl.NumberFormat("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const money2 = nf(2);
const num2 = nf(2);
const num4 = nf(4);

export const dash = "–";

export function money(v) { return v === null || v === undefined ? dash : money2.format(v); }
export function percent(v) { return v === null || v === undefined ? dash : `${num2.format(v * 100)} %`; }
export function number(v) { return v === null || v === undefined ? dash : (Number.isInteger(v) ? String(v) : num4.format(v)); }
export function ratio(v) { return v === null || v === undefined ? dash : num2.format(v); }

/** A duration in days as weeks/days/hours. */
export function days(v) {
  if (v === null || v === undefined) { return dash; }
  const hours = Math.round(v * 24);
  const d = Math.floor(hours / 24);
  const hh = hours % 24;
  return d ? (hh ? `${d} d ${hh} h` : `${d} d`) : `${hh} h`;
}

export function seconds(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) { return dash; }
  const s = Math.max(0, Math.round(v));
  if (s < 60) { return `${s} s`; }
  if (s < 3600) { return `${Math.floor(s / 60)} min ${s % 60} s`; }
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** A metric value by the kind docs/metrics.md gives its units (see metrics-help.json). */
export function metric(kind, v) {
  switch (kind) {
    case "percent": return percent(v);
    case "money": return money(v);
    case "days": return days(v);
    case "years": return v === null || v === undefined ? dash : `${num2.format(v)} y`;
    case "bars": return v === null || v === undefined ? dash : `${v} bars`;
    case "count": return number(v);
    default: return ratio(v);
  }
}

/** A strategy parameter's value as tables show it (null: the parameter is off; 12 significant digits). */
export function param(v) {
  if (v === null || v === undefined) { return "off"; }
  return typeof v === "number" ? String(Number(v.toPrecision(12))) : String(v);
}

/** "max_drawdown_duration_days" -> "Max drawdown duration days". */
export function label(key) {
  const s = key.replaceAll("_", " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export function time(iso) {
  if (!iso) { return dash; }
  return iso.replace("T", " ").replace(/(\.\d+)?Z$/, "").slice(0, 19);
}

export function duration(fromIso, toIso) {
  if (!fromIso || !toIso) { return dash; }
  return seconds((Date.parse(toIso) - Date.parse(fromIso)) / 1000);
}
