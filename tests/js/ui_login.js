// Loads the dashboard in jsdom against a live server with auth on, signs in, and prints what the page then shows.
// Usage: node ui_login.js <base url> <username> <password>
"use strict";
const { JSDOM } = require("jsdom");

const [base, username, password] = process.argv.slice(2);

function until(check, what, ms = 15000) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (check()) { resolve(); return; }
      if (Date.now() > deadline) { reject(new Error(`timed out waiting for ${what}`)); return; }
      setTimeout(tick, 25);
    };
    tick();
  });
}

(async () => {
  const dom = await JSDOM.fromURL(`${base}/ui`, {
    runScripts: "dangerously",
    resources: "usable",
    pretendToBeVisual: true,
    beforeParse(window) {
      // jsdom has no fetch; Node's resolves the page's relative URLs against the server.
      window.fetch = (url, opts) => fetch(new URL(url, base), opts);
    },
  });
  const doc = dom.window.document;
  const $ = (id) => doc.getElementById(id);
  await until(() => !$("login").hidden, "the sign-in form");
  const before = { options: $("strategy").options.length, message: $("message").textContent };
  $("username").value = username;
  $("password").value = password;
  $("login-form").dispatchEvent(new dom.window.Event("submit", { cancelable: true }));
  await until(() => $("strategy").options.length > 0, "the strategy list");
  await until(() => $("conn").textContent === "stream: live", "the status stream");
  await until(() => $("events").children.length > 0, "the stream's snapshot");
  const after = {
    options: $("strategy").options.length,
    login_hidden: $("login").hidden,
    message: $("message").textContent,
    first_event: $("events").lastChild.textContent,
    token_stored: dom.window.sessionStorage.getItem("cracktrader.token") !== null,
    password_cleared: $("password").value === "",
  };
  process.stdout.write(JSON.stringify({ before, after }) + "\n");
  dom.window.close();
  process.exit(0);
})().catch((e) => { process.stderr.write(`${e.stack}\n`); process.exit(1); });
