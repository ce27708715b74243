// Loads the dashboard's origin in headless Chromium and uses cracktrader-js there, as a page would: imported
// from /ui/sdk/index.js under the page's CSP, with the browser's own fetch and WebSocket.
// Usage: node browser.mjs <chromium> <base url>; prints one JSON line of what the page saw.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WebSocket } from "ws";

const [chromium, base] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "cracktrader-chromium-"));
const browser = spawn(chromium, [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
  "--remote-debugging-port=0", `--user-data-dir=${profile}`, "about:blank",
], { stdio: "ignore" });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function devtoolsPort() {
  const file = join(profile, "DevToolsActivePort");
  for (let i = 0; i < 600; i += 1) { // a safety net of 60 s: Chromium writes it as soon as it listens
    if (existsSync(file)) {
      const [port] = readFileSync(file, "utf8").split("\n");
      if (port) return Number(port);
    }
    await sleep(100);
  }
  throw new Error("Chromium did not open its DevTools port");
}

function cdp(url) {
  const ws = new WebSocket(url);
  let id = 0;
  const pending = new Map();
  const events = [];
  ws.on("message", (raw) => {
    const msg = JSON.parse(raw.toString());
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(msg.error.message)); else resolve(msg.result);
    } else if (msg.method) {
      events.push(msg);
    }
  });
  const opened = new Promise((resolve, reject) => { ws.on("open", resolve); ws.on("error", reject); });
  const send = (method, params = {}) => new Promise((resolve, reject) => {
    id += 1;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ id, method, params }));
  });
  return { opened, send, events, close: () => ws.close() };
}

const PAGE_SCRIPT = `(async () => {
  const sdk = await import("/ui/sdk/index.js");
  const api = new sdk.default();
  const status = await api.getStatus();
  const missing = await api.getRun("no-such-run").catch((e) => e);
  const events = await api.streamStatus();
  const snapshot = await events.recv({ timeout: 10000 });
  events.close();
  const messages = await api.subscribe(["status"]);
  const first = await messages.recv({ timeout: 10000 });
  messages.close();
  return JSON.stringify({
    baseUrl: api.baseUrl, status: status.status, error: [missing.name, missing.status, missing.code],
    snapshot: snapshot.type, channel: first.channel, nodeGlobals: typeof process !== "undefined",
  });
})()`;

let client;
try {
  const port = await devtoolsPort();
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const page = targets.find((t) => t.type === "page");
  client = cdp(page.webSocketDebuggerUrl);
  await client.opened;
  await client.send("Runtime.enable");
  await client.send("Log.enable");
  await client.send("Page.enable");
  await client.send("Page.navigate", { url: `${base}/ui` });
  for (let i = 0; i < 600 && !client.events.some((e) => e.method === "Page.loadEventFired"); i += 1) await sleep(100);
  const result = await client.send("Runtime.evaluate", { expression: PAGE_SCRIPT, awaitPromise: true, returnByValue: true });
  if (result.exceptionDetails) throw new Error(`the page threw: ${JSON.stringify(result.exceptionDetails)}`);
  const seen = JSON.parse(result.result.value);
  // CSP violations and console errors of the SDK's own doing would show here.
  seen.cspViolations = client.events.filter((e) => JSON.stringify(e).includes("Content Security Policy")).length;
  process.stdout.write(`${JSON.stringify(seen)}\n`);
} finally {
  client?.close();
  browser.kill();
  await new Promise((r) => browser.once("exit", r));
  // Chromium's helper processes may still write into the profile after the browser exits (ENOTEMPTY): retry, and
  // never fail the test over a temporary folder.
  try {
    rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  } catch (error) {
    process.stderr.write(`could not remove ${profile}: ${error.message}\n`);
  }
}
