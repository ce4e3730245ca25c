// Claude Messages adapter: POST /v1/messages, streamed (message_start, content blocks with
// text_delta / input_json_delta, message_delta, message_stop, ping) or whole. The task's life is
// task-stream.ts's, reached through generation.ts; errors take Anthropic's shape in errors.ts.
import { Hono } from "hono";
import type { SSEStreamingApi } from "hono/streaming";
import { streamSSE } from "hono/streaming";
import type { Chunk } from "../shared/types.ts";
import type { AnswerPiece, AnswerRules } from "./answer.ts";
import { AnswerAssembler, assembleWhole } from "./answer.ts";
import type { MessageIdentity } from "./claude-format.ts";
import { messageDeltaEvent, messageJson, messageStartEvent, parseMessagesRequest, toGenerationParams } from "./claude-format.ts";
import type { ApiDeps } from "./deps.ts";
import type { ApiEnv } from "./env.ts";
import type { ApiError } from "./errors.ts";
import { errorBodyFor } from "./errors.ts";
import { collectAnswer, endToError, pumpUpdates, startGeneration } from "./generation.ts";
import { jsonBody } from "./middleware/json-body.ts";
import type { TaskEnd } from "./task-stream.ts";

export function claudeRouter(deps: ApiDeps): Hono<ApiEnv> {
  const router = new Hono<ApiEnv>();

  router.post("/messages", jsonBody(), async (c) => {
    const request = parseMessagesRequest(c.var.jsonBody);
    const params = toGenerationParams(request);
    const rules: AnswerRules = { toolsOffered: params.tools !== undefined, toolChoice: params.toolChoice, json: false, callIdPrefix: "toolu_" };
    const { commandId, modelId, stream, first } = await startGeneration(deps, request.model, params, c.req.raw.signal);
    const who: MessageIdentity = { id: `msg_${commandId}`, model: request.model };
    deps.logger.debug({ requestId: c.var.requestId, commandId, modelId, stream: request.stream === true }, "claude message started");
    if (request.stream === true) {
      return streamSSE(c, async (sse) => {
        sse.onAbort(() => stream.abort("client", "client disconnected"));
        const start = async (): Promise<void> => {
          await sendEvent(sse, messageStartEvent(who, stream.task?.promptTokens ?? 0));
          await sendEvent(sse, { type: "ping" });
        };
        await pumpUpdates(deps, stream, first, new MessageSink(sse, new AnswerAssembler(rules), start));
      });
    }
    const answer = await collectAnswer(stream, first);
    const whole = assembleWhole(answer.text, rules, answer.end);
    if (whole.violation !== null) throw whole.violation;
    return c.json(messageJson(who, whole.text, whole.calls, answer.end));
  });

  return router;
}

/** Anthropic names every event twice: the SSE `event:` line and the payload's `type`. */
function sendEvent(sse: SSEStreamingApi, body: Record<string, unknown>): Promise<void> {
  return sse.writeSSE({ event: String(body["type"]), data: JSON.stringify(body) });
}

/** Content blocks out of answer pieces: text and tool_use blocks, one open at a time. */
/**
 * Content blocks out of answer pieces: text and tool_use blocks, one open at a time. message_start
 * waits for the first token (or the end), when the prompt's token count is known: clients read
 * input_tokens from it. Until then keep-alives are SSE comments.
 */
class MessageSink {
  private blockCount = 0;
  private open: "text" | "tool_use" | null = null;
  private started = false;

  constructor(
    private readonly sse: SSEStreamingApi,
    private readonly answer: AnswerAssembler,
    private readonly start: () => Promise<void>,
  ) {}

  async progress(note: string): Promise<void> {
    await this.sse.write(`: ${note}\n\n`);
  }

  /** Anthropic's own keep-alive is a ping event (a comment before message_start). */
  async idle(): Promise<void> {
    if (this.started) await sendEvent(this.sse, { type: "ping" });
    else await this.sse.write(": keep-alive\n\n");
  }

  async chunk(chunk: Chunk): Promise<void> {
    await this.ensureStarted();
    await this.writePieces(this.answer.push(chunk.text));
  }

  async end(end: TaskEnd): Promise<void> {
    await this.ensureStarted();
    let error: ApiError | null = endToError(end);
    if (error === null) {
      await this.writePieces(this.answer.end());
      error = this.answer.violation(end);
    }
    if (error !== null) {
      await sendEvent(this.sse, { type: "error", ...errorBodyFor("anthropic", error) });
      return;
    }
    // An answer with no text at all still has its (empty) text block, as Anthropic's do.
    if (this.blockCount === 0) await this.openBlock({ type: "text", text: "" });
    await this.closeBlock();
    await sendEvent(this.sse, messageDeltaEvent(end, this.answer.calls.length > 0));
    await sendEvent(this.sse, { type: "message_stop" });
  }

  failed(): Promise<void> {
    return sendEvent(this.sse, { type: "error", error: { type: "api_error", message: "internal error while streaming" } });
  }

  private async ensureStarted(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.start();
  }

  private async writePieces(pieces: readonly AnswerPiece[]): Promise<void> {
    for (const piece of pieces) {
      const index = this.blockCount - 1;
      switch (piece.type) {
        case "text":
          if (this.open !== "text") await this.openBlock({ type: "text", text: "" });
          await sendEvent(this.sse, { type: "content_block_delta", index: this.blockCount - 1, delta: { type: "text_delta", text: piece.text } });
          break;
        case "callStart":
          await this.openBlock({ type: "tool_use", id: piece.id, name: piece.name, input: {} });
          break;
        case "callArguments":
          await sendEvent(this.sse, { type: "content_block_delta", index, delta: { type: "input_json_delta", partial_json: piece.delta } });
          break;
        case "callEnd":
          await this.closeBlock();
          break;
      }
    }
  }

  private async openBlock(block: { type: "text" | "tool_use" } & Record<string, unknown>): Promise<void> {
    await this.closeBlock();
    await sendEvent(this.sse, { type: "content_block_start", index: this.blockCount, content_block: block });
    this.blockCount += 1;
    this.open = block.type;
  }

  private async closeBlock(): Promise<void> {
    if (this.open === null) return;
    this.open = null;
    await sendEvent(this.sse, { type: "content_block_stop", index: this.blockCount - 1 });
  }
}
