// Large groups (read fan-out: `groupMessage` frames, `groupHeads` after a
// resume) look the same to a person. This file runs its own natter with
// large groups from 3 members on.
import { expect, test } from "@playwright/test";
import { conversation, messages, say, PASSWORD, ownSystem } from "./helpers";

const system = ownSystem({ NATTER_MESSAGES__LARGE_GROUP_MEMBERS: "3" });
const call = system.call;

async function user(name: string) {
  await call("POST", "/v1/auth/register", { username: name, password: PASSWORD, nickname: name });
  const s = await call("POST", "/v1/auth/login", { username: name, password: PASSWORD });
  return { name, userId: s.userId as string, token: s.accessToken as string };
}

test("a large group: live messages, a member offline catches up from the history", async ({ browser }) => {
  const [owner, m1, m2] = await Promise.all([user("owner"), user("member1"), user("member2")]);
  for (const m of [m1, m2]) {
    const r = await call("POST", "/v1/friends/requests", { toUserId: m.userId }, owner.token);
    await call("POST", `/v1/friends/requests/${r.request.id}/accept`, {}, m.token);
  }
  const group = await call("POST", "/v1/groups", { name: "Big 大群", memberIds: [m1.userId, m2.userId] }, owner.token);

  const frames = new Map<string, Set<string>>();
  const open = async (u: { name: string }) => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const kinds = new Set<string>();
    page.on("websocket", (ws) => ws.on("framereceived", (f) => {
      try {
        for (const k of Object.keys(JSON.parse(String(f.payload)))) kinds.add(k);
      } catch {
        /* binary */
      }
    }));
    frames.set(u.name, kinds);
    await page.goto(system.url());
    await page.getByLabel("Username").fill(u.name);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Log in", exact: true }).click();
    await conversation(page, "Big 大群").click();
    return { context, page };
  };
  const a = await open(owner);
  const b = await open(m1);
  await say(a.page, "hello large group 大家好");
  await expect(messages(b.page).filter({ hasText: "hello large group 大家好" })).toHaveCount(1);
  await say(b.page, "got it");
  await expect(messages(a.page).filter({ hasText: "got it" })).toHaveCount(1);

  // Member 1 goes offline; the group talks on; back online, it reads what it missed.
  await b.context.setOffline(true);
  await expect(b.page.getByRole("status").filter({ hasText: "You are offline" })).toBeVisible();
  const missed = ["large 1", "large 2", "large 3", "large 4"];
  for (const text of missed) {
    await call("POST", "/v1/messages", { conversationId: group.conversationId, clientMsgId: `l-${text.replace(" ", "-")}`, body: { text: { text } } }, m2.token);
  }
  await b.context.setOffline(false);
  for (const text of missed) await expect(messages(b.page).filter({ hasText: text })).toHaveCount(1);
  const seqs = await b.page.getByRole("log", { name: "Messages" }).locator("[data-key]").evaluateAll((els) => els.map((e) => Number((e as HTMLElement).dataset.key)));
  expect(seqs.every((s, i) => i === 0 || s > seqs[i - 1])).toBe(true);
  expect(new Set(seqs).size).toBe(seqs.length);
  await say(a.page, "after the gap");
  await expect(messages(b.page).filter({ hasText: "after the gap" })).toHaveCount(1);
  // It came the large-group way: groupMessage frames and groupHeads after the resume.
  expect([...frames.get("member1")!]).toEqual(expect.arrayContaining(["groupMessage", "groupHeads"]));
  await a.context.close();
  await b.context.close();
});
