// Files in the browser: an image picked, pasted and dropped (a thumbnail in
// the bubble, the viewer), a file card downloaded with its name, an upload
// cancelled, and a voice message recorded from a fake microphone and played
// on the other side.
import { expect, test, type Page } from "@playwright/test";
import { writeFileSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { befriend, composer, conversation, loggedIn, messages, seedUser, shot } from "./helpers";
import { chromiumPath } from "./system";

/** A WAV of `secs` seconds of a tone: what the fake microphone hears. */
function toneWav(secs: number): string {
  const rate = 16_000;
  const samples = rate * secs;
  const wav = Buffer.alloc(44 + samples * 2);
  wav.write("RIFF", 0);
  wav.writeUInt32LE(36 + samples * 2, 4);
  wav.write("WAVEfmt ", 8);
  wav.writeUInt32LE(16, 16);
  wav.writeUInt16LE(1, 20);
  wav.writeUInt16LE(1, 22);
  wav.writeUInt32LE(rate, 24);
  wav.writeUInt32LE(rate * 2, 28);
  wav.writeUInt16LE(2, 32);
  wav.writeUInt16LE(16, 34);
  wav.write("data", 36);
  wav.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) wav.writeInt16LE(Math.round(Math.sin((i * 2 * Math.PI * 440) / rate) * 8000), 44 + i * 2);
  const path = join(mkdtempSync(join(tmpdir(), "natter-mic-")), "tone.wav");
  writeFileSync(path, wav);
  return path;
}

test.use({
  launchOptions: {
    executablePath: chromiumPath(),
    args: ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", `--use-file-for-fake-audio-capture=${toneWav(10)}`],
  },
});

/** A real picture drawn by the page: `type` bytes of a `w` by `h` canvas. */
async function picture(page: Page, w: number, h: number, type: "image/png" | "image/jpeg"): Promise<Buffer> {
  const b64 = await page.evaluate(
    ([w, h, type]) => {
      const canvas = document.createElement("canvas");
      canvas.width = w as number;
      canvas.height = h as number;
      const g = canvas.getContext("2d")!;
      const grad = g.createLinearGradient(0, 0, w as number, h as number);
      grad.addColorStop(0, "#4fc3f7");
      grad.addColorStop(1, "#ba68c8");
      g.fillStyle = grad;
      g.fillRect(0, 0, w as number, h as number);
      g.fillStyle = "#fff";
      g.font = "bold 64px sans-serif";
      g.fillText("natter 你好", 40, (h as number) / 2);
      return canvas.toDataURL(type as string, 0.9).split(",")[1];
    },
    [w, h, type],
  );
  return Buffer.from(b64, "base64");
}

/** Hands files to the page as a paste into the composer, or a drop on the chat. */
async function handOver(page: Page, how: "paste" | "drop", files: { name: string; type: string; bytes: Buffer }[]) {
  await page.evaluate(
    ([how, files]) => {
      const dt = new DataTransfer();
      for (const f of files as { name: string; type: string; b64: string }[]) {
        const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
        dt.items.add(new File([bytes], f.name, { type: f.type }));
      }
      if (how === "paste") {
        const area = document.querySelector("textarea")!;
        area.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
      } else {
        const main = document.querySelector("section.main")!;
        for (const type of ["dragenter", "dragover", "drop"]) {
          main.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
        }
      }
    },
    [how, files.map((f) => ({ name: f.name, type: f.type, b64: f.bytes.toString("base64") }))] as const,
  );
}

/** Whether the image inside `locator` has loaded (a decoded picture). */
async function loaded(page: Page, selector: string): Promise<boolean> {
  return page.locator(selector).last().evaluate((img) => (img as HTMLImageElement).complete && (img as HTMLImageElement).naturalWidth > 0);
}

test("images, files and voice messages go from one browser to another", async ({ browser }) => {
  const [alice, bob] = await Promise.all([seedUser("alice", "Alice 爱丽丝"), seedUser("bob", "Bob 小波")]);
  await befriend(alice, bob);
  const a = await loggedIn(browser, alice);
  const b = await loggedIn(browser, bob);
  await a.context.grantPermissions(["microphone"]);
  await a.page.getByRole("tab", { name: /^Contacts/ }).click();
  await a.page.getByRole("region", { name: "Friends", exact: true }).getByRole("button", { name: /Bob 小波/ }).click();
  await a.page.getByRole("button", { name: "Message", exact: true }).click();
  await expect(composer(a.page)).toBeVisible();

  // An image picked with the attach button: a thumbnail on both sides.
  const photo = await picture(a.page, 1600, 1000, "image/jpeg");
  await a.page.locator('input[type="file"]').setInputFiles({ name: "海边.jpg", mimeType: "image/jpeg", buffer: photo });
  const mine = a.page.getByRole("button", { name: "Open image" });
  await expect(mine).toHaveCount(1);
  await b.page.getByRole("tab", { name: /^Chats/ }).click();
  await conversation(b.page, "Alice 爱丽丝").click();
  const theirs = b.page.getByRole("button", { name: "Open image" });
  await expect(theirs).toHaveCount(1);
  await expect.poll(() => loaded(b.page, ".image-msg img")).toBe(true);
  // The bubble keeps the picture's shape (1600 by 1000, at most 260 wide).
  const box = await theirs.boundingBox();
  expect(Math.round(box!.width)).toBe(260);
  expect(Math.round(box!.height)).toBe(163);
  await expect(conversation(b.page, "Alice 爱丽丝")).toContainText("[Image]");

  // The viewer shows the large thumbnail, and the original downloads.
  await theirs.click();
  const viewer = b.page.getByRole("dialog", { name: "Image" });
  await expect(viewer.getByRole("img")).toBeVisible();
  await expect.poll(() => loaded(b.page, ".viewer img")).toBe(true);
  const width = await viewer.getByRole("img").evaluate((img) => (img as HTMLImageElement).naturalWidth);
  expect(width).toBe(1280);
  await shot(b.page, "image-viewer-desktop-light");
  const [saved] = await Promise.all([b.page.waitForEvent("download"), viewer.getByRole("button", { name: "Download" }).click()]);
  expect(readFileSync((await saved.path())!).equals(photo)).toBe(true);
  await viewer.getByRole("button", { name: "Close" }).click();

  // Pasted and dropped images, and a file card with its Chinese name.
  await handOver(a.page, "paste", [{ name: "paste.png", type: "image/png", bytes: await picture(a.page, 300, 300, "image/png") }]);
  await handOver(a.page, "drop", [
    { name: "drop.png", type: "image/png", bytes: await picture(a.page, 200, 400, "image/png") },
    { name: "会议纪要.txt", type: "text/plain", bytes: Buffer.from("第一项：发布 natter\n".repeat(100)) },
  ]);
  await expect(theirs).toHaveCount(3);
  const card = messages(b.page).filter({ hasText: "会议纪要.txt" });
  await expect(card).toContainText("3 KB");
  const [file] = await Promise.all([b.page.waitForEvent("download"), card.getByRole("button", { name: "Download 会议纪要.txt" }).click()]);
  expect(file.suggestedFilename()).toBe("会议纪要.txt");
  expect(readFileSync((await file.path())!, "utf8")).toBe("第一项：发布 natter\n".repeat(100));

  // An upload held back by a slow network shows its progress and is cancelled: nothing is sent.
  await a.page.route("**/v1/files/uploads/*", async (route) => {
    if (route.request().method() === "PATCH") await new Promise((r) => setTimeout(r, 3000));
    await route.continue().catch(() => {});
  });
  await a.page.locator('input[type="file"]').setInputFiles({ name: "slow.bin", mimeType: "application/octet-stream", buffer: Buffer.alloc(300_000, 7) });
  const progress = a.page.getByRole("progressbar", { name: "Uploading slow.bin" });
  await expect(progress).toBeVisible();
  await shot(a.page, "upload-progress-desktop-light");
  await a.page.getByRole("button", { name: "Cancel upload" }).click();
  await expect(progress).toHaveCount(0);
  await a.page.unroute("**/v1/files/uploads/*");

  // A voice message from the (fake) microphone: recorded, sent, played.
  await a.page.getByRole("button", { name: "Record a voice message" }).click();
  await expect(a.page.getByRole("group", { name: "Recording" })).toBeVisible();
  await a.page.waitForTimeout(2200);
  await a.page.getByRole("button", { name: "Send voice message" }).click();
  const voice = messages(b.page).filter({ has: b.page.getByLabel("Voice message") });
  await expect(voice).toHaveCount(1);
  await expect(voice).toContainText(/0:0[2-3]/);
  // It plays: the browser reads the recording's metadata.
  const audio = voice.locator("audio");
  await expect
    .poll(() => audio.evaluate((el) => { const a = el as HTMLAudioElement; return `${a.readyState} ${a.error?.code ?? ""} ${a.error?.message ?? ""}`; }))
    .toMatch(/^[1-4] /);
  const playable = await audio.evaluate((el) => (el as HTMLAudioElement).duration);
  expect(playable).toBeGreaterThan(0);
  await expect(messages(b.page).filter({ hasText: "slow.bin" })).toHaveCount(0);
  await shot(b.page, "media-chat-desktop-light");

  await a.context.close();
  await b.context.close();
});

test("an avatar is uploaded in the settings and shown to friends at once", async ({ browser }) => {
  const [alice, bob] = await Promise.all([seedUser("alice", "Alice 爱丽丝"), seedUser("bob", "Bob 小波")]);
  await befriend(alice, bob);
  // Bob has Alice's card open among his friends: her initials, no picture.
  const b = await loggedIn(browser, bob);
  await b.page.getByRole("tab", { name: /^Contacts/ }).click();
  const card = b.page.getByRole("region", { name: "Friends", exact: true }).getByRole("button", { name: /Alice 爱丽丝/ });
  await expect(card).toBeVisible();
  await expect(card.locator(".avatar img")).toHaveCount(0);

  const a = await loggedIn(browser, alice);
  await a.page.getByRole("button", { name: "Settings" }).first().click();
  const settings = a.page.getByRole("dialog", { name: "Settings" });
  const face = await picture(a.page, 400, 400, "image/png");
  await settings.locator('input[type="file"]').setInputFiles({ name: "me.png", mimeType: "image/png", buffer: face });
  await expect.poll(() => loaded(a.page, ".dialog .profile-top .avatar img")).toBe(true);
  await expect(settings.getByRole("button", { name: "Remove avatar" })).toBeVisible();
  await shot(a.page, "avatar-settings-desktop-light");
  // Not an image: refused with the server's reason, the avatar stays.
  await settings.locator('input[type="file"]').setInputFiles({ name: "notes.png", mimeType: "image/png", buffer: Buffer.from("not a picture at all") });
  await expect(a.page.getByText(/not a image|not an image|cannot be read|bytes are/i)).toBeVisible();
  await expect.poll(() => loaded(a.page, ".dialog .profile-top .avatar img")).toBe(true);
  await settings.getByRole("button", { name: "Close" }).click();

  // Bob sees it on Alice's card without a reload (the profile change comes
  // through his inbox).
  await expect(card.locator(".avatar img")).toHaveCount(1);
  await expect.poll(() => card.locator(".avatar img").evaluate((img) => (img as HTMLImageElement).naturalWidth)).toBeGreaterThan(0);
  await a.context.close();
  await b.context.close();
});

/** A short WebM video recorded from an animated canvas in the page. */
async function clip(page: Page): Promise<Buffer> {
  const b64 = await page.evaluate(async () => {
    const canvas = document.createElement("canvas");
    canvas.width = 320;
    canvas.height = 240;
    const g = canvas.getContext("2d")!;
    const rec = new MediaRecorder(canvas.captureStream(25), { mimeType: "video/webm" });
    const chunks: Blob[] = [];
    rec.ondataavailable = (e) => chunks.push(e.data);
    const stopped = new Promise((ok) => (rec.onstop = ok));
    rec.start(100);
    const started = performance.now();
    while (performance.now() - started < 1500) {
      const t = (performance.now() - started) / 1500;
      g.fillStyle = `hsl(${Math.round(t * 300)}, 70%, 55%)`;
      g.fillRect(0, 0, 320, 240);
      g.fillStyle = "#fff";
      g.font = "bold 40px sans-serif";
      g.fillText("natter 视频", 40 + t * 60, 130);
      await new Promise((r) => setTimeout(r, 40));
    }
    rec.stop();
    await stopped;
    const bytes = new Uint8Array(await new Blob(chunks, { type: "video/webm" }).arrayBuffer());
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text);
  });
  return Buffer.from(b64, "base64");
}

test("a video goes with a poster the browser draws, and plays in the viewer", async ({ browser }) => {
  const [alice, bob] = await Promise.all([seedUser("alice", "Alice 爱丽丝"), seedUser("bob", "Bob 小波")]);
  await befriend(alice, bob);
  const a = await loggedIn(browser, alice);
  const b = await loggedIn(browser, bob);
  await a.page.getByRole("tab", { name: /^Contacts/ }).click();
  await a.page.getByRole("region", { name: "Friends", exact: true }).getByRole("button", { name: /Bob 小波/ }).click();
  await a.page.getByRole("button", { name: "Message", exact: true }).click();
  const video = await clip(a.page);
  await a.page.locator('input[type="file"]').setInputFiles({ name: "clip.webm", mimeType: "video/webm", buffer: video });

  await conversation(b.page, "Alice 爱丽丝").click();
  const play = b.page.getByRole("button", { name: "Play video" });
  await expect(play).toHaveCount(1);
  // The poster, and the shape of the video (320 by 240: 260 by 195).
  await expect.poll(() => loaded(b.page, ".image-msg.video img")).toBe(true);
  const box = await play.boundingBox();
  expect([Math.round(box!.width), Math.round(box!.height)]).toEqual([260, 195]);
  await expect(play).toContainText(/0:0[1-2]/);
  await play.click();
  const viewer = b.page.getByRole("dialog", { name: "Video" });
  const player = viewer.locator("video");
  await expect(player).toHaveCount(1);
  await expect.poll(() => player.evaluate((v) => (v as HTMLVideoElement).readyState)).toBeGreaterThan(0);
  await shot(b.page, "video-viewer-desktop-light");
  await a.context.close();
  await b.context.close();
});
