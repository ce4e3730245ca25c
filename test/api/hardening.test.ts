// Bad input and access control at the API's edge: encodings, nesting, content types, API keys and
// the cross-origin policy. Over app.request (no sockets); the slow-loris test needs a socket and
// lives in slow-client.test.ts.
import assert from "node:assert/strict";
import { test } from "node:test";
import { isPublicPath, keysMatch, presentedKey } from "../../src/api/middleware/auth.ts";
import { isOriginAllowed, normalizeOrigin } from "../../src/api/middleware/cors.ts";
import { JSON_NESTING_DEPTH_MAX, jsonNestingDepth } from "../../src/api/middleware/json-body.ts";
import { createHash } from "node:crypto";
import { chatBody, makeFixture, postJson } from "../support/api-fixture.ts";

const BASE = "http://skein.test";
const URL_CHAT = `${BASE}/v1/chat/completions`;
const KEY = "sk-test-0123456789";

async function errorOf(response: Response): Promise<{ message: string; type: string; code: string | null }> {
  const body = (await response.json()) as { error: { message: string; type: string; code: string | null } };
  return body.error;
}

function rawPost(body: Uint8Array | string, contentType = "application/json"): RequestInit {
  return { method: "POST", headers: { "content-type": contentType }, body };
}

test("jsonNestingDepth counts brackets outside strings only, and stops past the limit", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.equal(jsonNestingDepth(enc('{"a":[1,{"b":[]}]}')), 4);
  assert.equal(jsonNestingDepth(enc('{"a":"[[[[[[\\"[[["}')), 1);
  assert.equal(jsonNestingDepth(enc("1")), 0);
  assert.equal(jsonNestingDepth(enc("[".repeat(1000)), 10), 11);
});

test("invalid UTF-8, deep nesting, empty bodies and non-objects are 400s with a clear message", async (t) => {
  const { app, cluster } = makeFixture();
  const valid = new TextEncoder().encode(JSON.stringify(chatBody()));
  const badUtf8 = new Uint8Array([...valid.slice(0, 20), 0xc3, 0x28, ...valid.slice(20)]);
  const deep = `{"model":"tiny-model","messages":${"[".repeat(JSON_NESTING_DEPTH_MAX + 1)}${"]".repeat(JSON_NESTING_DEPTH_MAX + 1)}}`;
  const veryDeep = "[".repeat(1_000_000);
  const cases: { name: string; init: RequestInit; message: RegExp }[] = [
    { name: "invalid UTF-8", init: rawPost(badUtf8), message: /UTF-8/ },
    { name: "nesting one past the limit", init: rawPost(deep), message: /deeper than 64/ },
    { name: "a million open brackets", init: rawPost(veryDeep), message: /deeper than/ },
    { name: "empty body", init: rawPost(""), message: /empty/ },
    { name: "a JSON string", init: rawPost('"hello"'), message: /expected object|body/i },
    { name: "null", init: rawPost("null"), message: /expected object|body/i },
    { name: "form content type", init: rawPost("a=1", "application/x-www-form-urlencoded"), message: /application\/json/ },
    { name: "no content type", init: { method: "POST", body: JSON.stringify(chatBody()) }, message: /application\/json/ },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const response = await app.request(URL_CHAT, c.init);
      assert.equal(response.status, 400);
      const error = await errorOf(response);
      assert.equal(error.type, "invalid_request_error");
      assert.match(error.message, c.message);
    });
  }
  assert.equal(cluster.sent("TextGeneration").length, 0);
});

test("schema: huge or negative max_tokens, wrong types, bad roles, missing fields are 400s naming the parameter", async (t) => {
  const { app, cluster } = makeFixture();
  const cases: { name: string; body: unknown; param: string | null }[] = [
    { name: "negative max_tokens", body: chatBody({ max_tokens: -5 }), param: "max_tokens" },
    { name: "huge max_tokens", body: chatBody({ max_tokens: 1e12 }), param: "max_tokens" },
    { name: "fractional max_tokens", body: chatBody({ max_tokens: 1.5 }), param: "max_tokens" },
    { name: "model as number", body: chatBody({ model: 7 }), param: "model" },
    { name: "messages as object", body: chatBody({ messages: { role: "user" } }), param: "messages" },
    { name: "content as a number", body: chatBody({ messages: [{ role: "user", content: 5 }] }), param: "messages.0.content" },
    { name: "role missing", body: chatBody({ messages: [{ content: "hi" }] }), param: "messages.0.role" },
    { name: "role of another type", body: chatBody({ messages: [{ role: 1, content: "hi" }] }), param: "messages.0.role" },
    { name: "top_p zero", body: chatBody({ top_p: 0 }), param: "top_p" },
    { name: "seed not an integer", body: chatBody({ seed: "x" }), param: "seed" },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const response = await app.request(URL_CHAT, postJson(c.body));
      assert.equal(response.status, 400);
      const error = (await response.json()) as { error: { param: string | null } };
      assert.equal(error.error.param, c.param);
    });
  }
  assert.equal(cluster.sent("TextGeneration").length, 0);
});

test("max_tokens beyond the model's context is refused with the numbers", async () => {
  const { app, cluster } = makeFixture();
  const response = await app.request(URL_CHAT, postJson(chatBody({ max_tokens: 100_000 })));
  assert.equal(response.status, 400);
  const error = (await response.json()) as { error: { message: string; param: string | null } };
  assert.equal(error.error.param, "max_tokens");
  assert.match(error.error.message, /100000/);
  assert.match(error.error.message, /2048/);
  assert.equal(cluster.sent("TextGeneration").length, 0);
  // The node's --ctx-size, when set, is the context the API checks against.
  const small = makeFixture({ app: { contextSize: 100 } });
  const capped = await small.app.request(URL_CHAT, postJson(chatBody({ max_tokens: 500 })));
  assert.equal(capped.status, 400);
  assert.match(((await capped.json()) as { error: { message: string } }).error.message, /500.*context of 100 tokens/);
});

test("presentedKey: Bearer, x-api-key, then ?key=; keysMatch compares in constant time", () => {
  assert.equal(presentedKey("Bearer abc", undefined, undefined), "abc");
  assert.equal(presentedKey("bearer  abc ", undefined, undefined), "abc");
  assert.equal(presentedKey("Basic abc", "xyz", undefined), "xyz");
  assert.equal(presentedKey(undefined, undefined, "q"), "q");
  assert.equal(presentedKey(undefined, "", ""), null);
  const expected = createHash("sha256").update(KEY).digest();
  assert.equal(keysMatch(KEY, expected), true);
  assert.equal(keysMatch(`${KEY}x`, expected), false);
  assert.equal(keysMatch("", expected), false);
  assert.equal(keysMatch("x".repeat(100_000), expected), false);
});

test("isPublicPath: the dashboard's page and assets only, never an API route", () => {
  for (const path of ["/", "/index.html", "/assets/index-abc123.js", "/favicon.svg", "/app.css"]) assert.equal(isPublicPath("GET", path), true, path);
  for (const path of ["/state", "/events", "/v1/models", "/models", "/node_id", "/instance/previews", "/api/tags", "/assets/../state"]) {
    assert.equal(isPublicPath("GET", path), false, path);
  }
  assert.equal(isPublicPath("POST", "/"), false);
});

test("with an API key: 401 in the error shape without or with a wrong key; Bearer, x-api-key and ?key= pass", async () => {
  const { app, cluster } = makeFixture({ app: { apiKey: KEY } });
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["ok"]));
  for (const [path, init] of [
    ["/v1/models", {}],
    ["/state", {}],
    ["/events", {}],
    ["/v1/chat/completions", postJson(chatBody())],
    ["/v1/cancel/chatcmpl-x", { method: "POST" }],
    ["/instance", postJson({ model: "tiny-model" })],
  ] as const) {
    const missing = await app.request(`${BASE}${path}`, init);
    assert.equal(missing.status, 401, path);
    const error = await errorOf(missing);
    assert.equal(error.code, "invalid_api_key");
    assert.match(error.message, /API key/);
    assert.match(missing.headers.get("www-authenticate") ?? "", /Bearer/);
  }
  const wrong = await app.request(`${BASE}/state`, { headers: { authorization: "Bearer nope" } });
  assert.equal(wrong.status, 401);
  assert.match((await errorOf(wrong)).message, /invalid API key/);
  // A body is not even read before the key is checked: an oversized upload gets 401, not 413.
  const big = await app.request(URL_CHAT, { method: "POST", headers: { "content-type": "application/json", "content-length": String(64 << 20) }, body: "{}" });
  assert.equal(big.status, 401);

  assert.equal((await app.request(`${BASE}/state`, { headers: { authorization: `Bearer ${KEY}` } })).status, 200);
  assert.equal((await app.request(`${BASE}/state`, { headers: { "x-api-key": KEY } })).status, 200);
  assert.equal((await app.request(`${BASE}/state?key=${KEY}`)).status, 200);
  const chat = await app.request(URL_CHAT, postJson(chatBody(), { headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` } }));
  assert.equal(chat.status, 200);
  assert.equal(cluster.sent("TextGeneration").length, 1, "only the authorized request reached the cluster");
});

test("with an API key the dashboard's page stays public", async () => {
  const { app } = makeFixture({ app: { apiKey: KEY } });
  const page = await app.request(`${BASE}/`);
  assert.notEqual(page.status, 401);
});

test("without a key configured, nothing asks for one", async () => {
  const { app } = makeFixture();
  assert.equal((await app.request(`${BASE}/state`)).status, 200);
});

test("origins: same origin and listed ones pass, others do not", () => {
  assert.equal(normalizeOrigin("HTTP://Example.com:80"), "http://example.com");
  assert.equal(normalizeOrigin("file:///x"), null);
  assert.equal(normalizeOrigin("null"), null);
  const policy = { allowedOrigins: ["http://app.example:8080"] };
  assert.equal(isOriginAllowed("http://127.0.0.1:52415", "127.0.0.1:52415", policy), true);
  assert.equal(isOriginAllowed("http://app.example:8080", "127.0.0.1:52415", policy), true);
  assert.equal(isOriginAllowed("http://evil.example", "127.0.0.1:52415", policy), false);
  assert.equal(isOriginAllowed("http://127.0.0.1:52416", "127.0.0.1:52415", policy), false);
  assert.equal(isOriginAllowed("null", "127.0.0.1:52415", policy), false);
  assert.equal(isOriginAllowed("http://anything", "h:1", { allowedOrigins: ["*"] }), true);
});

test("CORS: a foreign Origin is refused (403, no CORS headers), preflight included; a configured one is allowed", async () => {
  const { app, cluster } = makeFixture({ app: { corsOrigins: ["http://app.example:8080"], apiKey: KEY } });
  const foreign = await app.request(URL_CHAT, postJson(chatBody(), { headers: { "content-type": "application/json", origin: "http://evil.example" } }));
  assert.equal(foreign.status, 403);
  assert.equal(foreign.headers.get("access-control-allow-origin"), null);
  assert.match((await errorOf(foreign)).message, /--cors-origin/);
  const foreignPreflight = await app.request(URL_CHAT, {
    method: "OPTIONS",
    headers: { origin: "http://evil.example", "access-control-request-method": "POST" },
  });
  assert.equal(foreignPreflight.status, 403);
  assert.equal(foreignPreflight.headers.get("access-control-allow-origin"), null);

  const preflight = await app.request(URL_CHAT, {
    method: "OPTIONS",
    headers: { origin: "http://app.example:8080", "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
  });
  assert.equal(preflight.status, 204, "a preflight needs no key");
  assert.equal(preflight.headers.get("access-control-allow-origin"), "http://app.example:8080");
  assert.match(preflight.headers.get("access-control-allow-methods") ?? "", /POST/);
  assert.match(preflight.headers.get("access-control-allow-headers") ?? "", /authorization/);

  const noKey = await app.request(`${BASE}/state`, { headers: { origin: "http://app.example:8080" } });
  assert.equal(noKey.status, 401);
  assert.equal(noKey.headers.get("access-control-allow-origin"), "http://app.example:8080", "the page can read why it was refused");
  const allowed = await app.request(`${BASE}/state`, { headers: { origin: "http://app.example:8080", "x-api-key": KEY } });
  assert.equal(allowed.status, 200);
  assert.equal(allowed.headers.get("access-control-allow-origin"), "http://app.example:8080");
  assert.equal(cluster.sent("TextGeneration").length, 0);
});

test("CORS: the node's own origin (Origin host = Host) passes without configuration", async () => {
  const { app } = makeFixture();
  const same = await app.request(`${BASE}/state`, { headers: { origin: "http://skein.test", host: "skein.test" } });
  assert.equal(same.status, 200);
  const other = await app.request(`${BASE}/state`, { headers: { origin: "http://other.test", host: "skein.test" } });
  assert.equal(other.status, 403);
});
