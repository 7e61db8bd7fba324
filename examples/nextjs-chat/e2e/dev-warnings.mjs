// The app under `next dev`, where React and urql's graphcache report mistakes on the console
// (production builds strip those checks): sign up, stream an answer, reload, page the history,
// and fail on any console warning or error. Graphcache warns, for instance, about every object
// type without an `id` that its `keys` config does not cover (`Profile`, `UsageSummary`, …).
//
//   APP_URL=http://localhost:3000 DATABASE_URL=postgres://… node e2e/dev-warnings.mjs
import assert from "node:assert/strict";
import { APP_URL, openBrowser, signUp } from "./harness.mjs";

// The dev server compiles each route on its first request.
const { browser, page, screenshots, shot, step, pageErrors, consoleMessages } = await openBrowser(
  process.env.SCREENSHOTS_DIR ?? "e2e/screenshots/dev-mode",
  { timeout: 120_000 },
);
const testId = (id) => page.getByTestId(id);

await step("dev: sign up and open /chat", async () => {
  await signUp(page, { name: "Dev Check", email: `dev-${Date.now()}@example.com`, password: "dev-check-password" });
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="model-picker"] option').length > 1);
  await testId("usage-meter").waitFor();
});

await step("dev: stream an answer into a new conversation", async () => {
  await testId("prompt").fill("Check the cache @@tokens=8 @@pace_ms=20");
  await testId("prompt").press("Enter");
  await page.waitForFunction(
    () => document.querySelector('[data-testid="live-answer"]')?.getAttribute("data-state") === "done",
  );
  await page.waitForFunction(() => document.querySelector('[data-testid="usage-calls"]')?.textContent === "1");
});

await step("dev: reload the conversation, then page the history", async () => {
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="turn"]').length === 1);
  await page.goto(`${APP_URL}/history?first=1`);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="history-row"]').length === 1);
  await shot("dev-history");
});

await step("dev: no warning or error on the console", async () => {
  const problems = consoleMessages.filter((m) => m.type === "warning" || m.type === "error");
  assert.deepEqual(problems, [], "console warnings or errors under next dev");
  assert.deepEqual(pageErrors, [], "uncaught errors in the page");
});

await browser.close();
console.log(`dev-mode check passed; screenshots: ${screenshots}`);
