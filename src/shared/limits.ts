// Every queue, map and buffer in skein has a named limit. Going over one is an explicit error.

/** Tasks waiting for a runner per instance; the next request gets 429. */
export const TASKS_PENDING_PER_INSTANCE_MAX = 64;
/** Tasks alive in State at once (all instances); protects every map that is keyed by task. */
export const TASKS_MAX = 1024;
/**
 * Most tokens of a prompt processed per prefill call: cancel checks and progress happen between
 * chunks. The runner sizes each chunk to take about PREFILL_CHUNK_TARGET_MS (prefill-chunks.ts).
 */
export const PREFILL_CHUNK_TOKENS = 256;
/** The first chunk, before the runner has measured how fast this model prefills on this machine. */
export const PREFILL_FIRST_CHUNK_TOKENS = 64;
/** Fewest tokens per chunk, however slow the machine: below this, per-call overhead dominates. */
export const PREFILL_CHUNK_TOKENS_MIN = 8;
/**
 * How long one prefill call should take at most. The engine computes synchronously, so the runner's
 * event loop — its heartbeats, a cancel, a pipeline stage's link — waits for the call; a call past
 * RUNNER_HEARTBEAT_TIMEOUT_MS (a large model on a slow CPU) would look like a hung runner.
 */
export const PREFILL_CHUNK_TARGET_MS = 2_000;
/** Out-of-order events a replica holds while waiting for a gap to fill before asking for the log. */
export const EVENT_REORDER_MAX = 1024;
/** Events returned by one RequestEventLog / GET /events page. */
export const EVENT_LOG_PAGE_MAX = 4096;
/** Request bodies over this many bytes get 413. */
export const REQUEST_BODY_BYTES_MAX = 4 * 1024 * 1024;
/** Messages in one chat request. */
export const CHAT_MESSAGES_MAX = 4096;
/** max_tokens cap; larger values are refused with 400. */
export const GENERATION_TOKENS_MAX = 1 << 20;
/** Stop strings per request (OpenAI allows 4; we allow a few more). */
export const STOP_STRINGS_MAX = 16;
/** Tools offered in one request (OpenAI allows 128). */
export const TOOLS_MAX = 128;
/** Tool calls in one assistant message, requested or generated. */
export const TOOL_CALLS_PER_MESSAGE_MAX = 64;
/** A function name (OpenAI allows 64). */
export const TOOL_NAME_CHARS_MAX = 64;
/** A runner that sends no heartbeat for this long while loaded is considered hung. */
export const RUNNER_HEARTBEAT_TIMEOUT_MS = 10_000;
/** How often a runner sends a heartbeat. */
export const RUNNER_HEARTBEAT_INTERVAL_MS = 1_000;
/** Restarts of one runner within RUNNER_RESTART_WINDOW_MS before it stays Failed. */
export const RUNNER_RESTARTS_MAX = 5;
export const RUNNER_RESTART_WINDOW_MS = 60_000;
/** Keep-alive comment interval on SSE streams while no token has arrived yet. */
export const SSE_KEEPALIVE_MS = 2_000;
/** Events kept in memory for GET /events replay before a client must re-read /state. */
export const EVENT_HISTORY_IN_MEMORY_MAX = 65_536;
/** Voting members of one cluster's replicated log; a home cluster has a handful, this bounds a forged list. */
export const CLUSTER_MEMBERS_MAX = 64;
/**
 * Longest wait on a remote pipeline stage for one reply (an activation's token or acknowledgement,
 * a connection, a handshake): past it the task fails instead of hanging. A prefill chunk of 256
 * tokens through a large model on a slow node is the slowest legitimate step.
 */
export const PIPELINE_STAGE_REPLY_TIMEOUT_MS = 120_000;
/** Connecting and authenticating to the next pipeline stage. */
export const PIPELINE_STAGE_CONNECT_TIMEOUT_MS = 10_000;
/**
 * A stage link with no frame (heartbeats included) for this long is dead. Longer than a node link's
 * because a stage's event loop is busy in synchronous compute for a whole prefill chunk.
 */
export const PIPELINE_LINK_SILENCE_MS = 10_000;
/** Prefill chunks stage 0 sends ahead of the last stage's acknowledgements (bounds the link's queue). */
export const PIPELINE_PREFILL_CHUNKS_IN_FLIGHT_MAX = 2;
/**
 * Tasks a pipeline's first stage interleaves at most (see runnerTaskSlots): each holds a KV slot on
 * every stage, so this also bounds the memory that concurrency costs.
 */
export const PIPELINE_TASKS_IN_FLIGHT_MAX = 8;
/** KV slots (sequences) one pipeline stage holds at once, over all its upstream connections. */
export const PIPELINE_STAGE_SLOTS_MAX = 64;
/** Upstream connections one stage accepts at once (its previous stage, plus a restarted one briefly). */
export const PIPELINE_STAGE_LINKS_MAX = 8;
