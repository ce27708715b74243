// Accounts: sign in and out, token refresh, API keys, stored exchange credentials (whose secrets are never shown).
import * as api from "../api.js";
import { h, say, confirmAction } from "../dom.js";
import * as fmt from "../format.js";

function signInForm(view, message) {
  const user = h("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const pass = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { id: "login-form", className: "card", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api.login(user.value, pass.value);
      pass.value = "";
      const next = sessionStorage.getItem("cracktrader.next");
      sessionStorage.removeItem("cracktrader.next");
      if (next && next !== "#/account") { location.hash = next; return; }
      view.replaceChildren();
      await renderAccount(view);
    } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
  } },
  h("h2", {}, "Sign in"),
  h("div", { className: "field" }, h("label", { htmlFor: "username" }, "Username"), user),
  h("div", { className: "field" }, h("label", { htmlFor: "password" }, "Password"), pass),
  h("div", { className: "buttons" }, h("button", { type: "submit", className: "primary", id: "sign-in" }, "Sign in")), message);
  view.append(h("h1", {}, "Account"), form);
}

function apiKeysCard(message) {
  const list = h("tbody");
  const created = h("p", { id: "new-key", className: "secret-once" });
  const name = h("input", { id: "key-name", name: "key-name", required: true, placeholder: "laptop" });
  const scope = h("select", { id: "key-scope" }, ["read", "trade", "live"].map((s) => h("option", { value: s }, s)));
  const load = async () => {
    const keys = await api.listApiKeys();
    list.replaceChildren(...(keys.items.length ? keys.items.map((k) => h("tr", { dataset: { key: k.name } },
      h("td", {}, k.name), h("td", {}, h("code", {}, `${k.prefix}…`)), h("td", {}, k.scopes.join(", ")),
      h("td", {}, fmt.time(k.created_at)), h("td", {}, fmt.time(k.expires_at)),
      h("td", {}, k.revoked_at ? h("span", { className: "pill failed" }, `revoked ${fmt.time(k.revoked_at)}`)
        : h("button", { type: "button", className: "small danger", onclick: async () => {
        if (!(await confirmAction(`Revoke API key ${k.name}?`))) { return; }
        try { await api.revokeApiKey(k.id); await load(); } catch (e) { say(message, e.message, "error"); }
      } }, "Revoke"))))
      : [h("tr", {}, h("td", { colSpan: 6, className: "empty" }, "No API keys"))]));
  };
  const form = h("form", { className: "grid", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const scopes = scope.value === "read" ? ["read"] : scope.value === "trade" ? ["read", "trade"] : ["read", "trade", "live"];
      const k = await api.createApiKey({ name: name.value, scopes });
      created.replaceChildren("New key (shown once, copy it now): ", h("code", {}, k.key));
      name.value = "";
      await load();
    } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
  } }, h("div", { className: "field" }, h("label", { htmlFor: "key-name" }, "Name"), name),
  h("div", { className: "field" }, h("label", { htmlFor: "key-scope" }, "Scopes up to"), scope),
  h("div", { className: "buttons" }, h("button", { type: "submit" }, "Create key")));
  const card = h("section", { className: "card", id: "apikeys" }, h("h2", {}, "API keys"), form, created,
    h("div", { className: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Prefix", "Scopes", "Created", "Expires", ""]
      .map((t) => h("th", {}, t)))), list)));
  return { card, load };
}

function credentialsCard(message, exchanges) {
  const list = h("tbody");
  const name = h("input", { id: "cred-name", required: true, placeholder: "binance-testnet" });
  const exchange = h("select", { id: "cred-exchange" }, exchanges.filter((x) => x.id !== "synthetic")
    .map((x) => h("option", { value: x.id, selected: x.id === "binance" }, x.name)));
  const secretFields = ["apiKey", "secret", "password"].map((f) => h("input", { id: `cred-${f}`, name: f, type: "password",
    autocomplete: "off", placeholder: f === "password" ? "only where the exchange needs one" : "" }));
  const secrets = () => Object.fromEntries(secretFields.filter((i) => i.value).map((i) => [i.name, i.value]));
  const clear = () => { for (const i of secretFields) { i.value = ""; } };
  const load = async () => {
    const r = await api.listCredentials();
    list.replaceChildren(...(r.credentials.length ? r.credentials.map((c) => h("tr", { dataset: { name: c.name } },
      h("td", {}, c.name), h("td", {}, c.exchange), h("td", {}, fmt.time(c.created_at)), h("td", {}, fmt.time(c.last_used_at)),
      h("td", {}, fmt.time(c.rotated_at)),
      h("td", { className: "actions" },
        h("button", { type: "button", className: "small", onclick: async () => {
          try { const t = await api.testCredentials(c.name, true); say(message, `${c.name}: ${t.ok ? "OK" : t.code} ${t.message || ""}`, t.ok ? "ok" : "error"); await load(); }
          catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
        } }, "Test"),
        h("button", { type: "button", className: "small", onclick: async () => {
          if (!Object.keys(secrets()).length) { say(message, "Type the new secrets in the form first, then Rotate", "error"); return; }
          if (!(await confirmAction(`Replace the secrets of ${c.name}?`))) { return; }
          try { await api.rotateCredentials(c.name, secrets()); clear(); say(message, `${c.name} rotated`, "ok"); await load(); }
          catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
        } }, "Rotate"),
        h("button", { type: "button", className: "small danger", onclick: async () => {
          if (!(await confirmAction(`Delete the credentials ${c.name}?`))) { return; }
          try { await api.deleteCredentials(c.name); await load(); } catch (e) { say(message, e.message, "error"); }
        } }, "Delete"))))
      : [h("tr", {}, h("td", { colSpan: 6, className: "empty" }, "No stored credentials"))]));
  };
  const form = h("form", { className: "grid", id: "cred-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api.createCredentials({ name: name.value, exchange: exchange.value, ...secrets() });
      clear();
      say(message, `${name.value} stored`, "ok");
      name.value = "";
      await load();
    } catch (e) { say(message, `${e.code}: ${e.message}`, "error"); }
  } },
  h("div", { className: "field" }, h("label", { htmlFor: "cred-name" }, "Name"), name),
  h("div", { className: "field" }, h("label", { htmlFor: "cred-exchange" }, "Exchange"), exchange),
  ...secretFields.map((i) => h("div", { className: "field" }, h("label", { htmlFor: i.id }, i.name), i)),
  h("div", { className: "buttons" }, h("button", { type: "submit" }, "Add credentials")));
  const card = h("section", { className: "card", id: "credentials" }, h("h2", {}, "Stored exchange credentials"),
    h("p", { className: "help" }, "Sealed on the server; never shown again. Rotate takes the secrets typed in the form."),
    form, h("div", { className: "scroll" }, h("table", {}, h("thead", {}, h("tr", {},
      ["Name", "Exchange", "Created", "Last used", "Rotated", ""].map((t) => h("th", {}, t)))), list)));
  return { card, load };
}

export async function renderAccount(view) {
  const message = h("p", { className: "message", role: "status", id: "account-message" });
  let who;
  try { who = await api.me(); } catch (e) {
    if (e.status === 401) { signInForm(view, message); return; }
    throw e;
  }
  const exchanges = (await api.listExchanges()).items;
  const authOn = who.auth_mode !== "off";
  const creds = credentialsCard(message, exchanges);
  const parts = [h("h1", {}, "Account"), h("section", { className: "card", id: "whoami" },
    h("p", {}, authOn ? "Signed in as " : "Authentication is off: you act as ", h("strong", { id: "username-shown" }, who.username),
      ` (${who.role}; ${who.scopes.join(", ")})`),
    authOn ? h("div", { className: "buttons" },
      h("button", { type: "button", id: "refresh", onclick: async () => {
        say(message, (await api.refreshTokens()) ? "Token refreshed" : "Could not refresh: sign in again", "ok");
      } }, "Refresh token"),
      h("button", { type: "button", id: "sign-out", onclick: async () => {
        await api.logout().catch(() => {});
        view.replaceChildren();
        signInForm(view, h("p", { className: "message ok", role: "status" }, "Signed out"));
      } }, "Sign out")) : "",
    message)];
  let keys = null;
  if (authOn && who.auth !== "api_key") { keys = apiKeysCard(message); parts.push(keys.card); }
  parts.push(creds.card);
  view.append(...parts);
  await Promise.all([creds.load(), keys ? keys.load() : null]);
}
