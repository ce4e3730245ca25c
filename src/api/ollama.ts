// Ollama adapter: /api/chat and /api/generate (NDJSON streams by default, or one JSON object with
// stream:false), /api/tags, /api/show, /api/ps, /api/version. Mounted at /ollama/api and /api.
// The task's life is task-stream.ts's, reached through generation.ts; errors are `{"error":"…"}`.
import { Hono } from "hono";
import type { Context } from "hono";
import { stream as streamBody } from "hono/streaming";
import type { StreamingApi } from "hono/utils/stream";
import type { ModelCard } from "../models/model-card.ts";
import type { Chunk, GenerationParams } from "../shared/types.ts";
import type { AnswerPiece, AnswerRules } from "./answer.ts";
import { AnswerAssembler, assembleWhole } from "./answer.ts";
import type { ApiDeps } from "./deps.ts";
import type { ApiEnv } from "./env.ts";
import type { ApiError } from "./errors.ts";
import { ApiError as ApiErrorClass } from "./errors.ts";
import { collectAnswer, endToError, prepareModel, pumpUpdates, startGeneration } from "./generation.ts";
import { jsonBody } from "./middleware/json-body.ts";
import type { OllamaChatRequest, OllamaTimings } from "./ollama-format.ts";
import {
  assistantMessage,
  chatToGenerationParams,
  detailsJson,
  jsonSchemaOfFormat,
  doneReasonOf,
  generateToGenerationParams,
  modelNameCandidates,
  OLLAMA_COMPAT_VERSION,
  OllamaChatRequestSchema,
  OllamaGenerateRequestSchema,
  ollamaToolCalls,
  showJson,
  statsJson,
  tagJson,
  wantsJsonFormat,
} from "./ollama-format.ts";
import { parseWith } from "./openai-format.ts";
import type { TaskEnd } from "./task-stream.ts";

type Kind = "chat" | "generate";
type OllamaFormat = OllamaChatRequest["format"];

/** A year from now: what /api/ps shows for instances, which skein never unloads on a timer. */
const PS_EXPIRY_MS = 365 * 24 * 3600 * 1000;

export function ollamaRouter(deps: ApiDeps): Hono<ApiEnv> {
  const router = new Hono<ApiEnv>();

  router.get("/version", (c) => c.json({ version: OLLAMA_COMPAT_VERSION }));

  router.get("/tags", (c) => c.json({ models: deps.models.list().map(tagJson) }));

  router.post("/show", jsonBody(), (c) => {
    const body = c.var.jsonBody as { model?: unknown; name?: unknown } | null;
    const name = typeof body?.model === "string" ? body.model : typeof body?.name === "string" ? body.name : null;
    if (name === null) throw new ApiErrorClass(400, { message: "model is required", param: "model", code: "invalid_request" });
    const card = findCard(deps, name);
    if (card === undefined) throw new ApiErrorClass(404, { message: `model '${name}' not found`, code: "model_not_found" });
    return c.json(showJson(card));
  });

  router.get("/ps", (c) => {
    const expiresAt = new Date(deps.clock.nowMs() + PS_EXPIRY_MS).toISOString();
    const seen = new Set<string>();
    const models: Record<string, unknown>[] = [];
    for (const instance of Object.values(deps.cluster.state.instances)) {
      if (seen.has(instance.modelId)) continue;
      seen.add(instance.modelId);
      const card = deps.models.get(instance.modelId);
      const size = instance.sizeBytes ?? card?.sizeBytes ?? 0;
      models.push({ name: instance.modelId, model: instance.modelId, size, digest: "", details: detailsJson(), expires_at: expiresAt, size_vram: 0, context_length: card?.contextLength ?? 0 });
    }
    return c.json({ models });
  });

  router.post("/chat", jsonBody(), async (c) => {
    const request = parseWith(OllamaChatRequestSchema, c.var.jsonBody);
    const model = resolveModelName(deps, request.model);
    // As with /api/generate, no messages means "load the model".
    if (request.messages.length === 0) {
      await prepareModel(deps, model, c.req.raw.signal);
      return c.json({ model: request.model, created_at: new Date(deps.clock.nowMs()).toISOString(), message: { role: "assistant", content: "" }, done: true, done_reason: "load" });
    }
    return generate(c, deps, "chat", model, request.stream !== false, chatToGenerationParams(request), request.format);
  });

  router.post("/generate", jsonBody(), async (c) => {
    const request = parseWith(OllamaGenerateRequestSchema, c.var.jsonBody);
    const model = resolveModelName(deps, request.model);
    // Ollama's way to load a model without generating: an empty prompt places it if needed.
    if ((request.prompt ?? "") === "") {
      await prepareModel(deps, model, c.req.raw.signal);
      return c.json({ model: request.model, created_at: new Date(deps.clock.nowMs()).toISOString(), response: "", done: true, done_reason: "load" });
    }
    return generate(c, deps, "generate", model, request.stream !== false, generateToGenerationParams(request), request.format);
  });

  return router;
}

function findCard(deps: ApiDeps, name: string): ModelCard | undefined {
  for (const candidate of modelNameCandidates(name)) {
    const card = deps.models.get(candidate);
    if (card !== undefined) return card;
  }
  return undefined;
}

/** The model id to ask for: a known card (":latest" dropped if needed), else the name as given. */
function resolveModelName(deps: ApiDeps, name: string): string {
  return findCard(deps, name)?.modelId ?? name;
}

async function generate(c: Context<ApiEnv>, deps: ApiDeps, kind: Kind, model: string, streaming: boolean, params: GenerationParams, format: OllamaFormat): Promise<Response> {
  const rules: AnswerRules = { toolsOffered: params.tools !== undefined, toolChoice: params.toolChoice, json: wantsJsonFormat(format), jsonSchema: jsonSchemaOfFormat(format), callIdPrefix: "call_" };
  const startedMs = deps.clock.nowMs();
  const { commandId, modelId, stream, first } = await startGeneration(deps, model, params, c.req.raw.signal);
  deps.logger.debug({ requestId: c.var.requestId, commandId, modelId, kind, stream: streaming }, "ollama generation started");
  const envelope = (): Record<string, unknown> => ({ model, created_at: new Date(deps.clock.nowMs()).toISOString() });
  if (streaming) {
    c.header("Content-Type", "application/x-ndjson");
    return streamBody(c, async (body) => {
      body.onAbort(() => stream.abort("client", "client disconnected"));
      await pumpUpdates(deps, stream, first, new NdjsonSink(deps, body, kind, envelope, new AnswerAssembler(rules), startedMs));
    });
  }
  const answer = await collectAnswer(stream, first);
  const whole = assembleWhole(answer.text, rules, answer.end);
  if (whole.violation !== null) throw whole.violation;
  const timings: OllamaTimings = { startedMs, firstTokenMs: null, endedMs: deps.clock.nowMs() };
  const output = kind === "chat" ? { message: assistantMessage(whole.text, whole.calls) } : { response: whole.text };
  return c.json({ ...envelope(), ...output, done: true, done_reason: doneReasonOf(answer.end), ...statsJson(answer.end, timings) });
}

/** One JSON object per line; a finished call goes out whole, as Ollama sends `message.tool_calls`. */
class NdjsonSink {
  private firstTokenMs: number | null = null;

  constructor(
    private readonly deps: ApiDeps,
    private readonly body: StreamingApi,
    private readonly kind: Kind,
    private readonly envelope: () => Record<string, unknown>,
    private readonly answer: AnswerAssembler,
    private readonly startedMs: number,
  ) {}

  /** NDJSON has no comments: progress and keep-alives are not sent (a blank line breaks clients). */
  async progress(): Promise<void> {}

  async idle(): Promise<void> {}

  chunk(chunk: Chunk): Promise<void> {
    this.firstTokenMs ??= this.deps.clock.nowMs();
    return this.writePieces(this.answer.push(chunk.text));
  }

  async end(end: TaskEnd): Promise<void> {
    let error: ApiError | null = endToError(end);
    if (error === null) {
      await this.writePieces(this.answer.end());
      error = this.answer.violation(end);
    }
    if (error !== null) {
      await this.line({ error: error.body.message });
      return;
    }
    const timings: OllamaTimings = { startedMs: this.startedMs, firstTokenMs: this.firstTokenMs, endedMs: this.deps.clock.nowMs() };
    const output = this.kind === "chat" ? { message: { role: "assistant", content: "" } } : { response: "" };
    await this.line({ ...this.envelope(), ...output, done: true, done_reason: doneReasonOf(end), ...statsJson(end, timings) });
  }

  failed(): Promise<void> {
    return this.line({ error: "internal error while streaming" });
  }

  private async writePieces(pieces: readonly AnswerPiece[]): Promise<void> {
    for (const piece of pieces) {
      if (piece.type === "text") {
        const output = this.kind === "chat" ? { message: { role: "assistant", content: piece.text } } : { response: piece.text };
        await this.line({ ...this.envelope(), ...output, done: false });
      } else if (piece.type === "callEnd") {
        await this.line({ ...this.envelope(), message: { role: "assistant", content: "", tool_calls: ollamaToolCalls([piece.call]) }, done: false });
      }
    }
  }

  private async line(value: unknown): Promise<void> {
    await this.body.write(`${JSON.stringify(value)}\n`);
  }
}
