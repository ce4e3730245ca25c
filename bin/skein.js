#!/usr/bin/env node
// The installed entry point: runs the compiled CLI (npm ci builds dist/ in its prepare step).
import("../dist/cli/main.js").then((cli) => cli.main(process.argv.slice(2))).catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
