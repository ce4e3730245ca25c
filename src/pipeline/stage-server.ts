// A later pipeline stage (index ≥ 1): accepts its previous stage's link, runs each activation through
// its layers and passes the result on — or, on the last stage, samples and answers upstream. It relays
// the next stage's answers back up. Slots (KV caches) belong to the upstream link that opened them: when
// that link closes, they are freed and the stages below are told to free theirs.
import { EngineInputError } from "../engine/engine.ts";
import type { Engine, StageSequence } from "../engine/engine.ts";
import type { LinkIdentity } from "../net/handshake.ts";
import type { Link, LinkServer } from "../net/link.ts";
import { listenLinks } from "../net/link.ts";
import type { TaskId } from "../shared/ids.ts";
import { PIPELINE_LINK_SILENCE_MS, PIPELINE_STAGE_LINKS_MAX, PIPELINE_STAGE_SLOTS_MAX } from "../shared/limits.ts";
import type { Logger } from "../shared/logger.ts";
import type { Downstream } from "./downstream.ts";
import type { DownstreamMessage, StageEndReason } from "./messages.ts";
import { failedMessage, hiddenFromBytes, hiddenToBytes, parseDownstreamMessage, parseUpstreamMessage, STAGE_READY } from "./messages.ts";

interface Slot {
  readonly taskId: TaskId;
  readonly sequence: StageSequence;
  /** The upstream link that opened the slot: answers go back on it, and its close frees the slot. */
  readonly upstream: Link;
}

export interface StageServerOptions {
  readonly engine: Engine;
  /** "pipeline stage 2/3 on node X": this stage, as failure reasons name it. */
  readonly stageName: string;
  readonly identity: LinkIdentity;
  readonly listenHost: string;
  readonly logger: Logger;
  /** The link to the next stage; null on the last stage. */
  readonly downstream: Downstream | null;
  readonly onSlotCountChanged: (openSlotCount: number) => void;
  /** The engine threw mid-computation: its state may be corrupt, the process must not serve again. */
  readonly onEngineBroken: (reason: string) => void;
  readonly silenceMs?: number;
  readonly slotsMax?: number;
}

export class StageServer {
  private readonly slots = new Map<TaskId, Slot>();
  private server: LinkServer | null = null;
  /** Messages are handled one at a time in arrival order: an `open` may wait for the next stage's link. */
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly options: StageServerOptions) {}

  get openSlotCount(): number {
    return this.slots.size;
  }

  /** Starts listening; returns the port. */
  async listen(): Promise<number> {
    const { identity, logger, listenHost } = this.options;
    this.server = await listenLinks(
      listenHost,
      0,
      { identity, logger, deadAfterMs: this.options.silenceMs ?? PIPELINE_LINK_SILENCE_MS },
      (link) => this.accept(link),
      PIPELINE_STAGE_LINKS_MAX,
    );
    return this.server.port;
  }

  /** The next stage's link closed: every task through it fails, upstream says why. */
  onDownstreamGone(stage: string, reason: string): void {
    for (const slot of [...this.slots.values()]) {
      slot.upstream.send(failedMessage(slot.taskId, `${stage} is gone: ${reason}`, false));
      this.free(slot);
    }
  }

  /** A body from the next stage: relayed up the link of the slot it belongs to. */
  onDownstreamMessage(body: unknown): void {
    const parsed = parseUpstreamMessage(body);
    if (!parsed.ok) {
      this.options.logger.warn({ error: parsed.error }, "dropped an invalid message from the next stage");
      return;
    }
    const slot = this.slots.get(parsed.message.taskId);
    if (slot === undefined) return; // the task ended here first (a cancel crossed its answer)
    slot.upstream.send(parsed.message);
    // A stage below failed the task and freed its slot there: this one is done too.
    if (parsed.message.type === "failed") this.free(slot);
  }

  async close(): Promise<void> {
    for (const slot of [...this.slots.values()]) this.free(slot);
    await this.server?.close();
    this.server = null;
  }

  private accept(link: Link): void {
    link.handlers.onOpen = () => link.send(STAGE_READY);
    link.handlers.onMessage = (body) => {
      this.queue = this.queue.then(() => this.onUpstreamBody(body, link)).catch((error: unknown) => {
        this.options.logger.error({ error: String(error) }, "stage message handler failed");
      });
    };
    link.handlers.onClose = (reason) => {
      const orphans = [...this.slots.values()].filter((s) => s.upstream === link);
      if (orphans.length > 0) this.options.logger.info({ reason, slots: orphans.length }, "previous stage gone; freeing its slots");
      for (const slot of orphans) this.end(slot, "failed");
    };
  }

  private async onUpstreamBody(body: unknown, link: Link): Promise<void> {
    if (link.isClosed) return;
    const parsed = parseDownstreamMessage(body);
    if (!parsed.ok) {
      this.options.logger.warn({ error: parsed.error }, "dropped an invalid message from the previous stage");
      return;
    }
    const message = parsed.message;
    switch (message.type) {
      case "open":
        return this.open(message, link);
      case "activation":
        return this.activate(message, link);
      case "end": {
        const slot = this.slots.get(message.taskId);
        if (slot !== undefined && slot.upstream === link) this.end(slot, message.reason);
        return;
      }
    }
  }

  private async open(message: Extract<DownstreamMessage, { type: "open" }>, link: Link): Promise<void> {
    const { taskId } = message;
    if (this.slots.has(taskId)) {
      link.send(failedMessage(taskId, `${this.options.stageName} already holds task ${taskId}`, false));
      return;
    }
    const slotsMax = this.options.slotsMax ?? PIPELINE_STAGE_SLOTS_MAX;
    if (this.slots.size >= slotsMax) {
      link.send(failedMessage(taskId, `${this.options.stageName} holds ${this.slots.size} sequences (limit ${slotsMax})`, false));
      return;
    }
    const openStage = this.options.engine.openStageSequence?.bind(this.options.engine);
    if (openStage === undefined) {
      link.send(failedMessage(taskId, `${this.options.stageName}: its engine cannot run a pipeline stage`, false));
      return;
    }
    const downstream = this.options.downstream;
    if (downstream !== null) {
      try {
        await downstream.open();
      } catch (error) {
        link.send(failedMessage(taskId, (error as Error).message, false));
        return;
      }
      if (link.isClosed) return;
    }
    let sequence: StageSequence;
    try {
      sequence = openStage(message.sampling);
    } catch (error) {
      link.send(failedMessage(taskId, `${this.options.stageName}: ${(error as Error).message}`, error instanceof EngineInputError));
      return;
    }
    this.slots.set(taskId, { taskId, sequence, upstream: link });
    this.options.onSlotCountChanged(this.slots.size);
    downstream?.send(message);
  }

  private activate(message: Extract<DownstreamMessage, { type: "activation" }>, link: Link): void {
    const slot = this.slots.get(message.taskId);
    if (slot === undefined || slot.upstream !== link) return; // ended or failed here already
    const { sequence } = slot;
    const expectedBytes = message.nTokens * sequence.hiddenSize * 4;
    if (message.hidden.byteLength !== expectedBytes) {
      this.fail(slot, `${this.options.stageName}: activation of ${message.hidden.byteLength} bytes, expected ${expectedBytes}`, false);
      return;
    }
    let out: { readonly hidden: Float32Array; readonly nTokens: number };
    try {
      out = sequence.forward({ hidden: hiddenFromBytes(message.hidden), nTokens: message.nTokens }, message.tokenIds);
      if (sequence.isLastStage) {
        if (message.sample) {
          const sampled = sequence.sample(out.hidden, out.nTokens);
          link.send({ type: "token", taskId: slot.taskId, step: message.step, tokenId: sampled.tokenId, logprob: sampled.logprob, topLogprobs: [...sampled.topLogprobs] });
        } else {
          link.send({ type: "ack", taskId: slot.taskId, step: message.step });
        }
        return;
      }
    } catch (error) {
      const inputError = error instanceof EngineInputError || (error instanceof Error && error.name === "EngineInputError");
      this.fail(slot, `${this.options.stageName}: ${(error as Error).message}`, inputError);
      if (!inputError) this.options.onEngineBroken(`engine failed during task ${slot.taskId}: ${String(error)}`);
      return;
    }
    const sent = this.options.downstream?.send({ ...message, hidden: hiddenToBytes(out.hidden), nTokens: out.nTokens }) ?? false;
    if (!sent) this.fail(slot, `${this.options.downstream?.stageName ?? "the next stage"} is gone`, false);
  }

  /** This stage fails the task: upstream learns why, the stages below free their slots. */
  private fail(slot: Slot, reason: string, inputError: boolean): void {
    slot.upstream.send(failedMessage(slot.taskId, reason, inputError));
    this.end(slot, "failed");
  }

  private end(slot: Slot, reason: StageEndReason): void {
    if (this.slots.get(slot.taskId) !== slot) return;
    this.options.downstream?.send({ type: "end", taskId: slot.taskId, reason });
    this.free(slot);
  }

  private free(slot: Slot): void {
    if (this.slots.get(slot.taskId) !== slot) return;
    this.slots.delete(slot.taskId);
    slot.sequence.free();
    this.options.onSlotCountChanged(this.slots.size);
  }
}
