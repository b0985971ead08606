// natter crashes and comes back: the client shows that it is reconnecting,
// reconnects with backoff on its own, and resumes from its cursor with
// nothing lost and nothing twice; a send made while it was down goes out
// once. This file runs its own natter (it kills it).
import { expect, test } from "@playwright/test";
import { composer, conversation, messages, PASSWORD, ownSystem } from "./helpers";

const system = ownSystem();
const call = system.call;

test("natter killed and restarted: the client reconnects and resumes, nothing lost or twice", async ({ browser }) => {
  const users: Record<string, { userId: string; token: string }> = {};
  for (const name of ["ana", "ben"]) {
    await call("POST", "/v1/auth/register", { username: name, password: PASSWORD, nickname: name === "ana" ? "Ana" : "Ben" });
    const s = await call("POST", "/v1/auth/login", { username: name, password: PASSWORD });
    users[name] = { userId: s.userId, token: s.accessToken };
  }
  const { ana, ben } = users;
  const r = await call("POST", "/v1/friends/requests", { toUserId: ben.userId }, ana.token);
  await call("POST", `/v1/friends/requests/${r.request.id}/accept`, {}, ben.token);
  const send = (text: string, n: string) =>
    call("POST", "/v1/messages", { toUserId: ana.userId, clientMsgId: `r-${n}`, body: { text: { text } } }, ben.token);
  await send("before the crash", "0");

  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(system.url());
  await page.getByLabel("Username").fill("ana");
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await conversation(page, "Ben").click();
  await expect(messages(page).filter({ hasText: "before the crash" })).toHaveCount(1);

  const restarted = system.restart(1500);
  await expect(page.getByRole("status").filter({ hasText: "Connecting…" })).toBeVisible();
  await composer(page).fill("written while natter was down");
  await composer(page).press("Enter");
  await restarted;
  const after = ["after 1", "after 2", "after 3"];
  for (const [i, text] of after.entries()) await send(text, `a${i}`);
  await expect(page.getByRole("status").filter({ hasText: "Connecting…" })).toHaveCount(0, { timeout: 45_000 });
  for (const text of [...after, "written while natter was down"]) {
    await expect(messages(page).filter({ hasText: text })).toHaveCount(1);
  }
  await expect(messages(page).filter({ hasText: "written while natter was down" }).getByRole("img", { name: /Sent|Read/ })).toBeVisible();
  const seqs = await page.getByRole("log", { name: "Messages" }).locator("[data-key]").evaluateAll((els) => els.map((e) => Number((e as HTMLElement).dataset.key)));
  expect(seqs).toEqual([1, 2, 3, 4, 5]);
  const conv = ana.userId < ben.userId ? `d:${ana.userId}:${ben.userId}` : `d:${ben.userId}:${ana.userId}`;
  const history = await call("GET", `/v1/conversations/${encodeURIComponent(conv)}/messages`, undefined, ben.token);
  expect(history.messages.filter((m: any) => m.body?.text?.text === "written while natter was down")).toHaveLength(1);
  await context.close();
});
