import assert from "node:assert/strict";
import { test } from "node:test";
import { StopStringFilter } from "../../src/runner/stop-strings.ts";

/** Feeds pieces one by one; returns what was emitted and whether a stop string ended it. */
function feed(stops: string[], pieces: string[]): { text: string; stopped: boolean } {
  const filter = new StopStringFilter(stops);
  let text = "";
  for (const piece of pieces) {
    const scan = filter.push(piece);
    text += scan.emit;
    if (scan.stopped) return { text, stopped: true };
  }
  return { text: text + filter.flush(), stopped: false };
}

const cases: { name: string; stops: string[]; pieces: string[]; text: string; stopped: boolean }[] = [
  { name: "no stops", stops: [], pieces: ["a", "b"], text: "ab", stopped: false },
  { name: "stop inside one piece", stops: ["X"], pieces: ["abXcd"], text: "ab", stopped: true },
  { name: "stop across pieces", stops: ["END"], pieces: ["ab E", "N", "D tail"], text: "ab ", stopped: true },
  { name: "partial match then divergence", stops: ["END"], pieces: ["ab EN", "x"], text: "ab ENx", stopped: false },
  { name: "partial match at the end is flushed", stops: ["END"], pieces: ["ab EN"], text: "ab EN", stopped: false },
  { name: "overlapping prefix restarts", stops: ["aab"], pieces: ["a", "a", "a", "b"], text: "a", stopped: true },
  { name: "earliest stop wins", stops: ["cd", "b"], pieces: ["abcd"], text: "a", stopped: true },
  { name: "stop at the very start", stops: ["ab"], pieces: ["a", "b", "c"], text: "", stopped: true },
  { name: "pieces after stop are ignored", stops: ["b"], pieces: ["ab", "cb"], text: "a", stopped: true },
  { name: "multi-byte stop", stops: ["é!"], pieces: ["caf", "é", "!"], text: "caf", stopped: true },
];

for (const c of cases) {
  test(`stop strings: ${c.name}`, () => {
    assert.deepEqual(feed(c.stops, c.pieces), { text: c.text, stopped: c.stopped });
  });
}

test("only text that could still become a stop string is held back", () => {
  const filter = new StopStringFilter(["world", "abc"]);
  assert.deepEqual(filter.push("hello wor"), { emit: "hello ", stopped: false });
  assert.deepEqual(filter.push("k ab"), { emit: "work ", stopped: false });
  assert.deepEqual(filter.push("x"), { emit: "abx", stopped: false });
  assert.equal(filter.flush(), "");
});

test("a surrogate pair is never split between emitted and held text", () => {
  // "😀" is two UTF-16 units; a stop starting with its low half must not cut the pair.
  const filter = new StopStringFilter(["\uDE00z"]);
  assert.deepEqual(filter.push("a😀"), { emit: "a", stopped: false });
  assert.equal(filter.flush(), "😀");
});

test("long repetitive stop strings cost linear time", () => {
  const stop = `${"a".repeat(200_000)}b`;
  const filter = new StopStringFilter([stop]);
  const startMs = performance.now();
  let emitted = "";
  for (let i = 0; i < 200_000; i++) emitted += filter.push("a").emit;
  const scan = filter.push("b");
  // A quadratic matcher needs minutes here; a linear one well under a second even on a busy machine.
  assert.ok(performance.now() - startMs < 5_000);
  assert.deepEqual({ emitted, scan }, { emitted: "", scan: { emit: "", stopped: true } });
});

/** The whole text at once: cut where a stop string first ends (the longest one ending there). */
function referenceCut(text: string, stops: string[]): { text: string; stopped: boolean } {
  for (let end = 1; end <= text.length; end++) {
    const ending = stops.filter((s) => text.slice(0, end).endsWith(s)).sort((a, b) => b.length - a.length);
    const stop = ending[0];
    if (stop !== undefined) return { text: text.slice(0, end - stop.length), stopped: true };
  }
  return { text, stopped: false };
}

test("any split of the text into pieces gives the same result as scanning it whole", () => {
  const seed = Number(process.env["SKEIN_TEST_SEED"] ?? Date.now() % 1_000_000);
  // mulberry32: small, seedable, and its low bits are usable (an LCG's are not).
  let state = seed >>> 0;
  const random = (n: number): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % n);
  };
  const alphabet = "abé ";
  const word = (lengthMax: number): string =>
    Array.from({ length: 1 + random(lengthMax) }, () => alphabet[random(alphabet.length)]).join("");
  for (let round = 0; round < 2_000; round++) {
    const text = word(30);
    const stops = Array.from({ length: random(3) }, () => word(4));
    const pieces: string[] = [];
    for (let i = 0; i < text.length; ) {
      const length = 1 + random(4);
      pieces.push(text.slice(i, i + length));
      i += length;
    }
    assert.deepEqual(feed(stops, pieces), referenceCut(text, stops), `seed ${seed} round ${round}: ${JSON.stringify({ text, stops, pieces })}`);
  }
});
