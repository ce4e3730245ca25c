// Serves the built dashboard (dist/dashboard, made by `vite build` during `npm ci`) at `/`.
// index.html is never cached, so a new build is picked up at once; assets carry a content hash in
// their names and are cached for a year. A missing build answers with how to make one.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { Hono } from "hono";
import type { Context } from "hono";
import type { ApiEnv } from "./env.ts";

/** The package root is two folders up from both src/api (tsx) and dist/api (compiled). */
export const DASHBOARD_DIR_DEFAULT = path.resolve(import.meta.dirname, "..", "..", "dist", "dashboard");

const ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable";
/** Asset names as Vite writes them: no folders, no dot-dot, bounded length. */
const ASSET_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".json": "application/json",
  ".map": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

// Model output is rendered as sanitized HTML; this policy is the second wall: no inline or foreign
// script, no requests to other origins, even if a sanitizer bug let markup through.
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
  "form-action 'none'",
].join("; ");

export interface DashboardOptions {
  /** Folder holding index.html and assets/ (tests point it at their own build). */
  readonly dir?: string;
}

function notBuiltPage(dir: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>skein — dashboard not built</title>
<style>body{font:16px/1.6 system-ui,sans-serif;max-width:640px;margin:12vh auto;padding:0 24px;color:#222}
code{background:#f2f2f4;padding:2px 6px;border-radius:4px}</style></head>
<body><h1>The dashboard has not been built</h1>
<p>The API is running; only the web dashboard's files are missing from <code>${escapeHtml(dir)}</code>.</p>
<p>Build it from the skein folder with <code>npm run build</code> (it runs during <code>npm ci</code> too), then reload this page.</p>
<p>The OpenAI-compatible API is at <code>/v1/chat/completions</code>; the cluster state at <code>/state</code>.</p>
</body></html>`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

async function readOrNull(file: string): Promise<Buffer | null> {
  try {
    return await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT" || (error as NodeJS.ErrnoException).code === "ENOTDIR") return null;
    throw error;
  }
}

export function dashboardRouter(options: DashboardOptions = {}): Hono<ApiEnv> {
  const dir = options.dir ?? DASHBOARD_DIR_DEFAULT;
  const router = new Hono<ApiEnv>();

  const index = async (c: Context<ApiEnv>) => {
    const html = await readOrNull(path.join(dir, "index.html"));
    c.header("Cache-Control", "no-cache");
    c.header("X-Content-Type-Options", "nosniff");
    if (html === null) return c.html(notBuiltPage(dir), 503);
    c.header("Content-Security-Policy", DASHBOARD_CSP);
    c.header("Referrer-Policy", "no-referrer");
    return c.html(html.toString("utf8"));
  };
  router.get("/", index);
  router.get("/index.html", index);

  router.get("/assets/:name", async (c, next) => {
    const name = c.req.param("name");
    if (!ASSET_NAME_PATTERN.test(name) || name.includes("..")) return next();
    const body = await readOrNull(path.join(dir, "assets", name));
    if (body === null) return next();
    const type = CONTENT_TYPES[path.extname(name).toLowerCase()] ?? "application/octet-stream";
    return c.body(new Uint8Array(body), 200, { "Content-Type": type, "Cache-Control": ASSET_CACHE_CONTROL, "X-Content-Type-Options": "nosniff" });
  });

  return router;
}
