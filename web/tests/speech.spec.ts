// A voice message's transcript appears under it, live: a natter with a real
// speech engine (pocketsphinx behind the OpenAI-compatible endpoint,
// e2e/engines/speech.py) hears what flite said: uploaded as WAV, or recorded
// in the browser from a fake microphone playing it (WebM/Opus, which the
// engine reads through ffmpeg). The engine starts after natter, on a port
// chosen up front: the speech service waits for it.
import { expect, test } from "@playwright/test";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { conversation, logIn, messages, ownSystem, PASSWORD, watch } from "./helpers";
import { chromiumPath } from "./system";

const ENGINE_PORT = 20_000 + Math.floor(Math.random() * 20_000);
const system = ownSystem({ NATTER_SPEECH__ENGINE_URL: `http://127.0.0.1:${ENGINE_PORT}` });
const call = system.call;

let engine: ChildProcess | undefined;
test.afterAll(() => engine?.kill());

/** Starts the test engine on ENGINE_PORT (once); resolves once it listens. */
function startEngine(): Promise<void> {
  if (engine) return Promise.resolve();
  const script = resolve(import.meta.dirname, "../../e2e/engines/speech.py");
  engine = spawn("python3", [script, "--port", String(ENGINE_PORT)], { stdio: ["ignore", "pipe", "ignore"] });
  return new Promise((ok, fail) => {
    engine!.stdout!.once("data", (line: Buffer) =>
      line.toString().startsWith("listening on") ? ok() : fail(new Error(`speech engine: ${line} (pip install pocketsphinx)`)),
    );
    engine!.once("exit", (code) => fail(new Error(`the speech engine exited with ${code} (pip install pocketsphinx)`)));
  });
}

/** `text` spoken by flite, as WAV bytes. */
function spoken(text: string): Buffer {
  const wav = join(mkdtempSync(join(tmpdir(), "natter-voice-")), "voice.wav");
  const run = spawnSync("flite", ["-voice", "slt", "-t", text, "-o", wav]);
  if (run.status !== 0) throw new Error("flite failed: apt-get install flite");
  return readFileSync(wav);
}

/** What the fake microphone hears, over and over: flite saying `text`, then
 * a pause, so that a recording of a few seconds holds the whole sentence. */
function microphone(text: string): string {
  const said = join(mkdtempSync(join(tmpdir(), "natter-mic-")), "said.wav");
  writeFileSync(said, spoken(text));
  const padded = said.replace("said.wav", "mic.wav");
  const run = spawnSync("sox", [said, padded, "pad", "0.3", "1.5"]);
  if (run.status !== 0) throw new Error("sox failed: apt-get install sox");
  return padded;
}

test.use({
  launchOptions: {
    executablePath: chromiumPath(),
    args: [
      "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream",
      `--use-file-for-fake-audio-capture=${microphone("hello world this is a test")}`,
    ],
  },
});

/** Registers `a` and `b` (nicknamed with a capital) and makes them friends. */
async function friends(a: string, b: string): Promise<{ userId: string; token: string }[]> {
  const users = [];
  for (const name of [a, b]) {
    const nickname = name[0].toUpperCase() + name.slice(1);
    await call("POST", "/v1/auth/register", { username: name, password: PASSWORD, nickname });
    const s = await call("POST", "/v1/auth/login", { username: name, password: PASSWORD });
    users.push({ userId: s.userId, token: s.accessToken });
  }
  const r = await call("POST", "/v1/friends/requests", { toUserId: users[1].userId }, users[0].token);
  await call("POST", `/v1/friends/requests/${r.request.id}/accept`, {}, users[1].token);
  return users;
}

/** Uploads `bytes` with tus as `token`'s file of `kind`; its id. */
async function upload(token: string, name: string, kind: string, bytes: Buffer): Promise<string> {
  const meta = `filename ${Buffer.from(name).toString("base64")},kind ${Buffer.from(kind).toString("base64")}`;
  const auth = { authorization: `Bearer ${token}`, "tus-resumable": "1.0.0" };
  const created = await fetch(`${system.url()}/v1/files/uploads`, {
    method: "POST",
    headers: { ...auth, "upload-length": String(bytes.length), "upload-metadata": meta },
  });
  expect(created.status).toBe(201);
  const location = created.headers.get("location")!;
  const written = await fetch(`${system.url()}${location}`, {
    method: "PATCH",
    headers: { ...auth, "upload-offset": "0", "content-type": "application/offset+octet-stream" },
    body: bytes,
  });
  expect(written.status).toBe(204);
  return location.split("/").pop()!;
}

test("a voice message's transcript shows up under it, live", async ({ browser }) => {
  const [vera, walt] = await friends("vera", "walt");

  const context = await browser.newContext();
  const page = await context.newPage();
  watch(page);
  await page.goto(system.url());
  await logIn(page, "walt");

  const fileId = await upload(vera.token, "hello.wav", "voice", spoken("hello world this is a test"));
  await call("POST", "/v1/messages", { toUserId: walt.userId, clientMsgId: "v-1", body: { voice: { fileId } } }, vera.token);
  await conversation(page, "Vera").click();
  const voice = messages(page).filter({ has: page.getByLabel("Voice message") });
  await expect(voice).toHaveCount(1);
  // Its length, read by the server from the recording.
  await expect(voice).toContainText(/0:0[2-3]/);
  await expect(page.getByLabel("Transcript")).toHaveCount(0);
  // Asked for while the engine is down: the server says to try later.
  await voice.hover();
  await voice.getByRole("button", { name: "Message actions" }).click();
  await page.getByRole("menu", { name: "Message actions" }).getByRole("menuitem", { name: "Convert to text" }).click();
  await expect(page.getByText("Speech to text is unavailable right now: try again later")).toBeVisible();

  // The engine comes up: the transcript arrives without a reload.
  await startEngine();
  await expect(voice.getByLabel("Transcript")).toContainText(/hello world/, { timeout: 60_000 });
  await context.close();
});

test("a voice message recorded in the browser (WebM/Opus) is turned into text", async ({ browser }) => {
  const [xena, yuri] = await friends("xena", "yuri");
  const hi = { text: { text: "say something" } };
  await call("POST", "/v1/messages", { toUserId: xena.userId, clientMsgId: "hi-1", body: hi }, yuri.token);
  await startEngine();

  const pages = [];
  for (const name of ["xena", "yuri"]) {
    const context = await browser.newContext();
    await context.grantPermissions(["microphone"]);
    const page = await context.newPage();
    watch(page);
    await page.goto(system.url());
    await logIn(page, name);
    pages.push(page);
  }
  const [xenaPage, yuriPage] = pages;
  await conversation(xenaPage, "Yuri").click();
  await conversation(yuriPage, "Xena").click();
  // Recorded from the microphone (flite, looping with a pause) for the
  // length of the sentence and its pause.
  await xenaPage.getByRole("button", { name: "Record a voice message" }).click();
  await expect(xenaPage.getByRole("group", { name: "Recording" })).toBeVisible();
  await xenaPage.waitForTimeout(4500);
  await xenaPage.getByRole("button", { name: "Send voice message" }).click();
  const voice = messages(yuriPage).filter({ has: yuriPage.getByLabel("Voice message") });
  await expect(voice).toHaveCount(1);
  await expect(voice).toContainText(/0:0[3-6]/);
  // The engine read the browser's WebM (through ffmpeg) and heard it; the
  // transcript reaches both sides live.
  const heard = /hello world|this is a test/;
  await expect(voice.getByLabel("Transcript")).toContainText(heard, { timeout: 60_000 });
  const mine = messages(xenaPage).filter({ has: xenaPage.getByLabel("Voice message") });
  await expect(mine.getByLabel("Transcript")).toContainText(heard);
});
