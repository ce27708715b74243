// cracktrader-js without a server: responses that are not the envelope, Retry-After, timeouts, options.
import test from "node:test";
import assert from "node:assert/strict";

import CrackTrader, {
  CrackTraderError,
  InvalidResponseError,
  RateLimitError,
  ServerError,
  TimeoutError,
  ValidationError,
  errorClass,
  errorFromResponse,
} from "cracktrader-js";

/** A fetch that answers every request with `status`, `body` and `headers`, recording what it was sent. */
function answering(status, body, headers = {}) {
  const sent = [];
  const impl = async (url, init) => {
    sent.push({ url, init });
    return new Response(body, { status, headers });
  };
  return { impl, sent };
}

test("an injected fetch receives the credentials and the JSON body", async () => {
  const { impl, sent } = answering(200, JSON.stringify({ run_id: "r1", status: "starting", message: "" }), {
    "content-type": "application/json",
  });
  const api = new CrackTrader({ baseUrl: "http://trader.test:8000/", apiKey: "k", token: "t", fetch: impl });
  const started = await api.startBacktest({ strategy_name: "S", symbols: "BTC/USDT", start_date: new Date(Date.UTC(2024, 0, 1)), timeframe: undefined });
  assert.equal(started.run_id, "r1");
  assert.equal(sent[0].url, "http://trader.test:8000/api/v1/run/backtest");
  assert.equal(sent[0].init.headers["X-API-Key"], "k");
  assert.equal(sent[0].init.headers.Authorization, "Bearer t");
  assert.deepEqual(JSON.parse(sent[0].init.body), { strategy_name: "S", symbols: ["BTC/USDT"], start_date: "2024-01-01T00:00:00.000Z" });
  await api.getRunResults("a/b", { maxPoints: 10, limit: 5, offset: 0 });
  assert.equal(sent[1].url, "http://trader.test:8000/api/v1/runs/a%2Fb/results?max_points=10&limit=5");
});

test("a 429 is a RateLimitError with Retry-After in seconds", async () => {
  const envelope = { error: { code: "RATE_LIMITED", message: "slow down", details: { limit_per_minute: 100 } }, status_code: 429, path: "/api/v1/status", detail: "slow down" };
  const { impl } = answering(429, JSON.stringify(envelope), { "retry-after": "7", "x-request-id": "abc" });
  const err = await new CrackTrader({ fetch: impl }).getStatus().catch((e) => e);
  assert.ok(err instanceof RateLimitError && err instanceof CrackTraderError);
  assert.equal(err.retryAfter, 7);
  assert.equal(err.requestId, "abc");
  assert.equal(err.path, "/api/v1/status");
  assert.deepEqual(err.details, { limit_per_minute: 100 });
});

test("a proxy's HTML error page still throws the class of its status", async () => {
  const { impl } = answering(502, "<html><body>Bad gateway</body></html>", { "content-type": "text/html" });
  const err = await new CrackTrader({ baseUrl: "http://x.test", fetch: impl }).getMeta().catch((e) => e);
  assert.ok(err instanceof ServerError);
  assert.equal(err.code, "BAD_GATEWAY");
  assert.equal(err.status, 502);
  assert.match(err.message, /^HTTP 502 from GET http:\/\/x\.test\/api\/v1\/meta: <html>/);
});

test("a 2xx that is not JSON is an InvalidResponseError; an unhealthy 503 report is returned", async () => {
  const html = answering(200, "<html></html>", { "content-type": "text/html" });
  await assert.rejects(new CrackTrader({ fetch: html.impl }).getStatus(), InvalidResponseError);
  const unhealthy = answering(503, JSON.stringify({ status: "unhealthy", checks: {}, metrics: {} }));
  assert.equal((await new CrackTrader({ fetch: unhealthy.impl }).getHealth()).status, "unhealthy");
});

test("a request that outlives the timeout is a TimeoutError", async () => {
  const hanging = (url, init) => new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(new Error("aborted"))));
  const err = await new CrackTrader({ fetch: hanging, timeout: 50 }).getStatus().catch((e) => e);
  assert.ok(err instanceof TimeoutError);
  assert.equal(err.code, "TIMEOUT");
});

test("codes pick the most specific class, statuses the general one", () => {
  assert.equal(errorClass(400, "INVALID_SYMBOL").name, "InvalidSymbolError");
  assert.equal(errorClass(409, "SOMETHING_NEW").name, "ConflictError");
  assert.equal(errorClass(418, null).name, "CrackTraderError");
  const err = errorFromResponse(422, {}, JSON.stringify({ detail: [{ loc: ["body"], msg: "bad" }] }));
  assert.ok(err instanceof ValidationError);
  assert.deepEqual(err.details.errors, [{ loc: ["body"], msg: "bad" }]);
});

test("a base URL that is not http(s) is refused at construction", () => {
  assert.throws(() => new CrackTrader({ baseUrl: "ftp://x" }), TypeError);
});
