import { test } from "node:test";
import assert from "node:assert/strict";
import { ChatTemplate, ChatTemplateError, chatTemplateOf, encodeChat } from "../../src/engine/chat-template.ts";
import { TokenType, type Vocabulary } from "../../src/engine/tokenizer/vocabulary.ts";
import { Tokenizer } from "../../src/engine/tokenizer/tokenizer.ts";
import type { ChatMessage } from "../../src/shared/types.ts";
import { fixtureVocabulary, type FixtureVocab } from "../support/gguf-model-fixture.ts";

const CONVERSATION: ChatMessage[] = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Hello!" },
  { role: "user", content: "  2+2?  " },
];

function templateOf(vocab: FixtureVocab): ChatTemplate {
  const vocabulary = fixtureVocabulary(vocab);
  return chatTemplateOf({ ...vocabulary, chatTemplate: vocabulary.chatTemplate });
}

// Expected texts are the formats these model families document.
test("Qwen3's template renders ChatML and ends with the assistant header", () => {
  assert.equal(
    templateOf("qwen3").render(CONVERSATION),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n" +
      "<|im_start|>user\n  2+2?  <|im_end|>\n<|im_start|>assistant\n",
  );
  assert.equal(templateOf("qwen3").render([{ role: "user", content: "Hi" }], { addGenerationPrompt: false }), "<|im_start|>user\nHi<|im_end|>\n");
});

test("Qwen3's template drops the reasoning of earlier assistant turns (exercises split, lstrip, namespace, [::-1])", () => {
  const rendered = templateOf("qwen3").render([
    { role: "user", content: "Q1" },
    { role: "assistant", content: "<think>\nplan\n</think>\n\nA1" },
    { role: "user", content: "Q2" },
  ]);
  assert.equal(rendered, "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n");
});

test("Llama 3's template starts with BOS, trims contents and ends with the assistant header", () => {
  assert.equal(
    templateOf("llama3").render(CONVERSATION),
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n",
  );
});

test("the fixtures' own templates (ChatML, Llama 2) render", () => {
  assert.equal(templateOf("tiny").render([{ role: "user", content: "Hi" }]), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  assert.equal(templateOf("tiny-spm").render([{ role: "user", content: "Hi" }, { role: "assistant", content: "Yo" }]), "<s>[INST] Hi [/INST]Yo</s>");
});

test("a model without a template falls back to ChatML and says so", () => {
  const template = new ChatTemplate(null, { bosToken: "", eosToken: "" });
  assert.equal(template.isFallback, true);
  assert.equal(template.render([{ role: "user", content: "Hi" }]), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  assert.equal(templateOf("qwen3").isFallback, false);
});

test("templates that do not parse, or raise, give a ChatTemplateError with the reason", () => {
  assert.throws(() => new ChatTemplate("{% for %}", { bosToken: "", eosToken: "" }), ChatTemplateError);
  const strict = new ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}ok", {
    bosToken: "",
    eosToken: "",
  });
  assert.equal(strict.render([{ role: "user", content: "x" }]), "ok");
  assert.throws(() => strict.render([{ role: "assistant", content: "x" }]), /Conversation must start with a user message/);
});

function tinyVocabulary(overrides: Partial<Vocabulary>): Vocabulary {
  const tokens = ["<s>", "a", "b"];
  return {
    model: "llama",
    pre: "default",
    tokens,
    tokenTypes: Uint8Array.from([TokenType.Control, TokenType.Normal, TokenType.Normal]),
    scores: new Float32Array(3),
    merges: [],
    bosTokenId: 0,
    eosTokenId: null,
    eotTokenId: null,
    unknownTokenId: null,
    paddingTokenId: null,
    addBos: true,
    addEos: false,
    addSpacePrefix: false,
    cleanSpaces: false,
    endOfGenerationTokenIds: new Set(),
    chatTemplate: "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
    ...overrides,
  };
}

test("encodeChat never doubles the BOS a template writes when the tokenizer adds one", () => {
  const adding = new Tokenizer(tinyVocabulary({}));
  assert.deepEqual(encodeChat(adding, chatTemplateOf(adding.vocabulary), [{ role: "user", content: "ab" }]), [0, 1, 2]);
  const notAdding = new Tokenizer(tinyVocabulary({ addBos: false }));
  assert.deepEqual(encodeChat(notAdding, chatTemplateOf(notAdding.vocabulary), [{ role: "user", content: "ab" }]), [0, 1, 2]);
  const noBosInTemplate = new Tokenizer(tinyVocabulary({ chatTemplate: "{% for m in messages %}{{ m['content'] }}{% endfor %}" }));
  assert.deepEqual(encodeChat(noBosInTemplate, chatTemplateOf(noBosInTemplate.vocabulary), [{ role: "user", content: "ab" }]), [0, 1, 2]);
});

test("encodeChat on a real vocabulary parses the template's special tokens", () => {
  const vocabulary = fixtureVocabulary("llama3");
  const tokenizer = new Tokenizer({
    ...tinyVocabulary({}),
    model: "gpt2",
    pre: "llama-bpe",
    tokens: vocabulary.tokens,
    tokenTypes: Uint8Array.from(vocabulary.tokenTypes),
    scores: new Float32Array(vocabulary.tokens.length),
    merges: vocabulary.merges,
    bosTokenId: vocabulary.bosTokenId,
    eosTokenId: vocabulary.eosTokenId,
    chatTemplate: vocabulary.chatTemplate,
  });
  const ids = encodeChat(tokenizer, chatTemplateOf(tokenizer.vocabulary), [{ role: "user", content: "Hi" }]);
  const bos = tokenizer.tokenId("<|begin_of_text|>")!;
  assert.equal(ids[0], bos);
  assert.equal(ids.filter((id) => id === bos).length, 1);
  assert.equal(ids[1], tokenizer.tokenId("<|start_header_id|>"));
  assert.equal(tokenizer.decode(ids, { special: true }), "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
});

test("tools, tool calls and tool results reach the template in transformers' shapes (Qwen3 renders them)", () => {
  const rendered = templateOf("qwen3").render(
    [
      { role: "developer", content: "Be brief." },
      { role: "user", content: "Weather in Paris?" },
      { role: "assistant", content: "", toolCalls: [{ id: "c1", name: "get_weather", arguments: '{"city":"Paris","days":2}' }] },
      { role: "tool", content: '{"temp": 21}', toolCallId: "c1", name: "get_weather" },
    ],
    { tools: [{ name: "get_weather", description: "Weather now", parameters: { type: "object", properties: { city: { type: "string" } } } }] },
  );
  assert.equal(
    rendered,
    "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
      "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
      '{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}\n' +
      "</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
      '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' +
      "<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
      '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call><|im_end|>\n' +
      '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n',
  );
  const withoutTools = templateOf("qwen3").render([{ role: "user", content: "Hi" }], { tools: [] });
  assert.ok(!withoutTools.includes("# Tools"), "an empty tool list offers no tools");
});

test("arguments that are not a JSON object are passed through as text", () => {
  const template = new ChatTemplate("{% for m in messages %}{% for c in m.tool_calls %}{{ c.function.arguments | tojson }}{% endfor %}{% endfor %}", {
    bosToken: "",
    eosToken: "",
  });
  assert.equal(template.render([{ role: "assistant", content: "", toolCalls: [{ id: "1", name: "f", arguments: "not json" }] }]), '"not json"');
  assert.equal(template.render([{ role: "assistant", content: "", toolCalls: [{ id: "1", name: "f", arguments: '{"a": [1]}' }] }]), '{"a": [1]}');
});
