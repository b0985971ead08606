// Phone login: a code sent to the number (the `log` SMS provider writes it
// to natter's log, where the test reads it as a person reads their phone),
// signing up with it, and logging in again with a new one, in Chinese too.
import { expect, test } from "@playwright/test";
import { nextSmsCode, ownSystem, shot, smsCodes, uniq, watch } from "./helpers";

const system = ownSystem({ NATTER_AUTH__SMS__RESEND_SECS: "2" });

test("phone: sign up with a code, log out, log in again with a new one", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  watch(page);
  await page.goto(system.url());
  const digits = String(Math.floor(Math.random() * 1e8)).padStart(8, "0");
  const phone = `+86139${digits}`;
  const written = `+86 139 ${digits.slice(0, 4)} ${digits.slice(4)}`;

  await page.getByRole("button", { name: "Log in or sign up with a phone number" }).click();
  await expect(page.getByRole("heading", { name: "Log in with your phone" })).toBeVisible();
  await page.getByLabel("Phone number").fill(written);
  await page.getByRole("button", { name: "Send code" }).click();
  await expect(page.getByRole("status").filter({ hasText: `A code was sent to ${written}` })).toBeVisible();
  await expect(page.getByRole("button", { name: /^Resend in \d+ s$/ })).toBeDisabled();
  const code = await nextSmsCode(phone, 0, system.log());

  // A wrong code is refused with a clear message; the right one finds no
  // account, and the same code creates it.
  await page.getByLabel("Code").fill(code === "000000" ? "111111" : "000000");
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await expect(page.getByRole("alert")).toHaveText("The code is wrong or has expired: ask for a new one");
  await page.getByLabel("Code").fill(code);
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await expect(page.getByRole("status").filter({ hasText: "No account has this number yet" })).toBeVisible();
  const username = uniq("phoner");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Nickname (optional)").fill("韩梅梅");
  await shot(page, "phone-signup");
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByRole("tab", { name: /^Chats/ })).toBeVisible();

  // Log out, then in again by phone, in Chinese, with a new code.
  await page.getByRole("button", { name: "Settings" }).first().click();
  await page.getByRole("dialog", { name: "Settings" }).getByRole("button", { name: "Log out", exact: true }).click();
  await page.getByRole("button", { name: "中文" }).click();
  await page.getByRole("button", { name: "用手机号登录或注册" }).click();
  await page.getByLabel("手机号").fill(phone);
  // A code was just sent (another device asked): the next one must wait,
  // and the button counts down.
  const ask = () => fetch(`${system.url()}/v1/auth/phone/code`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ phone }) });
  await expect.poll(async () => (await ask()).status, { timeout: 5_000 }).toBe(200);
  await nextSmsCode(phone, 1, system.log());
  const seen = smsCodes(phone, system.log()).length;
  await page.getByRole("button", { name: "获取验证码" }).click();
  await expect(page.getByRole("alert")).toHaveText("操作太频繁，请稍后再试");
  await expect(page.getByRole("button", { name: /^\d+ 秒后重发$/ })).toBeDisabled();
  await expect(page.getByRole("button", { name: "获取验证码" })).toBeEnabled({ timeout: 5_000 });
  await page.getByRole("button", { name: "获取验证码" }).click();
  const again = await nextSmsCode(phone, seen, system.log());
  expect(again).toMatch(/^\d{6}$/);
  await page.getByLabel("验证码").fill(again);
  await shot(page, "phone-login-zh");
  await page.getByRole("button", { name: "登录", exact: true }).click();
  await expect(page.getByRole("tab", { name: /^消息/ })).toBeVisible();
  // The same account: its nickname is the one chosen at sign-up.
  const session = await page.evaluate(() => localStorage.getItem("natter.session"));
  expect(session).toBeTruthy();
  const me = await (await fetch(`${system.url()}/v1/profile`, {
    headers: { authorization: `Bearer ${JSON.parse(session!).accessToken}` },
  })).json();
  expect(me.username).toBe(username);
  expect(me.nickname).toBe("韩梅梅");
  await context.close();
});

test("phone: change my number in Settings with a code; it logs me in after", async ({ browser }) => {
  const username = uniq("mover");
  await system.call("POST", "/v1/auth/register", { username, password: "correct horse 1" });
  const context = await browser.newContext();
  const page = await context.newPage();
  watch(page);
  await page.goto(system.url());
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill("correct horse 1");
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await expect(page.getByRole("tab", { name: /^Chats/ })).toBeVisible();

  const digits = String(Math.floor(Math.random() * 1e8)).padStart(8, "0");
  const phone = `+86137${digits}`;
  await page.getByRole("button", { name: "Settings" }).first().click();
  const settings = page.getByRole("dialog", { name: "Settings" });
  await settings.getByRole("textbox", { name: "New phone number" }).fill(phone);
  await settings.getByRole("button", { name: "Send code" }).click();
  await expect(settings.getByRole("button", { name: /^Resend in \d+ s$/ })).toBeDisabled();
  const code = await nextSmsCode(phone, 0, system.log());
  await settings.getByRole("textbox", { name: "Code" }).fill(code);
  await shot(page, "phone-change");
  await settings.getByRole("button", { name: "Change phone number" }).click();
  await expect(page.getByRole("status").filter({ hasText: "Phone number changed" })).toBeVisible();

  // The number now logs this account in.
  await settings.getByRole("button", { name: "Log out", exact: true }).click();
  await page.getByRole("button", { name: "Log in or sign up with a phone number" }).click();
  await page.getByLabel("Phone number").fill(phone);
  await expect(page.getByRole("button", { name: "Send code" })).toBeEnabled({ timeout: 5_000 });
  await page.getByRole("button", { name: "Send code" }).click();
  const again = await nextSmsCode(phone, 1, system.log());
  await page.getByLabel("Code").fill(again);
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await expect(page.getByRole("tab", { name: /^Chats/ })).toBeVisible();
  const session = JSON.parse((await page.evaluate(() => localStorage.getItem("natter.session")))!);
  const profile = await system.call("GET", "/v1/profile", undefined, session.accessToken);
  expect(profile.username).toBe(username);
  await context.close();
});
