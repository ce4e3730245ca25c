// A node keeps its id across restarts (in $SKEIN_HOME/node_id), so the master can recognise the
// tasks a previous run of this node left behind.
import { mkdirSync, readFileSync, writeFileSync, renameSync } from "node:fs";
import path from "node:path";
import type { NodeId } from "../shared/ids.ts";
import { NodeIdSchema, newNodeId } from "../shared/ids.ts";

export function loadOrCreateNodeId(home: string): NodeId {
  const file = path.join(home, "node_id");
  try {
    const parsed = NodeIdSchema.safeParse(readFileSync(file, "utf8").trim());
    if (parsed.success) return parsed.data;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  // Missing or corrupt: mint a new one, written atomically.
  const nodeId = newNodeId();
  mkdirSync(home, { recursive: true });
  writeFileSync(`${file}.tmp`, `${nodeId}\n`);
  renameSync(`${file}.tmp`, file);
  return nodeId;
}
