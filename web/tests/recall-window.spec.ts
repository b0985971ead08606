// The recall window is the server's: a natter whose window is 5 seconds
// offers Recall on a fresh message (the one just sent, from its ack, and one
// from history) and no longer once the window has passed.
import { expect, test, type Page } from "@playwright/test";
import { composer, conversation, logIn, messages, PASSWORD, ownSystem, watch } from "./helpers";

const system = ownSystem({ NATTER_MESSAGES__RECALL_WINDOW_SECS: "5" });
const call = system.call;

async function menuOf(page: Page, text: string) {
  const row = messages(page).filter({ hasText: text });
  await row.hover();
  await row.getByRole("button", { name: "Message actions" }).click();
  return page.getByRole("menu", { name: "Message actions" });
}

test("Recall is offered within the server's recall window only", async ({ browser }) => {
  const users: Record<string, { userId: string; token: string }> = {};
  for (const name of ["rita", "sam"]) {
    await call("POST", "/v1/auth/register", { username: name, password: PASSWORD, nickname: name === "rita" ? "Rita" : "Sam" });
    const s = await call("POST", "/v1/auth/login", { username: name, password: PASSWORD });
    users[name] = { userId: s.userId, token: s.accessToken };
  }
  const { rita, sam } = users;
  const r = await call("POST", "/v1/friends/requests", { toUserId: sam.userId }, rita.token);
  await call("POST", `/v1/friends/requests/${r.request.id}/accept`, {}, sam.token);
  await call("POST", "/v1/messages", { toUserId: sam.userId, clientMsgId: "rw-1", body: { text: { text: "from history" } } }, rita.token);

  const context = await browser.newContext();
  const page = await context.newPage();
  watch(page);
  await page.goto(system.url());
  await logIn(page, "rita");
  await conversation(page, "Sam").click();
  await composer(page).fill("just sent");
  await composer(page).press("Enter");
  await expect(messages(page).filter({ hasText: "just sent" }).getByRole("img", { name: "Sent" })).toBeVisible();

  let menu = await menuOf(page, "just sent");
  await expect(menu.getByRole("menuitem", { name: "Recall" })).toBeVisible();
  await page.keyboard.press("Escape");
  // Past the window (5 s after each message was stored).
  await page.waitForTimeout(5500);
  for (const text of ["just sent", "from history"]) {
    menu = await menuOf(page, text);
    await expect(menu.getByRole("menuitem", { name: "Delete for me" })).toBeVisible();
    await expect(menu.getByRole("menuitem", { name: "Recall" })).toHaveCount(0);
    await page.keyboard.press("Escape");
  }
  await context.close();

  // A Recall chosen from a menu opened in time but clicked too late: the
  // server refuses, and the client says why with the server's window, in
  // Chinese too.
  const zh = await browser.newContext({ locale: "zh-CN" });
  const zhPage = await zh.newPage();
  watch(zhPage);
  await zhPage.goto(system.url());
  await logIn(zhPage, "rita");
  await conversation(zhPage, "Sam").click();
  await composer(zhPage).fill("再发一条");
  await composer(zhPage).press("Enter");
  await expect(messages(zhPage).filter({ hasText: "再发一条" }).getByRole("img", { name: "已发送" })).toBeVisible();
  const row = messages(zhPage).filter({ hasText: "再发一条" });
  await row.hover();
  await row.getByRole("button", { name: "消息操作" }).click();
  const recall = zhPage.getByRole("menu", { name: "消息操作" }).getByRole("menuitem", { name: "撤回" });
  await expect(recall).toBeVisible();
  await zhPage.waitForTimeout(5500);
  await recall.click();
  await expect(zhPage.getByRole("alert")).toHaveText("只能撤回 5 秒内的消息");
  await expect(messages(zhPage).filter({ hasText: "再发一条" })).toHaveCount(1);
  await zh.close();
});
