// Checks a generated JSON value against the JSON schema a request asked for (response_format
// json_schema, Ollama's format object). Decoding is not constrained, so this is how a client learns
// that the answer does not fit instead of finding out in its own parser. A practical subset:
// type, enum, const, properties, required, additionalProperties, items, min/max (length, items,
// value) and anyOf / oneOf / allOf. Keywords outside it ($ref, patterns, formats) are not checked.

/** Nesting followed into a schema; deeper parts are accepted unchecked (bounded work per answer). */
export const JSON_SCHEMA_DEPTH_MAX = 32;

type Schema = Readonly<Record<string, unknown>>;

function isSchema(value: unknown): value is Schema {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function typeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function matchesType(value: unknown, type: string): boolean {
  const actual = typeOf(value);
  return actual === type || (type === "number" && actual === "integer");
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

const at = (path: string): string => (path === "" ? "the answer" : path);

/** The first way `value` breaks `schema`, as a sentence naming where; null when it fits. */
export function schemaViolation(value: unknown, schema: unknown, path = "", depth = 0): string | null {
  if (!isSchema(schema) || depth > JSON_SCHEMA_DEPTH_MAX) return null;
  const type = schema["type"];
  const types = typeof type === "string" ? [type] : Array.isArray(type) ? type.filter((t): t is string => typeof t === "string") : [];
  if (types.length > 0 && !types.some((t) => matchesType(value, t))) return `${at(path)} should be ${types.join(" or ")}, not ${typeOf(value)}`;
  if (Array.isArray(schema["enum"]) && !schema["enum"].some((option) => deepEqual(option, value))) return `${at(path)} is not one of the allowed values`;
  if ("const" in schema && !deepEqual(schema["const"], value)) return `${at(path)} should be ${JSON.stringify(schema["const"])}`;
  return combinatorViolation(value, schema, path, depth) ?? boundsViolation(value, schema, path) ?? nestedViolation(value, schema, path, depth);
}

function combinatorViolation(value: unknown, schema: Schema, path: string, depth: number): string | null {
  for (const key of ["anyOf", "oneOf"]) {
    const options = schema[key];
    // oneOf is checked as anyOf: telling "more than one fits" apart helps nobody reading an answer.
    if (Array.isArray(options) && options.length > 0 && options.every((option) => schemaViolation(value, option, path, depth + 1) !== null)) {
      return `${at(path)} matches none of the ${key} alternatives`;
    }
  }
  const all = schema["allOf"];
  if (Array.isArray(all)) {
    for (const part of all) {
      const violation = schemaViolation(value, part, path, depth + 1);
      if (violation !== null) return violation;
    }
  }
  return null;
}

function boundsViolation(value: unknown, schema: Schema, path: string): string | null {
  const num = (key: string): number | null => (typeof schema[key] === "number" ? (schema[key] as number) : null);
  if (typeof value === "string") {
    const length = [...value].length;
    if (num("minLength") !== null && length < num("minLength")!) return `${at(path)} is shorter than ${num("minLength")} characters`;
    if (num("maxLength") !== null && length > num("maxLength")!) return `${at(path)} is longer than ${num("maxLength")} characters`;
  }
  if (typeof value === "number") {
    if (num("minimum") !== null && value < num("minimum")!) return `${at(path)} is below ${num("minimum")}`;
    if (num("maximum") !== null && value > num("maximum")!) return `${at(path)} is above ${num("maximum")}`;
  }
  if (Array.isArray(value)) {
    if (num("minItems") !== null && value.length < num("minItems")!) return `${at(path)} has fewer than ${num("minItems")} items`;
    if (num("maxItems") !== null && value.length > num("maxItems")!) return `${at(path)} has more than ${num("maxItems")} items`;
  }
  return null;
}

function nestedViolation(value: unknown, schema: Schema, path: string, depth: number): string | null {
  if (Array.isArray(value)) {
    const items = schema["items"];
    for (let index = 0; index < value.length && isSchema(items); index++) {
      const violation = schemaViolation(value[index], items, `${path}[${index}]`, depth + 1);
      if (violation !== null) return violation;
    }
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const record = value as Record<string, unknown>;
  const properties = isSchema(schema["properties"]) ? schema["properties"] : {};
  const required = Array.isArray(schema["required"]) ? schema["required"] : [];
  for (const name of required) {
    if (typeof name === "string" && !(name in record)) return `${at(path)} is missing the required property ${JSON.stringify(name)}`;
  }
  const extra = schema["additionalProperties"];
  for (const [name, child] of Object.entries(record)) {
    const childPath = path === "" ? name : `${path}.${name}`;
    const childSchema = properties[name] ?? (isSchema(extra) ? extra : undefined);
    if (childSchema === undefined && extra === false) return `${at(path)} has the property ${JSON.stringify(name)}, which the schema does not allow`;
    const violation = schemaViolation(child, childSchema, childPath, depth + 1);
    if (violation !== null) return violation;
  }
  return null;
}
