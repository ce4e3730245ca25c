// Starts a real skein node in this process — real HTTP on 127.0.0.1, real master, worker and runner
// child processes — serving the FakeEngine test double as model "fake-model".
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { ModelCard } from "../../src/models/model-card.ts";
import { staticModelRegistry } from "../../src/models/model-card.ts";
import type { NodeOptions, RunningNode } from "../../src/node/node.ts";
import { startNode } from "../../src/node/node.ts";
import type { ModelId } from "../../src/shared/ids.ts";
import { silentLogger } from "../../src/shared/logger.ts";
import type { State } from "../../src/shared/state.ts";
import type { IndexedEvent } from "../../src/shared/types.ts";

export const FAKE_MODEL_ID = "fake-model" as ModelId;
export const FAKE_ENGINE_MODULE = pathToFileURL(path.join(import.meta.dirname, "fake-engine.ts")).href;

export function fakeModelCard(engineOptions: Record<string, unknown> = {}, modelId: string = FAKE_MODEL_ID): ModelCard {
  return {
    modelId: modelId as ModelId,
    name: `FakeEngine test double (${modelId})`,
    layerCount: 4,
    sizeBytes: 1024 * 1024,
    contextLength: 4096,
    path: null,
    engineModule: FAKE_ENGINE_MODULE,
    engineOptions,
  };
}

export interface TestNode {
  readonly node: RunningNode;
  readonly url: string;
  readonly home: string;
  /** Every event this node applied, in order. */
  readonly events: IndexedEvent[];
  state(): State;
  waitFor(predicate: (state: State) => boolean, what: string, timeoutMs?: number): Promise<State>;
  stop(): Promise<void>;
}

export async function startTestNode(
  options: {
    engineOptions?: Record<string, unknown>;
    cards?: ModelCard[];
    home?: string;
    watchdogTimeoutMs?: number;
    dashboardDir?: string;
    /** Passed to startNode as is (API key, CORS, task timeouts, a recording logger…). */
    node?: Partial<NodeOptions>;
  } = {},
): Promise<TestNode> {
  const home = options.home ?? mkdtempSync(path.join(os.tmpdir(), "skein-test-"));
  const cards = options.cards ?? [fakeModelCard(options.engineOptions)];
  const node = await startNode({
    home,
    host: "127.0.0.1",
    port: 0,
    clusterPort: 0,
    models: staticModelRegistry(cards),
    logger: silentLogger(),
    threads: 1,
    contextSize: null,
    runnerSupervisor: options.watchdogTimeoutMs === undefined ? {} : { watchdogTimeoutMs: options.watchdogTimeoutMs },
    ...options.node,
    ...(options.dashboardDir === undefined ? {} : { dashboardDir: options.dashboardDir }),
  });
  const events: IndexedEvent[] = [];
  node.cluster.subscribe((event) => events.push(event));
  const waitFor = (predicate: (state: State) => boolean, what: string, timeoutMs = 10_000) =>
    waitForState(node, predicate, what, timeoutMs);
  return {
    node,
    url: node.url,
    home,
    events,
    state: () => node.cluster.state,
    waitFor,
    stop: async () => {
      await node.stop();
      if (options.home === undefined) rmSync(home, { recursive: true, force: true });
    },
  };
}

export function waitForState(node: RunningNode, predicate: (state: State) => boolean, what: string, timeoutMs: number): Promise<State> {
  if (predicate(node.cluster.state)) return Promise.resolve(node.cluster.state);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for: ${what}\nstate: ${JSON.stringify(node.cluster.state, null, 1).slice(0, 4000)}`));
    }, timeoutMs);
    const unsubscribe = node.cluster.subscribe((_e, state) => {
      if (!predicate(state)) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(state);
    });
  });
}

/** All runners Ready and no task left: the state a node must return to after any request. */
export function isIdle(state: State): boolean {
  const runners = Object.values(state.runners);
  return runners.length > 0 && runners.every((r) => r.status.kind === "Ready") && Object.keys(state.tasks).length === 0;
}

export function chatBody(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ model: FAKE_MODEL_ID, messages: [{ role: "user", content: "Say something." }], ...extra });
}

/** Reads an SSE response: yields each `data:` payload (parsed JSON, or the string "[DONE]"). */
export async function* sseData(response: Response): AsyncGenerator<unknown> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      for (let end = buffer.indexOf("\n\n"); end !== -1; end = buffer.indexOf("\n\n")) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (data === "") continue;
        yield data === "[DONE]" ? "[DONE]" : JSON.parse(data);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

export function postChat(url: string, body: string, signal?: AbortSignal): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
    ...(signal === undefined ? {} : { signal }),
  });
}

/** Events of one task, by its command id (the completion id). */
export function taskEvents(events: readonly IndexedEvent[], commandId: string): IndexedEvent[] {
  const created = events.find((e) => e.event.type === "TaskCreated" && e.event.task.commandId === commandId);
  if (created === undefined || created.event.type !== "TaskCreated") return [];
  const taskId = created.event.task.taskId;
  return events.filter((e) => {
    const ev = e.event;
    if (ev.type === "TaskCreated") return ev.task.taskId === taskId;
    if (ev.type === "TaskStatusUpdated" || ev.type === "TaskDeleted" || ev.type === "ChunkGenerated" || ev.type === "TaskPrefillProgress") {
      return ev.taskId === taskId;
    }
    return false;
  });
}
