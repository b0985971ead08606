// A conversation of 10,000 messages: the view holds a bounded window of
// them in the DOM, scrolls back page by page in order, and jumps to a quote
// far back and to the latest again. And a scroll to the top reads older
// messages even when the view changes before its scroll event comes, or
// while another page is loading.
import { expect, test } from "@playwright/test";
import { baseUrl, befriend, call, conversation, loggedIn, logIn, messages, seedUser, watch, type User } from "./helpers";

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

/** `count` messages from `writer` to `reader`, "payload 1" to "payload <count>"; the last may quote one. */
async function seed(writer: User, reader: User, count: number, replyToSeq?: string) {
  for (let n = 1; n <= count; n++) {
    const quote = n === count && replyToSeq ? { replyToSeq } : {};
    await call("POST", "/v1/messages", { toUserId: reader.userId, clientMsgId: `s-${n}`, body: { text: { text: `payload ${n}` } }, ...quote }, writer.accessToken);
  }
}

test("a scroll to the top in the frame a message comes reads older messages", async ({ browser }) => {
  const [reader, writer] = await Promise.all([seedUser("reader", "Reader"), seedUser("writer", "Writer")]);
  await befriend(reader, writer);
  await seed(writer, reader, 120);
  // The page scrolls to the top just before it takes in the next message
  // (the list re-renders for it before the scroll's event comes).
  const context = await browser.newContext();
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols);
        this.addEventListener("message", (ev) => {
          const w = window as unknown as { scrollOnMessage?: boolean };
          if (w.scrollOnMessage && JSON.parse(String(ev.data)).push?.entry?.message) {
            w.scrollOnMessage = false;
            document.querySelector<HTMLElement>('[role="log"]')!.scrollTop = 0;
          }
        });
      }
    };
  });
  const page = await context.newPage();
  watch(page);
  await page.goto(baseUrl());
  await logIn(page, reader.username);
  await conversation(page, "Writer").click();
  await expect(messages(page).filter({ hasText: "payload 120" })).toBeInViewport();
  const log = page.getByRole("log", { name: "Messages" });
  const first = () => log.locator("[data-key]").first().getAttribute("data-key").then(Number);
  const top = await first();
  await page.evaluate(() => ((window as unknown as { scrollOnMessage?: boolean }).scrollOnMessage = true));
  await call("POST", "/v1/messages", { toUserId: reader.userId, clientMsgId: "s-new", body: { text: { text: "a new one" } } }, writer.accessToken);
  await expect(messages(page).filter({ hasText: "a new one" })).toHaveCount(1);
  await expect.poll(first).toBeLessThan(top);
  await context.close();
});

test("a scroll to the top while newer messages load reads older ones once they came", async ({ browser }) => {
  const [reader, writer] = await Promise.all([seedUser("reader", "Reader"), seedUser("writer", "Writer")]);
  await befriend(reader, writer);
  await seed(writer, reader, 400, "200");
  const { context, page } = await loggedIn(browser, reader);
  await conversation(page, "Writer").click();
  const last = messages(page).filter({ hasText: "payload 400" });
  await expect(last).toBeInViewport();
  // A jump to the quote: a window of 151-250, in the past.
  await last.getByRole("button", { name: "Replying to Writer: payload 200" }).click();
  const log = page.getByRole("log", { name: "Messages" });
  await expect(log.locator('[data-key="200"]')).toBeInViewport();
  const first = () => log.locator("[data-key]").first().getAttribute("data-key").then(Number);
  // Newer pages are answered only when let through.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  await page.route(/[?&]after_seq=/, async (route) => {
    await held;
    await route.continue();
  });
  // To the bottom (newer messages load), then to the top of what is loaded while they do.
  await expect.poll(async () => {
    await log.evaluate((el) => (el.scrollTop = el.scrollHeight));
    return log.getAttribute("aria-busy");
  }).toBe("true");
  const toTop = () =>
    log.evaluate(async (el) => {
      el.scrollTop = 0;
      // Its scroll event comes with the next frame.
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      return `${el.querySelector<HTMLElement>("[data-key]")!.dataset.key} at ${el.scrollTop}`;
    });
  await expect.poll(toTop).toBe("151 at 0");
  await expect(log).toHaveAttribute("aria-busy", "true");
  // The newer page comes; the view is still at the top, and older messages follow.
  release();
  await expect.poll(first).toBeLessThan(151);
  await context.close();
});
