import assert from "node:assert/strict";
import { test } from "node:test";
import { parseFromRunnerMessage, parseToRunnerMessage } from "../../src/runner/protocol.ts";
import { fakeShardSpec } from "../support/fake-engine.ts";
import { testParams } from "./fixtures.ts";

test("every parent → child message parses", () => {
  const messages: unknown[] = [
    { type: "load", spec: fakeShardSpec(), engineModule: "file:///x/engine.js" },
    { type: "warmup" },
    { type: "startTask", taskId: "t-1", params: testParams() },
    { type: "cancel", taskId: "t-1" },
    { type: "cancelAll" },
    { type: "shutdown" },
  ];
  for (const m of messages) assert.equal(parseToRunnerMessage(m).ok, true, JSON.stringify(m));
});

test("malformed parent → child messages are refused with a reason", () => {
  const messages: unknown[] = [
    null,
    "cancel",
    { type: "cancel" },
    { type: "cancel", taskId: "" },
    { type: "cancel", taskId: "has spaces" },
    { type: "startTask", taskId: "t-1", params: { ...testParams(), maxTokens: -1 } },
    { type: "load", spec: { ...fakeShardSpec(), layerStart: 4, layerEnd: 2 }, engineModule: "x" },
    { type: "load", spec: { ...fakeShardSpec(), layerEnd: 9 }, engineModule: "x" },
    { type: "reboot" },
  ];
  for (const m of messages) {
    const r = parseToRunnerMessage(m);
    assert.equal(r.ok, false, JSON.stringify(m));
    if (!r.ok) assert.ok(r.error.length > 0);
  }
});

test("child → parent messages parse, and malformed ones are refused", () => {
  const good: unknown[] = [
    { type: "status", status: { kind: "Loading", layersLoaded: 1, layerCount: 4 } },
    { type: "prefillProgress", taskId: "t", processedTokens: 256, totalTokens: 600 },
    { type: "chunk", taskId: "t", chunk: { index: 0, text: "hi", tokensGenerated: 1, logprobs: null } },
    {
      type: "taskEnded", taskId: "t", status: "Cancelled", finishReason: "cancelled",
      failureReason: null, failureCode: null, promptTokens: 3, tokensGenerated: 2,
    },
    { type: "heartbeat" },
    { type: "log", level: "warn", message: "m", fields: { a: 1 } },
  ];
  for (const m of good) assert.equal(parseFromRunnerMessage(m).ok, true, JSON.stringify(m));
  const bad: unknown[] = [
    { type: "status", status: { kind: "Sleeping" } },
    { type: "taskEnded", taskId: "t", status: "Pending", finishReason: "stop", failureReason: null, failureCode: null, promptTokens: 0, tokensGenerated: 0 },
    { type: "log", level: "fatal", message: "m", fields: {} },
    { type: "notAMessage" },
  ];
  for (const m of bad) assert.equal(parseFromRunnerMessage(m).ok, false, JSON.stringify(m));
});
