// The forward pass of one shard: TypeScript drives the layer loop, each layer is one native call.
// Stage 0 turns tokens into hidden states, middle stages transform hidden states, the last stage
// turns them into logits. Only hidden states (nTokens × nEmbd floats) cross stage boundaries.
import { readGguf, type GgufFile } from "./gguf/reader.ts";
import { checkShardRange, nativeConfig, readModelArch, shardTensors, type ModelArch, type ShardRange } from "./model.ts";
import { loadNative, type NativeKvCache, type NativeModel } from "./native.ts";

/** What a stage receives: token ids on stage 0, hidden states from the previous stage otherwise. */
export type StageInput = { readonly tokens: readonly number[] } | { readonly hidden: Float32Array; readonly nTokens: number };

export class ShardForward {
  private closed = false;

  private constructor(
    readonly arch: ModelArch,
    readonly range: ShardRange,
    private readonly model: NativeModel,
  ) {}

  /** Maps the shard's tensors (and only those) from the GGUF file. */
  static open(path: string, range?: ShardRange, parsed?: GgufFile): ShardForward {
    const file = parsed ?? readGguf(path);
    const arch = readModelArch(file);
    const r = range ?? { layerStart: 0, layerEnd: arch.layerCount };
    checkShardRange(arch, r);
    const native = loadNative();
    const model = new native.Model(path, nativeConfig(arch, r), shardTensors(file, arch, r));
    // The parsed file is not kept: its metadata (vocabulary tables) is the tokenizer's business.
    return new ShardForward(arch, r, model);
  }

  get isFirst(): boolean {
    return this.range.layerStart === 0;
  }
  get isLast(): boolean {
    return this.range.layerEnd === this.arch.layerCount;
  }
  get mappedBytes(): number {
    return this.model.mappedBytes;
  }

  /** A KV cache for this shard's layers; f16 like llama.cpp's default. */
  createCache(contextSize: number, f16 = true): NativeKvCache {
    return new (loadNative().KvCache)(this.model, contextSize, f16);
  }

  /** Reads each layer's weights into memory, reporting progress per layer. */
  prefetch(onLayer: (layersLoaded: number, layerCount: number) => void): void {
    const total = this.range.layerEnd - this.range.layerStart;
    this.model.prefetchRest();
    for (let layer = this.range.layerStart; layer < this.range.layerEnd; layer++) {
      this.model.prefetchLayer(layer);
      onLayer(layer - this.range.layerStart + 1, total);
    }
  }

  /** The tokens' embeddings, written to the start of `into` when given (it must be large enough). */
  embed(tokens: readonly number[], into?: Float32Array): Float32Array {
    const size = tokens.length * this.arch.nEmbd;
    if (into !== undefined && into.length < size) throw new RangeError(`into has ${into.length} floats, ${size} needed`);
    const hidden = into === undefined ? new Float32Array(size) : into.subarray(0, size);
    this.model.embed(Int32Array.from(tokens), hidden);
    return hidden;
  }

  /** Runs this shard's layers in place over nTokens hidden states starting at position pos. */
  runLayers(cache: NativeKvCache, hidden: Float32Array, nTokens: number, pos: number): void {
    for (let layer = this.range.layerStart; layer < this.range.layerEnd; layer++) {
      this.model.forwardLayer(layer, cache, hidden, nTokens, pos);
    }
  }

  /**
   * Embeds (stage 0) and runs the layers; returns the hidden states for the next stage. Token input
   * is embedded into `embedInto` when given (a caller that consumes the result at once can reuse
   * one buffer instead of leaving an nTokens × nEmbd array per prefill chunk to the GC).
   */
  forwardHidden(cache: NativeKvCache, input: StageInput, pos: number, embedInto?: Float32Array): { hidden: Float32Array; nTokens: number } {
    let hidden: Float32Array;
    let nTokens: number;
    if ("tokens" in input) {
      if (!this.isFirst) throw new Error(`shard [${this.range.layerStart}, ${this.range.layerEnd}) is not the first stage: pass hidden states`);
      hidden = this.embed(input.tokens, embedInto);
      nTokens = input.tokens.length;
    } else {
      hidden = input.hidden;
      nTokens = input.nTokens;
      if (hidden.length !== nTokens * this.arch.nEmbd) {
        throw new RangeError(`hidden has ${hidden.length} floats, expected ${nTokens} × ${this.arch.nEmbd}`);
      }
    }
    if (nTokens === 0) throw new RangeError("no tokens to process");
    this.runLayers(cache, hidden, nTokens, pos);
    return { hidden, nTokens };
  }

  /**
   * Logits (vocabSize floats per row) for the last row, or for every row when allRows. A caller
   * that consumes them at once can pass `into` (reused across tokens: a fresh 600 KB array per
   * token of a 150k vocabulary is garbage the GC collects late, tens of MB of peak RSS).
   */
  logits(hidden: Float32Array, nTokens: number, allRows = false, into?: Float32Array): Float32Array {
    if (!this.isLast) throw new Error(`shard [${this.range.layerStart}, ${this.range.layerEnd}) is not the last stage`);
    const first = allRows ? 0 : nTokens - 1;
    const size = (nTokens - first) * this.arch.vocabSize;
    if (into !== undefined && into.length !== size) throw new RangeError(`into has ${into.length} floats, expected ${size}`);
    const out = into ?? new Float32Array(size);
    this.model.head(hidden, nTokens, first, out);
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.model.close();
  }
}
