// The dashboard in a real Chromium against a real node (FakeEngine test double): streaming chat,
// STOP (button and Escape) reaching the cluster, regenerate, persistence, inline errors with retry,
// the models page (placement preview, launch, delete) and the live cluster view.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { Page } from "playwright-core";
import type { State } from "../../src/shared/state.ts";
import type { Browser, PageGlobals } from "../support/chromium.ts";
import { buildDashboard, chromiumOrSkip, launchChromium, SCREENSHOT_DIR } from "../support/chromium.ts";
import type { TestNode } from "../support/test-node.ts";
import { fakeModelCard, startTestNode } from "../support/test-node.ts";

/** Markdown plus three injection attempts: none may reach the DOM as live markup. */
const MARKDOWN_REPLY = [
  "Here is **bold** text and `inline code`.",
  "",
  "```js",
  "const answer = 42;",
  "```",
  "",
  '<img src="x" onerror="window.__pwned=1"> <script>window.__pwned=2</script> [click](javascript:window.__pwned=3)',
].join("\n");
const SLOW_REPLY = "Streaming words one at a time from the cluster, so there is always time to press stop.";

const MODEL_FAST = "fake-model";
const MODEL_SLOW = "fake-slow";
const MODEL_BROKEN = "fake-broken";
const MODEL_LOADER = "fake-loader";
const MODEL_LAUNCH = "fake-launch";
const MODEL_HUGE = "fake-huge";

const chromium = chromiumOrSkip();
const skip = chromium.skip;

function runnersOfModel(state: State, modelId: string) {
  const instanceIds = new Set(Object.values(state.instances).filter((i) => i.modelId === modelId).map((i) => i.instanceId));
  return Object.values(state.runners).filter((r) => instanceIds.has(r.instanceId));
}
const tasksOfModel = (state: State, modelId: string) => Object.values(state.tasks).filter((t) => t.modelId === modelId);
const modelIdle = (state: State, modelId: string): boolean =>
  tasksOfModel(state, modelId).length === 0 && runnersOfModel(state, modelId).length > 0 && runnersOfModel(state, modelId).every((r) => r.status.kind === "Ready");

describe("dashboard in Chromium", { skip, timeout: 90_000 }, () => {
  let node: TestNode;
  let browser: Browser;
  let page: Page;
  let dashboardDir: string;
  const pageErrors: string[] = [];

  before(async () => {
    if (chromium.skip !== false) return;
    mkdirSync(SCREENSHOT_DIR, { recursive: true });
    dashboardDir = await buildDashboard();
    node = await startTestNode({
      dashboardDir,
      cards: [
        fakeModelCard({ tokenDelayMs: 5, maxReplyTokens: 60, text: MARKDOWN_REPLY }, MODEL_FAST),
        fakeModelCard({ tokenDelayMs: 40, text: SLOW_REPLY, prefillDelayMsPerToken: 2, loadDelayMsPerLayer: 250 }, MODEL_SLOW),
        fakeModelCard({ failDecodeAtStep: 2, tokenDelayMs: 5 }, MODEL_BROKEN),
        fakeModelCard({ loadDelayMsPerLayer: 250 }, MODEL_LOADER),
        fakeModelCard({}, MODEL_LAUNCH),
        { ...fakeModelCard({}, MODEL_HUGE), sizeBytes: 2 ** 50 },
      ],
    });
    browser = await launchChromium(chromium.executablePath);
    page = await browser.context.newPage();
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    page.setDefaultTimeout(10_000);
    await page.goto(`${node.url}/`);
    await page.getByRole("button", { name: "Send message" }).waitFor();
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "chat-empty.png") });
  });

  after(async () => {
    await browser?.close();
    await node?.stop();
  });

  const lastAnswer = () => page.getByTestId("assistant-message").last();
  const stopButton = () => page.getByRole("button", { name: "Stop generating" });

  async function selectModel(modelId: string): Promise<void> {
    await page.getByLabel("Model", { exact: true }).selectOption(modelId);
  }
  async function send(text: string): Promise<void> {
    await page.getByLabel("Message", { exact: true }).fill(text);
    await page.getByLabel("Message", { exact: true }).press("Enter");
  }
  /** Waits until the streaming answer shows at least `words` words. */
  async function waitForWords(words: number): Promise<void> {
    await page.waitForFunction((n) => {
      const answers = (globalThis as unknown as PageGlobals).document.querySelectorAll('[data-testid="assistant-message"]');
      const text = answers[answers.length - 1]?.querySelector('[data-testid="answer"]')?.textContent ?? "";
      return text.trim().split(/\s+/).length >= n;
    }, words);
  }
  async function answerText(): Promise<string> {
    return (await lastAnswer().getByTestId("answer").textContent()) ?? "";
  }
  /** STOP, then the cluster must have cancelled the task and freed the runner within one second. */
  async function expectStoppedEverywhere(stop: () => Promise<void>, report: (message: string) => void): Promise<void> {
    const startedMs = performance.now();
    const startedAtMs = Date.now();
    await stop();
    const state = await node.waitFor((s) => modelIdle(s, MODEL_SLOW), "the slow model's task gone and its runner Ready", 1_000);
    const elapsedMs = performance.now() - startedMs;
    assert.ok(elapsedMs <= 1_000, `runner idle after ${elapsedMs.toFixed(0)} ms`);
    // The master's own timestamps (same clock) split the wait: input → Cancelled recorded → runner Ready.
    const cancelledAtMs = node.events.findLast((e) => e.event.type === "TaskStatusUpdated" && e.event.status === "Cancelled")?.atMs ?? Number.NaN;
    const readyAtMs = node.events.findLast((e) => e.event.type === "RunnerStatusUpdated" && e.event.status.kind === "Ready")?.atMs ?? Number.NaN;
    report(
      `STOP: Cancelled recorded ${(cancelledAtMs - startedAtMs).toFixed(0)} ms and runner Ready ${(readyAtMs - startedAtMs).toFixed(0)} ms ` +
        `after the click or key press began; task gone in the replica after ${elapsedMs.toFixed(0)} ms`,
    );
    assert.equal(tasksOfModel(state, MODEL_SLOW).length, 0);
    // The same, as a client sees it.
    const wire = (await (await fetch(`${node.url}/state`)).json()) as { tasks: Record<string, { modelId: string }>; runners: Record<string, { status: { kind: string } }> };
    assert.equal(Object.values(wire.tasks).filter((t) => t.modelId === MODEL_SLOW).length, 0);
    await page.waitForSelector('[data-testid="assistant-message"]:last-of-type[data-status="stopped"]');
    assert.equal(await lastAnswer().getAttribute("data-status"), "stopped");
    await lastAnswer().getByTestId("stopped-badge").waitFor();
    assert.equal(await page.getByTestId("error").count(), 0, "an abort is not an error");
    assert.equal(await page.getByRole("button", { name: "Send message" }).count(), 1);
  }
  /** The last task of the slow model ended Cancelled (the master's record, not just a closed socket). */
  function lastSlowTaskCancelled(): boolean {
    const created = node.events.filter((e) => e.event.type === "TaskCreated" && e.event.task.modelId === MODEL_SLOW).at(-1);
    if (created === undefined || created.event.type !== "TaskCreated") return false;
    const taskId = created.event.task.taskId;
    return node.events.some((e) => e.event.type === "TaskStatusUpdated" && e.event.taskId === taskId && e.event.status === "Cancelled");
  }

  test("streams an answer, renders Markdown and code, injects no HTML, shows TTFT and tokens/s", async () => {
    await selectModel(MODEL_FAST);
    await send("Show me some formatting.");
    await page.waitForSelector('[data-testid="assistant-message"][data-status="done"]');
    const answer = lastAnswer().getByTestId("answer");
    assert.equal(await answer.locator("strong").first().textContent(), "bold");
    assert.match((await answer.locator("pre code").first().textContent()) ?? "", /const answer = 42;/);
    assert.equal(await answer.locator(".code-head span").first().textContent(), "js");
    assert.equal(await answer.locator("img, script, [onerror]").count(), 0);
    assert.equal(await answer.locator('a[href^="javascript"]').count(), 0);
    assert.equal(await page.evaluate(() => (globalThis as unknown as PageGlobals).__pwned), undefined);
    assert.match((await lastAnswer().getByTestId("ttft").textContent()) ?? "", /TTFT \d/);
    assert.match((await lastAnswer().getByTestId("tps").textContent()) ?? "", /[\d.]+ tok\/s/);
    assert.equal(await page.getByTestId("user-message").last().textContent(), "Show me some formatting.");
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "chat-markdown.png") });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "chat-narrow.png") });
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  test("STOP mid-stream keeps the partial answer, cancels the task and frees the runner within 1 s", async (t) => {
    await page.getByRole("button", { name: "New chat" }).click();
    await selectModel(MODEL_SLOW);
    await send("Tell me a long story.");
    // First use of the model: it is placed and loaded while the answer waits, and the page says so.
    await page.getByTestId("progress").getByText(/Loading the model · \d\/4 layers/).waitFor();
    await waitForWords(4);
    const stop = stopButton();
    assert.equal(((await stop.textContent()) ?? "").trim(), "Stop");
    assert.equal(await stop.locator("svg rect").count(), 1, "square icon");
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "chat-streaming.png") });
    await expectStoppedEverywhere(() => stop.click(), (m) => t.diagnostic(m));
    const partial = await answerText();
    assert.ok(partial.startsWith("Streaming words"), partial);
    assert.ok(lastSlowTaskCancelled(), "the task ended Cancelled");
    // Kept, and saved as it was shown: the stored answer is the partial text, marked stopped.
    const stored = await page.evaluate(() => (globalThis as unknown as PageGlobals).localStorage.getItem("skein.conversations.v1"));
    const saved = (JSON.parse(stored ?? "[]") as { messages: { role: string; content: string; status: string }[] }[]).flatMap((c) => c.messages);
    const savedAnswer = saved.filter((m) => m.role === "assistant").find((m) => m.status === "stopped");
    assert.equal(savedAnswer?.content.trim(), partial.trim());
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "chat-stopped.png") });
    await page.emulateMedia({ colorScheme: "dark" });
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "chat-stopped-dark.png") });
    await page.emulateMedia({ colorScheme: "light" });
  });

  test("sending again right after STOP works (with max tokens from the settings)", async () => {
    await page.getByRole("button", { name: "Sampling settings" }).click();
    await page.getByLabel("Max tokens").fill("5");
    await page.getByLabel("Max tokens").press("Enter");
    await page.getByRole("button", { name: "Done" }).click();
    await send("Just five tokens, please.");
    await page.waitForSelector('[data-testid="assistant-message"]:last-of-type[data-status="done"]');
    assert.equal(await lastAnswer().getAttribute("data-status"), "done");
    assert.equal((await answerText()).trim().split(/\s+/).length, 5);
    // The settings reached the server with the request.
    const created = node.events.filter((e) => e.event.type === "TaskCreated").at(-1);
    assert.ok(created !== undefined && created.event.type === "TaskCreated");
    assert.equal(created.event.task.params.maxTokens, 5);
    assert.equal(created.event.task.params.temperature, 0.7);
    assert.equal(created.event.task.params.topP, 0.95);
    await page.getByRole("button", { name: "Sampling settings" }).click();
    await page.getByLabel("Max tokens").fill("");
    await page.getByLabel("Max tokens").press("Enter");
    await page.getByRole("button", { name: "Done" }).click();
  });

  test("regenerate, then STOP", async (t) => {
    const answersBefore = await page.getByTestId("assistant-message").count();
    await page.getByRole("button", { name: "Regenerate answer" }).click();
    await stopButton().waitFor();
    await waitForWords(3);
    assert.equal(await page.getByTestId("assistant-message").count(), answersBefore, "the answer is replaced, not added");
    await expectStoppedEverywhere(() => stopButton().click(), (m) => t.diagnostic(m));
    assert.ok(lastSlowTaskCancelled());
  });

  test("Escape stops the answer", async (t) => {
    await send("Another long one.");
    await waitForWords(3);
    await expectStoppedEverywhere(() => page.keyboard.press("Escape"), (m) => t.diagnostic(m));
    assert.ok(lastSlowTaskCancelled());
  });

  test("a long prompt shows reading progress, and STOP during it cancels the task", async (t) => {
    // ~1,500 prompt tokens at 2 ms each, read in chunks of 256: several progress comments.
    await send(Array.from({ length: 1_500 }, (_, i) => `word${i % 50}`).join(" "));
    await page.getByTestId("progress").getByText(/Reading your prompt · \d+\/\d+ tokens/).waitFor();
    await expectStoppedEverywhere(() => stopButton().click(), (m) => t.diagnostic(m));
    assert.ok(lastSlowTaskCancelled());
    assert.equal(await lastAnswer().getByTestId("answer").count(), 0, "stopped before the first token");
  });

  test("conversations survive a reload; rename and delete work", async () => {
    const titles = await page.getByTestId("conversation").allTextContents();
    assert.equal(titles.length, 2);
    // The row's actions appear on hover, as a pointer user would find them.
    await page.getByTestId("conversation").first().hover();
    await page.getByTestId("conversation").first().getByRole("button", { name: "Rename conversation" }).click();
    await page.getByLabel("Conversation title").fill("Stopped stories");
    await page.getByLabel("Conversation title").press("Enter");
    await page.reload();
    const after = await page.getByTestId("conversation").allTextContents();
    assert.equal(after.length, 2);
    assert.ok(after.some((t) => t.includes("Stopped stories")), after.join(" | "));
    await page.getByTestId("conversation").filter({ hasText: "Stopped stories" }).getByRole("button", { name: "Stopped stories" }).click();
    assert.ok((await page.getByTestId("stopped-badge").count()) >= 2, "stopped answers stay marked after reload");
    const doomed = page.getByTestId("conversation").filter({ hasText: "Show me some formatting" });
    await doomed.hover();
    await doomed.getByRole("button", { name: "Delete conversation" }).click();
    await page.reload();
    assert.equal(await page.getByTestId("conversation").count(), 1);
  });

  test("a server error is shown inline with a Retry that asks again", async () => {
    await page.getByRole("button", { name: "New chat" }).click();
    await selectModel(MODEL_BROKEN);
    await send("This one will fail.");
    const error = page.getByTestId("error");
    await error.waitFor();
    assert.match((await error.textContent()) ?? "", /failed/i);
    assert.equal(await lastAnswer().getAttribute("data-status"), "error");
    const answersBefore = await page.getByTestId("assistant-message").count();
    const tasksBefore = node.events.filter((e) => e.event.type === "TaskCreated").length;
    await error.getByRole("button", { name: "Retry" }).click();
    await node.waitFor(() => node.events.filter((e) => e.event.type === "TaskCreated").length > tasksBefore, "the retry's task", 5_000);
    await page.waitForSelector('[data-testid="assistant-message"]:last-of-type:not([data-status="streaming"])');
    assert.equal(await page.getByTestId("assistant-message").count(), answersBefore, "Retry replaces the failed answer");
  });

  test("cluster view follows a runner from Loading to Ready, live over /events", async () => {
    await page.goto(`${node.url}/#/cluster`);
    await page.getByTestId("node-card").first().waitFor();
    const eventsRequests: string[] = [];
    page.on("request", (r) => {
      if (r.url().includes("/state")) eventsRequests.push(r.url());
    });
    const response = await fetch(`${node.url}/instance`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: MODEL_LOADER }) });
    assert.equal(response.status, 200);
    const loaderCard = page.getByTestId("runner").filter({ hasText: MODEL_LOADER });
    await loaderCard.getByText(/Loading \d\/4/).waitFor();
    await loaderCard.getByText("Ready", { exact: true }).waitFor();
    assert.ok(eventsRequests.length <= 3, `no polling of /state: ${eventsRequests.length} requests`);
    await page.getByTestId("cluster-instance").filter({ hasText: MODEL_LOADER }).waitFor();
    await page.setViewportSize({ width: 1280, height: 1300 });
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "cluster.png") });
    await page.emulateMedia({ colorScheme: "dark" });
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "cluster-dark.png") });
    await page.emulateMedia({ colorScheme: "light" });
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  test("models page: placement preview, why a placement is impossible, launch and delete", async () => {
    await page.goto(`${node.url}/#/models`);
    const huge = page.locator(`[data-testid="model-card"][data-model="${MODEL_HUGE}"]`);
    await huge.getByRole("button", { name: "Launch…" }).click();
    assert.match((await huge.getByTestId("placement-reason").first().textContent()) ?? "", /\S/);
    await huge.scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "models-impossible.png") });
    const card = page.locator(`[data-testid="model-card"][data-model="${MODEL_LAUNCH}"]`);
    await card.getByRole("button", { name: "Launch…" }).click();
    await card.getByRole("button", { name: "Launch on 1 node" }).waitFor();
    await card.scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "models-preview.png") });
    await card.getByRole("button", { name: "Launch on 1 node" }).click();
    await card.getByTestId("instance").getByText("Ready").waitFor();
    await node.waitFor((s) => Object.values(s.instances).some((i) => i.modelId === MODEL_LAUNCH), "the launched instance");
    await card.scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "models.png") });
    await card.getByTestId("instance").getByRole("button", { name: "Delete" }).click();
    await node.waitFor((s) => !Object.values(s.instances).some((i) => i.modelId === MODEL_LAUNCH), "the instance deleted");
    await card.getByTestId("instance").waitFor({ state: "detached" });
  });

  test("no uncaught errors in the page", () => {
    assert.deepEqual(pageErrors, []);
  });
});
