// How the edge serves the client, and what the client does with hostile or
// failing input: headers, CSP, text never rendered as HTML, a failed send
// retried with the same client message id, pin and mute.
import { expect, test } from "@playwright/test";
import { baseUrl, befriend, call, chatHeader, conversation, loggedIn, messages, say, seedUser, sendText } from "./helpers";

test("the edge serves the page with a strict CSP and cacheable hashed assets", async ({ browser }) => {
  const page = await fetch(baseUrl() + "/");
  expect(page.status).toBe(200);
  expect(page.headers.get("content-type")).toContain("text/html");
  expect(page.headers.get("cache-control")).toBe("no-cache");
  const csp = page.headers.get("content-security-policy") ?? "";
  expect(csp).toContain("script-src 'self'");
  expect(csp).not.toContain("unsafe-inline");
  const html = await page.text();
  const assets = [...html.matchAll(/\/assets\/[\w.-]+/g)].map((m) => m[0]);
  expect(assets.length).toBeGreaterThanOrEqual(2);
  for (const path of assets) {
    const r = await fetch(baseUrl() + path);
    expect(r.status, path).toBe(200);
    expect(r.headers.get("cache-control")).toContain("immutable");
    expect(r.headers.get("x-content-type-options")).toBe("nosniff");
  }
  expect((await fetch(baseUrl() + "/assets/nope.js")).status).toBe(404);
  expect((await fetch(baseUrl() + "/assets/..%2Findex.html")).status).toBe(404);
  // The API is unchanged under /v1/.
  const api = await fetch(baseUrl() + "/v1/nothing");
  expect(api.status).toBe(404);
  expect(await api.json()).toEqual({ error: { code: "not_found", message: "no such endpoint" } });

  // A whole session under that policy: no violation reported.
  const [me, other] = await Promise.all([seedUser("csp", "CSP"), seedUser("other", "Other")]);
  await befriend(me, other);
  const { context, page: tab } = await loggedIn(browser, me);
  await tab.evaluate(() => {
    (window as any).violations = [];
    document.addEventListener("securitypolicyviolation", (e) => (window as any).violations.push(e.violatedDirective));
  });
  await sendText(other, { toUserId: me.userId }, "hi");
  await conversation(tab, "Other").click();
  await say(tab, "reply");
  await expect(messages(tab).filter({ hasText: "reply" }).getByRole("img", { name: /Sent|Read/ })).toBeVisible();
  expect(await tab.evaluate(() => (window as any).violations)).toEqual([]);
  await context.close();
});

test("message text is text: markup and scripts are shown, never run", async ({ browser }) => {
  const [me, mallory] = await Promise.all([seedUser("safe", "Safe"), seedUser("mallory", "<b>Mallory</b>")]);
  await befriend(me, mallory);
  const evil = `<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script> javascript:alert(1) [x](javascript:alert(1))`;
  await sendText(mallory, { toUserId: me.userId }, evil);
  const { context, page } = await loggedIn(browser, me);
  await conversation(page, "<b>Mallory</b>").click();
  const row = messages(page).filter({ hasText: "onerror" });
  await expect(row).toContainText(`<img src=x onerror="window.pwned=1">`);
  await expect(row.locator("img, script, b")).toHaveCount(0);
  await expect(row.getByRole("link")).toHaveCount(0);
  await expect(chatHeader(page)).toContainText("<b>Mallory</b>");
  expect(await page.evaluate(() => (window as any).pwned)).toBeUndefined();
  await context.close();
});

test("a refused send shows failed; retry reuses its clientMsgId; pin and mute", async ({ browser }) => {
  const [me, peer] = await Promise.all([seedUser("retry", "Retry"), seedUser("peer", "Peer")]);
  await befriend(me, peer);
  await sendText(peer, { toUserId: me.userId }, "hello");
  const { context, page } = await loggedIn(browser, me);
  const sent: string[] = [];
  page.on("websocket", (ws) => ws.on("framesent", (f) => {
    const frame = JSON.parse(String(f.payload));
    if (frame.send) sent.push(frame.send.clientMsgId);
  }));
  await page.reload();
  await conversation(page, "Peer").click();
  await expect(messages(page).filter({ hasText: "hello" })).toHaveCount(1);

  // The peer blocks me: my send is refused, shown as failed with the reason.
  await call("PUT", `/v1/blocks/${me.userId}`, undefined, peer.accessToken);
  await say(page, "are you there?");
  const row = messages(page).filter({ hasText: "are you there?" });
  await expect(row.getByRole("img", { name: "Failed to send" })).toBeVisible();
  await expect(row).toContainText("only message your friends");
  // Unblocked: retry sends the same clientMsgId, and the message is stored once.
  await call("DELETE", `/v1/blocks/${me.userId}`, undefined, peer.accessToken);
  await row.getByRole("button", { name: "Retry" }).click();
  await expect(messages(page).filter({ hasText: "are you there?" }).getByRole("img", { name: /Sent|Read/ })).toBeVisible();
  await expect(messages(page).filter({ hasText: "are you there?" })).toHaveCount(1);
  expect(sent.length).toBe(2);
  expect(sent[0]).toBe(sent[1]);
  const history = await call("GET", `/v1/conversations/${encodeURIComponent(dm(me.userId, peer.userId))}/messages`, undefined, peer.accessToken);
  expect(history.messages.filter((m: any) => m.clientMsgId === sent[0])).toHaveLength(1);

  // Pin and mute from the chat's menu; the list shows both.
  await page.getByRole("button", { name: "Chat actions" }).click();
  await page.getByRole("menuitem", { name: "Pin" }).click();
  await expect(conversation(page, "Peer").getByLabel("Pinned")).toBeVisible();
  await page.getByRole("button", { name: "Chat actions" }).click();
  await page.getByRole("menuitem", { name: "Mute notifications" }).click();
  await expect(conversation(page, "Peer").getByLabel("Muted")).toBeVisible();
  const list = await call("GET", "/v1/conversations", undefined, me.accessToken);
  const c = list.conversations.find((x: any) => x.peerUserId === peer.userId);
  expect([c.pinned, c.muted]).toEqual([true, true]);
  await context.close();
});

function dm(a: string, b: string) {
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}
