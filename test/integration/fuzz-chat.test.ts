// Property-based fuzzing of POST /v1/chat/completions on a real node (HTTP, master, worker, runner
// child process with the FakeEngine test double): whatever the body — random JSON, near-valid
// requests with wrong types and ranges, raw bytes, deep nesting, other content types — the answer
// is never a 5xx, never a hang, and afterwards no task is left and the runner is Ready.
// Replay a failure with FUZZ_SEED=<printed seed>; FUZZ_RUNS changes the count.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { FAKE_MODEL_ID, isIdle, startTestNode } from "../support/test-node.ts";
import { isModelOutputFailure, MODEL_OUTPUT_FAILURE_CODES } from "../support/documented-failures.ts";

const RUN_COUNT = Number(process.env["FUZZ_RUNS"] ?? 200);
/** A request (headers and whole body) must be answered within this; FakeEngine answers in milliseconds. */
const REQUEST_TIMEOUT_MS = 10_000;

const anyScalar = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double(),
  fc.constantFrom(-1, 0, 1, 2, 1e9, -1e9, Number.MAX_SAFE_INTEGER, 0.5),
  fc.string({ maxLength: 20 }),
);
const anyValue = fc.oneof(
  { weight: 4, arbitrary: anyScalar },
  { weight: 1, arbitrary: fc.array(anyScalar, { maxLength: 3 }) },
  { weight: 1, arbitrary: fc.dictionary(fc.string({ maxLength: 8 }), anyScalar, { maxKeys: 3 }) },
);
const maybe = <T>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof({ weight: 3, arbitrary: valid }, { weight: 1, arbitrary: anyValue });

const textPart = fc.record({ type: fc.constantFrom("text", "image_url", "input_audio"), text: maybe(fc.string({ maxLength: 40 })) }, { requiredKeys: ["type"] });
const message = fc.record(
  {
    role: maybe(fc.constantFrom("system", "developer", "user", "assistant", "tool", "wizard")),
    content: maybe(fc.oneof(fc.string({ maxLength: 200 }), fc.array(textPart, { maxLength: 3 }), fc.constant(null))),
    name: maybe(fc.string({ maxLength: 10 })),
    tool_call_id: maybe(fc.string({ maxLength: 10 })),
    tool_calls: maybe(fc.array(fc.record({ id: fc.string({ maxLength: 8 }), type: fc.constant("function"), function: fc.record({ name: fc.string({ maxLength: 8 }), arguments: fc.string({ maxLength: 20 }) }) }), { maxLength: 2 })),
  },
  { requiredKeys: [] },
);
const tool = fc.record({
  type: maybe(fc.constant("function")),
  function: maybe(fc.record({ name: maybe(fc.stringMatching(/^[a-z_]{1,10}$/)), description: maybe(fc.string({ maxLength: 20 })), parameters: maybe(fc.constant({ type: "object", properties: {} })) }, { requiredKeys: [] })),
});

/** Mostly near-valid requests, so the fuzz reaches past the schema into placement, the queue and the runner. */
const chatRequest = fc.record(
  {
    model: fc.oneof({ weight: 6, arbitrary: fc.constant(FAKE_MODEL_ID) }, { weight: 1, arbitrary: anyValue }, { weight: 1, arbitrary: fc.string({ maxLength: 300 }) }),
    messages: fc.oneof({ weight: 6, arbitrary: fc.array(message, { minLength: 1, maxLength: 4 }) }, { weight: 1, arbitrary: anyValue }, { weight: 1, arbitrary: fc.constant([]) }),
    stream: maybe(fc.boolean()),
    stream_options: maybe(fc.record({ include_usage: maybe(fc.boolean()) })),
    max_tokens: maybe(fc.integer({ min: -3, max: 6 })),
    max_completion_tokens: maybe(fc.integer({ min: -3, max: 6 })),
    temperature: maybe(fc.double({ min: -1, max: 3, noNaN: true })),
    top_p: maybe(fc.double({ min: -0.5, max: 1.5, noNaN: true })),
    top_k: maybe(fc.integer({ min: -2, max: 100 })),
    min_p: maybe(fc.double({ min: -0.5, max: 1.5, noNaN: true })),
    seed: maybe(fc.integer()),
    stop: maybe(fc.oneof(fc.string({ maxLength: 5 }), fc.array(fc.string({ maxLength: 5 }), { maxLength: 20 }))),
    presence_penalty: maybe(fc.double({ min: -3, max: 3, noNaN: true })),
    frequency_penalty: maybe(fc.double({ min: -3, max: 3, noNaN: true })),
    repetition_penalty: maybe(fc.double({ min: -1, max: 11, noNaN: true })),
    logprobs: maybe(fc.boolean()),
    top_logprobs: maybe(fc.integer({ min: -1, max: 25 })),
    n: maybe(fc.integer({ min: 0, max: 3 })),
    tools: maybe(fc.array(tool, { maxLength: 2 })),
    tool_choice: maybe(fc.oneof(fc.constantFrom("none", "auto", "required"), fc.record({ type: fc.constant("function"), function: fc.record({ name: fc.string({ maxLength: 8 }) }) }))),
    response_format: maybe(fc.record({ type: fc.constantFrom("text", "json_object", "json_schema", "xml") })),
  },
  { requiredKeys: [] },
);

/** Requests the API must accept: every field in range. */
const validRequest = fc.record(
  {
    model: fc.constant(FAKE_MODEL_ID),
    messages: fc.array(fc.record({ role: fc.constantFrom("system", "user", "assistant"), content: fc.string({ maxLength: 200 }) }), { minLength: 1, maxLength: 3 }),
    stream: fc.boolean(),
    max_tokens: fc.integer({ min: 1, max: 6 }),
    temperature: fc.double({ min: 0, max: 2, noNaN: true }),
    top_p: fc.double({ min: 0.01, max: 1, noNaN: true }),
    top_k: fc.integer({ min: -1, max: 50 }),
    seed: fc.integer(),
    stop: fc.array(fc.string({ minLength: 1, maxLength: 4 }), { maxLength: 3 }),
    logprobs: fc.boolean(),
  },
  { requiredKeys: ["model", "messages"] },
);

const FIELD_NAMES = ["model", "messages", "stream", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "logprobs", "n", "tools", "tool_choice"] as const;

/** A valid request with one field replaced by anything. */
const mutatedRequest = fc
  .tuple(validRequest, fc.constantFrom(...FIELD_NAMES), anyValue)
  .map(([request, field, value]) => ({ ...request, [field]: value }));

interface FuzzCase {
  readonly contentType: string | null;
  readonly body: Uint8Array;
  readonly label: string;
}

const encode = (text: string): Uint8Array => new TextEncoder().encode(text);

const fuzzCase: fc.Arbitrary<FuzzCase> = fc.oneof(
  { weight: 5, arbitrary: validRequest.map((r) => ({ contentType: "application/json", body: encode(JSON.stringify(r)), label: "valid request" })) },
  { weight: 5, arbitrary: mutatedRequest.map((r) => ({ contentType: "application/json", body: encode(JSON.stringify(r)), label: "one field mutated" })) },
  { weight: 5, arbitrary: chatRequest.map((r) => ({ contentType: "application/json", body: encode(JSON.stringify(r)), label: "noisy request" })) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => ({ contentType: "application/json", body: encode(JSON.stringify(v) ?? "null"), label: "random JSON" })) },
  {
    weight: 2,
    arbitrary: fc.tuple(chatRequest, fc.nat()).map(([r, cut]) => {
      const text = JSON.stringify(r);
      return { contentType: "application/json", body: encode(text.slice(0, cut % Math.max(1, text.length))), label: "truncated JSON" };
    }),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => ({ contentType: "application/json", body: b, label: "random bytes" })) },
  { weight: 1, arbitrary: fc.integer({ min: 50, max: 5000 }).map((n) => ({ contentType: "application/json", body: encode(`{"model":"${FAKE_MODEL_ID}","messages":${"[".repeat(n)}`), label: "deep nesting" })) },
  {
    weight: 1,
    arbitrary: fc.tuple(chatRequest, fc.constantFrom(null, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=latin1", "application/vnd.api+json")).map(([r, contentType]) => ({
      contentType,
      body: encode(JSON.stringify(r)),
      label: "other content type",
    })),
  },
);

/** Reads the whole body; an SSE error event must not be a server error either. */
async function checkResponse(response: Response, label: string): Promise<void> {
  const text = await response.text();
  assert.ok(response.status < 500 || isModelOutputFailure(response.status, text), `${label}: got ${response.status}: ${text.slice(0, 500)}`);
  if (response.status !== 200) {
    const error = (JSON.parse(text) as { error?: { message?: unknown; type?: unknown } }).error;
    assert.equal(typeof error?.message, "string", `${label}: ${response.status} in the API's error shape: ${text.slice(0, 300)}`);
    return;
  }
  for (const line of text.split("\n")) {
    if (!line.startsWith("data: {")) continue;
    const event = JSON.parse(line.slice(6)) as { error?: { type?: string; code?: string } };
    if (event.error === undefined || MODEL_OUTPUT_FAILURE_CODES.includes(event.error.code ?? "")) continue;
    assert.notEqual(event.error.type, "server_error", `${label}: streamed a server error: ${line.slice(0, 300)}`);
  }
}

test(`fuzz POST /v1/chat/completions: ${RUN_COUNT} bodies, never a 5xx or a hang, nothing left behind`, async (t) => {
  const seed = Number(process.env["FUZZ_SEED"] ?? Math.floor(Math.random() * 2 ** 31));
  t.diagnostic(`fuzz seed ${seed} (replay with FUZZ_SEED=${seed})`);
  process.stderr.write(`fuzz-chat seed ${seed}\n`);
  // Short answers, so near-valid requests without max_tokens finish at once.
  const node = await startTestNode({ engineOptions: { maxReplyTokens: 6, contextSize: 512 } });
  const counts = new Map<number, number>();
  try {
    await fc.assert(
      fc.asyncProperty(fuzzCase, async (c) => {
        const headers: Record<string, string> = c.contentType === null ? {} : { "content-type": c.contentType };
        const response = await fetch(`${node.url}/v1/chat/completions`, {
          method: "POST",
          headers,
          body: c.body,
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        counts.set(response.status, (counts.get(response.status) ?? 0) + 1);
        await checkResponse(response, c.label);
      }),
      { numRuns: RUN_COUNT, seed, endOnFailure: true },
    );
    await node.waitFor(isIdle, "no task left and the runner Ready after the fuzz", 15_000);
    assert.equal(node.node.api.liveTaskCount(), 0);
    t.diagnostic(`statuses: ${JSON.stringify(Object.fromEntries([...counts].sort((a, b) => a[0] - b[0])))}`);
    assert.ok((counts.get(200) ?? 0) > 0, "some requests got through to the runner");
    assert.ok((counts.get(400) ?? 0) > 0, "some requests were refused");
  } finally {
    await node.stop();
  }
});
