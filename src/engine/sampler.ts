// Picks the next token from a row of logits, with llama.cpp's sampler semantics and order:
// penalties → top_k → top_p → min_p → temperature → random draw (temperature 0: the arg max).
// top_p and min_p judge probabilities at temperature 1, as in llama.cpp's default chain.
// Logprobs are those of the model itself (softmax of the raw logits), as OpenAI reports them.
import type { GenerationParams } from "../shared/types.ts";
import type { SampledToken, SamplingParams } from "./engine.ts";

export interface SamplerParams {
  /** 0 = greedy. */
  readonly temperature: number;
  /** 0 = off. */
  readonly topK: number;
  /** 1 = off. */
  readonly topP: number;
  /** 0 = off. */
  readonly minP: number;
  /** 1 = off; > 1 discourages tokens seen in the last `penaltyLastN` tokens. */
  readonly repetitionPenalty: number;
  /** Subtracted once from the logit of every token seen. */
  readonly presencePenalty: number;
  /** Subtracted per occurrence. */
  readonly frequencyPenalty: number;
  /** How many recent tokens the penalties look at (llama.cpp's default: 64). */
  readonly penaltyLastN: number;
  /** null = a random seed. */
  readonly seed: number | null;
  /** Compute the chosen token's logprob. */
  readonly logprobs: boolean;
  /** How many alternatives to report (implies logprobs when > 0). */
  readonly topLogprobs: number;
}

export const SAMPLER_PENALTY_LAST_N_DEFAULT = 64;
/** Upper bound on penaltyLastN: the history ring is allocated at this size at most. */
export const SAMPLER_PENALTY_LAST_N_MAX = 1 << 16;
/** OpenAI allows up to 20 top_logprobs. */
export const SAMPLER_TOP_LOGPROBS_MAX = 20;

export const GREEDY_SAMPLER_PARAMS: SamplerParams = {
  temperature: 0,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  penaltyLastN: SAMPLER_PENALTY_LAST_N_DEFAULT,
  seed: 0,
  logprobs: false,
  topLogprobs: 0,
};

/** The sampler settings of a request (the API has already applied its defaults). */
export function samplerParamsOf(params: GenerationParams | SamplingParams): SamplerParams {
  return {
    temperature: params.temperature,
    topK: params.topK,
    topP: params.topP,
    minP: params.minP,
    repetitionPenalty: params.repetitionPenalty,
    presencePenalty: params.presencePenalty,
    frequencyPenalty: params.frequencyPenalty,
    penaltyLastN: SAMPLER_PENALTY_LAST_N_DEFAULT,
    seed: params.seed,
    logprobs: params.logprobs,
    // Alternatives are only reported with logprobs on (OpenAI's rule).
    topLogprobs: params.logprobs ? params.topLogprobs : 0,
  };
}

// ---- Random numbers: sfc32, seeded through splitmix32 so that nearby seeds give unrelated streams.

export type RandomSource = () => number;

export function seededRandom(seed: number): RandomSource {
  let state = seed >>> 0;
  const splitmix = (): number => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let counter = splitmix();
  return () => {
    const t = (((a + b) >>> 0) + counter) >>> 0;
    counter = (counter + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
}

function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

// ---- The pure core

/** The logits with llama.cpp's penalties applied to recently seen tokens (a copy; the input is left alone). */
function penalizedLogits(logits: Float32Array, recentTokens: readonly number[], params: SamplerParams): Float32Array {
  const active = params.repetitionPenalty !== 1 || params.presencePenalty !== 0 || params.frequencyPenalty !== 0;
  if (!active || recentTokens.length === 0 || params.penaltyLastN === 0) return logits;
  const changed = logits.slice();
  const counts = new Map<number, number>();
  const window = recentTokens.slice(Math.max(0, recentTokens.length - params.penaltyLastN));
  for (const id of window) counts.set(id, (counts.get(id) ?? 0) + 1);
  for (const [id, count] of counts) {
    if (id < 0 || id >= logits.length) continue;
    let logit = logits[id]!;
    // llama.cpp: dividing a negative logit would raise it, so negative ones are multiplied.
    logit = logit <= 0 ? logit * params.repetitionPenalty : logit / params.repetitionPenalty;
    logit -= count * params.frequencyPenalty + params.presencePenalty;
    changed[id] = logit;
  }
  return changed;
}

// e^x for x ≤ 0 from a table with linear interpolation: relative error < 2e-6 (immaterial to a
// draw or a reported logprob) at a quarter of Math.exp's cost, which matters when every token of a
// 150k vocabulary needs one. Below e^-64 the weight is 0.
const EXP_TABLE_STEPS_PER_UNIT = 256;
const EXP_TABLE_RANGE = 64;
const EXP_TABLE_SIZE = EXP_TABLE_STEPS_PER_UNIT * EXP_TABLE_RANGE;
const EXP_TABLE = new Float64Array(EXP_TABLE_SIZE + 2);
for (let index = 0; index < EXP_TABLE.length; index++) EXP_TABLE[index] = Math.exp(-index / EXP_TABLE_STEPS_PER_UNIT);

/** e^x for x ≤ 0 (NaN and -Infinity give 0). */
export function expNonPositive(x: number): number {
  const position = -x * EXP_TABLE_STEPS_PER_UNIT;
  if (!(position < EXP_TABLE_SIZE)) return 0;
  const index = position | 0;
  const low = EXP_TABLE[index]!;
  return low + (EXP_TABLE[index + 1]! - low) * (position - index);
}

/** NaN counts as -Infinity everywhere: comparisons with NaN are false, so `> max` skips it. */
function maxLogit(logits: Float32Array, ids: Int32Array | null): number {
  let max = -Infinity;
  if (ids === null) {
    for (let id = 0; id < logits.length; id++) if (logits[id]! > max) max = logits[id]!;
  } else {
    for (const id of ids) if (logits[id]! > max) max = logits[id]!;
  }
  return max;
}

function argmax(logits: Float32Array): number {
  let best = 0;
  let bestLogit = -Infinity;
  for (let tokenId = 0; tokenId < logits.length; tokenId++) {
    if (logits[tokenId]! > bestLogit) {
      best = tokenId;
      bestLogit = logits[tokenId]!;
    }
  }
  return best;
}

// Candidates are ranked with a histogram instead of a sort: logits within RANGE_NATS of the best
// fall into BUCKETS equal buckets (the rest share the last one). Whole buckets above the cut are
// kept as they are; only the bucket the cut falls in is sorted. O(vocabulary) per token.
const BUCKETS = 1024;
const RANGE_NATS = 32;

type Limit = { readonly count: number } | { readonly massFraction: number };

/** The best candidates of `ids` up to `limit` (top_k: a count; top_p: a share of the probability mass). */
function keepBest(ids: Int32Array, logits: Float32Array, limit: Limit): Int32Array {
  const max = maxLogit(logits, ids);
  if (max === -Infinity) return ids.subarray(0, 1);
  const byMass = "massFraction" in limit;
  const scale = BUCKETS / RANGE_NATS;
  const bucketOf = new Uint16Array(ids.length);
  const bucketCounts = new Int32Array(BUCKETS);
  const bucketMass = new Float64Array(BUCKETS);
  let totalMass = 0;
  for (let index = 0; index < ids.length; index++) {
    const logit = logits[ids[index]!]!;
    const distance = (max - logit) * scale;
    const bucket = distance < BUCKETS - 1 ? Math.floor(distance) : BUCKETS - 1; // NaN lands last
    bucketOf[index] = bucket;
    bucketCounts[bucket]!++;
    // Tokens more than RANGE_NATS below the best weigh < e^-32 each: leaving them out of the mass
    // changes it by a relative 1e-9 at most and skips most of the exps on real models.
    // Math.exp here, not the table: where top_p cuts must not depend on interpolation error.
    if (byMass && bucket < BUCKETS - 1) {
      const weight = Math.exp(logit - max);
      bucketMass[bucket]! += weight;
      totalMass += weight;
    }
  }
  let boundary = 0;
  let countBefore = 0;
  let massBefore = 0;
  const targetMass = byMass ? limit.massFraction * totalMass : 0;
  if (byMass) {
    while (boundary < BUCKETS - 1 && massBefore + bucketMass[boundary]! < targetMass) massBefore += bucketMass[boundary++]!;
  } else {
    while (boundary < BUCKETS - 1 && countBefore + bucketCounts[boundary]! < limit.count) countBefore += bucketCounts[boundary++]!;
  }
  const kept = new Int32Array(ids.length);
  let keptCount = 0;
  const boundaryMembers: number[] = [];
  for (let index = 0; index < ids.length; index++) {
    const bucket = bucketOf[index]!;
    if (bucket < boundary) kept[keptCount++] = ids[index]!;
    else if (bucket === boundary) boundaryMembers.push(ids[index]!);
  }
  const logitOf = (id: number): number => (Number.isNaN(logits[id]!) ? -Infinity : logits[id]!);
  boundaryMembers.sort((a, b) => logitOf(b) - logitOf(a) || a - b);
  if (byMass) {
    let cumulative = massBefore;
    for (const id of boundaryMembers) {
      kept[keptCount++] = id;
      cumulative += logitOf(id) > -Infinity ? Math.exp(logitOf(id) - max) : 0;
      if (cumulative >= targetMass) break;
    }
  } else {
    for (const id of boundaryMembers.slice(0, limit.count - countBefore)) kept[keptCount++] = id;
  }
  return kept.subarray(0, keptCount);
}

/** Token ids surviving top_k, top_p and min_p (in no particular but a deterministic order). */
function filteredCandidates(logits: Float32Array, params: SamplerParams): Int32Array {
  let ids: Int32Array = new Int32Array(logits.length);
  for (let id = 0; id < ids.length; id++) ids[id] = id;
  if (params.topK > 0 && params.topK < ids.length) ids = keepBest(ids, logits, { count: params.topK });
  // top_p judges probabilities renormalized over what top_k kept, at temperature 1 (llama.cpp's order).
  if (params.topP < 1) ids = keepBest(ids, logits, { massFraction: params.topP });
  if (params.minP > 0) {
    const threshold = maxLogit(logits, ids) + Math.log(params.minP);
    const survivors = ids.filter((id) => logits[id]! >= threshold);
    ids = survivors.length > 0 ? survivors : ids.subarray(0, 1);
  }
  return ids;
}

// One buffer for the draw's weights, reused across tokens: a fresh 1.2 MB array per token of a
// 150k vocabulary would be pure garbage-collector work. Safe: sampling never re-enters itself.
let weightsScratch = new Float64Array(0);
function scratchWeights(count: number): Float64Array {
  if (weightsScratch.length < count) weightsScratch = new Float64Array(count);
  return weightsScratch;
}

/** Draws from softmax(logit / temperature) over `ids` (all tokens when null); one exp per candidate. */
function draw(logits: Float32Array, ids: Int32Array | null, temperature: number, random: RandomSource): number {
  const count = ids === null ? logits.length : ids.length;
  const max = maxLogit(logits, ids);
  const weights = scratchWeights(count);
  let total = 0;
  for (let index = 0; index < count; index++) {
    const logit = logits[ids === null ? index : ids[index]!]!;
    const weight = expNonPositive((logit - max) / temperature);
    weights[index] = weight;
    total += weight;
  }
  const idAt = (index: number): number => (ids === null ? index : ids[index]!);
  // A fully masked row (all -Infinity) leaves no weight: fall back to the best-ranked candidate.
  if (!(total > 0 && Number.isFinite(total))) return ids === null ? argmax(logits) : idAt(0);
  let target = random() * total;
  let lastWeighted = 0;
  for (let index = 0; index < count; index++) {
    if (weights[index]! > 0) lastWeighted = index;
    target -= weights[index]!;
    if (target < 0) return idAt(index);
  }
  return idAt(lastWeighted); // rounding left a sliver: the last candidate with any weight
}

/** Log-probabilities under the raw model: the chosen token's and the best `topCount` alternatives. */
function modelLogprobs(logits: Float32Array, tokenId: number, topCount: number): Pick<SampledToken, "logprob" | "topLogprobs"> {
  const max = maxLogit(logits, null);
  let sum = 0;
  for (let id = 0; id < logits.length; id++) sum += expNonPositive(logits[id]! - max);
  const logNormalizer = max + Math.log(sum);
  const logprobOf = (id: number): number => (Number.isNaN(logits[id]!) ? -Infinity : logits[id]! - logNormalizer);
  let topLogprobs: { tokenId: number; logprob: number }[] = [];
  if (topCount > 0) {
    const count = Math.min(topCount, SAMPLER_TOP_LOGPROBS_MAX, logits.length);
    const all = new Int32Array(logits.length);
    for (let id = 0; id < all.length; id++) all[id] = id;
    const best = [...keepBest(all, logits, { count })].sort((a, b) => logprobOf(b) - logprobOf(a) || a - b);
    topLogprobs = best.map((id) => ({ tokenId: id, logprob: logprobOf(id) }));
  }
  return { logprob: logprobOf(tokenId), topLogprobs };
}

/**
 * Samples one token. Pure: the same logits, history, parameters and random source state give the
 * same token. `recentTokens` is the history the penalties look at (prompt and generated tokens).
 */
export function sampleToken(logits: Float32Array, recentTokens: readonly number[], params: SamplerParams, random: RandomSource): SampledToken {
  if (logits.length === 0) throw new RangeError("cannot sample from an empty vocabulary");
  const penalized = penalizedLogits(logits, recentTokens, params);
  let tokenId: number;
  if (params.temperature <= 0) {
    tokenId = argmax(penalized);
  } else if (params.topK <= 0 && params.topP >= 1 && params.minP <= 0) {
    tokenId = draw(penalized, null, params.temperature, random);
  } else {
    tokenId = draw(penalized, filteredCandidates(penalized, params), params.temperature, random);
  }
  if (!params.logprobs && params.topLogprobs <= 0) return { tokenId, logprob: null, topLogprobs: [] };
  return { tokenId, ...modelLogprobs(logits, tokenId, params.topLogprobs) };
}

/** A sampler for one generation: owns the random stream and the penalty history. */
export class Sampler {
  private readonly random: RandomSource;
  private readonly history: number[] = [];
  private readonly historyMax: number;
  readonly seed: number;

  constructor(private readonly params: SamplerParams) {
    if (!(params.penaltyLastN >= 0 && params.penaltyLastN <= SAMPLER_PENALTY_LAST_N_MAX)) {
      throw new RangeError(`penaltyLastN ${params.penaltyLastN} is outside 0..${SAMPLER_PENALTY_LAST_N_MAX}`);
    }
    this.seed = params.seed ?? randomSeed();
    this.random = seededRandom(this.seed);
    this.historyMax = params.penaltyLastN;
  }

  /** Records a token for the penalties. llama-server feeds it the whole prompt first, then each output token. */
  accept(tokenId: number): void {
    if (this.historyMax === 0) return;
    this.history.push(tokenId);
    // Trim in batches so accept stays O(1) amortized.
    if (this.history.length >= 2 * this.historyMax) this.history.splice(0, this.history.length - this.historyMax);
  }

  sample(logits: Float32Array): SampledToken {
    return sampleToken(logits, this.history, this.params, this.random);
  }
}
