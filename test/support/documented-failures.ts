// Server-side answers the README documents for VALID requests, which fuzz tests reach too: the
// model's answer fails the requested JSON format or tool_choice "required" (500; the FakeEngine test
// double writes plain text). The fuzz tests accept exactly these; any other 5xx is a bug.
export const MODEL_OUTPUT_FAILURE_CODES: readonly string[] = ["invalid_json_output", "json_schema_mismatch", "tool_call_missing"];

/** Messages of those failures, for API shapes whose error body carries no code (Ollama, Anthropic). */
const MODEL_OUTPUT_FAILURE_MESSAGE = /the model's answer is not valid JSON|the model's answer does not match the JSON schema|tool_choice required a tool call/;

export function isModelOutputFailure(status: number, body: string): boolean {
  return status === 500 && MODEL_OUTPUT_FAILURE_MESSAGE.test(body);
}
