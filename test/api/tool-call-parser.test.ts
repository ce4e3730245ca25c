// Tool-call parsing as tables: each case is fed whole, character by character and in random
// splits (seeded), and must give the same text and calls every way.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ParsedPiece } from "../../src/api/tool-call-parser.ts";
import { callsFromWholeAnswer, collectPieces, ToolCallParser, TOOL_CALL_TEXT_CHARS_MAX } from "../../src/api/tool-call-parser.ts";

interface Case {
  readonly name: string;
  readonly output: string;
  readonly text: string;
  readonly calls: readonly { name: string; arguments: string }[];
}

const cases: Case[] = [
  { name: "plain text", output: "Hello, world.", text: "Hello, world.", calls: [] },
  { name: "plain text with a lone <", output: "a < b and c <tool", text: "a < b and c <tool", calls: [] },
  {
    name: "qwen single call",
    output: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    text: "",
    calls: [{ name: "get_weather", arguments: '{"city": "Paris"}' }],
  },
  {
    name: "qwen text then call",
    output: 'Let me check.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
    text: "Let me check.\n",
    calls: [{ name: "f", arguments: "{}" }],
  },
  {
    name: "qwen two calls separated by whitespace",
    output: '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>\n{"name": "b", "arguments": {"s": "}{\\""}}\n</tool_call>',
    text: "",
    calls: [
      { name: "a", arguments: '{"x": 1}' },
      { name: "b", arguments: '{"s": "}{\\""}' },
    ],
  },
  {
    name: "qwen arguments before name (parsed at close)",
    output: '<tool_call>{"arguments": {"q": "x"}, "name": "search"}</tool_call>',
    text: "",
    calls: [{ name: "search", arguments: '{"q":"x"}' }],
  },
  {
    name: "qwen arguments as a JSON string",
    output: '<tool_call>{"name": "f", "arguments": "{\\"a\\": 2}"}</tool_call>',
    text: "",
    calls: [{ name: "f", arguments: '{"a": 2}' }],
  },
  {
    name: "qwen malformed call is shown as text",
    output: "<tool_call>not json</tool_call>",
    text: "<tool_call>not json</tool_call>",
    calls: [],
  },
  {
    name: "qwen unclosed call at the end is still a call",
    output: '<tool_call>\n{"name": "f", "arguments": {"k": [1, 2]}}',
    text: "",
    calls: [{ name: "f", arguments: '{"k": [1, 2]}' }],
  },
  {
    name: "llama json answer",
    output: '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
    text: "",
    calls: [{ name: "get_weather", arguments: '{"city": "Oslo"}' }],
  },
  {
    name: "llama python_tag",
    output: '<|python_tag|>{"name": "f", "parameters": {"n": 3}}',
    text: "",
    calls: [{ name: "f", arguments: '{"n": 3}' }],
  },
  {
    name: "llama two calls joined by ;",
    output: '{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"z": true}}',
    text: "",
    calls: [
      { name: "a", arguments: "{}" },
      { name: "b", arguments: '{"z": true}' },
    ],
  },
  {
    name: "llama call with parameters first is parsed at the end",
    output: '{"parameters": {"k": "v"}, "name": "f"}',
    text: "",
    calls: [{ name: "f", arguments: '{"k":"v"}' }],
  },
  {
    name: "llama call with an extra key after the arguments",
    output: '{"name": "f", "parameters": {"a": [1, {"b": "}"}]}, "id": 7}',
    text: "",
    calls: [{ name: "f", arguments: '{"a": [1, {"b": "}"}]}' }],
  },
  { name: "a JSON answer that is not a call stays text", output: '{"answer": 42}', text: '{"answer": 42}', calls: [] },
  { name: "leading whitespace of plain text is kept", output: "\n  Hi", text: "\n  Hi", calls: [] },
];

function feedInPieces(output: string, sizes: (index: number) => number): ParsedPiece[] {
  const parser = new ToolCallParser();
  const pieces: ParsedPiece[] = [];
  for (let at = 0, i = 0; at < output.length; i++) {
    const size = Math.max(1, sizes(i));
    pieces.push(...parser.push(output.slice(at, at + size)));
    at += size;
  }
  pieces.push(...parser.end());
  return pieces;
}

/** mulberry32: a small seeded generator, so a failing split can be replayed. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Per call: start, deltas that add up to the arguments, end — in that order, indices 0.. */
function assertWellFormed(pieces: readonly ParsedPiece[]): void {
  const args = new Map<number, string>();
  let open: number | null = null;
  let next = 0;
  for (const piece of pieces) {
    if (piece.type === "toolCallStart") {
      assert.equal(open, null, "a call starts while another is open");
      assert.equal(piece.index, next);
      open = piece.index;
      args.set(piece.index, "");
    } else if (piece.type === "toolCallArguments") {
      assert.equal(piece.index, open);
      args.set(piece.index, (args.get(piece.index) ?? "") + piece.delta);
    } else if (piece.type === "toolCallEnd") {
      assert.equal(piece.index, open);
      assert.equal(args.get(piece.index), piece.arguments, "deltas add up to the arguments");
      open = null;
      next += 1;
    }
  }
  assert.equal(open, null, "every call ends");
}

for (const c of cases) {
  test(`tool-call parser: ${c.name}`, () => {
    const seed = 1000 + cases.indexOf(c);
    const random = seeded(seed);
    const ways: [string, ParsedPiece[]][] = [
      ["whole", feedInPieces(c.output, () => c.output.length)],
      ["per character", feedInPieces(c.output, () => 1)],
      [`random splits (seed ${seed})`, feedInPieces(c.output, () => 1 + Math.floor(random() * 7))],
    ];
    for (const [way, pieces] of ways) {
      assertWellFormed(pieces);
      const answer = collectPieces(pieces);
      assert.equal(answer.text, c.text, `${way}: text`);
      assert.deepEqual(answer.calls, c.calls, `${way}: calls`);
    }
  });
}

test("tool-call parser: qwen arguments stream before the call closes", () => {
  const parser = new ToolCallParser();
  const early = parser.push('<tool_call>\n{"name": "f", "arguments": {"city": "Par');
  assert.deepEqual(early, [
    { type: "toolCallStart", index: 0, name: "f" },
    { type: "toolCallArguments", index: 0, delta: '{"city": "Par' },
  ]);
  assert.deepEqual(parser.push('is"}}\n</tool_call>'), [
    { type: "toolCallArguments", index: 0, delta: 'is"}' },
    { type: "toolCallEnd", index: 0, name: "f", arguments: '{"city": "Paris"}' },
  ]);
  assert.equal(parser.callCount, 1);
});

test("tool-call parser: plain text streams at once, only a possible tag start is held", () => {
  const parser = new ToolCallParser();
  assert.deepEqual(parser.push("Hello <tool"), [{ type: "text", text: "Hello " }]);
  assert.deepEqual(parser.push("box>"), [{ type: "text", text: "<toolbox>" }]);
  assert.deepEqual(parser.end(), []);
});

test("tool-call parser: an endless JSON answer is released as text past the limit", () => {
  const parser = new ToolCallParser();
  const pieces = [...parser.push("{"), ...parser.push("x".repeat(TOOL_CALL_TEXT_CHARS_MAX + 1)), ...parser.push("tail"), ...parser.end()];
  assert.equal(collectPieces(pieces).text, `{${"x".repeat(TOOL_CALL_TEXT_CHARS_MAX + 1)}tail`);
});

test("callsFromWholeAnswer refuses non-calls", () => {
  assert.equal(callsFromWholeAnswer("[]"), null);
  assert.equal(callsFromWholeAnswer('{"name": 3}'), null);
  assert.equal(callsFromWholeAnswer('{"name": "f", "parameters": [1]}'), null);
  assert.deepEqual(callsFromWholeAnswer('[{"name": "f"}]'), [{ name: "f", arguments: "{}" }]);
});

test("tool-call parser: a Llama call streams its parameters as they are written", () => {
  const parser = new ToolCallParser();
  assert.deepEqual(parser.push('{"name": "f", "parameters": {"q": "ab'), [
    { type: "toolCallStart", index: 0, name: "f" },
    { type: "toolCallArguments", index: 0, delta: '{"q": "ab' },
  ]);
  assert.deepEqual(parser.push('c"}}; {"name": "g", "parameters": {}}'), [
    { type: "toolCallArguments", index: 0, delta: 'c"}' },
    { type: "toolCallEnd", index: 0, name: "f", arguments: '{"q": "abc"}' },
    { type: "toolCallStart", index: 1, name: "g" },
    { type: "toolCallArguments", index: 1, delta: "{}" },
    { type: "toolCallEnd", index: 1, name: "g", arguments: "{}" },
  ]);
  assert.deepEqual(parser.end(), []);
});

test("tool-call parser: a Llama call cut off by max_tokens still ends", () => {
  const parser = new ToolCallParser();
  const pieces = [...parser.push('{"name": "f", "parameters": {"q": "a'), ...parser.end()];
  assert.deepEqual(pieces.at(-1), { type: "toolCallEnd", index: 0, name: "f", arguments: '{"q": "a' });
});
