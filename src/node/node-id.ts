// A node keeps its id across restarts (in $SKEIN_HOME/node_id), so the master can recognise the
// tasks a previous run of this node left behind.
import { mkdirSync, readFileSync, writeFileSync, renameSync } from "node:fs";
import path from "node:path";
import type { NodeId } from "../shared/ids.ts";
import { NodeIdSchema, newNodeId } from "../shared/ids.ts";

/** A node_id file is one short line; a bigger one is not ours and is not read whole. */
const NODE_ID_FILE_BYTES_MAX = 4096;

/**
 * The id in `home`/node_id, or a new one written there. A corrupt file (unreadable as an id) is
 * replaced, and `onReplaced` hears why, so the operator learns that this node lost its identity.
 */
export function loadOrCreateNodeId(home: string, onReplaced: (reason: string) => void = () => {}): NodeId {
  const file = path.join(home, "node_id");
  try {
    const raw = readFileSync(file);
    const text = raw.subarray(0, NODE_ID_FILE_BYTES_MAX).toString("utf8").trim();
    const parsed = NodeIdSchema.safeParse(text);
    if (parsed.success && raw.byteLength <= NODE_ID_FILE_BYTES_MAX) return parsed.data;
    onReplaced(`${file} is corrupt (${raw.byteLength} bytes that are not a node id: ${JSON.stringify(text.slice(0, 40))})`);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // An unreadable file in its place is replaced too, rather than refusing to start.
    if (code === "EACCES") onReplaced(`${file} cannot be read (${code})`);
    else if (code !== "ENOENT") throw new Error(`cannot read ${file}: ${(error as Error).message}`);
  }
  // Missing or corrupt: mint a new one, written atomically.
  const nodeId = newNodeId();
  mkdirSync(home, { recursive: true });
  writeFileSync(`${file}.tmp`, `${nodeId}\n`);
  renameSync(`${file}.tmp`, file);
  return nodeId;
}
