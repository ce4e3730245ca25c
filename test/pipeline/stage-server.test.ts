// Pipeline stages in one process over real loopback links, with FakeStageEngine (a test double
// whose "layers" add 1 to every hidden value): generate.ts driving stage 0 through a middle and a
// last stage, malformed frames dropped without harm, slots freed when a link closes, and a vanished
// stage failing the task with its name.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import type { Engine, SampledToken, SamplingParams, StageSequence, StageStepInput } from "../../src/engine/engine.ts";
import { Link, listenLinks } from "../../src/net/link.ts";
import { Downstream } from "../../src/pipeline/downstream.ts";
import { FirstStage } from "../../src/pipeline/first-stage.ts";
import { hiddenFromBytes, hiddenToBytes, parseUpstreamMessage, STAGE_READY } from "../../src/pipeline/messages.ts";
import type { UpstreamMessage } from "../../src/pipeline/messages.ts";
import { stageLinkIdentity } from "../../src/pipeline/runner-pipeline.ts";
import type { StageRole } from "../../src/pipeline/stage-endpoint.ts";
import { describeStage } from "../../src/pipeline/stage-endpoint.ts";
import { StageServer } from "../../src/pipeline/stage-server.ts";
import { generate } from "../../src/runner/generate.ts";
import type { NodeId, RunnerId, TaskId } from "../../src/shared/ids.ts";
import { silentLogger } from "../../src/shared/logger.ts";
import type { Chunk } from "../../src/shared/types.ts";
import { testGenerationParams } from "../support/generation-params.ts";

const HIDDEN_SIZE = 4;
const STAGE_COUNT = 3;
const EOS = 0;

/** Test double: stage k adds 1 per "layer"; the last stage samples the token (first value of the last row) mod 50, 0 = EOS. */
class FakeStageEngine implements Engine {
  openCount = 0;
  constructor(private readonly stageIndex: number) {}
  async load(): Promise<void> {}
  async warmup(): Promise<void> {}
  encodeChat(): number[] {
    return [7, 8, 9];
  }
  openSequence(): never {
    throw new Error("FakeStageEngine runs pipeline stages only");
  }
  close(): void {}
  openStageSequence(_params: SamplingParams): StageSequence {
    this.openCount += 1;
    const engine = this;
    const isFirst = this.stageIndex === 0;
    let freed = false;
    return {
      hiddenSize: HIDDEN_SIZE,
      isFirstStage: isFirst,
      isLastStage: this.stageIndex === STAGE_COUNT - 1,
      forward(input: StageStepInput) {
        const hidden = "tokens" in input ? Float32Array.from(input.tokens.flatMap((t) => Array<number>(HIDDEN_SIZE).fill(t))) : Float32Array.from(input.hidden);
        for (let i = 0; i < hidden.length; i++) hidden[i] = hidden[i]! + 1;
        return { hidden, nTokens: hidden.length / HIDDEN_SIZE };
      },
      sample(hidden: Float32Array, nTokens: number): SampledToken {
        return { tokenId: hidden[(nTokens - 1) * HIDDEN_SIZE]! % 50, logprob: null, topLogprobs: [] };
      },
      isEndOfGeneration: (tokenId) => tokenId === EOS,
      detokenize: (tokenId) => `<${tokenId}>`,
      tokenText: (tokenId) => `<${tokenId}>`,
      free() {
        if (!freed) engine.openCount -= 1;
        freed = true;
      },
    };
  }
}

function role(stageIndex: number): StageRole {
  return {
    stageIndex,
    stageCount: STAGE_COUNT,
    nodeId: `node-${stageIndex + 1}` as NodeId,
    runnerId: `runner-${stageIndex}` as RunnerId,
    clusterName: "skein-test",
    secretHex: Buffer.from("secret").toString("hex"),
    listenHost: "127.0.0.1",
  };
}

interface StageUnderTest {
  readonly engine: FakeStageEngine;
  readonly server: StageServer;
  readonly port: number;
  readonly downstream: Downstream | null;
}

const closers: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

async function startStage(stageIndex: number, next: { port: number } | null): Promise<StageUnderTest> {
  const engine = new FakeStageEngine(stageIndex);
  let server: StageServer | null = null;
  const downstream =
    next === null
      ? null
      : new Downstream({
          identity: stageLinkIdentity(role(stageIndex)),
          logger: silentLogger(),
          onMessage: (body) => server?.onDownstreamMessage(body),
          onGone: (stage, reason) => server?.onDownstreamGone(stage, reason),
        });
  server = new StageServer({
    engine,
    stageName: describeStage(stageIndex, STAGE_COUNT, role(stageIndex).nodeId),
    identity: stageLinkIdentity(role(stageIndex)),
    listenHost: "127.0.0.1",
    logger: silentLogger(),
    downstream,
    onSlotCountChanged: () => {},
    onEngineBroken: (reason) => assert.fail(`engine broken: ${reason}`),
  });
  const port = await server.listen();
  if (next !== null) downstream!.setEndpoint(endpointOf(stageIndex + 1, next.port));
  closers.push(() => {
    downstream?.close();
    return server.close();
  });
  return { engine, server, port, downstream };
}

function endpointOf(stageIndex: number, port: number) {
  return { host: "127.0.0.1", port, runnerId: role(stageIndex).runnerId, nodeId: role(stageIndex).nodeId, stageIndex, stageCount: STAGE_COUNT };
}

async function waitUntil(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Stage 0 as the runner has it: a FirstStage over a Downstream to stage 1. */
function firstStage(stage1Port: number, replyTimeoutMs?: number): { first: FirstStage; downstream: Downstream } {
  let first: FirstStage | null = null;
  const downstream = new Downstream({
    identity: stageLinkIdentity(role(0)),
    logger: silentLogger(),
    onMessage: (body) => {
      const parsed = parseUpstreamMessage(body);
      if (parsed.ok) first?.onUpstream(parsed.message);
    },
    onGone: (stage, reason) => first?.onDownstreamGone(stage, reason),
  });
  first = new FirstStage({ downstream, onSlotCountChanged: () => {}, ...(replyTimeoutMs === undefined ? {} : { replyTimeoutMs }) });
  downstream.setEndpoint(endpointOf(1, stage1Port));
  closers.push(() => downstream.close());
  return { first, downstream };
}

async function run(first: FirstStage, taskId: string, maxTokens: number, cancelAfterChunks = Infinity) {
  const chunks: Chunk[] = [];
  let cancelled = false;
  const outcome = await generate(first.engineForTask(new FakeStageEngine(0), taskId as TaskId, () => cancelled), { taskId: taskId as TaskId, params: testGenerationParams({ maxTokens }) }, {
    isCancelled: () => cancelled,
    onPrefillProgress: () => {},
    onChunk: (chunk) => {
      chunks.push(chunk);
      if (chunks.length >= cancelAfterChunks) cancelled = true;
    },
  });
  return { outcome, text: chunks.map((c) => c.text).join("") };
}

test("generate.ts drives three stages: each step's hidden states go down, the token comes back up", async () => {
  const last = await startStage(2, null);
  const middle = await startStage(1, { port: last.port });
  const { first } = firstStage(middle.port);
  const { outcome, text } = await run(first, "task-a", 3);
  assert.equal(outcome.status, "Complete");
  // Prompt [7,8,9]: the last row is 9, +1 per stage → 12; then 12 → 15, 15 → 18.
  assert.equal(text, "<12><15><18>");
  assert.equal(outcome.tokensGenerated, 3);
  await waitUntil(() => middle.engine.openCount === 0 && last.engine.openCount === 0, "every stage freed its slot");

  // A cancel ends the task at a step boundary; `end` frees the slot on every stage.
  const stopped = await run(first, "task-b", 1000, 2);
  assert.equal(stopped.outcome.status, "Cancelled");
  assert.equal(stopped.outcome.tokensGenerated, 2);
  await waitUntil(() => middle.engine.openCount === 0 && last.engine.openCount === 0, "every stage freed its slot after the cancel");
});

test("malformed frames from the previous stage are dropped; the stage keeps serving; a closed link frees its slots", async () => {
  const last = await startStage(2, null);
  const link = new Link(net.connect({ host: "127.0.0.1", port: last.port }), "outbound", { identity: stageLinkIdentity(role(1)), logger: silentLogger() });
  const answers: UpstreamMessage[] = [];
  link.handlers.onMessage = (body) => {
    const parsed = parseUpstreamMessage(body);
    if (parsed.ok) answers.push(parsed.message);
  };
  await new Promise<void>((resolve) => (link.handlers.onOpen = () => resolve()));
  const sampling = { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 1, logprobs: false, topLogprobs: 0 };
  for (const junk of [null, 3, "x", { type: "activation" }, { type: "open", taskId: "no spaces allowed" }, { type: "end" }]) link.send(junk);
  link.send({ type: "open", taskId: "task-c", sampling, promptTokenCount: 1 });
  // Wrong size for this stage's hidden states: the task fails with a reason, the stage goes on.
  link.send({ type: "activation", taskId: "task-c", step: 0, tokenIds: [1], hidden: hiddenToBytes(new Float32Array(HIDDEN_SIZE + 4)), nTokens: 1, sample: true });
  await waitUntil(() => answers.length === 1, "the failure");
  assert.equal(answers[0]!.type, "failed");
  assert.match(answers[0]!.type === "failed" ? answers[0]!.reason : "", /pipeline stage 3\/3 on node node-3: activation of 32 bytes, expected 16/);
  assert.equal(last.engine.openCount, 0);

  link.send({ type: "open", taskId: "task-d", sampling, promptTokenCount: 1 });
  link.send({ type: "activation", taskId: "task-d", step: 0, tokenIds: [1], hidden: hiddenToBytes(new Float32Array(HIDDEN_SIZE).fill(4)), nTokens: 1, sample: true });
  await waitUntil(() => answers.length === 2, "the token");
  assert.deepEqual(answers[1], { type: "token", taskId: "task-d", step: 0, tokenId: 5, logprob: null, topLogprobs: [] });
  assert.equal(last.engine.openCount, 1, "the slot stays open until `end`");
  link.close("test done");
  await waitUntil(() => last.engine.openCount === 0, "the slot freed when its link closed");
  assert.deepEqual([...hiddenFromBytes(hiddenToBytes(new Float32Array([1, 2])))], [1, 2]);
});

test("a stage that vanishes fails the task on stage 0 with its name, and frees the middle stage's slot", async () => {
  const last = await startStage(2, null);
  const middle = await startStage(1, { port: last.port });
  const { first } = firstStage(middle.port);
  const outcomePromise = run(first, "task-e", 100_000);
  await waitUntil(() => last.engine.openCount === 1, "the task reached the last stage");
  await last.server.close();
  const { outcome } = await outcomePromise;
  assert.equal(outcome.status, "Failed");
  if (outcome.status !== "Failed") return;
  assert.equal(outcome.failureCode, "runner_failed");
  assert.equal(outcome.engineBroken, false, "another stage's failure leaves this engine serving");
  assert.match(outcome.failureReason, /pipeline stage 3\/3 on node node-3 is gone/);
  await waitUntil(() => middle.engine.openCount === 0, "the middle stage freed its slot");
});

test("a next stage that never answers fails the task after the reply limit (no hang), and is told to free the slot", async () => {
  const received: unknown[] = [];
  // Speaks the link protocol as runner-1 and accepts everything, but never answers.
  const silent = await listenLinks("127.0.0.1", 0, { identity: stageLinkIdentity(role(1)), logger: silentLogger() }, (link) => {
    link.handlers.onOpen = () => link.send(STAGE_READY);
    link.handlers.onMessage = (body) => received.push(body);
  });
  closers.push(() => silent.close());
  const { first } = firstStage(silent.port, 200);
  const { outcome } = await run(first, "task-f", 10);
  assert.equal(outcome.status, "Failed");
  if (outcome.status !== "Failed") return;
  assert.match(outcome.failureReason, /pipeline stage 2\/3 on node node-2 and the stages after it did not send the next token within 200 ms/);
  await waitUntil(() => received.some((m) => (m as { type?: unknown }).type === "end"), "the end message");
  assert.deepEqual(
    received.map((m) => (m as { type: string }).type),
    ["open", "activation", "end"],
  );
  assert.equal((received[2] as { reason: string }).reason, "failed");
});
