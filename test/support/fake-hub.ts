// FakeHub: a local stand-in for the Hugging Face hub's file endpoint, on 127.0.0.1 port 0.
// `/{repo}/resolve/{revision}/{file}` answers like the hub (302 to a CDN-like path with X-Linked-Size
// and X-Linked-Etag, 401 for gated files without a token, 404 for unknown ones); `/cdn/...` serves the
// bytes with ETag and Range support. Faults are switched on per test: 429s, a connection cut
// mid-file, a corrupt byte, slow serving so a test can abort mid-file.
import { createHash } from "node:crypto";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeHubFile {
  readonly repo: string;
  readonly file: string;
  readonly content: Buffer;
  /** Needs `Authorization: Bearer <FakeHub.validToken>`. */
  readonly gated?: boolean;
}

export interface FakeHubFaults {
  /** The next N CDN GETs answer 429 (Retry-After: 0). */
  rateLimitedRequests: number;
  /** The next N CDN GETs answer 503. */
  serverErrorRequests: number;
  /** The next N CDN GETs are cut after this many body bytes. */
  cutRequests: number;
  cutAfterBytes: number;
  /** Every byte served at this file offset is flipped (null: none). */
  corruptByteAt: number | null;
  /** Bytes per write when serving; with servePauseMs > 0 each write waits that long first. */
  servePieceBytes: number;
  servePauseMs: number;
  /** Omit X-Linked-Etag (a server that does not reveal the hash). */
  hideLinkedEtag: boolean;
  /** The CDN answers 403 to HEAD, as links signed for GET only do. */
  cdnRefusesHead: boolean;
  /** The next N CDN GETs answer 403, as an expired signed link does. */
  expiredLinkRequests: number;
}

export interface FakeHubRequest {
  readonly method: string;
  readonly path: string;
  readonly range: string | null;
  readonly authorization: string | null;
  status: number;
  /** Body bytes written for this request. */
  bytesSent: number;
}

export class FakeHub {
  static readonly validToken = "hf_fake_valid_token";
  readonly requests: FakeHubRequest[] = [];
  readonly faults: FakeHubFaults = {
    rateLimitedRequests: 0,
    serverErrorRequests: 0,
    cutRequests: 0,
    cutAfterBytes: 0,
    corruptByteAt: null,
    servePieceBytes: 64 * 1024,
    servePauseMs: 0,
    hideLinkedEtag: false,
    cdnRefusesHead: false,
    expiredLinkRequests: 0,
  };
  private readonly files = new Map<string, FakeHubFile & { sha256: string }>();
  private readonly bySha = new Map<string, FakeHubFile & { sha256: string }>();

  private constructor(
    private readonly servers: readonly Server[],
    readonly url: string,
    /** The CDN is another origin, as on the real hub: tokens must not follow the redirect there. */
    readonly cdnUrl: string,
  ) {}

  static async start(): Promise<FakeHub> {
    let hub: FakeHub | null = null;
    const listen = async () => {
      const server = createServer((req, res) => hub!.handle(req, res));
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
    };
    const main = await listen();
    const cdn = await listen();
    hub = new FakeHub([main.server, cdn.server], main.url, cdn.url);
    return hub;
  }

  addFile(file: FakeHubFile): { sha256: string } {
    const sha256 = createHash("sha256").update(file.content).digest("hex");
    const entry = { ...file, sha256 };
    this.files.set(`${file.repo}/${file.file}`, entry);
    this.bySha.set(sha256, entry);
    return { sha256 };
  }

  /** Requests for file bytes (the CDN side), in arrival order. */
  dataRequests(): FakeHubRequest[] {
    return this.requests.filter((r) => r.method === "GET" && r.path.startsWith("/cdn/"));
  }

  async close(): Promise<void> {
    await Promise.all(
      this.servers.map((server) => {
        server.closeAllConnections();
        return new Promise<void>((resolve) => server.close(() => resolve()));
      }),
    );
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const record: FakeHubRequest = {
      method: req.method ?? "GET",
      path: req.url ?? "/",
      range: req.headers.range ?? null,
      authorization: req.headers.authorization ?? null,
      status: 0,
      bytesSent: 0,
    };
    this.requests.push(record);
    const url = new URL(req.url ?? "/", this.url);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (resolve !== null) return this.resolve(record, res, decodeURIComponent(resolve[1]!), decodeURIComponent(resolve[3]!));
    const cdn = /^\/cdn\/([0-9a-f]{64})\/.+$/.exec(url.pathname);
    if (cdn !== null) return void this.serve(record, req, res, cdn[1]!);
    this.answer(record, res, 404, {}, "no such route");
  }

  private resolve(record: FakeHubRequest, res: ServerResponse, repo: string, file: string): void {
    const entry = this.files.get(`${repo}/${file}`);
    if (entry === undefined) return this.answer(record, res, 404, { "X-Error-Code": "EntryNotFound" }, "Entry not found");
    if (entry.gated === true && record.authorization !== `Bearer ${FakeHub.validToken}`) {
      return this.answer(record, res, 401, { "X-Error-Code": "GatedRepo" }, "Access to this model is restricted");
    }
    const headers: Record<string, string> = {
      Location: `${this.cdnUrl}/cdn/${entry.sha256}/${encodeURIComponent(file)}?signature=fake`,
      "X-Linked-Size": String(entry.content.length),
      ETag: `"${entry.sha256}"`,
    };
    if (!this.faults.hideLinkedEtag) headers["X-Linked-Etag"] = `"${entry.sha256}"`;
    this.answer(record, res, 302, headers, "");
  }

  private async serve(record: FakeHubRequest, req: IncomingMessage, res: ServerResponse, sha256: string): Promise<void> {
    const entry = this.bySha.get(sha256);
    if (entry === undefined) return this.answer(record, res, 404, {}, "gone");
    const common = { "Accept-Ranges": "bytes", ETag: `"${entry.sha256}"` };
    if (req.method === "HEAD" && this.faults.cdnRefusesHead) return this.answer(record, res, 403, {}, "signature does not match");
    if (req.method === "GET" && this.faults.expiredLinkRequests > 0) {
      this.faults.expiredLinkRequests -= 1;
      return this.answer(record, res, 403, {}, "link expired");
    }
    if (req.method === "GET" && this.faults.rateLimitedRequests > 0) {
      this.faults.rateLimitedRequests -= 1;
      return this.answer(record, res, 429, { "Retry-After": "0" }, "slow down");
    }
    if (req.method === "GET" && this.faults.serverErrorRequests > 0) {
      this.faults.serverErrorRequests -= 1;
      return this.answer(record, res, 503, {}, "unavailable");
    }
    const total = entry.content.length;
    let start = 0;
    let end = total - 1;
    let status = 200;
    if (record.range !== null) {
      const match = /^bytes=(\d+)-(\d*)$/.exec(record.range);
      if (match === null || Number(match[1]) >= total) {
        return this.answer(record, res, 416, { "Content-Range": `bytes */${total}` }, "");
      }
      start = Number(match[1]);
      end = match[2] === "" ? total - 1 : Math.min(total - 1, Number(match[2]));
      status = 206;
    }
    const headers: Record<string, string> = { ...common, "Content-Length": String(end - start + 1), "Content-Type": "application/octet-stream" };
    if (status === 206) headers["Content-Range"] = `bytes ${start}-${end}/${total}`;
    record.status = status;
    res.writeHead(status, headers);
    if (req.method === "HEAD") return void res.end();
    const cut = this.faults.cutRequests > 0 ? this.faults.cutAfterBytes : null;
    if (cut !== null) this.faults.cutRequests -= 1;
    let offset = start;
    while (offset <= end) {
      if (this.faults.servePauseMs > 0) await new Promise((r) => setTimeout(r, this.faults.servePauseMs));
      if (res.destroyed) return;
      let pieceEnd = Math.min(end + 1, offset + this.faults.servePieceBytes);
      if (cut !== null) pieceEnd = Math.min(pieceEnd, start + cut);
      const piece = Buffer.from(entry.content.subarray(offset, pieceEnd));
      const corrupt = this.faults.corruptByteAt;
      if (corrupt !== null && corrupt >= offset && corrupt < pieceEnd) piece[corrupt - offset] = (piece[corrupt - offset] ?? 0) ^ 0xff;
      const flushed = res.write(piece);
      record.bytesSent += piece.length;
      offset = pieceEnd;
      if (cut !== null && offset - start >= cut) {
        // Let the bytes already written reach the client, then drop the connection mid-file.
        await new Promise<void>((r) => res.socket?.write("", () => r()) ?? r());
        res.socket?.destroy();
        return;
      }
      if (!flushed) await new Promise((r) => res.once("drain", r));
    }
    res.end();
  }

  private answer(record: FakeHubRequest, res: ServerResponse, status: number, headers: Record<string, string>, body: string): void {
    record.status = status;
    res.writeHead(status, { ...headers, "Content-Length": String(Buffer.byteLength(body)) });
    res.end(body);
  }
}
