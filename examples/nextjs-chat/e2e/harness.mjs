// What the browser tests share: Debian's Chromium through playwright-core, screenshots, steps,
// what the page logged, what the API said over graphql-ws, and psql on the shared database.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { resolve } from "node:path";
import { chromium } from "playwright-core";

export const APP_URL = process.env.APP_URL ?? "http://localhost:3000";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export function required(key) {
  const value = process.env[key];
  if (!value) throw new Error(`${key} is required`);
  return value;
}

/** One value (or one row of `|`-separated values) from the shared database. */
export function psql(sql) {
  return execFileSync("psql", [required("DATABASE_URL"), "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], {
    encoding: "utf8",
  }).trim();
}

/** A string as an SQL literal. */
export const lit = (s) => `'${String(s).replaceAll("'", "''")}'`;

/** A fresh browser and page; screenshots go to `dir` (emptied first). */
export async function openBrowser(dir, { timeout = 30_000 } = {}) {
  const screenshots = resolve(dir);
  rmSync(screenshots, { recursive: true, force: true });
  mkdirSync(screenshots, { recursive: true });

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Without the background-networking flags Chromium's own connections are refused here.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(timeout);
  const page = await context.newPage();

  const pageErrors = [];
  const consoleMessages = [];
  page.on("pageerror", (e) => pageErrors.push(e));
  page.on("console", (m) => {
    consoleMessages.push({ type: m.type(), text: m.text() });
    if (m.type() === "error" || m.type() === "warning") console.log(`  [browser ${m.type()}] ${m.text()}`);
  });
  // Every GraphQL error the API sent over graphql-ws (`error` messages, `next` with errors).
  const wsErrors = [];
  page.on("websocket", (ws) => {
    if (!new URL(ws.url()).pathname.endsWith("/graphql")) return;
    ws.on("framereceived", ({ payload }) => {
      const message = JSON.parse(String(payload));
      if (message.type === "error") wsErrors.push(...message.payload);
      if (message.type === "next" && message.payload.errors) wsErrors.push(...message.payload.errors);
    });
  });

  let shotNumber = 0;
  async function shot(label) {
    shotNumber += 1;
    await page.screenshot({
      path: `${screenshots}/${String(shotNumber).padStart(2, "0")}-${label}.png`,
      fullPage: true,
    });
  }

  async function step(title, fn) {
    const t0 = Date.now();
    try {
      await fn();
    } catch (e) {
      console.log(`not ok - ${title}`);
      await shot("FAILED").catch(() => {});
      throw e;
    }
    console.log(`ok - ${title} (${Date.now() - t0} ms)`);
  }

  return { browser, page, screenshots, shot, step, pageErrors, consoleMessages, wsErrors };
}

/** Wait until an element matching `locator` contains `text` (a string or a RegExp). */
export async function expectText(locator, text) {
  await locator.filter({ hasText: text }).first().waitFor();
}

/** Sign up through the app's Better Auth page; resolves once in /chat. */
export async function signUp(page, { name, email, password }, beforeSubmit = async () => {}) {
  await page.goto(`${APP_URL}/sign-up`);
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await beforeSubmit();
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL(`${APP_URL}/chat`);
}
