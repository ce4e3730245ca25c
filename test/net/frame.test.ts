import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeFrame, FrameDecoder, FrameError } from "../../src/net/frame.ts";

test("frames split at every byte boundary decode to the same messages", () => {
  const messages = [{ a: 1 }, "text", [1, 2, 3], { nested: { bytes: Buffer.from([9, 8]) } }];
  const bytes = Buffer.concat(messages.map(encodeFrame));
  for (let cut = 0; cut <= bytes.length; cut++) {
    const decoder = new FrameDecoder();
    const out = [...decoder.push(bytes.subarray(0, cut)), ...decoder.push(bytes.subarray(cut))];
    assert.deepEqual(out, messages, `cut at ${cut}`);
  }
});

test("an announced length over the limit is refused before the body arrives", () => {
  const decoder = new FrameDecoder(1024);
  assert.throws(() => decoder.push(Buffer.from([0, 0, 4, 1])), FrameError);
});

test("a body that is not exactly one msgpack value is refused", () => {
  assert.throws(() => new FrameDecoder().push(Buffer.from([0, 0, 0, 2, 0xd9, 0x05])), /not valid msgpack/);
  assert.throws(() => new FrameDecoder().push(Buffer.from([0, 0, 0, 2, 0x01, 0x02])), /2 msgpack values/);
  assert.throws(() => new FrameDecoder().push(Buffer.from([0, 0, 0, 0])), /empty frame/);
});

test("a hostile __proto__ key cannot change an object's prototype", () => {
  const key = Buffer.from("__proto__");
  const inner = Buffer.from("polluted");
  const body = Buffer.from([0x81, 0xa0 | key.length, ...key, 0x81, 0xa0 | inner.length, ...inner, 0x01]);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length);
  const [value] = new FrameDecoder().push(Buffer.concat([header, body])) as [Record<string, unknown>];
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  assert.equal((value as { polluted?: unknown }).polluted, undefined);
  assert.equal(({} as { polluted?: unknown }).polluted, undefined);
});
