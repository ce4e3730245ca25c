// A node across restarts, placement on first use, and the HTTP errors a client meets.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { chatBody, fakeModelCard, FAKE_MODEL_ID, isIdle, postChat, startTestNode } from "../support/test-node.ts";

test("the first request places an instance and streams loading progress as comments", async () => {
  const node = await startTestNode({ engineOptions: { loadDelayMsPerLayer: 150, tokenDelayMs: 1 } });
  try {
    assert.deepEqual(node.state().instances, {});
    const response = await postChat(node.url, chatBody({ stream: true, max_tokens: 2 }));
    const text = await response.text();
    assert.match(text, /^: .*load/m, "a comment line while the model loads");
    assert.match(text, /data: \[DONE\]/);
    assert.equal(Object.keys(node.state().instances).length, 1);
  } finally {
    await node.stop();
  }
});

test("errors: 400 invalid body, 404 unknown model, 413 too large, 503 when the model cannot be placed", async () => {
  const node = await startTestNode({
    cards: [fakeModelCard({}), { ...fakeModelCard({}, "huge-model"), sizeBytes: 1e15 }],
  });
  try {
    const bad = await postChat(node.url, JSON.stringify({ model: FAKE_MODEL_ID, messages: "nope" }));
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { type: string } }).error.type, "invalid_request_error");
    const unknown = await postChat(node.url, chatBody({ model: "no-such-model" }));
    assert.equal(unknown.status, 404);
    const big = await postChat(node.url, chatBody({ messages: [{ role: "user", content: "x".repeat(5 * 1024 * 1024) }] }));
    assert.equal(big.status, 413);
    const huge = await postChat(node.url, chatBody({ model: "huge-model" }));
    assert.equal(huge.status, 503);
    const ok = await postChat(node.url, chatBody({ max_tokens: 1 }));
    assert.equal(ok.status, 200, "the node keeps serving");
  } finally {
    await node.stop();
  }
});

test("restart: the event log brings the instance back; it reloads and serves", async () => {
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-restart-"));
  try {
    const first = await startTestNode({ home });
    const response = await postChat(first.url, chatBody({ max_tokens: 2 }));
    assert.equal(response.status, 200);
    const instances = Object.keys(first.state().instances);
    await first.waitFor(isIdle, "idle");
    await first.stop();

    const second = await startTestNode({ home });
    try {
      assert.equal(second.node.nodeId, first.node.nodeId, "node id survives");
      assert.deepEqual(Object.keys(second.state().instances), instances, "instance survives");
      await second.waitFor(isIdle, "runner reloaded");
      const again = await postChat(second.url, chatBody({ max_tokens: 2 }));
      assert.equal(again.status, 200);
    } finally {
      await second.stop();
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
