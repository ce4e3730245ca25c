// Pure decisions about which cluster a node belongs to and who votes in it. No I/O, no clock.
//
// Every node starts (or restarts) in a cluster of its own log. Nodes tell each other which cluster
// they are in (a descriptor, gossiped on every link); when two clusters meet, the junior one's
// nodes leave theirs (dropping its State) and ask to join the senior one, whose master adds them
// as voters one at a time. Seniority is a total order, so any set of clusters that can reach each
// other ends as one: more members first (a lone restarted laptop never pulls a working cluster
// apart), then the older founding, then the id.
import type { NodeId } from "../shared/ids.ts";
import type { State } from "../shared/state.ts";
import type { EventOf } from "../shared/types.ts";

export interface ClusterDescriptor {
  readonly clusterId: string;
  /** Voting members as the sender last knew them (≥ 1). */
  readonly memberCount: number;
}

/** A new cluster id: founding time first (base 36, fixed width) so ids of older clusters sort first. */
export function newClusterId(founderId: NodeId, nowMs: number): string {
  return `${Math.floor(nowMs).toString(36).padStart(10, "0")}-${founderId}`.slice(0, 128);
}

/** < 0 when `a` is senior to `b` (b's nodes should join a), 0 when they are the same cluster. */
export function compareSeniority(a: ClusterDescriptor, b: ClusterDescriptor): number {
  if (a.clusterId === b.clusterId) return 0;
  if (a.memberCount !== b.memberCount) return b.memberCount - a.memberCount;
  return a.clusterId < b.clusterId ? -1 : 1;
}

/**
 * What this node should do about a peer's descriptor: join the peer's cluster when it is senior to
 * ours (or we are in none yet), otherwise stay.
 */
export function shouldJoin(own: ClusterDescriptor | null, peer: ClusterDescriptor): boolean {
  if (own === null) return true;
  return compareSeniority(peer, own) < 0;
}

export interface PeerView {
  readonly nodeId: NodeId;
  /** The cluster the peer says it is in or is joining; null when it has said nothing yet. */
  readonly clusterId: string | null;
  /**
   * A joiner has caught up with the leader's log as a learner (absent: unknown, taken as caught up).
   * Adding it before would raise the majority while it still needs a snapshot.
   */
  readonly caughtUp?: boolean;
}

/** Joiners: linked peers asking for this cluster that are not members yet (the leader makes them learners). */
export function joiners(clusterId: string | null, members: readonly NodeId[], linkedPeers: readonly PeerView[]): NodeId[] {
  if (clusterId === null) return [];
  return linkedPeers.filter((p) => p.clusterId === clusterId && !members.includes(p.nodeId)).map((p) => p.nodeId);
}

export type MembersChange = EventOf<"ClusterMembersChanged">;

/**
 * The leader's next membership change, one voter at a time (single-server changes keep any two
 * majorities overlapping): none while an earlier change is uncommitted (`committed` lags
 * `current`); otherwise remove one member that timed out, else add one linked peer that asks to
 * join this cluster and has caught up. `current` is the master's State (uncommitted entries included).
 */
export function nextMembersChange(
  current: State,
  committed: State,
  linkedPeers: readonly PeerView[],
  timedOut: ReadonlySet<NodeId>,
): MembersChange | null {
  const clusterId = current.clusterId;
  if (clusterId === null || !sameMembers(current.members, committed.members) || committed.clusterId !== clusterId) return null;
  const members = current.members;
  const gone = members.find((id) => timedOut.has(id));
  if (gone !== undefined && members.length > 1) {
    return { type: "ClusterMembersChanged", clusterId, members: members.filter((id) => id !== gone) };
  }
  const joining = linkedPeers.find((p) => p.clusterId === clusterId && !members.includes(p.nodeId) && p.caughtUp !== false);
  if (joining !== undefined) return { type: "ClusterMembersChanged", clusterId, members: [...members, joining.nodeId] };
  return null;
}

const sameMembers = (a: readonly NodeId[], b: readonly NodeId[]): boolean => a.length === b.length && a.every((id, i) => id === b[i]);
