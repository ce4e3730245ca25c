// Builds the API over a FakeCluster with one node, one model card and short timeouts, plus an SSE
// reader for responses.
import type { ApiApp, AppOptions } from "../../src/api/app.ts";
import { createApp } from "../../src/api/app.ts";
import type { ModelCard } from "../../src/models/model-card.ts";
import { staticModelRegistry } from "../../src/models/model-card.ts";
import type { ModelId } from "../../src/shared/ids.ts";
import type { FakeClusterOptions } from "./fake-cluster.ts";
import { FakeCluster } from "./fake-cluster.ts";

export const MODEL_ID = "tiny-model";
export const OTHER_MODEL_ID = "other-model";

export function card(modelId: string, sizeBytes = 1024 * 1024): ModelCard {
  return { modelId: modelId as ModelId, name: modelId, layerCount: 4, sizeBytes, contextLength: 2048, path: null, engineModule: null, engineOptions: {} };
}

export interface Fixture extends ApiApp {
  readonly cluster: FakeCluster;
}

export function makeFixture(options: { cluster?: FakeClusterOptions; app?: Partial<AppOptions>; instance?: boolean } = {}): Fixture {
  const cluster = new FakeCluster(options.cluster);
  cluster.addNode();
  if (options.instance ?? true) cluster.addInstance(MODEL_ID);
  const api = createApp({
    cluster,
    models: staticModelRegistry([card(MODEL_ID), card(OTHER_MODEL_ID)]),
    keepAliveMs: 50,
    placementTimeoutMs: 100,
    taskCreatedTimeoutMs: 2_000,
    ...options.app,
  });
  return { ...api, cluster };
}

export function chatBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: MODEL_ID, messages: [{ role: "user", content: "hi" }], ...extra };
}

export function postJson(body: unknown, init: RequestInit = {}): RequestInit {
  return { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), ...init };
}

export interface SseEvent {
  readonly data: string | null;
  readonly id: string | null;
  readonly event: string | null;
  readonly comments: readonly string[];
}

/** Parses complete SSE blocks out of text; comments are kept so keep-alives can be asserted. */
export function parseSse(text: string): SseEvent[] {
  const blocks = text.split("\n\n").filter((b) => b.length > 0);
  return blocks.map((block) => {
    let data: string | null = null;
    let id: string | null = null;
    let event: string | null = null;
    const comments: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) comments.push(line.slice(1).trim());
      else if (line.startsWith("data: ")) data = data === null ? line.slice(6) : `${data}\n${line.slice(6)}`;
      else if (line.startsWith("id: ")) id = line.slice(4);
      else if (line.startsWith("event: ")) event = line.slice(7);
    }
    return { data, id, event, comments };
  });
}

/** Reads an SSE body incrementally; `until` sees the text so far and decides when to stop reading. */
export class SseReader {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  text = "";

  constructor(body: ReadableStream<Uint8Array>) {
    this.reader = body.getReader();
  }

  async readUntil(until: (text: string) => boolean): Promise<void> {
    while (!until(this.text)) {
      const { done, value } = await this.reader.read();
      if (done) throw new Error(`stream ended before the condition; got: ${this.text}`);
      this.text += this.decoder.decode(value, { stream: true });
    }
  }

  async readAll(): Promise<string> {
    for (;;) {
      const { done, value } = await this.reader.read();
      if (done) return this.text;
      this.text += this.decoder.decode(value, { stream: true });
    }
  }

  events(): SseEvent[] {
    return parseSse(this.text);
  }

  cancel(): Promise<void> {
    return this.reader.cancel();
  }
}

export const dataEvents = (events: readonly SseEvent[]): string[] => events.flatMap((e) => (e.data === null ? [] : [e.data]));
