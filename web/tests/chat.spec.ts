// Two people meet and chat: register in two browsers, become friends, talk
// both ways with receipts and typing; a bad login; Chinese and emoji; a
// send whose ack overtakes its chat's history.
import { expect, test } from "@playwright/test";
import {
  baseUrl, befriend, chatHeader, composer, conversation, loggedIn, messages, say, seedUser, sendText, shot, uniq, watch, PASSWORD,
} from "./helpers";

test("two users register, become friends and chat both ways with read receipts and typing", async ({ browser }) => {
  const alice = uniq("alice");
  const bob = uniq("bob");
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  watch(a);
  watch(b);

  for (const [page, username, nickname] of [[a, alice, "Alice"], [b, bob, "Bob 小波"]] as const) {
    await page.goto(baseUrl());
    await page.getByRole("button", { name: "New here? Create an account" }).click();
    await page.getByLabel("Username").fill(username);
    await page.getByLabel("Nickname (optional)").fill(nickname);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Create account" }).click();
    await expect(page.getByRole("tab", { name: /^Chats/ })).toBeVisible();
    await expect(page.getByText("No chats yet")).toBeVisible();
  }

  // Alice finds Bob by username and asks; Bob sees the greeting and accepts.
  await a.getByRole("tab", { name: /^Contacts/ }).click();
  const search = a.getByRole("searchbox", { name: "Search people by username, nickname or phone" });
  await search.fill(bob);
  await search.press("Enter");
  await a.getByRole("button", { name: "Add friend Bob 小波" }).click();
  const dialog = a.getByRole("dialog", { name: "Add friend: Bob 小波" });
  await dialog.getByLabel("Greeting").fill("我是爱丽丝，加个好友吧 👋");
  await dialog.getByRole("button", { name: "Send request" }).click();
  await expect(a.getByRole("region", { name: "Sent requests" })).toContainText("Bob 小波");

  await b.getByRole("tab", { name: /^Contacts/ }).click();
  const request = b.getByRole("group", { name: "Alice" });
  await expect(request).toContainText("我是爱丽丝，加个好友吧 👋");
  await shot(b, "contacts-request-desktop-light");
  await request.getByRole("button", { name: "Accept" }).click();
  await expect(b.getByRole("region", { name: "Friends", exact: true }).getByRole("button", { name: /Alice/ })).toBeVisible();
  await expect(a.getByRole("region", { name: "Friends", exact: true }).getByRole("button", { name: /Bob 小波/ })).toBeVisible();

  // Alice opens the chat from Bob's card and types; Bob sees "typing".
  await a.getByRole("region", { name: "Friends", exact: true }).getByRole("button", { name: /Bob 小波/ }).click();
  await a.getByRole("button", { name: "Message", exact: true }).click();
  await expect(chatHeader(a).getByText("online")).toBeVisible();
  await b.getByRole("tab", { name: /^Chats/ }).click();

  await composer(a).pressSequentially("周末一起去爬山吗？🏔️", { delay: 10 });
  await composer(a).press("Enter");
  await expect(messages(a).filter({ hasText: "周末一起去爬山吗？🏔️" })).toHaveCount(1);
  // Bob: the conversation appears live with an unread badge.
  await expect(conversation(b, "Alice, 1")).toBeVisible();
  await expect(conversation(b, "Alice")).toContainText("周末一起去爬山吗？🏔️");
  await conversation(b, "Alice").click();
  await expect(messages(b).filter({ hasText: "周末一起去爬山吗？🏔️" })).toHaveCount(1);
  // Alice's message turns read once Bob has it open.
  await expect(messages(a).filter({ hasText: "周末一起去爬山吗？🏔️" }).getByRole("img", { name: "Read" })).toBeVisible();

  // Bob types: Alice sees it in the header.
  await composer(b).pressSequentially("好", { delay: 20 });
  await expect(chatHeader(a).getByText("Bob 小波 is typing…")).toBeVisible();
  await composer(b).fill("好啊！几点出发？\nShift+Enter makes a second line");
  await composer(b).press("Enter");
  const reply = messages(a).filter({ hasText: "好啊！几点出发？" });
  await expect(reply).toHaveCount(1);
  await expect(reply).toContainText("Shift+Enter makes a second line");
  await expect(chatHeader(a).getByText("typing")).toHaveCount(0);

  // Shift+Enter adds a line instead of sending.
  await composer(a).fill("早上八点");
  await composer(a).press("Shift+Enter");
  await composer(a).pressSequentially("在地铁站见 https://example.com/plan?x=1。");
  await expect(composer(a)).toHaveValue("早上八点\n在地铁站见 https://example.com/plan?x=1。");
  await a.getByRole("button", { name: "Send", exact: true }).click();
  const plan = messages(b).filter({ hasText: "在地铁站见" });
  await expect(plan).toHaveCount(1);
  // Links are links (and only the URL), text is text.
  await expect(plan.getByRole("link", { name: "https://example.com/plan?x=1" })).toHaveAttribute("href", "https://example.com/plan?x=1");
  await expect(plan.getByRole("link")).toHaveAttribute("rel", /noopener/);

  // Emoji from the picker.
  await a.getByRole("button", { name: "Emoji" }).click();
  await a.getByRole("group", { name: "Emoji" }).getByRole("button", { name: "🎉" }).click();
  await composer(a).press("Enter");
  await expect(messages(b).filter({ hasText: "🎉" })).toHaveCount(1);

  // Both ways, in order, on both sides.
  const order = ["周末一起去爬山吗？🏔️", "好啊！几点出发？", "早上八点", "🎉"];
  for (const page of [a, b]) {
    const texts = await messages(page).allInnerTexts();
    const idx = order.map((t) => texts.findIndex((x) => x.includes(t)));
    expect(idx.every((i, k) => i >= 0 && (k === 0 || i > idx[k - 1])), `${texts}`).toBe(true);
  }
  await shot(a, "chat-desktop-light");
  await ctxA.close();
  await ctxB.close();
});

test("a bad login shows the server's error, in the user's language", async ({ browser }) => {
  const ctx = await browser.newContext({ locale: "zh-CN" });
  const page = await ctx.newPage();
  watch(page);
  await page.goto(baseUrl());
  await expect(page.getByRole("heading", { name: "欢迎回来" })).toBeVisible();
  await page.getByLabel("用户名").fill(uniq("nobody"));
  await page.getByLabel("密码").fill("wrong password");
  await page.getByRole("button", { name: "登录", exact: true }).click();
  await expect(page.getByRole("alert")).toHaveText("用户名或密码错误");
  await shot(page, "login-error-zh");

  await page.getByRole("button", { name: "English" }).click();
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await expect(page.getByRole("alert")).toHaveText("Wrong username or password");

  // A taken username on registration: the server's conflict, readable.
  const taken = uniq("taken");
  await fetch(`${baseUrl()}/v1/auth/register`, { method: "POST", body: JSON.stringify({ username: taken, password: PASSWORD }) });
  await page.getByRole("button", { name: "New here? Create an account" }).click();
  await page.getByLabel("Username").fill(taken);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByRole("alert")).toContainText("conflicts");
  await page.getByRole("button", { name: "中文" }).click();
  await page.getByRole("button", { name: "注册", exact: true }).click();
  await expect(page.getByRole("alert")).toHaveText("用户名已被占用");
  await ctx.close();
});

test("a message sent while its chat's history is on its way stays in the chat", async ({ browser }) => {
  const [me, other] = await Promise.all([seedUser("early", "Early"), seedUser("later", "Later")]);
  await befriend(me, other);
  await sendText(other, { toUserId: me.userId }, "before");
  const { context, page } = await loggedIn(browser, me);
  // The newest page is read at once but answered only after the send's ack
  // came: it is older than the message (as when the send overtakes it).
  let fetched!: () => void;
  const read = new Promise<void>((r) => (fetched = r));
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  await page.route(
    (url) => url.pathname.startsWith("/v1/conversations/") && url.pathname.endsWith("/messages"),
    async (route) => {
      const response = await route.fetch();
      fetched();
      await held;
      await route.fulfill({ response });
    },
  );
  await conversation(page, "Later").click();
  await read;
  await say(page, "sent early");
  // The ack came: the list shows the message as the chat's last.
  await expect(conversation(page, "Later")).toContainText("sent early");
  release();
  await expect(messages(page).filter({ hasText: "sent early" }).getByRole("img", { name: "Sent" })).toBeVisible();
  await expect(messages(page)).toHaveText([/before/, /sent early/]);
  await context.close();
});
