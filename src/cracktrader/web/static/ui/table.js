// A sortable, paged table over rows held in memory; columns say how to show and sort their cell.
import { h } from "./dom.js";

/**
 * `columns`: [{key, label, format?(v,row), num?}]. Returns `{el, setRows(rows)}`.
 * Clicking a header sorts by it (again: the other way); pages of `pageSize` rows.
 */
export function sortableTable(columns, { pageSize = 25, id = "", empty = "Nothing yet" } = {}) {
  let rows = [];
  let sortKey = null;
  let asc = true;
  let page = 0;
  const thead = h("thead");
  const tbody = h("tbody");
  const info = h("span", { className: "pager-info" });
  const prev = h("button", { type: "button", className: "small", onclick: () => { page -= 1; render(); } }, "‹ Prev");
  const next = h("button", { type: "button", className: "small", onclick: () => { page += 1; render(); } }, "Next ›");
  const el = h("div", { className: "table-wrap", id },
    h("div", { className: "scroll" }, h("table", {}, thead, tbody)),
    h("div", { className: "pager" }, prev, info, next));

  const header = () => {
    thead.replaceChildren(h("tr", {}, columns.map((c) => h("th", {
      className: `${c.num ? "num" : ""} sortable`, scope: "col", dataset: { key: c.key },
      ariaSort: sortKey === c.key ? (asc ? "ascending" : "descending") : "none",
      onclick: () => { asc = sortKey === c.key ? !asc : true; sortKey = c.key; page = 0; render(); },
    }, c.label, sortKey === c.key ? (asc ? " ▲" : " ▼") : ""))));
  };
  const sorted = () => {
    if (!sortKey) { return rows; }
    const col = columns.find((c) => c.key === sortKey);
    const val = col.sortValue || ((r) => r[sortKey]);
    return [...rows].sort((a, b) => {
      const x = val(a); const y = val(b);
      if (x === y) { return 0; }
      if (x === null || x === undefined) { return 1; }
      if (y === null || y === undefined) { return -1; }
      return (x < y ? -1 : 1) * (asc ? 1 : -1);
    });
  };
  function render() {
    header();
    const pages = Math.max(1, Math.ceil(rows.length / pageSize));
    page = Math.min(Math.max(0, page), pages - 1);
    const shown = sorted().slice(page * pageSize, (page + 1) * pageSize);
    tbody.replaceChildren(...(shown.length ? shown.map((r) => h("tr", {}, columns.map((c) => {
      const v = r[c.key];
      const content = c.format ? c.format(v, r) : (v === null || v === undefined ? "–" : String(v));
      return h("td", { className: c.num ? "num" : "", dataset: { key: c.key } }, content);
    }))) : [h("tr", {}, h("td", { colSpan: columns.length, className: "empty" }, empty))]));
    info.textContent = `${rows.length ? page * pageSize + 1 : 0}–${Math.min(rows.length, (page + 1) * pageSize)} of ${rows.length}`;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  render();
  return { el, setRows(r) { rows = r; render(); } };
}

/**
 * A table sorted and paged by the server: `fetchPage({sort, order, limit, offset})` answers `{items, total}`.
 * Clicking a sortable header asks the server again. Returns `{el, load()}`: nothing is asked until `load()`.
 */
export function serverTable(columns, fetchPage, { pageSize = 25, id = "", empty = "Nothing yet", sort = null, order = "asc" } = {}) {
  let offset = 0;
  let total = 0;
  const thead = h("thead");
  const tbody = h("tbody");
  const info = h("span", { className: "pager-info" });
  const failed = h("p", { className: "message error", hidden: true });
  const prev = h("button", { type: "button", className: "small", onclick: () => { offset -= pageSize; load(); } }, "‹ Prev");
  const next = h("button", { type: "button", className: "small", onclick: () => { offset += pageSize; load(); } }, "Next ›");
  const el = h("div", { className: "table-wrap", id },
    h("div", { className: "scroll" }, h("table", {}, thead, tbody)),
    h("div", { className: "pager" }, prev, info, next), failed);

  const header = () => {
    thead.replaceChildren(h("tr", {}, columns.map((c) => h("th", {
      className: `${c.num ? "num" : ""}${c.sort ? " sortable" : ""}`, scope: "col", dataset: { key: c.key },
      ariaSort: c.sort && sort === c.sort ? (order === "asc" ? "ascending" : "descending") : "none",
      onclick: c.sort ? () => { order = sort === c.sort && order === "asc" ? "desc" : "asc"; sort = c.sort; offset = 0; load(); } : undefined,
    }, c.label, c.sort && sort === c.sort ? (order === "asc" ? " ▲" : " ▼") : ""))));
  };
  async function load() {
    offset = Math.max(0, offset);
    let page;
    try {
      page = await fetchPage({ sort: sort ?? undefined, order, limit: pageSize, offset });
      failed.hidden = true;
    } catch (e) {
      failed.hidden = false;
      failed.textContent = `${e.code}: ${e.message}`;
      return;
    }
    total = page.total;
    header();
    tbody.replaceChildren(...(page.items.length ? page.items.map((r) => h("tr", {}, columns.map((c) => {
      const v = r[c.key];
      const content = c.format ? c.format(v, r) : (v === null || v === undefined ? "–" : String(v));
      return h("td", { className: c.num ? "num" : "" }, content);
    }))) : [h("tr", {}, h("td", { colSpan: columns.length, className: "empty" }, empty))]));
    info.textContent = `${total ? offset + 1 : 0}–${Math.min(total, offset + page.items.length)} of ${total}`;
    prev.disabled = offset === 0;
    next.disabled = offset + pageSize >= total;
    el.dataset.loaded = `${sort}:${order}:${offset}`;
  }
  header();
  return { el, load };
}
