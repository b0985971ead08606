// The session: staying logged in, refreshing tokens, logging out, going
// offline and coming back with nothing lost and nothing twice, two tabs.
import { expect, test } from "@playwright/test";
import {
  baseUrl, befriend, call, chatHeader, composer, conversation, loggedIn, messages, say, seedUser, sendText, shot, watch,
} from "./helpers";

test("offline: what was sent meanwhile arrives once, in order, and what I wrote goes out", async ({ browser }) => {
  const alice = await seedUser("alice", "Alice");
  const bob = await seedUser("bob", "Bob");
  await befriend(alice, bob);
  await sendText(bob, { toUserId: alice.userId }, "before");
  const { context, page } = await loggedIn(browser, alice);
  await conversation(page, "Bob").click();
  await expect(messages(page).filter({ hasText: "before" })).toHaveCount(1);

  // Browser offline: the client says so; Bob writes; Alice writes too.
  await context.setOffline(true);
  await expect(page.getByRole("status").filter({ hasText: "You are offline" })).toBeVisible();
  const missed = Array.from({ length: 6 }, (_, i) => `missed ${i + 1} 离线消息`);
  for (const text of missed) await sendText(bob, { toUserId: alice.userId }, text);
  await say(page, "written while offline");
  await expect(messages(page).filter({ hasText: "written while offline" }).getByRole("img", { name: "Sending" })).toBeVisible();

  await context.setOffline(false);
  await expect(page.getByRole("status").filter({ hasText: /offline|Connecting/ })).toHaveCount(0, { timeout: 20_000 });
  for (const text of missed) await expect(messages(page).filter({ hasText: text })).toHaveCount(1);
  const texts = (await messages(page).allInnerTexts()).map((t) => t.split("\n")[0]);
  const got = texts.filter((t) => t.startsWith("missed"));
  expect(got).toEqual(missed);
  // The message written offline went out once, and Bob has it once.
  await expect(messages(page).filter({ hasText: "written while offline" }).getByRole("img", { name: /Sent|Read/ })).toBeVisible();
  const history = await call("GET", `/v1/conversations/${encodeURIComponent(bobChat(alice.userId, bob.userId))}/messages?limit=50`, undefined, bob.accessToken);
  expect(history.messages.filter((m: any) => m.body?.text?.text === "written while offline")).toHaveLength(1);

  // A closed page: messages sent meanwhile show once when it opens again
  // (once the open chat was marked read on the server).
  await expect
    .poll(async () => {
      const list = await call("GET", "/v1/conversations", undefined, alice.accessToken);
      return list.conversations.find((c: any) => c.peerUserId === bob.userId)?.unreadCount ?? "0";
    })
    .toBe("0");
  await page.close();
  const later = ["after close 1", "after close 2", "after close 3"];
  for (const text of later) await sendText(bob, { toUserId: alice.userId }, text);
  const again = await context.newPage();
  watch(again);
  await again.goto(baseUrl());
  await expect(conversation(again, "Bob, 3")).toBeVisible();
  await expect(again).toHaveTitle("(3) natter");
  await conversation(again, "Bob").click();
  for (const text of [...missed, ...later]) await expect(messages(again).filter({ hasText: text })).toHaveCount(1);
  await expect(again).toHaveTitle("natter");
  await sendText(bob, { toUserId: alice.userId }, "live again");
  await expect(messages(again).filter({ hasText: "live again" })).toHaveCount(1);
  const all = (await messages(again).allInnerTexts()).map((t) => t.split("\n")[0]);
  expect(all.slice(-4)).toEqual([...later, "live again"]);
  await context.close();
});

function bobChat(a: string, b: string) {
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

test("stays logged in across reloads, refreshes its token, logs out", async ({ browser }) => {
  const carol = await seedUser("carol", "Carol");
  const dave = await seedUser("dave", "Dave");
  await befriend(carol, dave);
  const { context, page } = await loggedIn(browser, carol);
  await page.reload();
  await expect(page.getByRole("tab", { name: /^Chats/ })).toBeVisible();

  // An expired access token is refreshed before the next call.
  const before = await page.evaluate(() => JSON.parse(localStorage.getItem("natter.session")!));
  await page.evaluate(() => {
    const s = JSON.parse(localStorage.getItem("natter.session")!);
    s.expiresAtMs = String(Date.now() - 1000);
    localStorage.setItem("natter.session", JSON.stringify(s));
  });
  await page.reload();
  await page.getByRole("tab", { name: /^Contacts/ }).click();
  await expect(page.getByRole("region", { name: "Friends", exact: true })).toContainText("Dave");
  const after = await page.evaluate(() => JSON.parse(localStorage.getItem("natter.session")!));
  expect(after.refreshToken).not.toBe(before.refreshToken);
  expect(Number(after.expiresAtMs)).toBeGreaterThan(Date.now());
  expect(after.deviceId).toBe(before.deviceId);

  // Logging out ends the device's session on the server too.
  await page.getByRole("button", { name: "Settings" }).first().click();
  await page.getByRole("dialog", { name: "Settings" }).getByRole("button", { name: "Log out", exact: true }).click();
  await expect(page.getByRole("heading", { name: "Welcome back" })).toBeVisible();
  expect(await page.evaluate(() => localStorage.getItem("natter.session"))).toBeNull();
  const refused = await fetch(`${baseUrl()}/v1/auth/refresh`, { method: "POST", body: JSON.stringify({ refreshToken: after.refreshToken }) });
  expect(refused.status).toBe(401);
  await page.reload();
  await expect(page.getByRole("heading", { name: "Welcome back" })).toBeVisible();
  await context.close();
});

test("two tabs of one user stay in step; a stale cursor resyncs", async ({ browser }) => {
  const erin = await seedUser("erin", "Erin");
  const frank = await seedUser("frank", "Frank");
  await befriend(erin, frank);
  await sendText(frank, { toUserId: erin.userId }, "hello erin");
  const { context, page: one } = await loggedIn(browser, erin);
  const two = await context.newPage();
  watch(two);
  await two.goto(baseUrl());
  await conversation(one, "Frank").click();
  await conversation(two, "Frank").click();
  await say(one, "sent from tab one");
  await expect(messages(two).filter({ hasText: "sent from tab one" })).toHaveCount(1);
  await sendText(frank, { toUserId: erin.userId }, "to both tabs");
  await expect(messages(one).filter({ hasText: "to both tabs" })).toHaveCount(1);
  await expect(messages(two).filter({ hasText: "to both tabs" })).toHaveCount(1);

  // Logging out in one tab logs out the other.
  // (First: a cursor beyond the inbox's end gets resyncRequired, and the client reloads what it shows.)
  await two.evaluate(() => localStorage.setItem("natter.cursor", "999999999"));
  await two.reload();
  await conversation(two, "Frank").click();
  await expect(messages(two).filter({ hasText: "to both tabs" })).toHaveCount(1);
  await sendText(frank, { toUserId: erin.userId }, "after resync");
  await expect(messages(two).filter({ hasText: "after resync" })).toHaveCount(1);
  await expect(chatHeader(two)).toContainText("Frank");

  await one.getByRole("button", { name: "Settings" }).first().click();
  await one.getByRole("dialog", { name: "Settings" }).getByRole("button", { name: "Log out", exact: true }).click();
  await expect(two.getByRole("heading", { name: "Welcome back" })).toBeVisible();
  await expect(composer(one)).toHaveCount(0);
  await context.close();
});

test("two devices of one user stay in step: messages both ways, read state, pinned first", async ({ browser }) => {
  const gina = await seedUser("gina", "Gina");
  const hugo = await seedUser("hugo", "Hugo");
  await befriend(gina, hugo);
  const laptop = await loggedIn(browser, gina);
  const phone = await loggedIn(browser, gina, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  // A message to gina: unread on both devices.
  await sendText(hugo, { toUserId: gina.userId }, "for both of your devices");
  await expect(conversation(laptop.page, "Hugo, 1")).toBeVisible();
  await expect(conversation(phone.page, "Hugo, 1")).toBeVisible();
  // Read on the laptop: the phone's badge goes too.
  await conversation(laptop.page, "Hugo").click();
  await expect(messages(laptop.page).filter({ hasText: "for both of your devices" })).toHaveCount(1);
  await expect(conversation(phone.page, /^Hugo$/)).toBeVisible();
  // What the laptop sends shows on the phone, once, as gina's own.
  await say(laptop.page, "sent from the laptop");
  await conversation(phone.page, "Hugo").click();
  await expect(messages(phone.page).filter({ hasText: "sent from the laptop" })).toHaveCount(1);
  // And the other way.
  await say(phone.page, "sent from the phone");
  await expect(messages(laptop.page).filter({ hasText: "sent from the phone" })).toHaveCount(1);
  await expect(messages(laptop.page).filter({ hasText: "sent from the laptop" })).toHaveCount(1);
  // A newer chat goes on top; Hugo pinned on the phone goes first on the laptop.
  // The new chat makes the laptop fetch its list again; that answer is held
  // until the pin has arrived live, and must not undo it when it lands.
  let pinArrived = () => {};
  const arrived = new Promise<void>((resolve) => (pinArrived = resolve));
  let listFetched = () => {};
  const fetched = new Promise<void>((resolve) => (listFetched = resolve));
  await laptop.page.route("**/v1/conversations?limit=200", async (route) => {
    const response = await route.fetch();
    listFetched();
    await arrived;
    await route.fulfill({ response });
  }, { times: 1 });
  const ivy = await seedUser("ivy", "Ivy");
  await befriend(gina, ivy);
  await sendText(ivy, { toUserId: gina.userId }, "a newer chat");
  const chats = laptop.page.getByRole("navigation", { name: "Chats" }).getByRole("button");
  await expect(chats.first()).toContainText("Ivy");
  await fetched;
  await phone.page.getByRole("button", { name: "Chat actions" }).click();
  await phone.page.getByRole("menuitem", { name: "Pin" }).click();
  await expect(conversation(laptop.page, "Hugo").getByLabel("Pinned")).toBeVisible();
  pinArrived();
  await laptop.page.waitForResponse("**/v1/conversations?limit=200");
  await expect(chats.first()).toContainText("Hugo");
  await expect(conversation(laptop.page, "Hugo").getByLabel("Pinned")).toBeVisible();
  // A device made now starts at the end of gina's inbox: what came before
  // shows from the history, what comes next arrives live, on all three.
  const tablet = await loggedIn(browser, gina);
  await conversation(tablet.page, "Hugo").click();
  await expect(messages(tablet.page).filter({ hasText: "sent from the laptop" })).toHaveCount(1);
  await expect(messages(tablet.page).filter({ hasText: "sent from the phone" })).toHaveCount(1);
  await say(tablet.page, "sent from the tablet");
  await expect(messages(laptop.page).filter({ hasText: "sent from the tablet" })).toHaveCount(1);
  await expect(messages(phone.page).filter({ hasText: "sent from the tablet" })).toHaveCount(1);
  await sendText(hugo, { toUserId: gina.userId }, "to three devices");
  for (const device of [laptop, phone, tablet]) {
    await expect(messages(device.page).filter({ hasText: "to three devices" })).toHaveCount(1);
  }
  await tablet.context.close();
  await laptop.context.close();
  await phone.context.close();
});

test("my devices: this one marked, another logged out, then all others leave at once", async ({ browser }) => {
  const me = await seedUser("devs", "Dev");
  const laptop = await loggedIn(browser, me);
  const phone = await loggedIn(browser, me);
  await laptop.page.getByRole("button", { name: "Settings" }).first().click();
  const settings = laptop.page.getByRole("dialog", { name: "Settings" });
  const devices = settings.getByRole("list", { name: "Devices" }).getByRole("listitem");
  await expect(devices).toHaveCount(3);
  await expect(devices.filter({ hasText: "This device" })).toHaveCount(1);
  // The device the seed logged in with (named "seed"): logged out alone.
  await devices.filter({ hasText: "seed" }).getByRole("button", { name: "Log out seed" }).click();
  await expect(devices.filter({ hasText: "seed" })).toContainText("Logged out");
  await expect(phone.page.getByRole("tab", { name: /^Chats/ })).toBeVisible();
  await shot(laptop.page, "settings-devices");
  // Every other device: the phone's open page is logged out at once.
  await settings.getByRole("button", { name: "Log out all other devices" }).click();
  await expect(phone.page.getByRole("button", { name: /^(Log in|登录)$/ })).toBeVisible();
  await expect(devices.filter({ hasText: "Logged out" })).toHaveCount(2);
  await expect(devices.filter({ hasText: "This device" })).toHaveCount(1);
  await laptop.context.close();
  await phone.context.close();
});
