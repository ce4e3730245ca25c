// OpenAI adapter: POST /v1/chat/completions (SSE and JSON) and GET /v1/models. Everything about the
// task's life (cancel on disconnect, TaskFinished) lives in task-stream.ts, via generation.ts; this
// file only turns task updates into OpenAI's wire format.
import { Hono } from "hono";
import type { SSEStreamingApi } from "hono/streaming";
import { streamSSE } from "hono/streaming";
import type { Chunk } from "../shared/types.ts";
import type { AnswerPiece, AnswerRules } from "./answer.ts";
import { AnswerAssembler, assembleWhole } from "./answer.ts";
import type { ApiDeps } from "./deps.ts";
import type { ApiEnv } from "./env.ts";
import type { ApiError } from "./errors.ts";
import { collectAnswer, endToError, pumpUpdates, startGeneration } from "./generation.ts";
import { jsonBody } from "./middleware/json-body.ts";
import type { CompletionIdentity } from "./openai-format.ts";
import {
  completionJson,
  finalChunk,
  jsonSchemaOf,
  parseChatCompletionRequest,
  roleChunk,
  textChunk,
  toGenerationParams,
  toolCallArgumentsChunk,
  toolCallStartChunk,
  wantsJson,
} from "./openai-format.ts";
import type { TaskEnd, TaskStream, TaskUpdate } from "./task-stream.ts";

export function openAiRouter(deps: ApiDeps): Hono<ApiEnv> {
  const router = new Hono<ApiEnv>();

  router.get("/models", (c) => c.json({ object: "list", data: servableModels(deps) }));

  router.post("/chat/completions", jsonBody(), async (c) => {
    const request = parseChatCompletionRequest(c.var.jsonBody);
    const params = toGenerationParams(request);
    const rules: AnswerRules = { toolsOffered: params.tools !== undefined, toolChoice: params.toolChoice, json: wantsJson(request), jsonSchema: jsonSchemaOf(request), callIdPrefix: "call_" };
    const { commandId, modelId, stream, first } = await startGeneration(deps, request.model, params, c.req.raw.signal);
    const who: CompletionIdentity = { id: commandId, model: request.model, createdSeconds: Math.floor(deps.clock.nowMs() / 1000) };
    deps.logger.debug({ requestId: c.var.requestId, commandId, modelId, stream: request.stream === true }, "chat completion started");
    if (request.stream === true) {
      return streamSSE(c, (sse) => pumpSse(deps, sse, stream, first, who, new ChatCompletionSink(sse, who, new AnswerAssembler(rules), params.logprobs)));
    }
    const answer = await collectAnswer(stream, first);
    const whole = assembleWhole(answer.text, rules, answer.end);
    if (whole.violation !== null) throw whole.violation;
    return c.json(completionJson(who, whole.text, answer.logprobs, answer.end, whole.calls));
  });

  return router;
}

function servableModels(deps: ApiDeps): Record<string, unknown>[] {
  const seen = new Set<string>();
  const data: Record<string, unknown>[] = [];
  for (const card of deps.models.list()) {
    if (seen.has(card.modelId)) continue;
    seen.add(card.modelId);
    data.push({ id: card.modelId, object: "model", created: 0, owned_by: "skein", name: card.name, context_length: card.contextLength });
  }
  for (const instance of Object.values(deps.cluster.state.instances)) {
    if (seen.has(instance.modelId)) continue;
    seen.add(instance.modelId);
    data.push({ id: instance.modelId, object: "model", created: 0, owned_by: "skein" });
  }
  return data;
}

const KEEP_ALIVE_COMMENT = ": keep-alive\n\n";

type LogprobEntry = NonNullable<Chunk["logprobs"]>[number];

/** Chat-completion chunks out of task updates; tool calls become `delta.tool_calls`. */
class ChatCompletionSink {
  /** Logprobs of text the tool-call parser still holds; they go out with the next text. */
  private pendingLogprobs: LogprobEntry[] = [];

  constructor(
    private readonly sse: SSEStreamingApi,
    private readonly who: CompletionIdentity,
    private readonly answer: AnswerAssembler,
    private readonly withLogprobs: boolean,
  ) {}

  async progress(note: string): Promise<void> {
    await this.sse.write(`: ${note}\n\n`);
  }

  async idle(): Promise<void> {
    await this.sse.write(KEEP_ALIVE_COMMENT);
  }

  async chunk(chunk: Chunk): Promise<void> {
    if (this.withLogprobs) this.pendingLogprobs.push(...(chunk.logprobs ?? []));
    await this.writePieces(this.answer.push(chunk.text));
  }

  async end(end: TaskEnd): Promise<void> {
    const error = endToError(end) ?? (await this.finishAnswer(end));
    if (error !== null) {
      await this.send({ error: error.body });
      return;
    }
    await this.send(finalChunk(this.who, end, this.answer.calls.length > 0));
    await this.sse.writeSSE({ data: "[DONE]" });
  }

  failed(): Promise<void> {
    return this.send({ error: { message: "internal error while streaming", type: "server_error", param: null, code: "internal" } });
  }

  private async finishAnswer(end: TaskEnd): Promise<ApiError | null> {
    await this.writePieces(this.answer.end());
    return this.answer.violation(end);
  }

  private async writePieces(pieces: readonly AnswerPiece[]): Promise<void> {
    for (const piece of pieces) {
      if (piece.type === "text") {
        const logprobs = this.withLogprobs ? this.pendingLogprobs : null;
        this.pendingLogprobs = [];
        await this.send(textChunk(this.who, piece.text, logprobs));
      } else if (piece.type === "callStart") {
        await this.send(toolCallStartChunk(this.who, piece.index, piece.id, piece.name));
      } else if (piece.type === "callArguments") {
        await this.send(toolCallArgumentsChunk(this.who, piece.index, piece.delta));
      }
    }
  }

  private send(body: unknown): Promise<void> {
    return this.sse.writeSSE({ data: JSON.stringify(body) });
  }
}

async function pumpSse(deps: ApiDeps, sse: SSEStreamingApi, stream: TaskStream, first: TaskUpdate, who: CompletionIdentity, sink: ChatCompletionSink): Promise<void> {
  // Registered before the first write: Hono's writes to a gone client are silent no-ops.
  sse.onAbort(() => stream.abort("client", "client disconnected"));
  await sse.writeSSE({ data: JSON.stringify(roleChunk(who)) });
  await pumpUpdates(deps, stream, first, sink);
}
