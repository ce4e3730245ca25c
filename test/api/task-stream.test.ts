import assert from "node:assert/strict";
import { test } from "node:test";
import type { TaskStreamOptions, TaskUpdate, TextGenerationCommand } from "../../src/api/task-stream.ts";
import { mergeChunks, TaskStreams } from "../../src/api/task-stream.ts";
import type { ModelId } from "../../src/shared/ids.ts";
import { newCommandId } from "../../src/shared/ids.ts";
import type { FakeClusterOptions } from "../support/fake-cluster.ts";
import { FakeCluster, waitUntil } from "../support/fake-cluster.ts";
import { testGenerationParams } from "../support/generation-params.ts";

const MODEL = "tiny-model";

function setup(options: FakeClusterOptions = {}, streamOptions: TaskStreamOptions = {}) {
  const cluster = new FakeCluster(options);
  cluster.addNode();
  const instance = cluster.addInstance(MODEL);
  const streams = new TaskStreams(cluster, streamOptions);
  const command = (): TextGenerationCommand => ({
    type: "TextGeneration",
    commandId: newCommandId(),
    modelId: MODEL as ModelId,
    originNodeId: cluster.nodeId,
    params: testGenerationParams({ messages: [{ role: "user", content: "hi" }], maxTokens: null, temperature: 1 }),
  });
  return { cluster, instance, streams, command };
}

/** Order of the two cleanup commands for one completion id. */
function cleanupOrder(cluster: FakeCluster, commandId: string): string[] {
  return cluster.commands.flatMap((c) =>
    c.type === "TaskCancelled" && c.cancelledCommandId === commandId
      ? ["cancel"]
      : c.type === "TaskFinished" && c.finishedCommandId === commandId
        ? ["finish"]
        : [],
  );
}

async function collect(iterable: AsyncIterable<TaskUpdate>): Promise<TaskUpdate[]> {
  const updates: TaskUpdate[] = [];
  for await (const u of iterable) updates.push(u);
  return updates;
}

test("a task that completes: updates in order, no TaskCancelled, exactly one TaskFinished", async () => {
  const { cluster, streams, command } = setup();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["Hel", "lo"]));
  const cmd = command();
  const updates = await collect(streams.open(cmd, null));
  assert.deepEqual(updates.map((u) => u.type), ["created", "chunk", "chunk", "end"]);
  const end = updates.at(-1);
  assert.ok(end?.type === "end");
  assert.equal(end.status, "Complete");
  assert.equal(end.endedBy, "cluster");
  assert.deepEqual(end.usage, { promptTokens: 7, completionTokens: 2 });
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["finish"]);
  assert.equal(streams.liveCount, 0);
  assert.equal(cluster.listenerCount, 0, "the stream unsubscribed");
});

test("the command is sent after subscribing: a synchronous TaskCreated is not lost", async () => {
  const { cluster, streams, command } = setup({ delivery: "sync" });
  cluster.onTaskCreated = (task) => cluster.generate(task.taskId, ["x"]);
  const cmd = command();
  const updates = await collect(streams.open(cmd, null));
  assert.deepEqual(updates.map((u) => u.type), ["created", "chunk", "end"]);
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["finish"]);
});

test("client abort mid-generation: one TaskCancelled, then one TaskFinished, and the iterator ends", async () => {
  const { cluster, streams, command } = setup();
  cluster.onTaskCreated = (task) => queueMicrotask(() => {
    cluster.setTaskStatus(task.taskId, "Running");
    cluster.chunk(task.taskId, "a");
  });
  const client = new AbortController();
  const cmd = command();
  const stream = streams.open(cmd, client.signal);
  const seen: string[] = [];
  for await (const update of stream) {
    seen.push(update.type);
    if (update.type === "chunk") client.abort();
  }
  assert.deepEqual(seen, ["created", "chunk", "end"]);
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["cancel", "finish"]);
  client.abort(); // again: nothing more is sent
  await stream.return();
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["cancel", "finish"]);
  // The runner still holds the task: it stays until the runner's own end report, whose count is kept.
  const task = cluster.taskOf(cmd.commandId)!;
  assert.equal(task.heldByRunner, true);
  const counts: number[] = [];
  cluster.subscribe((e, state) => {
    if (e.event.type === "TaskDeleted") counts.push(Object.keys(state.tasks).length);
  });
  cluster.setTaskStatus(task.taskId, "Cancelled", { finishReason: "cancelled", tokensGenerated: 1 });
  assert.equal(cluster.taskOf(cmd.commandId), undefined, "deleted once the runner let go");
  assert.deepEqual(counts, [0]);
});

test("abort while nobody is reading still sends both messages at once", async () => {
  const { cluster, streams, command } = setup();
  const client = new AbortController();
  const cmd = command();
  streams.open(cmd, client.signal);
  await waitUntil(() => cluster.taskOf(cmd.commandId) !== undefined, "TaskCreated");
  client.abort();
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["cancel", "finish"]);
});

test("a consumer that stops early cancels the task and finishes it", async () => {
  const { cluster, streams, command } = setup();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "a"));
  const cmd = command();
  for await (const update of streams.open(cmd, null)) {
    if (update.type === "chunk") break;
  }
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["cancel", "finish"]);
});

test("a consumer that throws cancels the task too (for await calls return)", async () => {
  const { cluster, streams, command } = setup();
  const cmd = command();
  await assert.rejects(async () => {
    for await (const update of streams.open(cmd, null)) {
      if (update.type === "created") throw new Error("handler bug");
    }
  }, /handler bug/);
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["cancel", "finish"]);
});

test("a task created Failed ends at once with its failure code, and is finished without a cancel", async () => {
  const { cluster, streams, command } = setup();
  const cmd = { ...command(), modelId: "nobody-serves-this" as ModelId };
  const updates = await collect(streams.open(cmd, null));
  assert.deepEqual(updates.map((u) => u.type), ["created", "end"]);
  const end = updates[1];
  assert.ok(end?.type === "end");
  assert.equal(end.status, "Failed");
  assert.equal(end.failureCode, "no_instance");
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["finish"]);
});

test("duplicate chunks and events of other tasks are ignored, never thrown", async () => {
  const { cluster, streams, command } = setup();
  const cmd = command();
  const other = command();
  const stream = streams.open(cmd, null);
  const otherStream = streams.open(other, null);
  await waitUntil(() => cluster.taskOf(cmd.commandId) !== undefined && cluster.taskOf(other.commandId) !== undefined, "both tasks");
  const taskId = cluster.taskOf(cmd.commandId)!.taskId;
  cluster.chunk(taskId, "a", 0);
  cluster.chunk(taskId, "a", 0); // redelivered
  cluster.chunk(cluster.taskOf(other.commandId)!.taskId, "zzz", 0);
  cluster.emit({ type: "TaskPrefillProgress", taskId: "task-unknown" as never, processedTokens: 1, totalTokens: 2 });
  cluster.emit({ type: "TaskDeleted", taskId: "task-unknown" as never });
  cluster.chunk(taskId, "b", 1);
  cluster.setTaskStatus(taskId, "Complete", { finishReason: "stop", tokensGenerated: 2 });
  cluster.setTaskStatus(taskId, "Complete", { finishReason: "stop", tokensGenerated: 2 }); // duplicate terminal
  const updates = await collect(stream);
  const text = updates.flatMap((u) => (u.type === "chunk" ? [u.chunk.text] : [])).join("");
  assert.equal(text, "ab");
  assert.equal(cluster.finishesOf(cmd.commandId), 1);
  await otherStream.return();
});

test("a task whose instance is deleted ends Failed with instance_deleted (a cascade, no TaskStatusUpdated)", async () => {
  const { cluster, instance, streams, command } = setup();
  const cmd = command();
  const stream = streams.open(cmd, null);
  await waitUntil(() => cluster.taskOf(cmd.commandId) !== undefined, "TaskCreated");
  cluster.emit({ type: "InstanceDeleted", instanceId: instance.instanceId, reason: "test" });
  const updates = await collect(stream);
  const end = updates.at(-1);
  assert.ok(end?.type === "end");
  assert.equal(end.failureCode, "instance_deleted");
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["finish"]);
});

test("requestCancel (POST /v1/cancel) keeps following the task to its Cancelled end", async () => {
  const { cluster, streams, command } = setup();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "a"));
  const cmd = command();
  const stream = streams.open(cmd, null);
  const updates: TaskUpdate[] = [];
  for await (const update of stream) {
    updates.push(update);
    if (update.type === "chunk") {
      streams.cancelByCommandId(cmd.commandId);
      streams.cancelByCommandId(cmd.commandId);
    }
  }
  const end = updates.at(-1);
  assert.ok(end?.type === "end");
  assert.equal(end.status, "Cancelled");
  assert.equal(end.endedBy, "cluster");
  assert.equal(end.usage.completionTokens, 1);
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["cancel", "finish"]);
});

test("cancelAll ends every live stream: each sends one TaskCancelled and one TaskFinished", async () => {
  const { cluster, streams, command } = setup();
  const commands = [command(), command(), command()];
  const opened = commands.map((c) => streams.open(c, null));
  await waitUntil(() => commands.every((c) => cluster.taskOf(c.commandId) !== undefined), "three tasks");
  streams.cancelAll("server shutting down");
  streams.cancelAll("again");
  assert.equal(streams.liveCount, 0);
  for (const [i, c] of commands.entries()) {
    assert.deepEqual(cleanupOrder(cluster, c.commandId), ["cancel", "finish"]);
    const updates = await collect(opened[i]!);
    const end = updates.at(-1);
    assert.ok(end?.type === "end");
    assert.equal(end.endedBy, "shutdown");
  }
});

test("a master that never answers: the stream fails after the timeout and still cancels and finishes", async () => {
  const cluster = new FakeCluster();
  // No fake master reply: drop every command on the floor.
  cluster.sendCommand = (c) => void cluster.commands.push(c);
  const streams = new TaskStreams(cluster, { createdTimeoutMs: 20 });
  const cmd = { ...setup().command() };
  const updates = await collect(streams.open(cmd, null));
  const end = updates.at(-1);
  assert.ok(end?.type === "end");
  assert.equal(end.endedBy, "timeout");
  assert.equal(end.failureCode, "internal");
  assert.deepEqual(cleanupOrder(cluster, cmd.commandId), ["cancel", "finish"]);
});

test("the buffer is bounded: a consumer far behind gets chunks folded, with no text lost", async () => {
  const { cluster, streams, command } = setup({}, { bufferMax: 4 });
  const cmd = command();
  const stream = streams.open(cmd, null);
  await waitUntil(() => cluster.taskOf(cmd.commandId) !== undefined, "TaskCreated");
  const taskId = cluster.taskOf(cmd.commandId)!.taskId;
  const pieces = Array.from({ length: 50 }, (_, i) => `${i},`);
  for (const piece of pieces) cluster.chunk(taskId, piece);
  cluster.setTaskStatus(taskId, "Complete", { finishReason: "stop" });
  const updates = await collect(stream);
  assert.ok(updates.length <= 4 + 2, `at most bufferMax + a few updates, got ${updates.length}`);
  assert.equal(updates.flatMap((u) => (u.type === "chunk" ? [u.chunk.text] : [])).join(""), pieces.join(""));
});

test("mergeChunks keeps text, the later count and both logprob lists", () => {
  const a = { index: 0, text: "a", tokensGenerated: 1, logprobs: [{ token: "a", logprob: -1, top: [] }] };
  const b = { index: 1, text: "b", tokensGenerated: 2, logprobs: null };
  assert.deepEqual(mergeChunks(a, b), { index: 1, text: "ab", tokensGenerated: 2, logprobs: [{ token: "a", logprob: -1, top: [] }] });
  assert.equal(mergeChunks(b, b).logprobs, null);
});
