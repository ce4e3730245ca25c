import assert from "node:assert/strict";
import { test } from "node:test";
import { heldSuffixLength, StopStringFilter } from "../../src/runner/stop-strings.ts";

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
  assert.equal(heldSuffixLength("hello wor", ["world"]), 3);
  assert.equal(heldSuffixLength("hello", ["world"]), 0);
  assert.equal(heldSuffixLength("xab", ["abc", "b"]), 2);
});

test("a surrogate pair is never split between emitted and held text", () => {
  // "😀" is two UTF-16 units; a stop starting with its low half must not cut the pair.
  const held = heldSuffixLength("a😀", ["\uDE00z"]);
  assert.equal(held, 2);
});
