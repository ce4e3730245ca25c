// What a node tells the cluster about itself: memory for placement, cores, reachable addresses.
import { readFileSync } from "node:fs";
import os from "node:os";
import type { NodeId } from "../shared/ids.ts";
import type { NodeInfo } from "../shared/types.ts";

/** MemAvailable counts reclaimable page cache, which os.freemem() does not; Linux only. */
function memoryAvailableBytes(): number {
  try {
    const match = /^MemAvailable:\s+(\d+) kB$/m.exec(readFileSync("/proc/meminfo", "utf8"));
    if (match?.[1] !== undefined) return Number(match[1]) * 1024;
  } catch {
    // not Linux: fall through
  }
  return os.freemem();
}

/** This process's start, fixed for its life (the master tells a restart from a report by it). */
const PROCESS_STARTED_AT_MS = Math.round(Date.now() - process.uptime() * 1000);

export function gatherNodeInfo(nodeId: NodeId, ports: { apiPort: number; clusterPort: number }): NodeInfo {
  const addresses = Object.values(os.networkInterfaces())
    .flat()
    .filter((a): a is os.NetworkInterfaceInfo => a !== undefined && !a.internal)
    .map((a) => a.address);
  return {
    nodeId,
    hostname: os.hostname(),
    memoryTotalBytes: os.totalmem(),
    memoryAvailableBytes: memoryAvailableBytes(),
    cores: os.availableParallelism(),
    addresses,
    apiPort: ports.apiPort,
    clusterPort: ports.clusterPort,
    startedAtMs: PROCESS_STARTED_AT_MS,
  };
}

/** Memory moves constantly; report only changes that matter for placement (≥ 5 % of total). */
export function nodeInfoChangedMaterially(previous: NodeInfo, next: NodeInfo): boolean {
  const memoryDelta = Math.abs(previous.memoryAvailableBytes - next.memoryAvailableBytes);
  return (
    memoryDelta >= previous.memoryTotalBytes * 0.05 ||
    previous.cores !== next.cores ||
    previous.apiPort !== next.apiPort ||
    previous.addresses.join(",") !== next.addresses.join(",")
  );
}
