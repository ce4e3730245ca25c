// Time enters skein only through a Clock, so the simulation and tests can drive it.
export interface Clock {
  nowMs(): number;
}

export const systemClock: Clock = { nowMs: () => Date.now() };

/** Test double: time moves only when the test says so. */
export class FakeClock implements Clock {
  constructor(private timeMs = 1_700_000_000_000) {}
  nowMs(): number {
    return this.timeMs;
  }
  advance(ms: number): void {
    this.timeMs += ms;
  }
}
