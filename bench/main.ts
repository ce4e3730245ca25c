// `npm run bench -- NAME [args]`: runs one benchmark; each prints JSON, the summary as its last line.
const BENCHMARKS: Record<string, string> = {
  cancel: "./cancel.ts",
  cluster: "./cluster.ts",
  engine: "./engine.ts",
  "runner-cancel": "./runner-cancel.ts",
  soak: "./soak.ts",
};

const [name, ...args] = process.argv.slice(2);
const modulePath = name === undefined ? undefined : BENCHMARKS[name];
if (modulePath === undefined) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(BENCHMARKS).join("|")}> [args]\n`);
  process.exit(2);
}
const mod = (await import(modulePath)) as { main(args: string[]): Promise<void> };
await mod.main(args);
