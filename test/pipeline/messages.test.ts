// The stage-to-stage message schemas: what parses, and that malformed bodies are refused with a
// reason (the receiver drops them) instead of throwing or being trusted.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeBody, encodeBody } from "../../src/net/frame.ts";
import {
  cutReason,
  hiddenFromBytes,
  hiddenToBytes,
  parseDownstreamMessage,
  parseUpstreamMessage,
  STAGE_REASON_CHARS_MAX,
} from "../../src/pipeline/messages.ts";
import { StageEndpointSchema, StageRoleSchema, describeStage } from "../../src/pipeline/stage-endpoint.ts";

const sampling = { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 1, logprobs: false, topLogprobs: 0 };

function activation(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const hidden = new Float32Array([1.5, -2, 3.25, 0, 7, 8]);
  return { type: "activation", taskId: "task-1", step: 0, tokenIds: [5, 6], hidden: hiddenToBytes(hidden), nTokens: 2, sample: true, ...overrides };
}

/** Through msgpack, as the link carries it. */
const wire = (body: unknown): unknown => decodeBody(encodeBody(body));

test("valid downstream messages parse after a msgpack round trip, hidden states bit for bit", () => {
  const open = parseDownstreamMessage(wire({ type: "open", taskId: "task-1", sampling, promptTokenCount: 12 }));
  assert.equal(open.ok, true);
  const parsed = parseDownstreamMessage(wire(activation()));
  assert.ok(parsed.ok);
  assert.equal(parsed.message.type, "activation");
  if (parsed.message.type !== "activation") return;
  assert.deepEqual([...hiddenFromBytes(parsed.message.hidden)], [1.5, -2, 3.25, 0, 7, 8]);
  assert.equal(parseDownstreamMessage(wire({ type: "end", taskId: "task-1", reason: "cancelled" })).ok, true);
});

test("hidden states from an unaligned buffer are copied, not misread", () => {
  const bytes = hiddenToBytes(new Float32Array([0.5, 0.25]));
  const unaligned = new Uint8Array(bytes.length + 1).subarray(1);
  unaligned.set(bytes);
  assert.deepEqual([...hiddenFromBytes(unaligned)], [0.5, 0.25]);
});

test("malformed downstream bodies are refused with a reason, never thrown", () => {
  const bad: unknown[] = [
    null,
    42,
    "activation",
    [],
    { type: "nope" },
    activation({ taskId: "bad id with spaces" }),
    activation({ tokenIds: [5] }), // fewer ids than nTokens
    activation({ hidden: new Uint8Array(7) }), // not whole float rows
    activation({ hidden: "not bytes" }),
    activation({ nTokens: 0, tokenIds: [] }),
    activation({ step: -1 }),
    activation({ tokenIds: [5, -6] }),
    activation({ sample: "yes" }),
    { type: "open", taskId: "task-1", sampling: { ...sampling, temperature: 9 }, promptTokenCount: 1 },
    { type: "open", taskId: "task-1", sampling, promptTokenCount: 0 },
    { type: "end", taskId: "task-1", reason: "whatever" },
  ];
  for (const body of bad) {
    const parsed = parseDownstreamMessage(body);
    assert.equal(parsed.ok, false, JSON.stringify(body));
    if (!parsed.ok) assert.ok(parsed.error.length > 0);
  }
});

test("upstream messages: tokens, acks and failures parse; malformed ones are refused", () => {
  assert.equal(parseUpstreamMessage(wire({ type: "token", taskId: "t", step: 3, tokenId: 9, logprob: -0.5, topLogprobs: [{ tokenId: 9, logprob: -0.5 }] })).ok, true);
  assert.equal(parseUpstreamMessage(wire({ type: "ack", taskId: "t", step: 0 })).ok, true);
  assert.equal(parseUpstreamMessage(wire({ type: "failed", taskId: "t", reason: "gone", inputError: false })).ok, true);
  const bad: unknown[] = [
    { type: "token", taskId: "t", step: 3, tokenId: 1.5, logprob: null, topLogprobs: [] },
    { type: "token", taskId: "t", step: 3, tokenId: 1, logprob: null, topLogprobs: Array.from({ length: 21 }, () => ({ tokenId: 1, logprob: 0 })) },
    { type: "failed", taskId: "t", reason: "x".repeat(STAGE_REASON_CHARS_MAX + 1), inputError: false },
    { type: "ack", taskId: "t" },
    undefined,
  ];
  for (const body of bad) assert.equal(parseUpstreamMessage(body).ok, false, JSON.stringify(body));
  assert.equal(cutReason("x".repeat(STAGE_REASON_CHARS_MAX * 2)).length, STAGE_REASON_CHARS_MAX);
});

test("stage roles and endpoints are bounded; stages are named 1-based for people", () => {
  const role = { stageIndex: 1, stageCount: 3, nodeId: "n1", runnerId: "r1", clusterName: "skein", secretHex: "00ff", listenHost: "127.0.0.1" };
  assert.equal(StageRoleSchema.safeParse(role).success, true);
  assert.equal(StageRoleSchema.safeParse({ ...role, stageIndex: 3 }).success, false);
  assert.equal(StageRoleSchema.safeParse({ ...role, secretHex: "not hex" }).success, false);
  assert.equal(StageEndpointSchema.safeParse({ host: "h", port: 0, runnerId: "r", nodeId: "n", stageIndex: 1, stageCount: 2 }).success, false);
  assert.equal(describeStage(1, 3, "node-x"), "pipeline stage 2/3 on node node-x");
});
