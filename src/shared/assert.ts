// Assertions are for programmer errors (a broken invariant): they throw and the process is restarted
// by its supervisor. Operating errors (unknown ids from the network, a vanished client) are handled,
// never asserted.
export class AssertionError extends Error {
  override name = "AssertionError";
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

export function assertNever(value: never): never {
  throw new AssertionError(`unhandled variant: ${JSON.stringify(value)}`);
}
