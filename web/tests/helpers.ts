// What the browser tests share: unique users, seeding through the HTTP API
// (for what a test is not about), logging in through the page, screenshots.
import { expect, test, type Browser, type BrowserContext, type Page } from "@playwright/test";
import { startSystem, type System } from "./system";
import { mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";

export const PASSWORD = "correct horse 1";
export const SCREENSHOTS = resolve(import.meta.dirname, "../screenshots");

export function baseUrl(): string {
  const url = process.env.NATTER_URL;
  if (!url) throw new Error("NATTER_URL is not set: run the tests with `npx playwright test` (global setup starts natter)");
  return url;
}

let counter = 0;
/** A username no other test uses (3-32 characters, starting with a letter). */
export function uniq(name: string): string {
  counter++;
  return `${name}${Date.now().toString(36).slice(-5)}${process.pid % 1000}x${counter}`.slice(0, 32);
}

export interface User {
  username: string;
  userId: string;
  deviceId: string;
  accessToken: string;
  nickname: string;
}

/** An HTTP API call against the natter at `base()`, failing on an error status. */
export function callAt(base: () => string) {
  return async function call<T = any>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
    const r = await fetch(base() + path, {
      method,
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return (text ? JSON.parse(text) : {}) as T;
  };
}

export const call = callAt(baseUrl);

/** Runs the calling test file against a natter of its own, started before its tests and stopped after. */
export function ownSystem(env: Record<string, string> = {}) {
  let system: System | undefined;
  test.beforeAll(async () => {
    system = await startSystem(env);
  });
  test.afterAll(async () => {
    await system?.stop();
  });
  const url = () => {
    if (!system) throw new Error("the system is not started yet");
    return system.url;
  };
  const log = () => {
    if (!system) throw new Error("the system is not started yet");
    return system.log;
  };
  return { url, log, call: callAt(url), restart: (downMs?: number) => system!.restart(downMs) };
}

/** The login codes sent to `phone` so far, oldest first, as the `log` SMS
 * provider wrote them to natter's log (what a person reads on their phone). */
export function smsCodes(phone: string, log = process.env.NATTER_LOG ?? ""): string[] {
  const want = phone.replace(/[^+\d]/g, "");
  const text = readFileSync(log, "utf8");
  return [...text.matchAll(/sms code .*?phone="?(\+\d+)"? code="?(\d{6})"?/g)].filter((m) => m[1] === want).map((m) => m[2]);
}

/** Waits for a code to `phone` beyond the `seen` first ones. */
export async function nextSmsCode(phone: string, seen: number, log = process.env.NATTER_LOG ?? ""): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const codes = smsCodes(phone, log);
    if (codes.length > seen) return codes[codes.length - 1];
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no code for ${phone} in ${log}`);
}

export async function seedUser(name: string, nickname = "", phone = ""): Promise<User> {
  const username = uniq(name);
  let phoneCode = "";
  if (phone) {
    const seen = smsCodes(phone).length;
    await call("POST", "/v1/auth/phone/code", { phone });
    phoneCode = await nextSmsCode(phone, seen);
  }
  await call("POST", "/v1/auth/register", { username, password: PASSWORD, ...(nickname ? { nickname } : {}), ...(phone ? { phone, phoneCode } : {}) });
  const s = await call("POST", "/v1/auth/login", { username, password: PASSWORD, deviceName: "seed" });
  return { username, userId: s.userId, deviceId: s.deviceId, accessToken: s.accessToken, nickname: nickname || username };
}

export async function befriend(a: User, b: User) {
  const r = await call("POST", "/v1/friends/requests", { toUserId: b.userId, greeting: "hi" }, a.accessToken);
  if (!r.becameFriends) await call("POST", `/v1/friends/requests/${r.request.id}/accept`, {}, b.accessToken);
}

let sent = 0;
export async function sendText(from: User, to: { toUserId?: string; conversationId?: string }, text: string) {
  return call("POST", "/v1/messages", { ...to, clientMsgId: `t-${Date.now()}-${sent++}`, body: { text: { text } } }, from.accessToken);
}

/** A page of a new browser context, logged in as `user` through the login form. */
export async function loggedIn(browser: Browser, user: User, options: Parameters<Browser["newContext"]>[0] = {}): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  watch(page);
  await page.goto(baseUrl());
  await logIn(page, user.username);
  return { context, page };
}

export async function logIn(page: Page, username: string, password = PASSWORD) {
  await page.getByLabel(/^(Username|用户名)$/).fill(username);
  await page.getByLabel(/^(Password|密码)$/).fill(password);
  await page.getByRole("button", { name: /^(Log in|登录)$/ }).click();
  await expect(page.getByRole("tab", { name: /^(Chats|消息)/ })).toBeVisible();
}

/** Fails the test on a page error (an exception in the client). */
export function watch(page: Page) {
  page.on("pageerror", (e) => {
    throw new Error(`page error: ${e.message}`);
  });
}

export async function shot(page: Page, name: string) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.waitForTimeout(250);
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

export function conversation(page: Page, name: string | RegExp) {
  return page.getByRole("navigation", { name: /^(Chats|消息)$/ }).getByRole("button", { name: typeof name === "string" ? new RegExp(`^${escape(name)}`) : name });
}

export function messages(page: Page) {
  return page.getByRole("log", { name: /^(Messages|聊天记录)$/ }).getByRole("listitem");
}

export function composer(page: Page) {
  return page.getByRole("textbox", { name: /^(Write a message…|输入消息…)$/ });
}

export async function say(page: Page, text: string) {
  await composer(page).fill(text);
  await composer(page).press("Enter");
}

export function escape(s: string) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The chat header's title button: the name and the status line (online, typing…). */
export function chatHeader(page: Page) {
  return page.getByRole("button", { name: /^(Details|详情): / });
}
