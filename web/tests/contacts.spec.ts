// Contacts and profile: search by nickname, reject a request, presence,
// delete a friend, block and unblock, edit my profile, language and theme.
import { expect, test } from "@playwright/test";
import { befriend, call, chatHeader, composer, conversation, loggedIn, messages, say, seedUser, shot } from "./helpers";

test("contacts: search by nickname, reject, presence, delete, block and unblock", async ({ browser }) => {
  // Other tests share the server: a nickname of this test's own.
  const tag = Math.random().toString(36).slice(2, 6);
  const wangName = `王小明${tag}`;
  const [me, wang, li, zhao] = await Promise.all([
    seedUser("me", "Me"),
    seedUser("wang", wangName),
    seedUser("li", "李雷"),
    seedUser("zhao", "赵六"),
  ]);
  await befriend(me, zhao);
  // Li asks me; I reject. Wang is found by part of his nickname.
  const asked = await call("POST", "/v1/friends/requests", { toUserId: me.userId, greeting: "我是李雷" }, li.accessToken);
  const { context, page } = await loggedIn(browser, me);
  await page.getByRole("tab", { name: /^Contacts/ }).click();
  const request = page.getByRole("group", { name: "李雷" });
  await expect(request).toContainText("我是李雷");
  await request.getByRole("button", { name: "Reject" }).click();
  await expect(page.getByRole("group", { name: "李雷" })).toHaveCount(0);
  const rejected = await call("GET", "/v1/friends/requests?direction=outgoing&include_answered=true", undefined, li.accessToken);
  expect(rejected.requests.find((r: any) => r.id === asked.request.id).status).toBe("rejected");

  const search = page.getByRole("searchbox", { name: "Search people by username, nickname or phone" });
  await search.fill(`小明${tag}`);
  await search.press("Enter");
  await page.getByRole("button", { name: `Add friend ${wangName}` }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Send request" }).click();
  await expect(page.getByRole("dialog")).toHaveCount(0);
  const incoming = async () => {
    const list = await call("GET", "/v1/friends/requests", undefined, wang.accessToken);
    return (list.requests ?? []).find((r: any) => r.fromUserId === me.userId);
  };
  await expect.poll(incoming).toBeTruthy();
  const req = await incoming();
  expect(req.greeting).toBe("Hi, let's be friends!");
  await call("POST", `/v1/friends/requests/${req.id}/accept`, {}, wang.accessToken);
  const friends = page.getByRole("region", { name: "Friends", exact: true });

  // Found by the exact phone number (written as people write it), never shown.
  const digits = String(Math.floor(Math.random() * 1e8)).padStart(8, "0");
  const phoned = await seedUser("phoned", `电话${tag}`, `+86138${digits}`);
  await search.fill(`+86 138-${digits.slice(0, 4)}-${digits.slice(4)}`);
  await search.press("Enter");
  const found = page.getByRole("region", { name: "Search" });
  await expect(found).toContainText(`电话${tag}`);
  await expect(found).toContainText(`@${phoned.username}`);
  await expect(found).not.toContainText(digits);
  await expect(friends.getByRole("button", { name: new RegExp(wangName) })).toBeVisible();

  // Presence: Zhao comes online in a browser, and the dot and label follow.
  await expect(friends.getByRole("button", { name: /赵六/ })).not.toContainText("online");
  const z = await loggedIn(browser, zhao);
  await expect(friends.getByRole("button", { name: /赵六/ })).toContainText("online");
  await friends.getByRole("button", { name: /赵六/ }).click();
  await expect(page.getByRole("region", { name: "Profile" })).toContainText("online");
  await shot(page, "contacts-desktop-light");
  await z.context.close();
  await expect(page.getByRole("region", { name: "Profile" })).toContainText("last seen", { timeout: 20_000 });

  // Delete Wang: gone from both lists.
  await friends.getByRole("button", { name: new RegExp(wangName) }).click();
  await page.getByRole("button", { name: "Delete friend" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "OK" }).click();
  await expect(friends.getByRole("button", { name: new RegExp(wangName) })).toHaveCount(0);
  const wangFriends = await call("GET", "/v1/friends", undefined, wang.accessToken);
  expect(wangFriends.friends ?? []).toHaveLength(0);

  // Block Zhao: Zhao's sends are refused; unblock and they go through.
  await friends.getByRole("button", { name: /赵六/ }).click();
  await page.getByRole("button", { name: "Block", exact: true }).click();
  await page.getByRole("dialog").getByRole("button", { name: "OK" }).click();
  await expect(page.getByRole("region", { name: "Blocked users" })).toContainText("赵六");
  const refused = await fetch(`${process.env.NATTER_URL}/v1/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${zhao.accessToken}` },
    body: JSON.stringify({ toUserId: me.userId, clientMsgId: "blocked-1", body: { text: { text: "hi" } } }),
  });
  expect(refused.status).toBe(403);
  await page.getByRole("button", { name: "Unblock 赵六" }).click();
  await expect(page.getByRole("region", { name: "Blocked users" })).toHaveCount(0);
  await call("POST", "/v1/messages", { toUserId: me.userId, clientMsgId: "unblocked-1", body: { text: { text: "谢谢你" } } }, zhao.accessToken);
  await page.getByRole("tab", { name: /^Chats/ }).click();
  await expect(conversation(page, "赵六")).toContainText("谢谢你");
  await context.close();
});

test("profile, language and theme", async ({ browser }) => {
  const [me, friend] = await Promise.all([seedUser("pat", "Pat"), seedUser("sam", "Sam")]);
  await befriend(me, friend);
  const { context, page } = await loggedIn(browser, me);
  await page.getByRole("button", { name: "Settings" }).first().click();
  const settings = page.getByRole("dialog", { name: "Settings" });
  await settings.getByLabel("Nickname").fill("帕特 Pat");
  await settings.getByLabel("Signature").fill("今天天气很好 ☀️");
  await settings.getByRole("button", { name: "Save" }).click();
  await expect(page.getByRole("status").filter({ hasText: "Saved" })).toBeVisible();
  const seen = await call("GET", `/v1/users/${me.userId}`, undefined, friend.accessToken);
  expect([seen.nickname, seen.signature]).toEqual(["帕特 Pat", "今天天气很好 ☀️"]);

  await settings.getByRole("button", { name: "简体中文" }).click();
  await expect(page.getByRole("dialog", { name: "设置" })).toBeVisible();
  await page.getByRole("dialog", { name: "设置" }).getByRole("button", { name: "深色" }).click();
  expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe("dark");
  await page.getByRole("dialog", { name: "设置" }).getByRole("button", { name: "关闭" }).click();
  await expect(page.getByRole("tab", { name: /^消息/ })).toBeVisible();
  await expect(page.getByRole("tab", { name: /^通讯录/ })).toBeVisible();
  // Kept across reloads.
  await page.reload();
  await expect(page.getByRole("tab", { name: /^通讯录/ })).toBeVisible();
  expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe("dark");
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  expect(bg).toBe("rgb(15, 18, 22)");

  // Chinese input: Enter during IME composition does not send.
  await page.getByRole("tab", { name: /^通讯录/ }).click();
  await page.getByRole("region", { name: "好友" }).getByRole("button", { name: /Sam/ }).click();
  await page.getByRole("button", { name: "发消息" }).click();
  const box = composer(page);
  await box.fill("ni hao");
  await box.evaluate((el) => {
    el.dispatchEvent(new CompositionEvent("compositionstart", { bubbles: true }));
    el.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true, isComposing: true }));
    el.dispatchEvent(new CompositionEvent("compositionend", { bubbles: true, data: "你好" }));
  });
  await expect(box).toHaveValue("ni hao");
  await box.fill("你好，我用中文输入法");
  await box.press("Enter");
  await expect(messages(page).filter({ hasText: "你好，我用中文输入法" })).toHaveCount(1);
  await expect(chatHeader(page)).toContainText("Sam");
  await say(page, "深色主题 🌙");
  await expect(messages(page).filter({ hasText: "深色主题 🌙" }).getByRole("img", { name: /已发送|已读/ })).toBeVisible();
  await shot(page, "chat-desktop-dark-zh");
  await context.close();
});
