// A conversation of 10,000 messages: the view holds a bounded window of
// them in the DOM, scrolls back page by page in order, and jumps to a quote
// far back and to the latest again.
import { expect, test } from "@playwright/test";
import { befriend, call, conversation, loggedIn, messages, seedUser } from "./helpers";

const TOTAL = 10_000;

test("10,000 messages: a bounded window, scrolling back in order, a jump to a quote", async ({ browser }) => {
  test.setTimeout(240_000);
  const [reader, writer] = await Promise.all([seedUser("reader", "Reader"), seedUser("writer", "Writer")]);
  await befriend(reader, writer);
  // Seeded over HTTP, 32 at a time, in seq order per batch.
  const started = Date.now();
  for (let n = 1; n <= 5; n++) {
    await call("POST", "/v1/messages", { toUserId: reader.userId, clientMsgId: `h-${n}`, body: { text: { text: `payload ${n}` } } }, writer.accessToken);
  }
  let next = 6;
  const worker = async () => {
    while (next <= TOTAL - 1) {
      const n = next++;
      await call("POST", "/v1/messages", { toUserId: reader.userId, clientMsgId: `h-${n}`, body: { text: { text: `payload ${n}` } } }, writer.accessToken);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  await call("POST", "/v1/messages", { toUserId: reader.userId, clientMsgId: "h-last", body: { text: { text: "the last one" } }, replyToSeq: "3" }, writer.accessToken);
  console.log(`seeded ${TOTAL} messages in ${Date.now() - started} ms`);

  const { context, page } = await loggedIn(browser, reader);
  await conversation(page, "Writer").click();
  const last = messages(page).filter({ hasText: "the last one" });
  await expect(last).toBeInViewport();
  const log = page.getByRole("log", { name: "Messages" });
  const rendered = () => log.getByRole("listitem").count();
  expect(await rendered()).toBeLessThanOrEqual(200);

  // Scroll to the top again and again: older messages come, in order, and the DOM stays bounded.
  const renderedSeqs = () => log.locator("[data-key]").evaluateAll((els) => els.map((e) => Number((e as HTMLElement).dataset.key)));
  const seqOf = async () => (await renderedSeqs())[0];
  let top = await seqOf();
  const steps: number[] = [];
  for (let i = 0; i < 30; i++) {
    const t0 = Date.now();
    await log.evaluate((el) => (el.scrollTop = 0));
    await expect.poll(seqOf, { timeout: 15_000 }).toBeLessThan(top);
    steps.push(Date.now() - t0);
    const now = await seqOf();
    expect(now).toBeLessThan(top);
    top = now;
    expect(await rendered()).toBeLessThanOrEqual(200);
  }
  console.log(`30 scroll-backs to ${top}: ${steps.join(", ")} ms`);
  // What is rendered is contiguous and in order.
  const seqs = await renderedSeqs();
  expect(seqs.every((s, i) => i === 0 || s === seqs[i - 1] + 1), `${seqs.slice(0, 10)}`).toBe(true);

  // Jump to latest, then to the quote of the last message (seq 3), and back.
  await page.getByRole("button", { name: /Jump to latest/ }).click();
  await expect(last).toBeInViewport();
  await last.getByRole("button", { name: "Replying to Writer: payload 3" }).click();
  await expect(log.locator('[data-key="3"]')).toBeInViewport();
  expect(await rendered()).toBeLessThanOrEqual(200);
  await expect(page.getByText("This is the beginning of the conversation")).toBeVisible();
  await page.getByRole("button", { name: /Jump to latest/ }).click();
  await expect(last).toBeInViewport();
  expect(await rendered()).toBeLessThanOrEqual(200);
  await context.close();
});
