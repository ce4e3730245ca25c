import assert from "node:assert/strict";
import { test } from "node:test";
import { z } from "zod";
import type { HardState } from "../../src/election/driver.ts";
import { RAFT_TOPIC, RaftDriver, raftMessageSchema } from "../../src/election/driver.ts";
import type { RaftConfig } from "../../src/election/raft.ts";
import { initialRaftState } from "../../src/election/raft.ts";
import type { MessageHandler, Transport } from "../../src/net/transport.ts";
import { FakeClock } from "../../src/shared/clock.ts";
import type { NodeId } from "../../src/shared/ids.ts";

const [A, B, C] = ["a", "b", "c"] as NodeId[] as [NodeId, NodeId, NodeId];

/** Test double: records what the driver sends, in order with `persist` calls. */
class FakeTransport implements Transport {
  readonly nodeId = B;
  handler: MessageHandler = () => {};
  constructor(private readonly journal: string[]) {}
  send(to: NodeId, message: unknown): boolean {
    this.journal.push(`send ${to} ${(message as { message: { type: string } }).message.type}`);
    return true;
  }
  onMessage(handler: MessageHandler): void {
    this.handler = handler;
  }
  onPeer(): void {}
  connectedPeers(): NodeId[] {
    return [A, C];
  }
}

function setup() {
  const journal: string[] = [];
  const transport = new FakeTransport(journal);
  const config: RaftConfig<string, string[]> = {
    nodeId: B,
    voterIds: [A, B, C],
    electionTimeoutMinMs: 150,
    electionTimeoutMaxMs: 300,
    heartbeatIntervalMs: 50,
    entriesPerMessageMax: 8,
    logTailKeep: 4,
    compactionBatch: 4,
    logEntriesInMemoryMax: 64,
    uncommittedEntriesMax: 8,
    applyToSnapshot: (s, e) => [...s, e.payload],
    leaderNoop: () => "noop",
  };
  const schema = raftMessageSchema(z.string(), z.array(z.string()), config.entriesPerMessageMax);
  const persisted: HardState<string, string[]>[] = [];
  const initial = { ...initialRaftState(config, { lastIndex: -1, lastTerm: 0, state: [] }, 1, 0), term: 1 };
  const driver = new RaftDriver({
    config,
    transport,
    clock: new FakeClock(0),
    initial,
    parseMessage: (raw) => {
      const r = schema.safeParse(raw);
      return r.success ? r.data : null;
    },
    onApply: () => {},
    onRestore: () => {},
    persist: (hard) => {
      persisted.push(hard);
      journal.push(`persist term ${hard.term} vote ${hard.votedFor}`);
    },
  });
  return { driver, transport, journal, persisted };
}

test("a vote is persisted before the reply that grants it leaves", () => {
  const { transport, journal } = setup();
  transport.handler(A, { topic: RAFT_TOPIC, message: { type: "RequestVote", term: 1, lastLogIndex: -1, lastLogTerm: 0 } });
  assert.deepEqual(journal, ["persist term 1 vote a", "send a RequestVoteReply"]);
});

test("malformed or foreign messages are dropped before the core sees them", () => {
  const { driver, transport, journal } = setup();
  transport.handler(A, { topic: RAFT_TOPIC, message: { type: "RequestVote", term: -1 } });
  transport.handler(A, { topic: RAFT_TOPIC, message: { type: "AppendEntries", term: 1, seq: 1, prevIndex: -1, prevTerm: 0, entries: [{ term: 1, index: 5, payload: "gap" }], leaderCommit: 0 } });
  transport.handler(A, { topic: "pipeline", message: {} });
  assert.equal(driver.droppedMessages, 2);
  assert.deepEqual(journal, []);
  assert.equal(driver.state.log.length, 0);
});

test("a message that contradicts Raft's invariants is refused, the node unchanged; the process goes on", () => {
  const { driver, transport, journal } = setup();
  // b holds entry 0 of term 1, committed, from leader a.
  transport.handler(A, { topic: RAFT_TOPIC, message: { type: "AppendEntries", term: 1, seq: 1, prevIndex: -1, prevTerm: 0, entries: [{ term: 1, index: 0, payload: "x" }], leaderCommit: 0 } });
  assert.equal(driver.state.commitIndex, 0);
  const before = driver.state;
  journal.length = 0;
  // A node with another history claims term 2 and overwrites the committed entry: b must not obey.
  transport.handler(C, { topic: RAFT_TOPIC, message: { type: "AppendEntries", term: 2, seq: 1, prevIndex: -1, prevTerm: 0, entries: [{ term: 2, index: 0, payload: "y" }], leaderCommit: 0 } });
  assert.equal(driver.refusedMessages, 1);
  assert.match(driver.lastRefusal ?? "", /overwrote committed entry 0/);
  assert.equal(driver.state, before, "not even the term moved");
  assert.deepEqual(journal, [], "nothing persisted or sent");
  // Ordinary messages still work afterwards.
  transport.handler(A, { topic: RAFT_TOPIC, message: { type: "AppendEntries", term: 1, seq: 2, prevIndex: 0, prevTerm: 1, entries: [{ term: 1, index: 1, payload: "z" }], leaderCommit: 1 } });
  assert.equal(driver.state.commitIndex, 1);
});
