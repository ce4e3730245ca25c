// A binary min-heap of candidate merges, ordered by priority and then by position (leftmost first),
// which is the order both llama.cpp tokenizers apply merges in.

export interface MergeCandidate {
  /** Lower merges first (BPE rank, or negated SentencePiece score). */
  readonly priority: number;
  readonly left: number;
  readonly right: number;
  /** Text of the merged pair when it was queued; stale candidates are detected by comparing it. */
  readonly text: string;
}

function before(a: MergeCandidate, b: MergeCandidate): boolean {
  return a.priority < b.priority || (a.priority === b.priority && a.left < b.left);
}

export class MergeQueue {
  private readonly heap: MergeCandidate[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(candidate: MergeCandidate): void {
    const heap = this.heap;
    heap.push(candidate);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!before(heap[index]!, heap[parent]!)) break;
      [heap[index], heap[parent]] = [heap[parent]!, heap[index]!];
      index = parent;
    }
  }

  pop(): MergeCandidate | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last !== undefined) {
      heap[0] = last;
      let index = 0;
      for (;;) {
        const left = 2 * index + 1;
        const right = left + 1;
        let smallest = index;
        if (left < heap.length && before(heap[left]!, heap[smallest]!)) smallest = left;
        if (right < heap.length && before(heap[right]!, heap[smallest]!)) smallest = right;
        if (smallest === index) break;
        [heap[index], heap[smallest]] = [heap[smallest]!, heap[index]!];
        index = smallest;
      }
    }
    return top;
  }
}

/** Symbols of a word as a doubly linked list over an array; merged-away symbols become "". */
export interface SymbolList {
  readonly texts: string[];
  readonly previous: Int32Array;
  readonly next: Int32Array;
}

export function symbolListOf(symbols: readonly string[]): SymbolList {
  const count = symbols.length;
  const previous = new Int32Array(count);
  const next = new Int32Array(count);
  for (let index = 0; index < count; index++) {
    previous[index] = index - 1;
    next[index] = index + 1 < count ? index + 1 : -1;
  }
  return { texts: [...symbols], previous, next };
}

/**
 * Merges adjacent symbols in queue order until no candidate is left. `candidateFor` returns the
 * priority of merging two texts, or null when they do not merge.
 */
export function mergeSymbols(list: SymbolList, candidateFor: (left: string, right: string) => number | null, onMerge?: (text: string, left: number, right: number) => void): void {
  const queue = new MergeQueue();
  const tryAdd = (left: number, right: number): void => {
    if (left < 0 || right < 0) return;
    const leftText = list.texts[left]!;
    const rightText = list.texts[right]!;
    const priority = candidateFor(leftText, rightText);
    if (priority === null) return;
    const text = leftText + rightText;
    queue.push({ priority, left, right, text });
    onMerge?.(text, left, right);
  };
  for (let index = 1; index < list.texts.length; index++) tryAdd(index - 1, index);
  for (let candidate = queue.pop(); candidate !== undefined; candidate = queue.pop()) {
    const leftText = list.texts[candidate.left]!;
    const rightText = list.texts[candidate.right]!;
    if (leftText === "" || rightText === "" || leftText + rightText !== candidate.text) continue;
    list.texts[candidate.left] = candidate.text;
    list.texts[candidate.right] = "";
    const after = list.next[candidate.right]!;
    list.next[candidate.left] = after;
    if (after >= 0) list.previous[after] = candidate.left;
    tryAdd(list.previous[candidate.left]!, candidate.left);
    tryAdd(candidate.left, after);
  }
}
