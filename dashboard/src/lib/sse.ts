// Incremental parser for a text/event-stream body. fetch() (not EventSource) is used for chat
// because the request is a POST and must be abortable; comment lines carry progress.

export type SseItem = { readonly kind: "data"; readonly data: string } | { readonly kind: "comment"; readonly text: string };

/** Splits complete blocks out of `buffer`; returns the items and the incomplete rest. */
export function parseSseBlocks(buffer: string): { items: SseItem[]; rest: string } {
  const normalized = buffer.replace(/\r\n?/g, "\n");
  const items: SseItem[] = [];
  let start = 0;
  for (let end = normalized.indexOf("\n\n", start); end !== -1; end = normalized.indexOf("\n\n", start)) {
    const block = normalized.slice(start, end);
    start = end + 2;
    const dataLines: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) items.push({ kind: "comment", text: line.slice(1).trim() });
      else if (line.startsWith("data:")) dataLines.push(line.slice(5).replace(/^ /, ""));
    }
    if (dataLines.length > 0) items.push({ kind: "data", data: dataLines.join("\n") });
  }
  return { items, rest: normalized.slice(start) };
}

export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseItem> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      const { items, rest } = parseSseBlocks(buffer);
      buffer = rest;
      yield* items;
    }
  } finally {
    reader.releaseLock();
  }
}

/** What a progress comment says, for the "waiting for the first token" line. */
export type Progress =
  | { readonly kind: "loading"; readonly done: number; readonly total: number }
  | { readonly kind: "prefill"; readonly done: number; readonly total: number };

export function parseProgressComment(text: string): Progress | null {
  const loading = /^loading (\d+)\/(\d+) layers$/.exec(text);
  if (loading) return { kind: "loading", done: Number(loading[1]), total: Number(loading[2]) };
  const prefill = /^prefill (\d+)\/(\d+) tokens$/.exec(text);
  if (prefill) return { kind: "prefill", done: Number(prefill[1]), total: Number(prefill[2]) };
  return null;
}
