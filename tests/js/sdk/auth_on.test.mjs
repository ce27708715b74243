// cracktrader-js against a live server with authentication on: logins, API keys, and credentials on streams.
import test from "node:test";
import assert from "node:assert/strict";
import { WebSocket as NodeWebSocket } from "ws";

import CrackTrader, { AuthenticationError, PermissionDeniedError } from "cracktrader-js";
import { BACKTEST, RECV_TIMEOUT_MS, RUN_TIMEOUT_MS } from "./support.mjs";

const USERNAME = process.env.CT_USERNAME;
const PASSWORD = process.env.CT_PASSWORD;
const api = new CrackTrader();
let key;

test("without credentials a call is refused as AuthenticationError, health stays public", async () => {
  const refused = await api.getStatus().catch((e) => e);
  assert.ok(refused instanceof AuthenticationError);
  assert.equal(refused.status, 401);
  assert.equal(refused.code, "NOT_AUTHENTICATED");
  assert.equal((await api.getHealth()).status, "healthy");
  const wrong = await api.login(USERNAME, "not the password").catch((e) => e);
  assert.ok(wrong instanceof AuthenticationError);
  assert.equal(api.token, null);
});

test("login() keeps the access token for later calls; getMe() says who", async () => {
  const tokens = await api.login(USERNAME, PASSWORD);
  assert.equal(tokens.token_type, "bearer");
  assert.equal(api.token, tokens.access_token);
  const me = await api.getMe();
  assert.equal(me.username, USERNAME);
  assert.equal(me.auth, "token");
  assert.equal(me.auth_mode, "on");
  const refreshed = await api.refresh(tokens.refresh_token);
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
  assert.equal(api.token, refreshed.access_token);
  assert.equal((await api.getMe()).username, USERNAME);
});

test("an API key made by a login runs a backtest with the X-API-Key header", async () => {
  key = await api.createApiKey("js sdk", { scopes: ["read", "trade"] });
  assert.match(key.key, /^ct_/);
  assert.deepEqual(key.scopes, ["read", "trade"]);
  const listed = await api.listApiKeys();
  assert.ok(listed.items.some((k) => k.id === key.id && !("key" in k)));

  const byKey = new CrackTrader({ apiKey: key.key });
  assert.equal((await byKey.getMe()).auth, "api_key");
  const results = await byKey.backtest(BACKTEST, { timeout: RUN_TIMEOUT_MS, pollInterval: 50, limit: 1 });
  assert.equal(results.status, "completed");
  const record = await api.getRun(results.run_id); // the user's run, seen through the token too
  assert.equal(record.final_value, results.final_value);
  const keysManageNoKeys = await byKey.createApiKey("more").catch((e) => e);
  assert.ok(keysManageNoKeys instanceof PermissionDeniedError);
  assert.equal(keysManageNoKeys.status, 403);
});

test("streams authenticate with handshake headers in Node and with a first message through the browser's API", async () => {
  const byKey = new CrackTrader({ apiKey: key.key });
  const events = await byKey.streamStatus();
  const snapshot = await events.recv({ timeout: RECV_TIMEOUT_MS });
  assert.equal(snapshot.type, "snapshot");
  assert.equal(snapshot.payload.status, "completed");
  events.close();

  const browserLike = new CrackTrader({ token: api.token, WebSocket: NodeWebSocket });
  const messages = await browserLike.subscribe(["status"]);
  const first = await messages.recv({ timeout: RECV_TIMEOUT_MS });
  assert.equal(first.channel, "status");
  assert.equal(first.data.status, "completed");
  messages.close();

  const wrongToken = new CrackTrader({ token: "not-a-token", WebSocket: NodeWebSocket });
  const unauthenticated = await wrongToken.streamStatus();
  await assert.rejects(unauthenticated.recv({ timeout: RECV_TIMEOUT_MS }), AuthenticationError); // closed with 1008

  const badKey = new CrackTrader({ apiKey: "ct_not_a_key" });
  const refused = await badKey.streamStatus().catch((e) => e);
  assert.ok(refused instanceof PermissionDeniedError, String(refused)); // refused before the upgrade: HTTP 403
});

test("a revoked key stops working at once; logout ends the login", async () => {
  await api.revokeApiKey(key.id);
  const byKey = new CrackTrader({ apiKey: key.key });
  await assert.rejects(byKey.getStatus(), AuthenticationError);
  const out = await api.logout();
  assert.ok(out.revoked >= 1);
  assert.equal(api.token, null);
});
