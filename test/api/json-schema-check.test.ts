// The JSON-schema check of generated answers, as a table: value, schema, where it breaks (or null).
import assert from "node:assert/strict";
import { test } from "node:test";
import { JSON_SCHEMA_DEPTH_MAX, schemaViolation } from "../../src/api/json-schema-check.ts";
import { jsonAnswerInvalid } from "../../src/api/tools.ts";

const person = {
  type: "object",
  properties: { name: { type: "string", minLength: 1 }, age: { type: "integer", minimum: 0 }, tags: { type: "array", items: { enum: ["a", "b"] }, maxItems: 2 } },
  required: ["name"],
  additionalProperties: false,
};

const cases: [string, unknown, unknown, RegExp | null][] = [
  ["fits", { name: "Ann", age: 3, tags: ["a"] }, person, null],
  ["missing required", { age: 3 }, person, /missing the required property "name"/],
  ["wrong type deep", { name: "Ann", age: 2.5 }, person, /^age should be integer, not number/],
  ["extra property", { name: "Ann", x: 1 }, person, /property "x"/],
  ["enum in items", { name: "Ann", tags: ["c"] }, person, /^tags\[0\] is not one of/],
  ["too many items", { name: "Ann", tags: ["a", "b", "a"] }, person, /more than 2 items/],
  ["below minimum", { name: "Ann", age: -1 }, person, /^age is below 0/],
  ["empty string", { name: "" }, person, /shorter than 1/],
  ["top-level type", [1], person, /^the answer should be object, not array/],
  ["integer is a number", 3, { type: "number" }, null],
  ["type list", null, { type: ["string", "null"] }, null],
  ["anyOf none", true, { anyOf: [{ type: "string" }, { type: "number" }] }, /none of the anyOf/],
  ["oneOf one", "x", { oneOf: [{ type: "string" }, { type: "number" }] }, null],
  ["allOf", { a: 1 }, { allOf: [{ required: ["a"] }, { required: ["b"] }] }, /"b"/],
  ["const", "y", { const: "x" }, /should be "x"/],
  ["additional schema", { a: "s" }, { additionalProperties: { type: "number" } }, /^a should be number/],
  ["unknown keywords ignored", "x", { pattern: "^y$", format: "email" }, null],
  ["no schema", { any: 1 }, null, null],
];

for (const [name, value, schema, expected] of cases) {
  test(`schemaViolation: ${name}`, () => {
    const violation = schemaViolation(value, schema);
    if (expected === null) assert.equal(violation, null);
    else assert.match(violation ?? "(fits)", expected);
  });
}

test("schemaViolation stops following a schema past the depth limit", () => {
  let schema: Record<string, unknown> = { type: "string" };
  let value: unknown = 1;
  for (let i = 0; i < JSON_SCHEMA_DEPTH_MAX + 5; i++) {
    schema = { type: "array", items: schema };
    value = [value];
  }
  assert.equal(schemaViolation(value, schema), null);
});

test("jsonAnswerInvalid: not JSON, JSON that breaks the schema, JSON that fits", () => {
  assert.equal(jsonAnswerInvalid("nope")?.body.code, "invalid_json_output");
  assert.equal(jsonAnswerInvalid('{"age": 1}', person)?.body.code, "json_schema_mismatch");
  assert.equal(jsonAnswerInvalid('{"name": "Bo"}', person), null);
  assert.equal(jsonAnswerInvalid("[1]"), null);
});
