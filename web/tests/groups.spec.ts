// Groups in the browser: create from friends, notices, a reply with a jump
// to the quote, a recall, and every management action of the info pane.
import { expect, test, type Page } from "@playwright/test";
import { befriend, chatHeader, composer, conversation, loggedIn, messages, say, seedUser, shot } from "./helpers";

async function openMenu(page: Page, text: string, notText?: string) {
  const row = messages(page).filter({ hasText: text, hasNotText: notText });
  await row.hover();
  await row.getByRole("button", { name: "Message actions" }).click();
  return page.getByRole("menu", { name: "Message actions" });
}

async function confirm(page: Page) {
  await page.getByRole("dialog").getByRole("button", { name: "OK" }).click();
}

async function memberAction(page: Page, member: string, action: string) {
  await page.getByRole("button", { name: `Actions for ${member}` }).click();
  await page.getByRole("menuitem", { name: action }).click();
}

test("a group of three: notices, a reply, a recall, and managing it", async ({ browser }) => {
  const [alice, bob, carol] = await Promise.all([seedUser("alice", "Alice"), seedUser("bob", "Bob"), seedUser("carol", "Carol")]);
  await befriend(alice, bob);
  await befriend(alice, carol);
  await befriend(bob, carol);
  const [{ context: ca, page: a }, { context: cb, page: b }, { context: cc, page: c }] = await Promise.all([
    loggedIn(browser, alice),
    loggedIn(browser, bob),
    loggedIn(browser, carol),
  ]);

  // Alice creates the group from her friends.
  await a.getByRole("button", { name: "New group" }).click();
  const dialog = a.getByRole("dialog", { name: "New group" });
  await dialog.getByLabel("Group name").fill("读书会 Book club");
  await dialog.getByRole("checkbox", { name: "Bob" }).check();
  await dialog.getByRole("checkbox", { name: "Carol" }).check();
  await dialog.getByRole("button", { name: "Create" }).click();
  await expect(chatHeader(a)).toContainText("读书会 Book club");
  await expect(messages(a).filter({ hasText: /You created the group with (Bob, Carol|Carol, Bob)$/ })).toHaveCount(1);
  await expect(chatHeader(a)).toContainText("3 members");

  for (const page of [b, c]) {
    await conversation(page, "读书会 Book club").click();
    await expect(messages(page).filter({ hasText: "Alice created the group with" })).toHaveCount(1);
  }
  await expect(messages(b).filter({ hasText: /with (you, Carol|Carol, you)$/ })).toHaveCount(1);

  // Bob writes; Carol replies to it; Alice sees the quote and jumps to it.
  await say(b, "大家好，这周读《三体》");
  await expect(messages(c).filter({ hasText: "大家好，这周读《三体》" })).toHaveCount(1);
  await (await openMenu(c, "大家好，这周读《三体》")).getByRole("menuitem", { name: "Reply" }).click();
  await expect(c.getByText("Replying to Bob")).toBeVisible();
  await say(c, "好的 👍 I'm in");
  const replied = messages(a).filter({ hasText: "I'm in" });
  await expect(replied).toHaveCount(1);
  const quote = replied.getByRole("button", { name: "Replying to Bob: 大家好，这周读《三体》" });
  await expect(quote).toBeVisible();
  await quote.click();
  await expect(messages(a).filter({ hasText: "大家好，这周读《三体》" }).first()).toBeInViewport();

  // Alice recalls her own message; everyone sees it recalled.
  await say(a, "oops, wrong chat");
  await expect(messages(b).filter({ hasText: "oops, wrong chat" })).toHaveCount(1);
  await (await openMenu(a, "oops, wrong chat")).getByRole("menuitem", { name: "Recall" }).click();
  for (const page of [a, b, c]) {
    await expect(messages(page).filter({ hasText: "oops, wrong chat" })).toHaveCount(0);
    await expect(messages(page).filter({ hasText: "This message was recalled" })).toHaveCount(1);
  }
  // Delete for me: gone for Bob only.
  await (await openMenu(b, "I'm in")).getByRole("menuitem", { name: "Delete for me" }).click();
  await expect(messages(b).filter({ hasText: "I'm in" })).toHaveCount(0);
  await expect(messages(a).filter({ hasText: "I'm in" })).toHaveCount(1);

  // Who read Alice's message: the read-by list.
  await say(a, "please read this");
  await expect(messages(c).filter({ hasText: "please read this" })).toHaveCount(1);
  await (await openMenu(a, "please read this")).getByRole("menuitem", { name: "Read by" }).click();
  await expect(a.getByRole("dialog", { name: /^Read by \(\d\/2\)$/ })).toContainText("Carol");
  await a.getByRole("dialog").getByRole("button", { name: "Close" }).click();

  // The info pane: rename, announce, roles, mutes, remove, invite.
  await a.getByRole("button", { name: "Details", exact: true }).click();
  const info = a.getByRole("complementary", { name: "Details" });
  await expect(info.getByRole("region", { name: "Members" })).toContainText("Carol");
  await info.getByRole("button", { name: "Edit", exact: true }).click();
  await a.getByRole("dialog", { name: "Group name" }).getByRole("textbox").fill("读书会 2026");
  await a.getByRole("dialog", { name: "Group name" }).getByRole("button", { name: "Save" }).click();
  await expect(messages(b).filter({ hasText: 'Alice renamed the group to "读书会 2026"' })).toHaveCount(1);
  await expect(conversation(b, "读书会 2026")).toBeVisible();

  await info.getByRole("button", { name: "Edit Announcement" }).click();
  await a.getByRole("dialog", { name: "Announcement" }).getByRole("textbox").fill("周六下午三点 · 图书馆");
  await a.getByRole("dialog", { name: "Announcement" }).getByRole("button", { name: "Save" }).click();
  await expect(messages(c).filter({ hasText: "周六下午三点 · 图书馆" })).toHaveCount(1);

  await memberAction(a, "Carol", "Make admin");
  await expect(messages(b).filter({ hasText: "Alice made Carol an admin" })).toHaveCount(1);
  await expect(info.getByRole("group", { name: "Carol" })).toContainText("Admin");
  // Carol, an admin now, may recall Bob's message but not the owner's.
  await expect(messages(c).filter({ hasText: "Alice made you an admin" })).toHaveCount(1);
  let menu = await openMenu(c, "please read this");
  await expect(menu.getByRole("menuitem", { name: "Reply" })).toBeVisible();
  await expect(menu.getByRole("menuitem", { name: "Recall" })).toHaveCount(0);
  await c.keyboard.press("Escape");
  menu = await openMenu(c, "大家好，这周读《三体》", "I'm in"); // not the reply quoting it
  await expect(menu.getByRole("menuitem", { name: "Recall" })).toBeVisible();
  await c.keyboard.press("Escape");
  await expect(menu).toHaveCount(0);

  await info.getByRole("switch", { name: "Mute everyone" }).check();
  await expect(b.getByText("Only the owner and admins can speak in this group")).toBeVisible();
  await expect(composer(c)).toBeVisible();
  await info.getByRole("switch", { name: "Mute everyone" }).uncheck();
  await expect(composer(b)).toBeVisible();

  await memberAction(a, "Bob", "Mute");
  await expect(b.getByText("You are muted in this group")).toBeVisible();
  await memberAction(a, "Bob", "Unmute");
  await expect(composer(b)).toBeVisible();
  await shot(a, "group-info-desktop-light");

  await memberAction(a, "Bob", "Remove from group");
  await expect(messages(b).filter({ hasText: "Alice removed you" })).toHaveCount(1);
  await expect(b.getByText("You are no longer a member of this group").first()).toBeVisible();

  await info.getByRole("region", { name: "Members" }).getByRole("button", { name: "Invite" }).click();
  const invite = a.getByRole("dialog", { name: "Invite friends" });
  await invite.getByRole("checkbox", { name: "Bob" }).check();
  await invite.getByRole("button", { name: "Invite" }).click();
  await expect(messages(b).filter({ hasText: "Alice invited you" })).toHaveCount(1);
  await expect(composer(b)).toBeVisible();
  await say(b, "I'm back");
  await expect(messages(a).filter({ hasText: "I'm back" })).toHaveCount(1);

  // Ownership moves to Carol; Alice leaves; Carol dismisses.
  await memberAction(a, "Carol", "Make owner");
  await confirm(a);
  await expect(messages(b).filter({ hasText: "Alice made Carol the owner" })).toHaveCount(1);
  await info.getByRole("button", { name: "Leave group" }).click();
  await confirm(a);
  await expect(messages(c).filter({ hasText: "Alice left the group" })).toHaveCount(1);
  await expect(a.getByText("You are no longer a member of this group").first()).toBeVisible();

  await c.getByRole("button", { name: "Details", exact: true }).click();
  await c.getByRole("button", { name: "Dismiss group" }).click();
  await confirm(c);
  await expect(messages(b).filter({ hasText: "Carol dismissed the group" })).toHaveCount(1);
  await expect(b.getByText("You are no longer a member of this group").first()).toBeVisible();
  await Promise.all([ca.close(), cb.close(), cc.close()]);
});
