// The browser test: Debian's Chromium driven by playwright-core through the running app
// (`npm start`) and the Rust API, then the rows checked in PostgreSQL with psql.
//
//   APP_URL=http://localhost:3000 DATABASE_URL=postgres://… node e2e/browser.mjs
//
// Environment: APP_URL (default http://localhost:3000), DATABASE_URL (the database the app and
// the API share), SCREENSHOTS_DIR (default e2e/screenshots), CHROMIUM (default /usr/bin/chromium).
// Exits non-zero at the first failed check, with a screenshot of the page as it was.
import assert from "node:assert/strict";
import { APP_URL, expectText, lit, openBrowser, psql, signUp } from "./harness.mjs";

const email = `e2e-${Date.now()}@example.com`;
const password = "correct horse battery staple";
const name = "E2E Tester";

const { browser, page, screenshots, shot, step, pageErrors, wsErrors } = await openBrowser(
  process.env.SCREENSHOTS_DIR ?? "e2e/screenshots",
);
const started = Date.now();

const testId = (id) => page.getByTestId(id);
const prompt = testId("prompt");
const liveAnswer = testId("live-answer");
const chatError = testId("chat-error");

/** Type a message and send it with Enter, as a person would. */
async function send(text) {
  await prompt.fill(text);
  await prompt.press("Enter");
}

/** The live turn ends (done or failed); returns its state. */
async function settled() {
  await page.waitForFunction(
    () => document.querySelector('[data-testid="live-answer"]')?.getAttribute("data-state") !== "streaming",
  );
  return liveAnswer.getAttribute("data-state");
}

/** The error the API sent last over graphql-ws is on screen, message and code. */
async function expectServerError(code) {
  await chatError.waitFor();
  const last = wsErrors.at(-1);
  assert.ok(last, "the API sent no error");
  assert.equal(last.extensions?.code, code, `the API's error: ${JSON.stringify(last)}`);
  const shown = await chatError.innerText();
  assert.ok(shown.includes(last.message), `shown: ${JSON.stringify(shown)}; the API said ${JSON.stringify(last.message)}`);
  assert.ok(shown.includes(code), `shown: ${JSON.stringify(shown)}`);
  return last;
}

let userId;
let conversationId;

await step("signed out, /chat is bounced by proxy.ts to /sign-in", async () => {
  await page.goto(`${APP_URL}/chat`);
  await page.waitForURL(`${APP_URL}/sign-in`);
  await shot("signed-out-bounced-to-sign-in");
});

await step("sign up through Better Auth and land in /chat", async () => {
  await signUp(page, { name, email, password }, () => shot("sign-up-form"));
  await expectText(testId("signed-in-as"), email);
  userId = psql(`SELECT id FROM "user" WHERE email = ${lit(email)}`);
  assert.ok(userId, "no user row");
});

await step("the model picker lists the API's models, on the profile's default", async () => {
  const picker = testId("model-picker");
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="model-picker"] option').length > 1);
  const options = await picker.locator("option").allTextContents();
  assert.ok(options.includes("gpt-4o-mini"), `options: ${options}`);
  assert.equal(await picker.inputValue(), "gpt-4o-mini");
  await expectText(testId("token-budget"), "unlimited");
  await shot("chat-empty");
});

await step("an answer streams in token by token over graphql-ws", async () => {
  // Record the answer's length at every DOM change, in the page itself: each is one render.
  await page.evaluate(() => {
    window.__lengths = [];
    new MutationObserver(() => {
      const el = document.querySelector('[data-testid="live-answer"]');
      if (!el) return;
      const length = el.textContent.replace("▍", "").length;
      if (window.__lengths.at(-1) !== length) window.__lengths.push(length);
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  await send("Tell me about Kyoto @@tokens=24 @@pace_ms=80");
  await page.waitForFunction(() => (document.querySelector('[data-testid="live-answer"]')?.textContent.length ?? 0) > 8);
  await shot("answer-streaming");
  assert.equal(await settled(), "done");
  const lengths = await page.evaluate(() => window.__lengths);
  console.log(`  answer lengths over renders: ${lengths.join(" ")}`);
  const growing = lengths.filter((n) => n > 0);
  assert.ok(growing.length >= 5, `only ${growing.length} distinct lengths: ${lengths}`);
  for (let i = 1; i < growing.length; i++) assert.ok(growing[i] > growing[i - 1], `not growing: ${lengths}`);
  conversationId = new URL(page.url()).searchParams.get("c");
  assert.ok(conversationId, `no conversation in ${page.url()}`);
  await page.waitForFunction(() => document.querySelector('[data-testid="usage-calls"]')?.textContent === "1");
  assert.ok(Number((await testId("tokens-used").innerText()).replaceAll(",", "")) > 0);
  await expectText(testId("conversation-list"), "Tell me about Kyoto");
  await shot("answer-done");
});

await step("a second turn continues the conversation", async () => {
  await send("And what should I eat there? @@tokens=12 @@pace_ms=10");
  assert.equal(await settled(), "done");
  await page.waitForFunction(() => document.querySelector('[data-testid="usage-calls"]')?.textContent === "2");
});

await step("after a reload the conversation is listed and its turns come back", async () => {
  await page.reload();
  await expectText(testId("conversation-list"), "Tell me about Kyoto");
  await expectText(testId("conversation-list"), "2 turns");
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="turn"]').length === 2);
  const turns = await testId("turn").allInnerTexts();
  assert.ok(turns[0].includes("Tell me about Kyoto"), turns[0]);
  assert.ok(turns[1].includes("And what should I eat there?"), turns[1]);
  await shot("reloaded-conversation");
});

await step("an upstream failure shows the API's UPSTREAM_ERROR message", async () => {
  await send("This one breaks @@fail=500");
  assert.equal(await settled(), "failed");
  const error = await expectServerError("UPSTREAM_ERROR");
  // The call reached the upstream: it has a log, which the UI knows the failed turn by.
  assert.equal(psql(`SELECT status FROM prompt_logs WHERE id = ${lit(error.extensions.logId)}`), "error");
  assert.equal(await liveAnswer.locator(".badge").innerText(), "error");
  await shot("upstream-error");
});

await step("over budget: the API's BUDGET_EXCEEDED message, no call made", async () => {
  psql(`UPDATE user_profiles SET monthly_token_budget = 1 WHERE user_id = ${lit(userId)}`);
  await send("Am I over budget?");
  assert.equal(await settled(), "failed");
  const error = await expectServerError("BUDGET_EXCEEDED");
  assert.match(error.message, /budget/);
  assert.equal(await liveAnswer.locator(".badge").innerText(), "not sent");
  await expectText(testId("token-budget"), /^1$/);
  await shot("budget-exceeded");
});

await step("within budget again, calls go through", async () => {
  psql(`UPDATE user_profiles SET monthly_token_budget = 0 WHERE user_id = ${lit(userId)}`);
  await send("Back within budget @@tokens=5");
  assert.equal(await settled(), "done");
  await expectText(testId("token-budget"), "unlimited");
});

await step("rate limited: the API's RATE_LIMITED message, with when to retry", async () => {
  // The operator's per-user override (what `admin set-limits EMAIL default 1` writes): the
  // call just made is inside the minute, so the next one is refused.
  psql(`INSERT INTO user_limits (user_id, calls_per_minute) VALUES (${lit(userId)}, 1)`);
  await send("One more, quickly");
  assert.equal(await settled(), "failed");
  const error = await expectServerError("RATE_LIMITED");
  assert.ok(error.extensions.retryAfter >= 1, JSON.stringify(error));
  await expectText(chatError, `retry in ${error.extensions.retryAfter} s`);
  await shot("rate-limited");
});

await step("the history page pages through every call (Relay pagination)", async () => {
  const calls = Number(psql(`SELECT count(*) FROM prompt_logs WHERE user_id = ${lit(userId)}`));
  assert.equal(calls, 4);
  await page.getByRole("link", { name: "History" }).click();
  await page.waitForURL(`${APP_URL}/history`);
  await page.goto(`${APP_URL}/history?first=3`);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="history-row"]').length === 3);
  await shot("history-first-page");
  await testId("history-more").click();
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="history-row"]').length === n, calls);
  await testId("history-more").waitFor({ state: "detached" });
  const rows = await testId("history-row").allInnerTexts();
  assert.ok(rows[0].includes("Back within budget"), `newest first: ${rows[0]}`);
  assert.ok(rows.some((r) => r.includes("This one breaks") && r.includes("error")), rows.join("\n"));
  await shot("history-all-pages");
});

await step("sign out; proxy.ts bounces /chat to /sign-in", async () => {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(`${APP_URL}/sign-in`);
  assert.equal(psql(`SELECT count(*) FROM session WHERE user_id = ${lit(userId)}`), "0");
  await page.goto(`${APP_URL}/chat`);
  await page.waitForURL(`${APP_URL}/sign-in`);
});

await step("a wrong password shows Better Auth's message", async () => {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("not the password");
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/api/auth/sign-in/email")),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
  assert.equal(response.status(), 401);
  const body = await response.json();
  await expectText(testId("auth-error"), body.message);
  await expectText(testId("auth-error"), body.code);
  await shot("wrong-password");
});

await step("signed in again, the API knows the new session", async () => {
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${APP_URL}/chat`);
  await expectText(testId("conversation-list"), "Tell me about Kyoto");
  const tokens = psql(
    `SELECT sum(prompt_tokens + completion_tokens) FROM token_usage WHERE user_id = ${lit(userId)}`,
  );
  await page.waitForFunction(
    (t) => document.querySelector('[data-testid="tokens-used"]')?.textContent.replaceAll(",", "") === t,
    tokens,
  );
  await shot("signed-in-again");
});

await step("the database holds the user, profile, logs, usage and turns", async () => {
  const u = lit(userId);
  assert.equal(psql(`SELECT name FROM "user" WHERE id = ${u}`), name);
  // Better Auth hashed the password (scrypt, salt:key in hex) into a credential account.
  assert.match(
    psql(`SELECT password FROM account WHERE user_id = ${u} AND provider_id = 'credential'`),
    /^[0-9a-f]{32}:[0-9a-f]{128}$/,
  );
  assert.equal(psql(`SELECT count(*) || '|' || min(monthly_token_budget) FROM user_profiles WHERE user_id = ${u}`), "1|0");
  // Four calls reached the upstream (the refused two wrote nothing): one log and one usage row each.
  assert.equal(
    psql(`SELECT string_agg(status, ',' ORDER BY created_at) FROM prompt_logs WHERE user_id = ${u}`),
    "ok,ok,error,ok",
  );
  assert.equal(psql(`SELECT count(*) FROM token_usage WHERE user_id = ${u}`), "4");
  assert.equal(
    psql(
      `SELECT count(DISTINCT l.usage_id) FROM prompt_log_usage l JOIN prompt_logs p ON p.id = l.log_id WHERE p.user_id = ${u}`,
    ),
    "4",
  );
  assert.equal(psql(`SELECT count(*) FROM prompt_logs WHERE user_id = ${u} AND completion IS NULL`), "0");
  // All four are turns of the one conversation, in order.
  assert.equal(psql(`SELECT count(*) || '|' || min(turn_count) FROM conversations WHERE user_id = ${u}`), "1|4");
  assert.equal(
    psql(
      `SELECT string_agg(t.seq || ':' || p.status, ',' ORDER BY t.seq) FROM conversation_turns t
         JOIN prompt_logs p ON p.id = t.log_id WHERE t.conversation_id = ${lit(conversationId)}`,
    ),
    "1:ok,2:ok,3:error,4:ok",
  );
  assert.equal(psql(`SELECT count(*) FROM session WHERE user_id = ${u}`), "1");
});

assert.deepEqual(pageErrors, [], "uncaught errors in the page");
await browser.close();
console.log(`all steps passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots: ${screenshots}`);

