// The dashboard's SSE reader (plain TypeScript, no DOM): blocks split across reads, CRLF, comments
// carrying loading and prefill progress.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseProgressComment, parseSseBlocks, readSse } from "../../dashboard/src/lib/sse.ts";

test("complete blocks are parsed and the incomplete tail is kept", () => {
  const { items, rest } = parseSseBlocks('data: {"a":1}\n\n: prefill 3/9 tokens\n\ndata: [DO');
  assert.deepEqual(items, [
    { kind: "data", data: '{"a":1}' },
    { kind: "comment", text: "prefill 3/9 tokens" },
  ]);
  assert.equal(rest, "data: [DO");
});

test("CRLF line ends and multi-line data are handled", () => {
  const { items, rest } = parseSseBlocks("data: one\r\ndata: two\r\n\r\n");
  assert.deepEqual(items, [{ kind: "data", data: "one\ntwo" }]);
  assert.equal(rest, "");
});

test("progress comments are understood; keep-alives and others are not progress", () => {
  assert.deepEqual(parseProgressComment("loading 2/4 layers"), { kind: "loading", done: 2, total: 4 });
  assert.deepEqual(parseProgressComment("prefill 256/1024 tokens"), { kind: "prefill", done: 256, total: 1024 });
  assert.equal(parseProgressComment("keep-alive"), null);
  assert.equal(parseProgressComment("loading x/4 layers"), null);
});

test("readSse yields items across chunk boundaries, splitting even inside a UTF-8 character", async () => {
  const bytes = new TextEncoder().encode('data: {"t":"café"}\n\n: loading 1/2 layers\n\ndata: [DONE]\n\n');
  const cut = bytes.indexOf(0xc3) + 1; // between the two bytes of "é"
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes.slice(0, cut));
      controller.enqueue(bytes.slice(cut, cut + 7));
      controller.enqueue(bytes.slice(cut + 7));
      controller.close();
    },
  });
  const items = [];
  for await (const item of readSse(body)) items.push(item);
  assert.deepEqual(items, [
    { kind: "data", data: '{"t":"café"}' },
    { kind: "comment", text: "loading 1/2 layers" },
    { kind: "data", data: "[DONE]" },
  ]);
});
