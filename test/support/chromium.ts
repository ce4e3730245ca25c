// Real-browser tests: Debian's Chromium driven by playwright-core, and the dashboard built once per
// test process with Vite's JS API into a temp folder (npm test does not run the build).
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { BrowserContext } from "playwright-core";
import { chromium } from "playwright-core";

const PACKAGE_ROOT = path.resolve(import.meta.dirname, "..", "..");
export const SCREENSHOT_DIR = path.join(PACKAGE_ROOT, "test-output");

const CHROMIUM_CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/snap/bin/chromium"];

/** Flags from DESIGN.md §6: headless, no sandbox (CI runs as root), nothing that calls the internet. */
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export function findChromium(): string | null {
  const fromEnv = process.env["CHROMIUM_PATH"];
  if (fromEnv !== undefined && fromEnv !== "" && existsSync(fromEnv)) return fromEnv;
  return CHROMIUM_CANDIDATES.find((candidate) => existsSync(candidate)) ?? null;
}

/**
 * The executable, or a skip reason. Locally a missing Chromium skips the suite with a loud warning;
 * in CI (CI set) it is an error, because CI must run these tests.
 */
export function chromiumOrSkip(): { executablePath: string; skip: false } | { skip: string } {
  const executablePath = findChromium();
  if (executablePath !== null) return { executablePath, skip: false };
  const message = `no Chromium found (looked at CHROMIUM_PATH, ${CHROMIUM_CANDIDATES.join(", ")}); install it with: apt-get install -y chromium`;
  if (process.env["CI"] !== undefined && process.env["CI"] !== "") throw new Error(`browser tests cannot run in CI: ${message}`);
  process.stderr.write(`\n${"!".repeat(100)}\n!! DASHBOARD BROWSER TESTS SKIPPED: ${message}\n${"!".repeat(100)}\n\n`);
  return { skip: `DASHBOARD BROWSER TESTS SKIPPED: ${message}` };
}

export interface Browser {
  readonly context: BrowserContext;
  close(): Promise<void>;
}

export async function launchChromium(executablePath: string): Promise<Browser> {
  // A fresh profile per run: no state leaks between runs (launchPersistentContext passes it as --user-data-dir).
  const userDataDir = mkdtempSync(path.join(os.tmpdir(), "skein-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 800 },
    deviceScaleFactor: 1,
    timeout: 30_000,
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * The dashboard built from the current sources, in a temp folder named by their hash: test files
 * of one run share a build, and any source change makes a new one.
 */
export async function buildDashboard(): Promise<string> {
  const sourceHash = hashTree(path.join(PACKAGE_ROOT, "dashboard"));
  const outDir = path.join(os.tmpdir(), `skein-dashboard-build-${sourceHash.slice(0, 16)}`);
  if (existsSync(path.join(outDir, "index.html"))) return outDir;
  const stagingDir = mkdtempSync(path.join(os.tmpdir(), "skein-dashboard-staging-"));
  const { build } = await import("vite");
  await build({
    configFile: path.join(PACKAGE_ROOT, "dashboard", "vite.config.ts"),
    logLevel: "error",
    build: { outDir: stagingDir, emptyOutDir: true },
  });
  try {
    renameSync(stagingDir, outDir);
  } catch {
    // Another test file finished the same build first: use it.
    rmSync(stagingDir, { recursive: true, force: true });
  }
  return outDir;
}

function hashTree(dir: string): string {
  const hash = createHash("sha256");
  const walk = (current: string): void => {
    for (const entry of readdirSync(current, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const full = path.join(current, entry.name);
      if (entry.isDirectory()) walk(full);
      else {
        hash.update(path.relative(dir, full));
        hash.update(readFileSync(full));
      }
    }
  };
  walk(dir);
  return hash.digest("hex");
}

/**
 * Minimal DOM shapes for functions that run in the page (this tsconfig has no DOM lib, and the
 * dashboard's CSP forbids evaluating strings). Use as `(globalThis as unknown as PageGlobals).document`.
 */
export interface PageElement {
  readonly textContent: string | null;
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
}
export interface PageGlobals {
  readonly document: { querySelector(selector: string): PageElement | null; querySelectorAll(selector: string): ArrayLike<PageElement> };
  readonly localStorage: { getItem(key: string): string | null };
  readonly __pwned?: unknown;
}
