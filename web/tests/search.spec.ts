// Search from the chat list: messages (Chinese, English, mixed) with the
// matched words marked and a jump to the message, chats and groups by name
// or pinyin, people; only what the user may read.
import { expect, test, type Page } from "@playwright/test";
import { befriend, call, chatHeader, conversation, loggedIn, messages, seedUser, sendText, shot } from "./helpers";

function searchBox(page: Page) {
  return page.getByRole("searchbox", { name: /^(Search chats, people and messages|搜索会话、联系人和聊天记录)$/ });
}

function section(page: Page, name: string) {
  return page.locator(".search-results").getByRole("region", { name });
}

test("search finds my messages in Chinese and English and opens the chat at the message; never a stranger's", async ({ browser }) => {
  test.setTimeout(180_000);
  const ann = await seedUser("ann", "安妮");
  const bob = await seedUser("bob", "Bob");
  const carol = await seedUser("carol", "Carol");
  const dave = await seedUser("dave", "Dave");
  await befriend(ann, bob);
  await befriend(carol, dave);
  await sendText(bob, { toUserId: ann.userId }, "我们明天开会讨论项目 plan");
  await sendText(bob, { toUserId: ann.userId }, "The meetings moved to Friday");
  await sendText(bob, { toUserId: ann.userId }, "明天 meeting 改到3点");
  // Enough after it that the message is far out of the chat's first page.
  for (let i = 0; i < 70; i++) await sendText(bob, { toUserId: ann.userId }, `filler ${i}`);
  // A stranger's conversation with the same words.
  await sendText(carol, { toUserId: dave.userId }, "明天开会 carol and dave only");
  await call("POST", "/v1/groups", { name: "项目组", memberIds: [bob.userId] }, ann.accessToken);
  // Other tests make users named 小明 too: look for this one by handle.
  const xm = await seedUser("xm", "小明");

  const { page } = await loggedIn(browser, ann);
  await searchBox(page).fill("开会");
  const found = section(page, "Messages").getByRole("list").getByRole("button");
  // The index follows the event stream in order, behind every message the
  // other tests sent (10,000 in history.spec.ts): give it time to catch up.
  await expect(found).toHaveCount(1, { timeout: 60_000 });
  await expect(found.first().locator("mark").first()).toHaveText("开会");
  await expect(section(page, "Messages")).not.toContainText("carol and dave");

  // English: stemmed, case-folded.
  await searchBox(page).fill("Meeting");
  await expect(found).toHaveCount(2);
  await expect(section(page, "Messages")).toContainText("The meetings moved to Friday");
  await expect(section(page, "Messages")).toContainText("明天 meeting 改到3点");
  // Mixed, and by time: the newest first.
  await searchBox(page).fill("明天 meeting");
  await expect(found).toHaveCount(1);
  await searchBox(page).fill("明天");
  await expect(found).toHaveCount(2);
  await section(page, "Messages").getByRole("button", { name: "Newest" }).click();
  await expect(found.first()).toContainText("明天 meeting 改到3点");

  // A hit opens the chat at that message, far back in the history.
  await searchBox(page).fill("讨论项目");
  await expect(found).toHaveCount(1);
  await found.first().click();
  const hit = messages(page).filter({ hasText: "我们明天开会讨论项目" });
  await expect(hit).toBeInViewport();
  await expect(messages(page).filter({ hasText: "filler 69" })).not.toBeInViewport();
  await shot(page, "search");

  // Chats and groups by name or pinyin; people by pinyin.
  await searchBox(page).fill("xmz");
  await expect(section(page, "Chats and groups").getByRole("button", { name: "项目组" })).toBeVisible();
  await searchBox(page).fill("xiaoming");
  await expect(section(page, "People").getByRole("button", { name: `小明 @${xm.username}` })).toBeVisible();
  await searchBox(page).fill("项目组");
  await section(page, "Chats and groups").getByRole("button", { name: "项目组" }).click();
  await expect(chatHeader(page)).toContainText("项目组");

  // Escape leaves the search for the chat list.
  await searchBox(page).fill("明天");
  await searchBox(page).press("Escape");
  await expect(conversation(page, "Bob")).toBeVisible();
});

test("a recalled message leaves the results; the search box speaks Chinese", async ({ browser }) => {
  test.setTimeout(180_000);
  const ann = await seedUser("ann2", "Ann");
  const bob = await seedUser("bob2", "Bob");
  await befriend(ann, bob);
  const sent = await sendText(bob, { toUserId: ann.userId }, "周末去爬山吗");
  await sendText(bob, { toUserId: ann.userId }, "周末电影");
  const { page } = await loggedIn(browser, ann);
  await page.getByRole("button", { name: "Settings" }).first().click();
  await page.getByRole("dialog", { name: "Settings" }).getByRole("button", { name: "简体中文" }).click();
  await page.getByRole("dialog", { name: "设置" }).getByRole("button", { name: "关闭" }).click();
  await searchBox(page).fill("周末");
  const found = section(page, "聊天记录").getByRole("list").getByRole("button");
  await expect(found).toHaveCount(2, { timeout: 60_000 });
  await call("POST", `/v1/conversations/${encodeURIComponent(sent.conversationId)}/messages/${sent.seq}/recall`, {}, bob.accessToken);
  // The results are asked for again (newest first): the recalled one is gone.
  await section(page, "聊天记录").getByRole("button", { name: "最新" }).click();
  await expect(found).toHaveCount(1, { timeout: 60_000 });
  await expect(found.first()).toContainText("周末电影");
  await searchBox(page).fill("没有这个词");
  await expect(section(page, "聊天记录")).toContainText("没有找到聊天记录");
});
