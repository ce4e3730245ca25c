// One stage's connection to the next stage of its pipeline. The worker tells the runner where the
// next stage listens (and again when it moves); the link is opened at once and, after it closes,
// again on the next task — so a stage that restarted elsewhere is reached without a reconnect loop.
// Every wait is bounded: a next stage that cannot be reached fails the task with its name.
import net from "node:net";
import { StageFailedError } from "../engine/engine.ts";
import type { LinkIdentity } from "../net/handshake.ts";
import { Link } from "../net/link.ts";
import type { Logger } from "../shared/logger.ts";
import { PIPELINE_LINK_SILENCE_MS, PIPELINE_STAGE_CONNECT_TIMEOUT_MS } from "../shared/limits.ts";
import type { StageEndpoint } from "./stage-endpoint.ts";
import { isStageReady } from "./messages.ts";
import { describeStage, sameEndpoint } from "./stage-endpoint.ts";

export interface DownstreamOptions {
  readonly identity: LinkIdentity;
  readonly logger: Logger;
  /** A body from the next stage (validated by the receiver). */
  readonly onMessage: (body: unknown) => void;
  /** The open link closed (the next stage vanished, went silent or moved); `stage` names it. */
  readonly onGone: (stage: string, reason: string) => void;
  readonly connectTimeoutMs?: number;
  readonly silenceMs?: number;
}

export class Downstream {
  private endpoint: StageEndpoint | null = null;
  private link: Link | null = null;
  /** `link` once the next stage said it is ready; only then are bodies sent. */
  private readyLink: Link | null = null;
  private opening: Promise<Link> | null = null;
  private closed = false;

  constructor(private readonly options: DownstreamOptions) {}

  /** "pipeline stage 2/3 on node X", or a placeholder while the next stage is unknown. */
  get stageName(): string {
    return this.endpoint === null ? "the next pipeline stage" : describeStage(this.endpoint.stageIndex, this.endpoint.stageCount, this.endpoint.nodeId);
  }

  get isOpen(): boolean {
    return this.readyLink?.isOpen ?? false;
  }

  /** Points at the next stage; a different endpoint closes the old link (its tasks fail) and connects. */
  setEndpoint(endpoint: StageEndpoint | null): void {
    if (this.closed) return;
    if (endpoint !== null && this.endpoint !== null && sameEndpoint(endpoint, this.endpoint)) return;
    const previous = this.link;
    this.endpoint = endpoint;
    this.link = null;
    this.readyLink = null;
    this.opening = null;
    previous?.close("the next stage moved");
    if (endpoint !== null) this.open().catch(() => {}); // eager: the first task should not pay the handshake
  }

  /** The open link, connecting first when there is none; rejects with StageFailedError after the bound. */
  open(): Promise<Link> {
    if (this.closed) return Promise.reject(new StageFailedError("this stage is shutting down"));
    if (this.readyLink?.isOpen === true) return Promise.resolve(this.readyLink);
    if (this.opening !== null) return this.opening;
    const endpoint = this.endpoint;
    if (endpoint === null) return Promise.reject(new StageFailedError(`${this.stageName} has not reported where it listens`));
    const opening = this.connect(endpoint);
    this.opening = opening;
    const clear = () => {
      if (this.opening === opening) this.opening = null;
    };
    opening.then(clear, clear);
    return opening;
  }

  /** False when no link is open (the body is dropped). */
  send(body: unknown): boolean {
    return this.readyLink?.send(body) ?? false;
  }

  close(): void {
    this.closed = true;
    this.link?.close("stage shutting down");
    this.link = null;
    this.readyLink = null;
  }

  private connect(endpoint: StageEndpoint): Promise<Link> {
    const timeoutMs = this.options.connectTimeoutMs ?? PIPELINE_STAGE_CONNECT_TIMEOUT_MS;
    const stage = describeStage(endpoint.stageIndex, endpoint.stageCount, endpoint.nodeId);
    const socket = net.connect({ host: endpoint.host, port: endpoint.port });
    const link = new Link(socket, "outbound", {
      identity: this.options.identity,
      logger: this.options.logger,
      handshakeTimeoutMs: timeoutMs,
      deadAfterMs: this.options.silenceMs ?? PIPELINE_LINK_SILENCE_MS,
    });
    this.link = link;
    return new Promise<Link>((resolve, reject) => {
      let ready = false;
      // The next stage's "ready" (not our own side's open) means it will take full-size frames.
      const timer = setTimeout(() => link.close(`no "ready" from the next stage within ${timeoutMs} ms`), timeoutMs);
      timer.unref();
      link.handlers.onOpen = () => {
        if (String(link.peer?.nodeId) !== String(endpoint.runnerId)) {
          link.close(`expected runner ${endpoint.runnerId}, found ${link.peer?.nodeId ?? "?"}`);
        }
      };
      link.handlers.onMessage = (body) => {
        if (!ready) {
          if (!isStageReady(body)) return link.close("the next stage sent a message before it was ready");
          ready = true;
          clearTimeout(timer);
          if (this.link === link) this.readyLink = link;
          return resolve(link);
        }
        if (this.readyLink === link) this.options.onMessage(body);
      };
      link.handlers.onClose = (reason) => {
        clearTimeout(timer);
        const wasOpen = ready;
        if (this.link === link) this.link = null;
        if (this.readyLink === link) this.readyLink = null;
        reject(new StageFailedError(`${stage} is unreachable at ${endpoint.host}:${endpoint.port}: ${reason}`));
        if (wasOpen && !this.closed) this.options.onGone(stage, reason);
      };
    });
  }
}
