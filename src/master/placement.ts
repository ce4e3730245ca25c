// Where an instance's layers go. Pure: State and the model in, shards out; ids come from the caller.
//
// A node's free memory is what it last reported available minus what instances already placed on
// it claim (their shards' layers, and the output head on a last shard): an instance still loading
// has not shown up in the node's report yet, and placing two models into the same free gigabytes
// would fail at load time. Layers are split in proportion to free memory, every node holds ≥ 1
// layer, and no node is given more layers than fit. The output head (ModelPlacementInfo.headBytes:
// on a small model as large as a dozen layers) sits on the last stage only, so that stage takes
// fewer layers: its memory is counted right, and since decode time follows the bytes read, the
// stages take about equally long per token — the slowest stage sets a pipeline's pace. The fewest
// nodes (≥ minNodes) that fit win: every pipeline stage adds a network hop per token. The chosen
// nodes are chained in the order whose links are fastest (measured latency of the topology edges),
// since every token crosses each hop.
import { assert } from "../shared/assert.ts";
import type { InstanceId, NodeId, RunnerId } from "../shared/ids.ts";
import type { State } from "../shared/state.ts";
import type { Instance, ModelPlacementInfo, NodeInfo } from "../shared/types.ts";

export interface PlannedShard {
  readonly nodeId: NodeId;
  readonly layerStart: number;
  readonly layerEnd: number;
  /** This shard's share of the model's weights. */
  readonly sizeBytes: number;
}

export type PlacementResult = { readonly ok: true; readonly instance: Instance } | { readonly ok: false; readonly reason: string };

export type PlacementPreview =
  | { readonly nodeCount: number; readonly ok: true; readonly shards: readonly PlannedShard[] }
  | { readonly nodeCount: number; readonly ok: false; readonly reason: string };

interface NodeCapacity {
  readonly nodeId: NodeId;
  readonly freeBytes: number;
}

type Plan = { readonly ok: true; readonly shards: PlannedShard[] } | { readonly ok: false; readonly reason: string };

/** Places `model` on the fewest nodes (at least minNodes) whose free memory holds it. */
export function placeInstance(
  state: State,
  model: ModelPlacementInfo,
  minNodes: number,
  newRunnerId: () => RunnerId,
  newInstanceId: () => InstanceId,
): PlacementResult {
  const capacities = nodeCapacities(state);
  const nodeCountMin = Math.max(1, Math.floor(minNodes));
  if (capacities.length < nodeCountMin) {
    return { ok: false, reason: `${model.modelId} needs at least ${nodeCountMin} node(s); the cluster has ${capacities.length}` };
  }
  let lastReason = "";
  for (let nodeCount = nodeCountMin; nodeCount <= capacities.length; nodeCount++) {
    const plan = planOnNodes(model, capacities, nodeCount, state.edges);
    if (plan.ok) {
      const instance: Instance = {
        instanceId: newInstanceId(),
        modelId: model.modelId,
        sharding: "pipeline",
        layerCount: model.layerCount,
        sizeBytes: model.sizeBytes,
        ...(model.headBytes === undefined ? {} : { headBytes: model.headBytes }),
        shards: plan.shards.map((s) => ({ runnerId: newRunnerId(), nodeId: s.nodeId, layerStart: s.layerStart, layerEnd: s.layerEnd })),
      };
      return { ok: true, instance };
    }
    lastReason = plan.reason;
  }
  return { ok: false, reason: lastReason };
}

/** For each node count 1..n: where the model would go on that many nodes, or why it cannot. */
export function previewPlacements(state: State, model: ModelPlacementInfo): PlacementPreview[] {
  const capacities = nodeCapacities(state);
  if (capacities.length === 0) return [{ nodeCount: 1, ok: false, reason: "no nodes have reported in yet" }];
  return capacities.map((_, i) => {
    const nodeCount = i + 1;
    const plan = planOnNodes(model, capacities, nodeCount, state.edges);
    return plan.ok ? { nodeCount, ok: true, shards: plan.shards } : { nodeCount, ok: false, reason: plan.reason };
  });
}

/** Memory placed instances claim on each node, in bytes. Instances without a recorded size claim 0. */
export function claimedBytesByNode(state: State): Map<NodeId, number> {
  const claimed = new Map<NodeId, number>();
  for (const instance of Object.values(state.instances)) {
    const { layerBytes, headBytes } = modelBytes({ sizeBytes: instance.sizeBytes ?? 0, layerCount: instance.layerCount, headBytes: instance.headBytes });
    instance.shards.forEach((shard, i) => {
      const shardBytes = (shard.layerEnd - shard.layerStart) * layerBytes + (i === instance.shards.length - 1 ? headBytes : 0);
      claimed.set(shard.nodeId, (claimed.get(shard.nodeId) ?? 0) + shardBytes);
    });
  }
  return claimed;
}

/** Bytes of one layer and of the head (held by the last stage only); an unknown head is spread over the layers. */
function modelBytes(model: { readonly sizeBytes: number; readonly layerCount: number; readonly headBytes?: number | undefined }): { layerBytes: number; headBytes: number } {
  const headBytes = Math.min(model.headBytes ?? 0, model.sizeBytes);
  return { layerBytes: (model.sizeBytes - headBytes) / model.layerCount, headBytes };
}

/** Nodes by free memory, most first (ties by id, so the result is deterministic). */
function nodeCapacities(state: State): NodeCapacity[] {
  const claimed = claimedBytesByNode(state);
  return Object.values(state.nodes)
    .map((node: NodeInfo) => ({ nodeId: node.nodeId, freeBytes: Math.max(0, node.memoryAvailableBytes - (claimed.get(node.nodeId) ?? 0)) }))
    .sort((a, b) => b.freeBytes - a.freeBytes || (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
}

/**
 * Split over exactly the `nodeCount` nodes with the most free memory (if they cannot hold the model,
 * no other choice of that many nodes can).
 */
function planOnNodes(model: ModelPlacementInfo, capacities: readonly NodeCapacity[], nodeCount: number, edges: State["edges"]): Plan {
  const layerCount = model.layerCount;
  if (nodeCount > layerCount) {
    return { ok: false, reason: `${model.modelId} has ${layerCount} layer(s): it cannot be split over ${nodeCount} nodes` };
  }
  if (capacities.length < nodeCount) return { ok: false, reason: `the cluster has ${capacities.length} node(s), not ${nodeCount}` };
  const { layerBytes, headBytes } = modelBytes(model);
  let chosen = chainByLatency(capacities.slice(0, nodeCount), edges);
  // The last stage also holds the head. If the chain's last node has no room for it and a layer, the
  // same chain run backwards (the same links) may: its first node becomes the last.
  const fitsHead = (c: NodeCapacity): boolean => c.freeBytes - headBytes >= layerBytes;
  if (headBytes > 0 && chosen.length > 1 && !fitsHead(chosen[chosen.length - 1]!) && fitsHead(chosen[0]!)) chosen = [...chosen].reverse();
  const lastIndex = chosen.length - 1;
  const headOn = (i: number): number => (i === lastIndex ? headBytes : 0);
  // Most layers each node can hold (the last one after the head); with zero-size layers, all of them.
  const layerCapacities = chosen.map((c, i) => {
    const roomBytes = c.freeBytes - headOn(i);
    if (roomBytes < 0) return 0;
    return layerBytes === 0 ? layerCount : Math.min(layerCount, Math.floor(roomBytes / layerBytes));
  });
  const tooSmall = chosen.flatMap((c, i) => (layerCapacities[i]! < 1 ? [{ c, i }] : []));
  if (tooSmall.length > 0) {
    const names = tooSmall.map(({ c, i }) => `${c.nodeId} has ${formatBytes(c.freeBytes)} free${headOn(i) > 0 ? ` and, as the last stage, holds the output head (${formatBytes(headOn(i))})` : ""}`).join(", ");
    return { ok: false, reason: `one layer of ${model.modelId} needs ${formatBytes(layerBytes)}; ${names}` };
  }
  const layerCapacityTotal = layerCapacities.reduce((a, b) => a + b, 0);
  const freeTotal = chosen.reduce((a, c) => a + c.freeBytes, 0);
  if (layerCapacityTotal < layerCount) {
    const perNode = chosen.map((c) => `${c.nodeId}: ${formatBytes(c.freeBytes)}`).join(", ");
    return {
      ok: false,
      reason:
        `${model.modelId} needs ${formatBytes(model.sizeBytes)} (${layerCount} layers of ${formatBytes(layerBytes)}${headBytes > 0 ? ` and an output head of ${formatBytes(headBytes)}` : ""}); ` +
        `${nodeCount} node(s) have ${formatBytes(freeTotal)} free (${perNode}), room for ${layerCapacityTotal} layer(s)`,
    };
  }
  // Each node's share of the whole model follows its free memory; the last one's share includes the head.
  const layerWeights = chosen.map((c, i) => (freeTotal === 0 ? 1 : Math.max(0, (model.sizeBytes * c.freeBytes) / freeTotal - headOn(i))));
  const layersPerNode = splitLayers(layerCount, layerWeights, layerCapacities);
  let layerStart = 0;
  const shards = chosen.map((c, i) => {
    const layers = layersPerNode[i]!;
    const shard = { nodeId: c.nodeId, layerStart, layerEnd: layerStart + layers, sizeBytes: layers * layerBytes + headOn(i) };
    layerStart += layers;
    return shard;
  });
  return { ok: true, shards };
}

/** A link with no measured latency counts as this slow, so measured links are preferred. */
const UNKNOWN_LINK_LATENCY_MS = 100;
/** Up to this many stages every order is tried (720 orders); beyond, the order is built greedily. */
const EXHAUSTIVE_CHAIN_NODES_MAX = 6;

/**
 * The order of `nodes` (a pipeline chain) with the least total link latency between neighbours. An
 * edge counts in either direction (the faster measurement). Ties keep the memory order, so with no
 * measurements the placement is exactly the free-memory one.
 */
export function chainByLatency<T extends { readonly nodeId: NodeId }>(nodes: readonly T[], edges: State["edges"]): T[] {
  if (nodes.length < 3 && edges.length === 0) return [...nodes];
  const latency = (a: NodeId, b: NodeId): number => {
    let best = UNKNOWN_LINK_LATENCY_MS;
    for (const e of edges) {
      if (e.latencyMs !== null && ((e.fromNodeId === a && e.toNodeId === b) || (e.fromNodeId === b && e.toNodeId === a))) best = Math.min(best, e.latencyMs);
    }
    return best;
  };
  const cost = (order: readonly T[]): number => order.slice(1).reduce((sum, n, i) => sum + latency(order[i]!.nodeId, n.nodeId), 0);
  if (nodes.length <= EXHAUSTIVE_CHAIN_NODES_MAX) {
    let best = [...nodes];
    let bestCost = cost(best);
    for (const order of permutations(nodes)) {
      const c = cost(order);
      if (c < bestCost) {
        best = order;
        bestCost = c;
      }
    }
    return best;
  }
  // Greedy: start from the node with the most memory, always continue over the fastest link.
  const rest = [...nodes];
  const chain = [rest.shift()!];
  while (rest.length > 0) {
    const last = chain.at(-1)!.nodeId;
    let pick = 0;
    for (let i = 1; i < rest.length; i++) if (latency(last, rest[i]!.nodeId) < latency(last, rest[pick]!.nodeId)) pick = i;
    chain.push(rest.splice(pick, 1)[0]!);
  }
  return chain;
}

function* permutations<T>(items: readonly T[]): Generator<T[]> {
  if (items.length <= 1) {
    yield [...items];
    return;
  }
  for (let i = 0; i < items.length; i++) {
    const rest = [...items.slice(0, i), ...items.slice(i + 1)];
    for (const tail of permutations(rest)) yield [items[i]!, ...tail];
  }
}

/**
 * Layers per node, proportional to `weights`, each in [1, capacity], summing to layerCount.
 * Callers guarantee every capacity ≥ 1, their sum ≥ layerCount and weights.length ≤ layerCount.
 */
export function splitLayers(layerCount: number, weights: readonly number[], capacities: readonly number[]): number[] {
  const weightTotal = weights.reduce((a, b) => a + b, 0);
  const targets = weights.map((w) => (weightTotal === 0 ? layerCount / weights.length : (layerCount * w) / weightTotal));
  const layers = targets.map((t, i) => Math.min(capacities[i]!, Math.max(1, Math.floor(t))));
  let assigned = layers.reduce((a, b) => a + b, 0);
  // Hand out (or take back) one layer at a time where it moves a node closest to its target.
  while (assigned < layerCount) {
    const i = pickIndex(layers, (j) => layers[j]! < capacities[j]!, (j) => targets[j]! - layers[j]!);
    layers[i]! += 1;
    assigned += 1;
  }
  while (assigned > layerCount) {
    const i = pickIndex(layers, (j) => layers[j]! > 1, (j) => layers[j]! - targets[j]!);
    layers[i]! -= 1;
    assigned -= 1;
  }
  return layers;
}

/** The eligible index with the highest score (lowest index on ties). */
function pickIndex(items: readonly number[], eligible: (i: number) => boolean, score: (i: number) => number): number {
  let best = -1;
  for (let i = 0; i < items.length; i++) {
    if (eligible(i) && (best === -1 || score(i) > score(best))) best = i;
  }
  assert(best !== -1, "splitLayers: no node can take or give a layer (caller broke the precondition)");
  return best;
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(2)} ${units[unit]}`;
}
