// Bundles the extension (Node, CommonJS, `vscode` external) and the panel's webview script (browser,
// IIFE, uPlot inside: the webview loads nothing from the network). `--tests` also bundles the unit
// tests into out/ for `node --test`. `--watch` rebuilds on change.
import * as esbuild from "esbuild";
import { readdirSync } from "node:fs";

const args = new Set(process.argv.slice(2));
const production = !args.has("--dev");
const common = { bundle: true, sourcemap: !production, minify: production, logLevel: "warning" };

const builds = [
  { ...common, entryPoints: ["src/extension.ts"], outfile: "dist/extension.js", platform: "node",
    format: "cjs", target: "node20", external: ["vscode"] },
  { ...common, entryPoints: { webview: "src/panel/webview/main.ts" }, outdir: "dist", platform: "browser",
    format: "iife", target: "es2022", loader: { ".css": "css" } },
];
if (args.has("--tests")) {
  const tests = readdirSync("test/unit").filter((f) => f.endsWith(".test.ts")).map((f) => `test/unit/${f}`);
  builds.push({ bundle: true, sourcemap: "inline", entryPoints: tests, outdir: "out/test/unit", platform: "node",
    format: "esm", target: "node20", outExtension: { ".js": ".mjs" }, logLevel: "warning" });
}

if (args.has("--watch")) {
  for (const b of builds) await (await esbuild.context(b)).watch();
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}
