// A small seeded PRNG (mulberry32) whose whole state is one u32, so it can live inside a pure
// state machine's state and a seed replays a run exactly.

/** Returns a value in [0, 1) and the next state. */
export function nextRandom(rngState: number): [value: number, nextState: number] {
  const next = (rngState + 0x6d2b79f5) >>> 0;
  let t = next;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return [((t ^ (t >>> 14)) >>> 0) / 4294967296, next];
}

/** A stateful wrapper for tests and drivers. */
export class Prng {
  constructor(private rngState: number) {}
  next(): number {
    const [value, nextState] = nextRandom(this.rngState);
    this.rngState = nextState;
    return value;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(probability: number): boolean {
    return this.next() < probability;
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty list");
    return items[this.int(items.length)]!;
  }
}
