// Builds the web client into dist/ (committed; the edge embeds it).
//   node build.mjs          write dist/ and print the first-load size
//   node build.mjs --check  build in memory and fail if dist/ differs (stale)
// The output is deterministic: the same sources give the same bytes.
import * as esbuild from "esbuild";
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { join, dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
const check = process.argv.includes("--check");
const BUDGET_GZIP = 250 * 1024;

const result = await esbuild.build({
  entryPoints: [join(root, "src/main.tsx")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022", "chrome110", "firefox110", "safari16"],
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: join(dist, "assets"),
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  legalComments: "none",
  write: false,
  metafile: true,
  logLevel: "warning",
});

const files = new Map();
for (const out of result.outputFiles) files.set(relative(dist, out.path), Buffer.from(out.contents));
const names = [...files.keys()].map((p) => p.replace(/^assets\//, ""));
const js = names.filter((n) => n.endsWith(".js"));
const css = names.filter((n) => n.endsWith(".css"));
const icon = readFileSync(join(root, "public/icon.svg"));
const iconName = `icon-${createHash("sha256").update(icon).digest("hex").slice(0, 8)}.svg`;
files.set(`assets/${iconName}`, icon);

const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>natter</title>
<link rel="icon" href="/assets/${iconName}" type="image/svg+xml">
${css.map((n) => `<link rel="stylesheet" href="/assets/${n}">`).join("\n")}
${js.map((n) => `<script type="module" src="/assets/${n}"></script>`).join("\n")}
</head>
<body>
<div id="app"></div>
<noscript>natter needs JavaScript. natter 需要启用 JavaScript。</noscript>
</body>
</html>
`;
files.set("index.html", Buffer.from(html));

const gz = js.reduce((sum, n) => sum + gzipSync(files.get(`assets/${n}`), { level: 9 }).length, 0);
const cssGz = css.reduce((sum, n) => sum + gzipSync(files.get(`assets/${n}`), { level: 9 }).length, 0);
console.log(`web client first load: ${(gz / 1024).toFixed(1)} KB of JavaScript gzipped (budget ${BUDGET_GZIP / 1024} KB), ${(cssGz / 1024).toFixed(1)} KB of CSS gzipped`);
if (gz > BUDGET_GZIP) {
  console.error("the first load is over budget");
  process.exit(1);
}

function listDist(dir = dist, out = new Map()) {
  if (!existsSync(dir)) return out;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) listDist(p, out);
    else out.set(relative(dist, p), readFileSync(p));
  }
  return out;
}

if (check) {
  const committed = listDist();
  const stale = [...new Set([...files.keys(), ...committed.keys()])].filter(
    (p) => !files.has(p) || !committed.has(p) || !files.get(p).equals(committed.get(p)),
  );
  if (stale.length) {
    console.error(`web/dist is stale (${stale.join(", ")}): run \`npm run build\` in web/ and commit dist/`);
    process.exit(1);
  }
  console.log("web/dist matches the sources");
} else {
  rmSync(dist, { recursive: true, force: true });
  for (const [p, bytes] of files) {
    mkdirSync(dirname(join(dist, p)), { recursive: true });
    writeFileSync(join(dist, p), bytes);
  }
}
