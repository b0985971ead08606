// Phone widths: one pane at a time (list, chat, details), back buttons, and
// the screenshots of the main screens at both widths and in both themes.
import { expect, test } from "@playwright/test";
import { baseUrl, befriend, call, chatHeader, conversation, loggedIn, logIn, messages, say, seedUser, sendText, shot, watch } from "./helpers";

const phone = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

test("phone width: one pane at a time, in Chinese, light and dark", async ({ browser }) => {
  test.setTimeout(180_000);
  const [me, lin, zhou] = await Promise.all([seedUser("wen", "文静"), seedUser("lin", "林晓"), seedUser("zhou", "周杰")]);
  await befriend(me, lin);
  await befriend(me, zhou);
  await befriend(lin, zhou);
  await sendText(lin, { toUserId: me.userId }, "晚上一起吃饭吗？🍜");
  await sendText(me, { toUserId: lin.userId }, "好呀，七点见");
  await sendText(lin, { toUserId: me.userId }, "老地方 👌 https://example.com/map");
  const group = await call("POST", "/v1/groups", { name: "周末徒步 🥾", memberIds: [lin.userId, zhou.userId], description: "每周六早上" }, me.accessToken);
  await sendText(zhou, { conversationId: group.conversationId }, "这周去香山，大家带好水");

  for (const scheme of ["light", "dark"] as const) {
    const context = await browser.newContext({ ...phone, locale: "zh-CN", colorScheme: scheme });
    const page = await context.newPage();
    watch(page);
    await page.goto(baseUrl());
    await expect(page.getByRole("heading", { name: "欢迎回来" })).toBeVisible();
    await shot(page, `login-phone-${scheme}-zh`);
    await page.getByLabel("用户名").fill(me.username);
    await page.getByLabel("密码").fill("correct horse 1");
    await page.getByRole("button", { name: "登录", exact: true }).click();

    // The list alone.
    await expect(conversation(page, "林晓")).toBeVisible();
    await expect(page.getByRole("textbox", { name: "输入消息…" })).toBeHidden();
    await shot(page, `list-phone-${scheme}-zh`);

    // The chat alone, with a back button.
    await conversation(page, "林晓").click();
    await expect(messages(page).filter({ hasText: "老地方 👌" })).toHaveCount(1);
    await expect(page.getByRole("navigation", { name: "消息" })).toBeHidden();
    if (scheme === "light") await say(page, "收到 ✅");
    await shot(page, `chat-phone-${scheme}-zh`);
    await page.getByRole("button", { name: "返回" }).click();
    await expect(conversation(page, "周末徒步 🥾")).toBeVisible();

    // The group's details as a page of its own.
    await conversation(page, "周末徒步 🥾").click();
    await expect(chatHeader(page)).toContainText("3 位成员");
    await page.getByRole("button", { name: "详情", exact: true }).click();
    const details = page.getByRole("complementary", { name: "详情" });
    await expect(details.getByRole("region", { name: "群成员" })).toContainText("周杰");
    await expect(page.getByRole("textbox", { name: "输入消息…" })).toBeHidden();
    await shot(page, `group-phone-${scheme}-zh`);
    await details.getByRole("button", { name: "关闭" }).click();
    await expect(messages(page).filter({ hasText: "这周去香山" })).toHaveCount(1);

    // Contacts at phone width.
    await page.getByRole("button", { name: "返回" }).click();
    await page.getByRole("tab", { name: /^通讯录/ }).click();
    await expect(page.getByRole("region", { name: "好友" })).toContainText("周杰");
    await shot(page, `contacts-phone-${scheme}-zh`);

    // Settings with my devices (the seed login and this one) and the phone number.
    await page.getByRole("button", { name: "设置" }).first().click();
    const settings = page.getByRole("dialog", { name: "设置" });
    const devices = settings.getByRole("list", { name: "登录设备" }).getByRole("listitem");
    await expect(devices.filter({ hasText: "本设备" })).toHaveCount(1);
    await expect(devices).toHaveCount(scheme === "light" ? 2 : 3);
    await expect(settings.getByRole("textbox", { name: "新手机号" })).toBeVisible();
    await devices.filter({ hasText: "本设备" }).scrollIntoViewIfNeeded();
    await shot(page, `settings-phone-${scheme}-zh`);
    await settings.getByRole("button", { name: "关闭" }).click();

    // Search at phone width: the results take the list's place, a hit
    // opens its chat alone. (The index follows the event stream behind the
    // other tests' messages: give it time.)
    await page.getByRole("tab", { name: /^消息/ }).click();
    await page.getByRole("searchbox", { name: "搜索会话、联系人和聊天记录" }).fill("吃饭");
    const hits = page.locator(".search-results").getByRole("region", { name: "聊天记录" }).getByRole("list").getByRole("button");
    await expect(hits).toHaveCount(1, { timeout: 60_000 });
    await expect(hits.first().locator("mark").first()).toHaveText("吃饭");
    await shot(page, `search-phone-${scheme}-zh`);
    await hits.first().click();
    await expect(messages(page).filter({ hasText: "晚上一起吃饭吗" })).toBeInViewport();
    await expect(page.getByRole("navigation", { name: "消息" })).toBeHidden();
    await context.close();
  }

  // Desktop, Chinese, light and dark: the login, a group's details, a chat
  // with its peer's details, and the contacts.
  for (const scheme of ["light", "dark"] as const) {
    const context = await browser.newContext({ locale: "zh-CN", colorScheme: scheme });
    const page = await context.newPage();
    watch(page);
    await page.goto(baseUrl());
    await expect(page.getByRole("heading", { name: "欢迎回来" })).toBeVisible();
    await shot(page, `login-desktop-${scheme}-zh`);
    await logIn(page, me.username);
    await conversation(page, "周末徒步 🥾").click();
    await page.getByRole("button", { name: "详情", exact: true }).click();
    await expect(page.getByRole("complementary", { name: "详情" })).toContainText("每周六早上");
    await shot(page, `group-desktop-${scheme}-zh`);
    await conversation(page, "林晓").click();
    await expect(messages(page).filter({ hasText: "老地方" })).toHaveCount(1);
    await shot(page, `chat-desktop-${scheme}-zh-details`);
    await page.getByRole("tab", { name: /^通讯录/ }).click();
    await expect(page.getByRole("region", { name: "好友" })).toContainText("周杰");
    await shot(page, `contacts-desktop-${scheme}-zh`);
    await context.close();
  }
});

test("keyboard: the message menu and dialogs work without a mouse", async ({ browser }) => {
  const [me, kim] = await Promise.all([seedUser("kb", "Keys"), seedUser("kim", "Kim")]);
  await befriend(me, kim);
  await sendText(kim, { toUserId: me.userId }, "press a key");
  const { context, page } = await loggedIn(browser, me);
  await conversation(page, "Kim").focus();
  await page.keyboard.press("Enter");
  await expect(messages(page).filter({ hasText: "press a key" })).toHaveCount(1);
  await messages(page).filter({ hasText: "press a key" }).getByRole("button", { name: "Message actions" }).focus();
  await page.keyboard.press("Enter");
  await expect(page.getByRole("menuitem", { name: "Reply" })).toBeFocused();
  await page.keyboard.press("ArrowDown");
  await expect(page.getByRole("menuitem", { name: "Delete for me" })).toBeFocused();
  await page.keyboard.press("Escape");
  await expect(page.getByRole("menu")).toHaveCount(0);
  await page.getByRole("button", { name: "New group" }).focus();
  await page.keyboard.press("Enter");
  await expect(page.getByRole("dialog", { name: "New group" })).toBeVisible();
  await expect(page.getByRole("dialog").getByLabel("Group name")).toBeFocused();
  await page.keyboard.press("Escape");
  await expect(page.getByRole("dialog")).toHaveCount(0);
  await context.close();
});
