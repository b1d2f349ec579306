// The panel's webview in a real browser: Debian's Chromium, headless, through playwright-core.
//
// Bundles the webview (dist/webview.js and .css) with esbuild, serves dist/ on localhost, and builds
// the page with the real renderHtml (src/panel/html.ts), so the page runs under the real CSP. A stub
// acquireVsCodeApi records what the webview posts and keeps its state across reloads, as VS Code does.
// Then it replays stream.json, a recording of a real run of the language server (record_stream.py), as
// the host's messages, time-compressed, and checks what the panel shows and posts; then a 2,000-row
// ledger for virtual scrolling. Saves test-results/webview.png (and -running, -narrow, -light).
//
//   npm run test:webview        (self-contained: it bundles first; needs /usr/bin/chromium)
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const DIST = join(ROOT, "dist");
const RESULTS = join(ROOT, "test-results");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const STREAM = JSON.parse(readFileSync(join(ROOT, "test", "webview", "stream.json"), "utf8"));
const REPLAY_SECONDS = 6; // the recording, minutes long, replayed in about this long

// VS Code's Dark Modern theme: the variables the panel uses (VS Code sets them on <html>)
const DARK = {
  "--vscode-foreground": "#cccccc", "--vscode-descriptionForeground": "#9d9d9d",
  "--vscode-editor-background": "#1f1f1f", "--vscode-sideBar-background": "#181818",
  "--vscode-font-family": "system-ui, \"Ubuntu\", \"Droid Sans\", \"DejaVu Sans\", sans-serif",
  "--vscode-font-size": "13px", "--vscode-font-weight": "normal",
  "--vscode-editor-font-family": "\"Droid Sans Mono\", \"DejaVu Sans Mono\", monospace",
  "--vscode-button-background": "#0078d4", "--vscode-button-foreground": "#ffffff",
  "--vscode-button-hoverBackground": "#026ec1", "--vscode-button-border": "#ffffff12",
  "--vscode-button-secondaryBackground": "#313131", "--vscode-button-secondaryForeground": "#cccccc",
  "--vscode-button-secondaryHoverBackground": "#3c3c3c",
  "--vscode-list-hoverBackground": "#2a2d2e", "--vscode-list-activeSelectionBackground": "#04395e",
  "--vscode-list-activeSelectionForeground": "#ffffff", "--vscode-list-inactiveSelectionBackground": "#37373d",
  "--vscode-list-focusOutline": "#0078d4", "--vscode-focusBorder": "#0078d4",
  "--vscode-charts-green": "#89d185", "--vscode-charts-red": "#f14c4c", "--vscode-charts-blue": "#3794ff",
  "--vscode-charts-yellow": "#cca700", "--vscode-charts-orange": "#d18616",
  "--vscode-dropdown-background": "#313131", "--vscode-dropdown-foreground": "#cccccc",
  "--vscode-dropdown-border": "#3c3c3c", "--vscode-editorWidget-border": "#313131",
  "--vscode-sideBarSectionHeader-border": "#2b2b2b", "--vscode-panel-border": "#2b2b2b",
  "--vscode-inputValidation-errorBackground": "#5a1d1d", "--vscode-inputValidation-errorBorder": "#be1100",
  "--vscode-inputValidation-warningBackground": "#352a05", "--vscode-inputValidation-warningBorder": "#b89500",
  "--vscode-toolbar-hoverBackground": "#5a5d5e50",
};

// VS Code's Light Modern theme, for the same variables
const LIGHT = {
  ...DARK,
  "--vscode-foreground": "#3b3b3b", "--vscode-descriptionForeground": "#3b3b3b",
  "--vscode-editor-background": "#ffffff", "--vscode-sideBar-background": "#f8f8f8",
  "--vscode-button-secondaryBackground": "#e5e5e5", "--vscode-button-secondaryForeground": "#3b3b3b",
  "--vscode-button-secondaryHoverBackground": "#cccccc", "--vscode-button-border": "#0000001a",
  "--vscode-list-hoverBackground": "#f2f2f2", "--vscode-list-activeSelectionBackground": "#e8e8e8",
  "--vscode-list-activeSelectionForeground": "#000000", "--vscode-list-inactiveSelectionBackground": "#e4e6f1",
  "--vscode-charts-green": "#388a34", "--vscode-charts-red": "#e51400", "--vscode-charts-blue": "#1a85ff",
  "--vscode-charts-yellow": "#bf8803", "--vscode-dropdown-background": "#ffffff", "--vscode-dropdown-foreground": "#3b3b3b",
  "--vscode-dropdown-border": "#cecece", "--vscode-editorWidget-border": "#e5e5e5",
  "--vscode-sideBarSectionHeader-border": "#e5e5e5", "--vscode-panel-border": "#e5e5e5",
  "--vscode-inputValidation-errorBackground": "#f2dede", "--vscode-inputValidation-errorBorder": "#be1100",
  "--vscode-inputValidation-warningBackground": "#f6f5d2", "--vscode-inputValidation-warningBorder": "#b89500",
};

// Runs in the page before its scripts, on every load: the stand-in for VS Code's webview host.
function stubVsCode(theme) {
  const KEY = "nightlab-webview-state";
  window.__posted = [];
  window.__csp = [];
  document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  const applyTheme = () => {
    for (const [k, v] of Object.entries(theme)) document.documentElement.style.setProperty(k, v);
    document.body?.classList.add("vscode-dark");
  };
  let acquired = false;
  window.acquireVsCodeApi = () => {
    if (acquired) throw new Error("An instance of the VS Code API has already been acquired");
    acquired = true;
    applyTheme(); // the script runs in <body>: <html> exists now, and the charts read colors next
    return {
      postMessage: (m) => window.__posted.push(JSON.parse(JSON.stringify(m))),
      getState: () => JSON.parse(sessionStorage.getItem(KEY) ?? "null"),
      setState: (s) => sessionStorage.setItem(KEY, JSON.stringify(s)),
    };
  };
}

// ---------------------------------------------------------------------------------------------------
// The page, the server, the browser

let server;
let browser;
let page;
let origin;
let tmp;
const problems = []; // console errors, page errors, failed requests: each fails the last check

async function bundle() {
  // the webview entry with esbuild.mjs's options (esbuild.mjs also builds the extension, not needed here)
  await esbuild.build({ bundle: true, minify: true, logLevel: "warning", entryPoints: { webview: join(ROOT, "src/panel/webview/main.ts") },
    outdir: DIST, platform: "browser", format: "iife", target: "es2022", loader: { ".css": "css" } });
  tmp = mkdtempSync(join(tmpdir(), "nightlab-webview-"));
  const html = join(tmp, "html.mjs");
  await esbuild.build({ bundle: true, entryPoints: [join(ROOT, "src/panel/html.ts")], outfile: html, platform: "neutral",
    format: "esm", logLevel: "warning" });
  return import(pathToFileURL(html).href);
}

function serve({ renderHtml, makeNonce }) {
  const types = { ".js": "text/javascript", ".css": "text/css", ".map": "application/json" };
  return new Promise((resolve) => {
    const s = createServer((req, res) => {
      const url = new URL(req.url, "http://x");
      if (url.pathname === "/favicon.ico") {
        res.writeHead(204).end(); // the browser asks for one; a webview in VS Code does not
        return;
      }
      if (url.pathname === "/") {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
        res.end(renderHtml({ scriptUri: `${origin}/dist/webview.js`, styleUri: `${origin}/dist/webview.css`,
          cspSource: origin, nonce: makeNonce() }));
        return;
      }
      const file = normalize(join(ROOT, url.pathname));
      if (!file.startsWith(DIST) || !existsSync(file)) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
      res.end(readFileSync(file));
    });
    s.listen(0, "127.0.0.1", () => {
      origin = `http://127.0.0.1:${s.address().port}`;
      resolve(s);
    });
  });
}

async function open(width = 460, height = 860) {
  page = await browser.newPage({ viewport: { width, height }, deviceScaleFactor: 1 });
  page.setDefaultTimeout(5000);
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  await page.addInitScript(stubVsCode, DARK);
  await page.goto(`${origin}/`);
  await waitPosted((m) => m.type === "ready", "the webview's ready message");
}

const posted = () => page.evaluate(() => window.__posted);
const frames = () => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

async function waitPosted(pred, what, timeout = 5000) {
  const t0 = Date.now();
  for (;;) {
    const found = (await posted()).find(pred);
    if (found) return found;
    if (Date.now() - t0 > timeout) assert.fail(`the webview never posted ${what}; it posted ${JSON.stringify(await posted())}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function send(...messages) {
  await page.evaluate((ms) => { for (const m of ms) window.postMessage(m, "*"); }, messages);
  await frames();
}

const clearPosted = () => page.evaluate(() => { window.__posted = []; });
const rowStatus = (n) => page.locator(`.row[data-number="${n}"] .badge.verdict`).textContent({ timeout: 2000 });
const rowNumbers = () => page.$$eval(".row:not([hidden])", (rs) => rs.map((r) => Number(r.dataset.number)));
const attr = (sel, name) => page.locator(sel).getAttribute(name);
const int = async (sel, name) => Number(await attr(sel, name));
const buttons = () => page.$$eval(".controls button", (bs) => Object.fromEntries(bs.map((b) => [b.dataset.action, !b.disabled])));

/** Pixels of a chart's canvas within `tol` of a color: a series is drawn, not just the axes. */
function pixelsOf(chart, hex, tol = 40) {
  return page.$eval(`.chart.${chart} canvas`, (c, [hex, tol]) => {
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 0 && Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < tol) n++;
    }
    return n;
  }, [hex, tol]);
}

// ---------------------------------------------------------------------------------------------------
// The recording, as the host would send it

/** The host's side: what it knows, to answer a reload with "reset". */
const host = { state: null, experiments: new Map() };

function toWebview(event) {
  const p = event.params;
  switch (event.method) {
    case "nightlab/loopState": host.state = p; return [{ type: "loopState", state: p }];
    case "nightlab/experimentStarted": host.experiments.set(p.experiment.number, p.experiment);
      return [{ type: "experiment", experiment: p.experiment }];
    case "nightlab/experimentFinished": {
      host.experiments.set(p.experiment.number, p.experiment);
      const out = [{ type: "experiment", experiment: p.experiment }];
      // a host asks for a new best's curve; the recording holds the final best's
      if (p.newBest && STREAM.bestCurve?.number === p.experiment.number) {
        out.push({ type: "bestCurve", number: STREAM.bestCurve.number, points: STREAM.bestCurve.points });
      }
      return out;
    }
    case "nightlab/experimentProgress": return [{ type: "progress", progress: p }];
    default: return [];
  }
}

let cursor = 0;
/** Replay the recording up to and including the first event that matches (the rest when none). */
async function replayUntil(pred = () => false) {
  const events = STREAM.events;
  const scale = REPLAY_SECONDS / Math.max(1, events[events.length - 1].t - events[0].t);
  let batch = [];
  while (cursor < events.length) {
    const e = events[cursor++];
    batch.push(...toWebview(e));
    const next = events[cursor];
    const gap = next ? (next.t - e.t) * scale * 1000 : 0;
    const matched = pred(e);
    if (matched || gap > 16 || !next) {
      await send(...batch);
      batch = [];
      if (matched) return e;
      if (gap > 16) await new Promise((r) => setTimeout(r, Math.min(gap, 250)));
    }
  }
  return null;
}
const is = (method, f = () => true) => (e) => e.method === `nightlab/${method}` && f(e.params);

// ---------------------------------------------------------------------------------------------------

describe("the Nightlab panel webview", { timeout: 120_000 }, () => {
  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (or set CHROMIUM)`);
    const html = await bundle();
    server = await serve(html);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu",
      "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
    await open();
  });

  after(async () => {
    await browser?.close();
    await new Promise((r) => (server ? server.close(r) : r()));
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("uses the real CSP: a nonce, no inline code, nothing from elsewhere", async () => {
    const csp = await attr('meta[http-equiv="Content-Security-Policy"]', "content");
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, new RegExp(`script-src 'nonce-[A-Za-z0-9]{32}'`));
    assert.equal(await page.locator("script").count(), 1);
    assert.equal(await page.locator("link[rel=stylesheet]").count(), 1);
  });

  it("says ready, and before any loop only Start is enabled", async () => {
    await send({ type: "reset", state: null, experiments: [], trusted: true, problem: null });
    assert.deepEqual(await buttons(), { start: true, pause: false, resume: false, stop: false });
    assert.match(await page.locator(".experiments .empty").textContent(), /No experiments yet/);
  });

  it("shows a running experiment as it starts, and its loss curve grows with progress", async () => {
    const started = await replayUntil(is("experimentStarted"));
    const n = started.params.experiment.number;
    assert.equal(await rowStatus(n), "running");
    await replayUntil(is("loopState", (s) => s.state === "running"));
    assert.deepEqual(await buttons(), { start: false, pause: true, resume: false, stop: true });
    const samples = STREAM.events.filter(is("experimentProgress", (p) => p.number === n && p.stage === "run" && p.loss != null));
    assert.ok(samples.length >= 4, "the recording has progress samples");
    let seen = 0;
    await replayUntil((e) => e.method === "nightlab/experimentProgress" && ++seen === 3);
    const early = await int(".chart.loss", "data-running-points");
    await replayUntil((e) => e === samples[samples.length - 1]);
    const late = await int(".chart.loss", "data-running-points");
    assert.ok(early >= 1 && late > early, `the running curve grows: ${early} then ${late} points`);
    assert.ok((await pixelsOf("loss", DARK["--vscode-charts-blue"])) > 50, "the running curve is drawn on the canvas");
    assert.match(await page.locator(".chart.loss .legend").textContent(), new RegExp(`#${n} run running`));
    assert.match(await page.locator(`.row[data-number="${n}"] .c-time`).textContent(), /^\d+%$/, "the running row shows its progress");
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: join(RESULTS, "webview-running.png") });
  });

  it("Pause posts a control while the loop runs", async () => {
    await clearPosted();
    await page.click('.controls button[data-action="pause"]');
    assert.deepEqual((await posted()).filter((m) => m.type === "control"), [{ type: "control", action: "pause" }]);
  });

  it("turns running rows into their verdicts, to the end of the recording", async () => {
    const first = await replayUntil(is("experimentFinished"));
    assert.equal(await rowStatus(first.params.experiment.number), first.params.experiment.status);
    const title = await attr(`.row[data-number="${first.params.experiment.number}"] .c-desc`, "title");
    assert.ok(title.includes(first.params.experiment.reason) && title.includes(first.params.experiment.hypothesis), title);
    await replayUntil();
    const finished = STREAM.events.filter(is("experimentFinished")).map((e) => e.params.experiment);
    for (const e of finished) assert.equal(await rowStatus(e.number), e.status, `#${e.number}`);
    const newest = await page.locator(".row:not([hidden])").first().getAttribute("data-number");
    assert.equal(Number(newest), Math.max(...finished.map((e) => e.number)), "newest first");
    assert.equal(await page.locator(".state-name").textContent(), "Stopped");
    assert.deepEqual(await buttons(), { start: true, pause: false, resume: false, stop: false });
  });

  it("draws the progress chart: kept and discarded points, and the kept frontier", async () => {
    const all = [...host.experiments.values()];
    const kept = all.filter((e) => e.status === "keep").length;
    const discarded = all.filter((e) => e.status === "discard").length;
    assert.equal(await int(".chart.progress", "data-kept"), kept);
    assert.equal(await int(".chart.progress", "data-discarded"), discarded);
    assert.equal(await int(".chart.progress", "data-frontier"), kept + discarded, "the frontier spans every plotted experiment");
    assert.ok((await pixelsOf("progress", DARK["--vscode-charts-green"])) > 30, "kept points and the frontier are drawn");
    if (discarded) assert.ok((await pixelsOf("progress", DARK["--vscode-descriptionForeground"], 20)) > 0);
    assert.match(await page.locator(".best-value").textContent(), /^\d+\.\d{6}$/);
    assert.equal(await int(".chart.loss", "data-best-points"), STREAM.bestCurve.points.length, "the best curve under the live one");
  });

  it("filters by status", async () => {
    const all = [...host.experiments.values()];
    for (const status of ["keep", "discard", "interrupted", "crash", "all"]) {
      await page.selectOption("select.filter", status);
      await frames();
      const shown = await page.$$eval(".row:not([hidden])", (rs) => rs.map((r) => r.dataset.status));
      const expected = all.filter((e) => status === "all" || e.status === status).map((e) => e.status);
      assert.deepEqual(shown.sort(), expected.sort(), status);
      assert.equal(await page.locator(".experiments .empty").isVisible(), expected.length === 0, `${status}: the empty line`);
    }
  });

  it("selects a row (posts select), Accept and Reject post theirs, arrows move the selection", async () => {
    const reviewable = [...host.experiments.values()].filter((e) => (e.status === "keep" || e.status === "discard") && !e.baseline)
      .sort((a, b) => b.number - a.number);
    assert.ok(reviewable.length >= 2, "the recording has experiments to review");
    const n = reviewable[0].number;
    await clearPosted();
    await page.click(`.row[data-number="${n}"] .c-desc`);
    await frames();
    assert.deepEqual((await posted()).filter((m) => m.type === "select"), [{ type: "select", number: n }]);
    assert.equal(await attr(`.row[data-number="${n}"]`, "aria-selected"), "true");
    await page.click(`.row[data-number="${n}"] button[data-act="accept"]`);
    await page.click(`.row[data-number="${n}"] button[data-act="reject"]`);
    assert.deepEqual((await posted()).filter((m) => m.type === "accept" || m.type === "reject"),
      [{ type: "accept", number: n }, { type: "reject", number: n }]);
    // the baseline has no Accept
    const baseline = [...host.experiments.values()].find((e) => e.baseline);
    if (baseline) {
      await page.click(`.row[data-number="${baseline.number}"] .c-desc`);
      await frames();
      assert.equal(await page.locator(`.row[data-number="${baseline.number}"] .row-actions`).isVisible(), false);
      await page.click(`.row[data-number="${n}"] .c-desc`);
    }
    await clearPosted();
    await page.focus(".viewport");
    await page.keyboard.press("ArrowDown");
    await frames();
    const order = [...host.experiments.keys()].sort((a, b) => b - a);
    const next = order[order.indexOf(n) + 1];
    assert.deepEqual((await posted()).filter((m) => m.type === "select"), [{ type: "select", number: next }]);
    await page.keyboard.press("ArrowUp");
    await frames();
    assert.equal(await attr(`.row[data-number="${n}"]`, "aria-selected"), "true");
    // the review shows in the badge once the host sends the experiment back
    const reviewed = { ...host.experiments.get(n), review: "accepted" };
    host.experiments.set(n, reviewed);
    await send({ type: "experiment", experiment: reviewed });
    assert.equal(await rowStatus(n), host.experiments.get(n).status, "the verdict stays the verdict");
    assert.equal(await page.locator(`.row[data-number="${n}"] .review`).textContent(), "accepted");
  });

  it("Start posts a control; untrusted disables every control and says why; errors show and go", async () => {
    await clearPosted();
    await page.click('.controls button[data-action="start"]');
    assert.deepEqual(await posted(), [{ type: "control", action: "start" }]);
    await send({ type: "trust", trusted: false });
    assert.deepEqual(await buttons(), { start: false, pause: false, resume: false, stop: false });
    assert.match(await page.locator(".banner.untrusted").textContent(), /untrusted workspace: the loop cannot start here/i);
    await send({ type: "trust", trusted: true }, { type: "error", message: "nightlab.loop.start: a loop already runs on nightlab/main" });
    assert.ok(await page.locator(".banner.untrusted").isHidden());
    assert.match(await page.locator(".banner.error").textContent(), /already runs/);
    await page.click(".banner.error button");
    await frames();
    assert.ok(await page.locator(".banner.error").isHidden());
  });

  it("looks right (test-results/webview.png)", async () => {
    mkdirSync(RESULTS, { recursive: true });
    await page.focus(".viewport");
    await frames();
    await page.screenshot({ path: join(RESULTS, "webview.png") });
  });

  it("shows a crash (made up here: the recording has none) as a badge and a mark on the chart", async () => {
    // the offline agent on the demo rarely crashes; the payload is the recording's last, renumbered
    const last = STREAM.events.filter(is("experimentFinished")).at(-1).params.experiment;
    const n = Math.max(...host.experiments.keys()) + 1;
    const running = { ...last, number: n, status: "running", metric: null, delta: null, description: "DEPTH 4 -> 64", reason: "" };
    const crash = { ...running, status: "crash", reason: "RuntimeError: CUDA out of memory (made up by the test)", durationS: 3.2 };
    await send({ type: "experiment", experiment: running });
    assert.equal(await rowStatus(n), "running");
    await send({ type: "experiment", experiment: crash });
    host.experiments.set(n, crash);
    assert.equal(await rowStatus(n), "crash");
    assert.equal(await int(".chart.progress", "data-crashes"), 1);
  });

  it("fits a narrow side bar and follows a theme change (webview-narrow.png, webview-light.png)", async () => {
    await page.setViewportSize({ width: 320, height: 720 });
    await frames();
    await frames();
    await page.screenshot({ path: join(RESULTS, "webview-narrow.png") });
    const width = await page.$eval(".chart.loss canvas", (c) => c.getBoundingClientRect().width);
    assert.ok(width < 320, `the charts follow the panel's width (${width}px)`);
    // no column is dropped or cut to nothing: the table scrolls sideways, its header with it
    const visible = await page.$$eval(".thead > span", (hs) => hs.filter((h) => h.offsetWidth > 0).map((h) => h.textContent));
    assert.deepEqual(visible, ["#", "Verdict", "val_bpb", "\u0394", "\u03c3", "Description", "Reason", "Time"]);
    const [scrollW, clientW] = await page.$eval(".viewport", (v) => [v.scrollWidth, v.clientWidth]);
    assert.ok(scrollW > clientW, `the rows are wider than a narrow panel and scroll: ${scrollW} > ${clientW}`);
    await page.setViewportSize({ width: 460, height: 860 });
    await page.evaluate((light) => {
      for (const [k, v] of Object.entries(light)) document.documentElement.style.setProperty(k, v);
      document.body.classList.replace("vscode-dark", "vscode-light");
    }, LIGHT);
    await frames();
    await frames();
    assert.ok((await pixelsOf("progress", LIGHT["--vscode-charts-green"], 30)) > 30, "the charts redrawn in the light theme's colors");
    await page.screenshot({ path: join(RESULTS, "webview-light.png") });
  });

  it("keeps filter and selection over a reload (getState), and the host's reset restores the rest", async () => {
    const selected = Number(await page.locator('.row[aria-selected="true"]').getAttribute("data-number"));
    await page.selectOption("select.filter", "keep");
    await page.reload();
    await waitPosted((m) => m.type === "ready", "ready after the reload");
    await send({ type: "reset", state: host.state, experiments: [...host.experiments.values()], trusted: true, problem: null });
    assert.equal(await page.locator("select.filter").inputValue(), "keep");
    assert.equal(await attr(`.row[data-number="${selected}"]`, "aria-selected"), "true");
    assert.equal(await page.locator(`.row[data-number="${selected}"] .review`).textContent(), "accepted");
    await page.selectOption("select.filter", "all");
  });

  it("shows the settings in effect, or those Start would use and where each comes from; a dead loop says so", async () => {
    const idle = { ...host.state, state: "idle", pid: null, policy: "strict", sandbox: "auto", died: false };
    await send({ type: "reset", state: idle, experiments: [...host.experiments.values()], trusted: true, problem: null,
      overrides: { budgetTokens: 200000 } });
    const setting = (k) => page.locator(`.settings .setting[data-key="${k}"]`);
    assert.match(await page.locator(".settings").textContent(), /^Start uses/);
    assert.match(await setting("budget").textContent(), /200,000 tokens/);
    assert.equal(await setting("budget").getAttribute("data-source"), "settings");
    assert.match(await setting("policy").textContent(), /strict/);
    assert.equal(await setting("policy").getAttribute("data-source"), "toml");
    assert.match(await setting("agent").textContent(), new RegExp(host.state.agent));
    assert.match(await setting("sandbox").textContent(), /auto/);
    // a loop runs: what it runs with, whatever the settings say now
    await send({ type: "loopState", state: { ...idle, state: "running", pid: 4242, running: [] } });
    assert.match(await page.locator(".settings").textContent(), /^Running with/);
    assert.equal(await setting("budget").getAttribute("data-source"), "loop");
    assert.match(await setting("budget").textContent(), new RegExp(host.state.budget));
    await send({ type: "loopState", state: { ...idle, state: "stopped", died: true, log: "/ws/.nightlab/main/loop.log",
      reason: "the loop process ended without stopping: RuntimeError: made up by the test" } });
    assert.match(await page.locator(".banner.died").textContent(), /^Loop died: .*RuntimeError: made up by the test.*loop\.log/);
    await send({ type: "loopState", state: host.state });
    assert.ok(await page.locator(".banner.died").isHidden());
  });

  it("shows the lineages and the Ray cluster; a click on another lineage posts chooseLineage (webview-swarm.png)", async () => {
    assert.ok(await page.locator("section.swarm").isHidden(), "no lineages, no cluster: nothing drawn");
    const lineage = (name, over) => ({ name, resources: "", focus: "", experiments: 0, best: null, baseline: null,
      running: true, ports: 0, portsKept: 0, replicated: 0, ...over });
    const swarm = { ...host.state, tag: "cpu", lineages: [
      lineage("gpu", { resources: "num_gpus=1", experiments: 31, best: { number: 12, metric: 0.978112 }, baseline: 0.997755,
        ports: 2, portsKept: 1, replicated: 1 }),
      lineage("cpu", { resources: "laptop=1", focus: "initialisation", experiments: 12, best: { number: 9, metric: 1.412207 },
        baseline: 1.436001, ports: 1, portsKept: 1 }),
    ], cluster: { address: "10.0.0.1:6379", error: "", total: { CPU: 40, GPU: 8, laptop: 1 }, inUse: { CPU: 4, GPU: 1, laptop: 1 },
      nodes: [{ id: "a1f3c9d2e4b5ff00", address: "10.0.0.1", resources: { CPU: 32, GPU: 8 } },
        { id: "77c0e1aa9b3f0000", address: "10.0.0.7", resources: { CPU: 8, laptop: 1 } }] } };
    await send({ type: "loopState", state: swarm });
    const rows = page.locator("section.swarm button.lineage");
    assert.equal(await rows.count(), 2);
    assert.match(await rows.nth(0).textContent(), /gpu.*num_gpus=1.*31 experiments.*best 0\.978112 \(#12\).*\u22121\.97%.*ports kept 1 of 2.*replicated elsewhere 1/);
    assert.equal(await rows.nth(1).getAttribute("aria-current"), "true");
    assert.match(await page.locator("section.swarm .cluster").textContent(), /Ray cluster 10\.0\.0\.1:6379 · 2 nodes.*in use: CPU 4\/40 · GPU 1\/8 · laptop 1\/1.*10\.0\.0\.7 \(77c0e1aa9b3f\)/);
    await page.screenshot({ path: join(RESULTS, "webview-swarm.png") });
    await clearPosted();
    await rows.nth(1).click(); // the one shown: nothing to do
    await rows.nth(0).click();
    assert.deepEqual((await posted()).filter((m) => m.type === "chooseLineage"), [{ type: "chooseLineage", lineage: "gpu" }]);
    await send({ type: "loopState", state: { ...swarm, cluster: { ...swarm.cluster, nodes: [], total: {}, inUse: {},
      error: "not reachable (ConnectionError: made up by the test)" } } });
    assert.match(await page.locator("section.swarm .cluster-error").textContent(), /made up by the test/);
    await send({ type: "loopState", state: host.state });
    assert.ok(await page.locator("section.swarm").isHidden());
  });

  it("sorts by a column on a click of its header, and filters by words in the description or reason", async () => {
    const all = [...host.experiments.values()];
    await page.click('.th[data-sort="metric"]');
    await frames();
    const byMetric = all.filter((e) => typeof e.metric === "number").sort((a, b) => a.metric - b.metric || b.number - a.number);
    assert.deepEqual((await rowNumbers()).slice(0, byMetric.length), byMetric.map((e) => e.number));
    assert.equal(await attr('.th[data-sort="metric"]', "aria-sort"), "ascending");
    await page.click('.th[data-sort="metric"]');
    await frames();
    assert.equal(await attr('.th[data-sort="metric"]', "aria-sort"), "descending");
    assert.equal((await rowNumbers())[0], byMetric.at(-1).number, "the worst first");
    await page.click('.th[data-sort="number"]');
    await frames();
    assert.deepEqual(await rowNumbers(), all.map((e) => e.number).sort((a, b) => b - a), "newest first again");
    const word = all.find((e) => !e.baseline && e.description).description.split(/\s+/)[0];
    await page.fill(".text-filter", word);
    await frames();
    const expected = all.filter((e) => `${e.description}\n${e.reason}`.toLowerCase().includes(word.toLowerCase()))
      .map((e) => e.number).sort((a, b) => b - a);
    assert.ok(expected.length > 0 && expected.length < all.length, `${word}: ${expected}`);
    assert.deepEqual(await rowNumbers(), expected);
    await page.fill(".text-filter", "");
    await frames();
    assert.equal((await rowNumbers()).length, all.length);
  });

  it("resizes a column by dragging its header's edge, and keeps the width over a reload", async () => {
    const width = () => page.$eval('.th[data-sort="reason"]', (h) => h.getBoundingClientRect().width);
    const before = await width();
    const grip = await page.locator('.grip[data-resize="reason"]').boundingBox();
    await page.mouse.move(grip.x + grip.width / 2, grip.y + grip.height / 2);
    await page.mouse.down();
    await page.mouse.move(grip.x + grip.width / 2 + 80, grip.y + grip.height / 2, { steps: 4 });
    await page.mouse.up();
    await frames();
    const after = await width();
    assert.ok(after > before + 60, `the Reason column grew: ${before} -> ${after}`);
    const cell = await page.$eval('.row:not([hidden]) .c-reason', (c) => c.getBoundingClientRect().width);
    assert.ok(Math.abs(cell - after) < 1, "the rows follow their header");
    const saved = await page.evaluate(() => JSON.parse(sessionStorage.getItem("nightlab-webview-state")).widths);
    assert.ok(saved.reason > before + 60, JSON.stringify(saved));
    await page.reload();
    await waitPosted((m) => m.type === "ready", "ready after the reload");
    await send({ type: "reset", state: host.state, experiments: [...host.experiments.values()], trusted: true, problem: null });
    assert.ok(Math.abs((await width()) - after) < 1, "the width kept over a reload");
    await page.evaluate(() => {
      const s = JSON.parse(sessionStorage.getItem("nightlab-webview-state"));
      sessionStorage.setItem("nightlab-webview-state", JSON.stringify({ ...s, widths: {} }));
    });
    await page.reload();
    await waitPosted((m) => m.type === "ready", "ready after the reload");
    await send({ type: "reset", state: host.state, experiments: [...host.experiments.values()], trusted: true, problem: null });
    assert.ok(Math.abs((await width()) - before) < 1, "the default width again");
  });

  it("shows beside the verdict whether the change is in the files, and the review with its time", async () => {
    const e = [...host.experiments.values()].find((x) => x.status === "discard");
    const shown = { ...e, inFile: "some", review: "rejected", reviewedAt: "2026-11-27T01:40:00+00:00" };
    await send({ type: "experiment", experiment: shown });
    assert.equal(await rowStatus(e.number), "discard");
    assert.equal(await page.locator(`.row[data-number="${e.number}"] .in-file`).textContent(), "partly in file");
    assert.equal(await attr(`.row[data-number="${e.number}"] .review`, "title"), "rejected by you on 2026-11-27 01:40");
    await send({ type: "experiment", experiment: e });
    assert.ok(await page.locator(`.row[data-number="${e.number}"] .in-file`).isHidden());
  });

  it("opens the detail view of a selected experiment: what it knows, every run's curve, its actions", async () => {
    const e = [...host.experiments.values()].filter((x) => x.status === "discard").at(-1);
    const best = STREAM.bestCurve;
    await send({ type: "bestCurve", number: best.number, points: best.points });
    await clearPosted();
    await page.click(`.row[data-number="${e.number}"] .c-desc`);
    await frames();
    const detail = page.locator(`.detail[data-detail="${e.number}"]`);
    assert.ok(await detail.isVisible(), "the detail view is open");
    const text = await detail.textContent();
    for (const part of [e.hypothesis, e.description, e.reason, `.nightlab/runs/${host.state.tag}/${e.number}`]) {
      assert.ok(text.includes(part), `the detail view shows ${part}`);
    }
    const ask = await waitPosted((m) => m.type === "curves" && m.number === e.number, "the request for its runs' curves");
    assert.ok(ask.stages.includes("run"), JSON.stringify(ask));
    const worse = best.points.map((p) => ({ ...p, loss: p.loss + 0.05 }));
    await send({ type: "curve", number: e.number, stage: "smoke", points: [] },
      { type: "curve", number: e.number, stage: "repeat-1", points: worse },
      { type: "curve", number: e.number, stage: "run", points: best.points });
    assert.equal(await attr(".chart.runs", "data-labels"), `#${e.number} run,#${e.number} repeat 1,best #${best.number}`);
    assert.equal(await page.locator(".chart.runs .legend .key").count(), 3, "a key per curve, none for the empty smoke run");
    assert.match(await detail.locator(".detail-runs").textContent(), /repeat 1: \d+ steps/);
    await clearPosted();
    for (const act of ["diff", "accept", "reject", "rerun"]) await page.click(`.detail button[data-detail-act="${act}"]`);
    assert.deepEqual(await posted(), [{ type: "openDiff", number: e.number }, { type: "accept", number: e.number },
      { type: "reject", number: e.number }, { type: "rerun", number: e.number }]);
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: join(RESULTS, "webview-detail.png") });
  });

  it("shows where an experiment ran and, for a port from another lineage, its origin and where it held", async () => {
    const e = { ...[...host.experiments.values()].filter((x) => x.status === "keep").at(-1) };
    Object.assign(e, { node: "10.0.0.7", portOf: "gpu #12", replicatedIn: ["cpu"] });
    await send({ type: "experiment", experiment: e });
    await page.click(`.row[data-number="${e.number}"] .c-desc`);
    await frames();
    const text = await page.locator(`.detail[data-detail="${e.number}"]`).textContent();
    for (const part of ["node 10.0.0.7", "port of gpu #12", "Replicated in", "cpu"]) {
      assert.ok(text.includes(part), `the detail view shows ${part}: ${text}`);
    }
  });

  it("draws every run of the running experiment: a baseline's repeats keep its main run, the legend only what is drawn", async () => {
    const template = STREAM.events.filter(is("experimentFinished")).at(-1).params.experiment;
    const n = Math.max(...host.experiments.keys()) + 1;
    const running = { ...template, number: n, status: "running", metric: null, delta: null, baseline: true, description: "baseline" };
    await send({ type: "experiment", experiment: running }, { type: "loopState", state: { ...host.state, state: "running", running: [n] } });
    const stages = [];
    for (const stage of ["run", "repeat-1"]) {
      for (let step = 1; step <= 6; step++) {
        stages.push({ type: "progress", progress: { number: n, step, elapsedS: step, loss: 5 - step / 3 + (stage === "run" ? 0 : 0.2),
          fraction: step / 6, stage } });
      }
    }
    await send(...stages.slice(0, 6));
    assert.equal(await attr(".chart.loss", "data-labels"), `#${n} run,best #${STREAM.bestCurve.number}`);
    await send(...stages.slice(6));
    assert.equal(await attr(".chart.loss", "data-labels"), `#${n} run,#${n} repeat 1,best #${STREAM.bestCurve.number}`);
    assert.equal(await int(".chart.loss", "data-running-points"), 12, "the main run's curve stays while the repeat trains");
    assert.equal(await page.locator(".chart.loss .legend .key").count(), 3);
    assert.ok((await pixelsOf("loss", DARK["--vscode-charts-orange"])) > 20, "the repeat's curve is drawn");
    assert.equal(await page.locator(`.row[data-number="${n}"] .c-time`).textContent(), "repeat-1");
    assert.equal(await attr(".chart.loss", "data-x"), "step", "one unit on the x axis: the step");
    await page.screenshot({ path: join(RESULTS, "webview-repeats.png") });
    await send({ type: "reset", state: host.state, experiments: [...host.experiments.values()], trusted: true, problem: null });
  });

  it("Apply best posts its message, and is off when the best is the baseline", async () => {
    await clearPosted();
    assert.ok(await page.locator(".apply-best").isEnabled());
    await page.click(".apply-best");
    assert.deepEqual(await posted(), [{ type: "applyBest" }]);
    const baseline = [...host.experiments.values()].find((e) => e.baseline);
    await send({ type: "loopState", state: { ...host.state, best: { number: baseline.number, metric: baseline.metric } } });
    assert.equal(await page.locator(".apply-best").isEnabled(), false);
    await send({ type: "loopState", state: host.state });
  });

  it("selects an experiment by a click on the progress chart", async () => {
    const over = page.locator(".chart.progress .u-over");
    const box = await over.boundingBox();
    await clearPosted();
    await page.mouse.move(box.x + box.width - 2, box.y + box.height / 2);
    await page.mouse.click(box.x + box.width - 2, box.y + box.height / 2);
    await frames();
    const plotted = [...host.experiments.values()].filter((e) => e.status === "crash" || typeof e.metric === "number");
    const newest = Math.max(...plotted.map((e) => e.number));
    assert.deepEqual((await posted()).filter((m) => m.type === "select"), [{ type: "select", number: newest }]);
    assert.equal(await attr(`.row[data-number="${newest}"]`, "aria-selected"), "true");
  });

  it("the progress chart keeps a near miss in range and marks a wild discard on the edge", async () => {
    const template = STREAM.events.filter(is("experimentFinished")).at(-1).params.experiment;
    const base = { ...template, number: 1, status: "keep", baseline: true, metric: 1.0, description: "baseline" };
    const near = { ...template, number: 2, status: "discard", baseline: false, metric: 0.99 };
    const wild = { ...template, number: 3, status: "discard", baseline: false, metric: 1.6 };
    await send({ type: "reset", state: { ...host.state, baseline: 1.0, best: { number: 1, metric: 1.0 } },
      experiments: [base, near, wild], trusted: true, problem: null });
    const [lo, hi] = (await attr(".chart.progress", "data-y-range")).split(",").map(Number);
    assert.ok(lo < 0.99 && hi < 1.6, `the range ${lo}..${hi} holds the near miss, not the wild one`);
    assert.equal(await int(".chart.progress", "data-edge-marks"), 1);
    await send({ type: "reset", state: host.state, experiments: [...host.experiments.values()], trusted: true, problem: null });
  });

  it("has a folder picker when more than one folder has a loop; a pick asks the host for that folder", async () => {
    const roots = [{ root: "/ws/a", label: "a", state: "stopped" }, { root: "/ws/b", label: "b", state: "running" }];
    await send({ type: "reset", state: host.state, experiments: [...host.experiments.values()], trusted: true, problem: null,
      root: "/ws/a", roots });
    assert.ok(await page.locator(".root-picker").isVisible());
    assert.deepEqual(await page.$$eval(".root-picker option", (os) => os.map((o) => o.textContent)), ["a (stopped)", "b (running)"]);
    await clearPosted();
    await page.selectOption(".root-picker", "/ws/b");
    assert.deepEqual(await posted(), [{ type: "chooseRoot", root: "/ws/b" }]);
    await send({ type: "reset", state: { ...host.state, root: "/ws/b" }, experiments: [], trusted: true, problem: null, root: "/ws/b", roots });
    assert.equal(await page.locator(".root-picker").inputValue(), "/ws/b");
    assert.equal(await page.locator(".row:not([hidden])").count(), 0, "the other folder's ledger");
    await send({ type: "reset", state: host.state, experiments: [...host.experiments.values()], trusted: true, problem: null });
    assert.ok(await page.locator(".root-picker").isHidden(), "one folder: no picker");
  });

  it("shows the server's problem when there is none", async () => {
    await send({ type: "reset", state: null, experiments: [], trusted: true, problem: "No Python with the nightlab package: set nightlab.python" });
    assert.match(await page.locator(".banner.problem").textContent(), /set nightlab\.python/);
    assert.deepEqual(await buttons(), { start: false, pause: false, resume: false, stop: false });
  });

  it("renders a window of a 2,000-experiment ledger, scrolls to the oldest, and keeps up with progress", async () => {
    const template = STREAM.events.filter(is("experimentFinished")).at(-1).params.experiment;
    const statuses = ["keep", "discard", "discard", "discard", "crash", "interrupted"];
    const ledger = Array.from({ length: 2000 }, (_, i) => ({ ...template, number: i + 1, baseline: i === 0,
      status: i === 1999 ? "running" : i === 0 ? "keep" : statuses[i % statuses.length],
      metric: 4 - i * 1e-4 + (i % 7) * 1e-3, description: `experiment ${i + 1}` }));
    const state = { ...host.state, state: "running", running: [2000], experimentsRun: 2000 };
    // timed in the page: from the message to two frames later (the transfer from Node is not the panel's)
    const resetMs = await page.evaluate((m) => new Promise((resolve) => {
      const t0 = performance.now();
      window.postMessage(m, "*");
      requestAnimationFrame(() => requestAnimationFrame(() => resolve(Math.round(performance.now() - t0))));
    }), { type: "reset", state, experiments: ledger, trusted: true, problem: null });
    const rows = await page.locator(".row").count();
    assert.ok(rows > 5 && rows < 100, `a window of rows in the DOM, not 2,000: ${rows}`);
    const [numW, numClient] = await page.$eval('.row[data-number="2000"] .c-num', (c) => [c.scrollWidth, c.clientWidth]);
    assert.ok(numW <= numClient && (await page.locator('.row[data-number="2000"] .c-num').textContent()) === "2000",
      `four digits are not cut: ${numW} > ${numClient}`);
    await page.$eval(".viewport", (v) => { v.scrollTop = v.scrollHeight; });
    await frames();
    await frames();
    const last = await page.$$eval(".row:not([hidden])", (rs) => rs.map((r) => Number(r.dataset.number)));
    assert.equal(Math.min(...last), 1, "the oldest at the bottom");
    assert.ok(await page.locator(".row").count() < 100);
    // 2,000 progress samples for the running one, posted at once: one redraw per frame, not per sample
    const streamMs = await page.evaluate(() => new Promise((resolve) => {
      const t0 = performance.now();
      for (let i = 1; i <= 2000; i++) {
        window.postMessage({ type: "progress", progress: { number: 2000, step: i, elapsedS: i * 0.1, loss: 5 - Math.log(i),
          fraction: i / 2000, stage: "run" } }, "*");
      }
      requestAnimationFrame(() => requestAnimationFrame(() => resolve(Math.round(performance.now() - t0))));
    }));
    const points = await int(".chart.loss", "data-running-points");
    assert.ok(points >= 900 && points <= 1000, `the curve is thinned to its cap: ${points} points of 2,000`);
    // a figure, not a check: speed is measured here and reported, never asserted (see the README's bar)
    console.log(`# 2,000-row reset drawn in ${resetMs} ms; 2,000 progress samples in ${streamMs} ms`);
    // the scroll position survives a reload
    const top = await page.$eval(".viewport", (v) => v.scrollTop);
    await new Promise((r) => setTimeout(r, 250)); // the webview saves the scroll position shortly after
    await page.reload();
    await waitPosted((m) => m.type === "ready", "ready after the reload");
    await send({ type: "reset", state, experiments: ledger, trusted: true, problem: null });
    const restored = await page.$eval(".viewport", (v) => v.scrollTop);
    assert.ok(Math.abs(restored - top) < 2, `scrollTop ${restored}, was ${top}`);
  });

  it("had no CSP violation, console error or failed request", async () => {
    const csp = await page.evaluate(() => window.__csp);
    assert.deepEqual([...problems, ...csp.map((v) => `CSP: ${v}`)], []);
  });
});
