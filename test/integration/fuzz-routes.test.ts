// Property-based fuzzing of every API route of a real node (OpenAI, Responses, Claude, Ollama,
// cluster endpoints): random methods, paths, ids, query strings and bodies. Never a 5xx, never a
// hang, and afterwards no task is left and every runner is Ready. Model downloads are left out (they
// would reach for the network). Replay with FUZZ_SEED=<printed seed>; FUZZ_RUNS changes the count.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { FAKE_MODEL_ID, isIdle, startTestNode } from "../support/test-node.ts";
import { isModelOutputFailure } from "../support/documented-failures.ts";

const RUN_COUNT = Number(process.env["FUZZ_RUNS"] ?? 150);
const REQUEST_TIMEOUT_MS = 10_000;

const scalar = fc.oneof(fc.constant(null), fc.boolean(), fc.integer({ min: -5, max: 10 }), fc.double(), fc.string({ maxLength: 12 }), fc.constant(FAKE_MODEL_ID));
const value = fc.oneof({ weight: 4, arbitrary: scalar }, { weight: 1, arbitrary: fc.array(scalar, { maxLength: 3 }) }, { weight: 1, arbitrary: fc.dictionary(fc.string({ maxLength: 6 }), scalar, { maxKeys: 3 }) });
const message = fc.record({ role: fc.oneof(fc.constantFrom("system", "user", "assistant", "tool"), value), content: fc.oneof(fc.string({ maxLength: 60 }), value) }, { requiredKeys: [] });

/** Keys the adapters read, with values that are right often enough to get past the schemas. */
const body = fc.record(
  {
    model: fc.oneof({ weight: 5, arbitrary: fc.constant(FAKE_MODEL_ID) }, { weight: 1, arbitrary: value }),
    messages: fc.oneof({ weight: 4, arbitrary: fc.array(message, { minLength: 1, maxLength: 3 }) }, { weight: 1, arbitrary: value }),
    prompt: fc.oneof(fc.string({ maxLength: 40 }), value),
    input: fc.oneof(fc.string({ maxLength: 40 }), fc.array(message, { maxLength: 2 }), value),
    system: fc.oneof(fc.string({ maxLength: 20 }), value),
    stream: fc.oneof({ weight: 3, arbitrary: fc.boolean() }, { weight: 1, arbitrary: value }),
    max_tokens: fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 1, max: 6 }) }, { weight: 1, arbitrary: value }),
    max_output_tokens: fc.oneof(fc.integer({ min: 1, max: 6 }), value),
    options: fc.oneof(fc.record({ num_predict: fc.oneof(fc.integer({ min: -2, max: 6 }), value), temperature: value }, { requiredKeys: [] }), value),
    format: fc.oneof(fc.constantFrom("json", ""), value),
    min_nodes: fc.oneof(fc.integer({ min: 0, max: 3 }), value),
    sharding: fc.oneof(fc.constant("pipeline"), value),
    name: value,
  },
  { requiredKeys: [] },
);

const id = fc.oneof(fc.constant("chatcmpl-00000000-0000-0000-0000-000000000000"), fc.string({ maxLength: 20 }), fc.constant("inst-x"), fc.constant("%2e%2e"), fc.constant("a".repeat(300)));

interface RouteCase {
  readonly method: string;
  readonly path: string;
  readonly body: string | null;
  readonly contentType: string | null;
}

/** A body each route accepts, so mutations of it reach past the schema into the generation path. */
function validBody(path: string, tokens: number, stream: boolean): Record<string, unknown> {
  const messages = [{ role: "user", content: "hi" }];
  if (path === "/v1/responses") return { model: FAKE_MODEL_ID, input: "hi", max_output_tokens: Math.max(tokens, 1), stream };
  if (path === "/v1/messages") return { model: FAKE_MODEL_ID, max_tokens: tokens, messages, stream };
  if (path.endsWith("/api/chat")) return { model: FAKE_MODEL_ID, messages, stream, options: { num_predict: tokens } };
  if (path.endsWith("/api/generate")) return { model: FAKE_MODEL_ID, prompt: "hi", stream, options: { num_predict: tokens } };
  if (path.endsWith("/api/show")) return { model: FAKE_MODEL_ID };
  if (path === "/instance") return { model: FAKE_MODEL_ID, min_nodes: 1 };
  return { model: FAKE_MODEL_ID, messages, max_tokens: tokens, stream };
}

const BODY_KEYS = ["model", "messages", "prompt", "input", "stream", "max_tokens", "max_output_tokens", "options", "min_nodes", "system"] as const;

const jsonPost = (path: string): fc.Arbitrary<RouteCase> => {
  const valid = fc.tuple(fc.integer({ min: 1, max: 6 }), fc.boolean()).map(([tokens, stream]) => validBody(path, tokens, stream));
  const mutated = fc.tuple(valid, fc.constantFrom(...BODY_KEYS), value).map(([b, key, v]) => ({ ...b, [key]: v }));
  const text = fc.oneof(
    { weight: 3, arbitrary: valid.map((b) => JSON.stringify(b)) },
    { weight: 3, arbitrary: mutated.map((b) => JSON.stringify(b)) },
    { weight: 2, arbitrary: body.map((b) => JSON.stringify(b)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
  );
  return fc
    .tuple(text, fc.constantFrom("application/json", "application/json", "application/json", "text/plain"))
    .map(([t, contentType]) => ({ method: "POST", path, body: t, contentType }));
};

const routeCase: fc.Arbitrary<RouteCase> = fc.oneof(
  jsonPost("/v1/chat/completions"),
  jsonPost("/v1/responses"),
  jsonPost("/v1/messages"),
  jsonPost("/api/chat"),
  jsonPost("/api/generate"),
  jsonPost("/api/show"),
  jsonPost("/ollama/api/chat"),
  jsonPost("/instance"),
  id.map((x) => ({ method: "POST", path: `/v1/cancel/${encodeURIComponent(x)}`, body: null, contentType: null })),
  id.map((x) => ({ method: "DELETE", path: `/instance/${encodeURIComponent(x)}`, body: null, contentType: null })),
  fc.oneof(fc.string({ maxLength: 12 }), fc.constant(FAKE_MODEL_ID)).map((m) => ({ method: "GET", path: `/instance/previews?model=${encodeURIComponent(m)}`, body: null, contentType: null })),
  fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom("0", "-1", "99999999999999999999", "1e3")).map((s) => ({ method: "GET", path: `/events?since=${encodeURIComponent(s)}`, body: null, contentType: null })),
  fc.constantFrom("/state", "/node_id", "/v1/models", "/models", "/api/tags", "/api/ps", "/api/version", "/", "/nope", "/v1/nope").map((path) => ({ method: "GET", path, body: null, contentType: null })),
  fc.tuple(fc.constantFrom("PUT", "PATCH", "DELETE", "OPTIONS"), fc.constantFrom("/v1/chat/completions", "/state", "/instance", "/v1/messages")).map(([method, path]) => ({ method, path, body: null, contentType: null })),
);

/**
 * The 5xx answers the README documents for valid requests: POST /instance asking for more nodes than
 * this one-node cluster has (503 no_instance, "no instance can serve"), and a model answer that fails
 * the requested format (see documented-failures.ts). Anything else at 5xx is a bug.
 */
function isDocumentedServerAnswer(c: RouteCase, status: number, text: string): boolean {
  if (c.method === "POST" && c.path === "/instance") return status === 503 && /"code":"no_instance"/.test(text);
  return isModelOutputFailure(status, text);
}

test(`fuzz every API route: ${RUN_COUNT} requests, never a 5xx or a hang, nothing left behind`, async (t) => {
  const seed = Number(process.env["FUZZ_SEED"] ?? Math.floor(Math.random() * 2 ** 31));
  t.diagnostic(`fuzz seed ${seed} (replay with FUZZ_SEED=${seed})`);
  process.stderr.write(`fuzz-routes seed ${seed}\n`);
  const node = await startTestNode({ engineOptions: { maxReplyTokens: 6, contextSize: 512 } });
  const counts = new Map<string, number>();
  try {
    await fc.assert(
      fc.asyncProperty(routeCase, async (c) => {
        const controller = new AbortController();
        const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
        try {
          const response = await fetch(`${node.url}${c.path}`, {
            method: c.method,
            headers: c.contentType === null ? {} : { "content-type": c.contentType },
            ...(c.body === null ? {} : { body: c.body }),
            signal: controller.signal,
          });
          const key = `${c.method} ${c.path.split("?")[0]!.replace(/\/(cancel|instance)\/.*/, "/$1/:id")} ${response.status}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
          // /events streams for ever: its status is the answer; generations end by themselves.
          const text = c.path.startsWith("/events") ? "" : await response.text();
          if (c.path.startsWith("/events")) await response.body?.cancel();
          assert.ok(response.status < 500 || isDocumentedServerAnswer(c, response.status, text), `${c.method} ${c.path} → ${response.status}: ${text.slice(0, 400)}`);
          assert.doesNotMatch(text, /"type":"server_error"|"type":"api_error"/, `${c.method} ${c.path}: streamed a server error: ${text.slice(0, 400)}`);
        } finally {
          clearTimeout(timer);
        }
      }),
      { numRuns: RUN_COUNT, seed, endOnFailure: true },
    );
    t.diagnostic(`answers: ${JSON.stringify(Object.fromEntries([...counts].sort()))}`);
    // POST /instance may have placed several instances: their runner processes start on a busy machine.
    await node.waitFor(isIdle, "no task left and every runner Ready after the fuzz", 45_000);
    assert.equal(node.node.api.liveTaskCount(), 0);
  } finally {
    await node.stop();
  }
});
