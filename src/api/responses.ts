// OpenAI Responses adapter: POST /v1/responses, streamed as typed SSE events or returned whole,
// for plain text and function tools. The task's life is task-stream.ts's, reached through
// generation.ts; pre-stream errors take OpenAI's shape, mid-stream ones end in response.failed.
import { Hono } from "hono";
import type { SSEStreamingApi } from "hono/streaming";
import { streamSSE } from "hono/streaming";
import type { Chunk } from "../shared/types.ts";
import type { AnswerRules } from "./answer.ts";
import { AnswerAssembler, assembleWhole } from "./answer.ts";
import type { ApiDeps } from "./deps.ts";
import type { ApiEnv } from "./env.ts";
import { ApiError } from "./errors.ts";
import { collectAnswer, endToError, pumpUpdates, startGeneration } from "./generation.ts";
import { jsonBody } from "./middleware/json-body.ts";
import type { ResponseIdentity } from "./responses-format.ts";
import { jsonSchemaOf, outputItems, parseResponsesRequest, ResponseEvents, responseJson, toGenerationParams, wantsJson } from "./responses-format.ts";
import type { TaskEnd } from "./task-stream.ts";

const KEEP_ALIVE_COMMENT = ": keep-alive\n\n";

export function responsesRouter(deps: ApiDeps): Hono<ApiEnv> {
  const router = new Hono<ApiEnv>();

  router.post("/responses", jsonBody(), async (c) => {
    const request = parseResponsesRequest(c.var.jsonBody);
    const params = toGenerationParams(request);
    const rules: AnswerRules = { toolsOffered: params.tools !== undefined, toolChoice: params.toolChoice, json: wantsJson(request), jsonSchema: jsonSchemaOf(request), callIdPrefix: "call_" };
    const { commandId, modelId, stream, first } = await startGeneration(deps, request.model, params, c.req.raw.signal);
    const who: ResponseIdentity = { id: `resp_${commandId}`, model: request.model, createdSeconds: Math.floor(deps.clock.nowMs() / 1000), request };
    deps.logger.debug({ requestId: c.var.requestId, commandId, modelId, stream: request.stream === true }, "response started");
    if (request.stream === true) {
      return streamSSE(c, async (sse) => {
        sse.onAbort(() => stream.abort("client", "client disconnected"));
        const events = new ResponseEvents(who);
        const sink = new ResponseSink(sse, events, new AnswerAssembler(rules));
        await sink.send(events.start());
        await pumpUpdates(deps, stream, first, sink);
      });
    }
    const answer = await collectAnswer(stream, first);
    const whole = assembleWhole(answer.text, rules, answer.end);
    if (whole.violation !== null) throw whole.violation;
    return c.json(responseJson(who, outputItems(who, whole.text, whole.calls), answer.end));
  });

  return router;
}

class ResponseSink {
  constructor(
    private readonly sse: SSEStreamingApi,
    private readonly events: ResponseEvents,
    private readonly answer: AnswerAssembler,
  ) {}

  async progress(note: string): Promise<void> {
    await this.sse.write(`: ${note}\n\n`);
  }

  async idle(): Promise<void> {
    await this.sse.write(KEEP_ALIVE_COMMENT);
  }

  chunk(chunk: Chunk): Promise<void> {
    return this.send(this.events.pieces(this.answer.push(chunk.text)));
  }

  async end(end: TaskEnd): Promise<void> {
    const error = endToError(end);
    if (error !== null) {
      await this.send(this.events.finish(end, error));
      return;
    }
    await this.send(this.events.pieces(this.answer.end()));
    await this.send(this.events.finish(end, this.answer.violation(end)));
  }

  failed(): Promise<void> {
    return this.send(this.events.failed(new ApiError(500, { message: "internal error while streaming", code: "internal" })));
  }

  async send(events: readonly (Record<string, unknown> & { type: string })[]): Promise<void> {
    for (const event of events) await this.sse.writeSSE({ event: event.type, data: JSON.stringify(event) });
  }
}
