// The node serves the built dashboard at `/`: index.html uncached with a CSP, hashed assets cached
// for a year, no path escapes, and a readable page (not a crash) when nothing was built.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { DASHBOARD_DIR_DEFAULT } from "../../src/api/dashboard.ts";
import { makeFixture } from "../support/api-fixture.ts";

const builtDir = mkdtempSync(path.join(os.tmpdir(), "skein-dashboard-built-"));
mkdirSync(path.join(builtDir, "assets"));
writeFileSync(path.join(builtDir, "index.html"), '<!doctype html><script type="module" src="./assets/index-abc123.js"></script>');
writeFileSync(path.join(builtDir, "assets", "index-abc123.js"), "console.log('dashboard')");
writeFileSync(path.join(builtDir, "assets", "index-abc123.css"), "body{}");
writeFileSync(path.join(builtDir, "secret.txt"), "not an asset");
const emptyDir = mkdtempSync(path.join(os.tmpdir(), "skein-dashboard-missing-"));
after(() => {
  rmSync(builtDir, { recursive: true, force: true });
  rmSync(emptyDir, { recursive: true, force: true });
});

test("GET / serves index.html, never cached, with a content security policy", async () => {
  const { app } = makeFixture({ app: { dashboardDir: builtDir } });
  for (const url of ["/", "/index.html"]) {
    const response = await app.request(url);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/html/);
    assert.equal(response.headers.get("cache-control"), "no-cache");
    assert.match(response.headers.get("content-security-policy") ?? "", /script-src 'self'/);
    assert.match(await response.text(), /index-abc123\.js/);
  }
});

test("hashed assets are served with their type and a one-year immutable cache", async () => {
  const { app } = makeFixture({ app: { dashboardDir: builtDir } });
  const js = await app.request("/assets/index-abc123.js");
  assert.equal(js.status, 200);
  assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
  assert.equal(js.headers.get("cache-control"), "public, max-age=31536000, immutable");
  assert.equal(await js.text(), "console.log('dashboard')");
  const css = await app.request("/assets/index-abc123.css");
  assert.equal(css.headers.get("content-type"), "text/css; charset=utf-8");
});

test("a missing asset or a path outside assets/ is a JSON 404, not a file", async () => {
  const { app } = makeFixture({ app: { dashboardDir: builtDir } });
  for (const url of ["/assets/nope.js", "/assets/..%2Fsecret.txt", "/assets/%2E%2E%2Fsecret.txt", "/secret.txt", "/assets/.hidden"]) {
    const response = await app.request(url);
    assert.equal(response.status, 404, url);
    assert.doesNotMatch(await response.text(), /not an asset/, url);
  }
});

test("without a build, / explains how to build the dashboard and the API keeps working", async () => {
  const { app } = makeFixture({ app: { dashboardDir: path.join(emptyDir, "dashboard") } });
  const page = await app.request("/");
  assert.equal(page.status, 503);
  assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
  assert.match(await page.text(), /npm run build/);
  const models = await app.request("/v1/models");
  assert.equal(models.status, 200);
});

test("the default folder is dist/dashboard under the package root (works from src/ and dist/)", () => {
  const packageRoot = path.resolve(import.meta.dirname, "..", "..");
  assert.equal(DASHBOARD_DIR_DEFAULT, path.join(packageRoot, "dist", "dashboard"));
});
