// Self-check of the e2e harness: a real code-server + Chromium, no Nightlab code involved.
//
//   node test/e2e/smoke.mjs [--no-extension] [--keep]
//
// 1. a temp folder with hello.py; code-server on it; the workbench in Chromium;
// 2. opens hello.py (Quick Open), types a line, saves with Ctrl+S, checks the file on disk;
//    screenshot to test-results/smoke.png;
// 3. unless --no-extension: packages a tiny throw-away extension with vsce, installs it with
//    --install-extension, and checks through it that commands run from the palette, that `env`
//    reaches the extension host, that webview content is found in the nested iframes, that the
//    keyboard gets out of a focused webview, that notifications are seen and dismissed, and that
//    an extension's quick pick and input box can be answered.
// Exit code 0 on success; 1 with a message (and test-results/smoke-failure.png) otherwise;
// 2 when the whole run exceeds its time limit (NIGHTLAB_SMOKE_TIMEOUT_MS, default 6 minutes,
// not counting a first-time code-server install).

import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as h from './harness.mjs';

const argv = new Set(process.argv.slice(2));
const WITH_EXTENSION = !argv.has('--no-extension');
if (argv.has('--keep')) process.env.NIGHTLAB_E2E_KEEP = '1';
const TOTAL_MS = Number(process.env.NIGHTLAB_SMOKE_TIMEOUT_MS || 6 * 60_000);
const RESULTS = path.join(h.CLIENT_DIR, 'test-results');

const t0 = Date.now();
const step = (msg) => console.log(`[smoke] ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s  ${msg}`);
const fail = (msg) => { throw new Error(msg); };

async function waitFor(what, fn, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// A tiny extension: three commands and a webview, enough to exercise the harness.
const EXT_PACKAGE = {
  name: 'nightlab-harness-smoke',
  publisher: 'nightlab-test',
  version: '0.0.1',
  license: 'MIT',
  engines: { vscode: '^1.100.0' },
  main: './extension.js',
  activationEvents: [],
  capabilities: { untrustedWorkspaces: { supported: true } },
  contributes: {
    commands: [
      { command: 'nightlabSmoke.writeMarker', title: 'Write Marker', category: 'Nightlab Smoke' },
      { command: 'nightlabSmoke.openWebview', title: 'Open Webview', category: 'Nightlab Smoke' },
      { command: 'nightlabSmoke.notify', title: 'Notify', category: 'Nightlab Smoke' },
      { command: 'nightlabSmoke.ask', title: 'Ask', category: 'Nightlab Smoke' },
    ],
  },
};
const EXT_MAIN = `
const vscode = require('vscode');
const fs = require('fs');
const path = require('path');
exports.activate = (ctx) => {
  const reg = (id, fn) => ctx.subscriptions.push(vscode.commands.registerCommand(id, fn));
  reg('nightlabSmoke.writeMarker', () => {
    const dir = vscode.workspace.workspaceFolders[0].uri.fsPath;
    fs.writeFileSync(path.join(dir, 'smoke-marker.json'), JSON.stringify({
      env: process.env.NIGHTLAB_SMOKE_MARKER ?? null,
      trusted: vscode.workspace.isTrusted,
      vscode: vscode.version,
    }));
  });
  reg('nightlabSmoke.openWebview', () => {
    const panel = vscode.window.createWebviewPanel('nightlabSmoke', 'Smoke Webview', vscode.ViewColumn.Active, {});
    panel.webview.html = '<!DOCTYPE html><html><body><h1 id="smoke-webview">webview ok</h1>'
      + '<p><input id="smoke-input" value="focus me"></p></body></html>';
  });
  reg('nightlabSmoke.notify', () => vscode.window.showInformationMessage('Nightlab smoke notification'));
  reg('nightlabSmoke.ask', async () => {
    const pick = await vscode.window.showQuickPick(['alpha', 'beta', 'gamma'], { placeHolder: 'Pick one' });
    const text = await vscode.window.showInputBox({ prompt: 'Say something' });
    const dir = vscode.workspace.workspaceFolders[0].uri.fsPath;
    fs.writeFileSync(path.join(dir, 'smoke-answer.json'), JSON.stringify({ pick, text }));
  });
};
`;

function buildExtension(dir) {
  const src = path.join(dir, 'ext');
  fs.mkdirSync(src, { recursive: true });
  fs.writeFileSync(path.join(src, 'package.json'), JSON.stringify(EXT_PACKAGE, null, 2));
  fs.writeFileSync(path.join(src, 'extension.js'), EXT_MAIN);
  fs.writeFileSync(path.join(src, 'README.md'), '# harness smoke test extension\n');
  const vsce = path.join(h.CLIENT_DIR, 'node_modules', '@vscode', 'vsce', 'vsce');
  if (!fs.existsSync(vsce)) fail(`no ${vsce}: run "npm ci" in ${h.CLIENT_DIR}`);
  const out = path.join(dir, 'smoke.vsix');
  const r = spawnSync(process.execPath, [vsce, 'package', '--no-dependencies', '--allow-missing-repository',
    '--skip-license', '-o', out], { cwd: src, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) fail(`vsce package failed (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
  return out;
}

let server = null;
let browser = null;
let page = null;
let tmp = null;

async function main() {
  step('code-server: ensuring it is installed');
  await h.ensureCodeServer();

  // The guard starts after a possible first-time install.
  const guard = setTimeout(() => {
    console.error(`[smoke] FAIL: the smoke test did not finish within ${TOTAL_MS} ms`);
    if (server) console.error(`[smoke] code-server output (tail):\n${server.logs().slice(-4000)}`);
    if (tmp && process.env.NIGHTLAB_E2E_KEEP !== '1') fs.rmSync(tmp, { recursive: true, force: true });
    process.exit(2); // the harness's exit hook kills code-server; playwright kills Chromium
  }, TOTAL_MS);
  guard.unref();

  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nightlab-smoke-'));
  const ws = path.join(tmp, 'workspace');
  fs.mkdirSync(ws);
  const hello = path.join(ws, 'hello.py');
  const original = 'print("hello")\n';
  fs.writeFileSync(hello, original);

  let vsix = null;
  if (WITH_EXTENSION) {
    step('packaging the smoke extension with vsce');
    vsix = buildExtension(tmp);
  }
  const token = crypto.randomBytes(4).toString('hex');

  step('starting code-server');
  server = await h.startCodeServer({ workspace: ws, vsix, env: { NIGHTLAB_SMOKE_MARKER: token } });
  step(`code-server answers on ${server.url}`);

  browser = await h.launchBrowser();
  step('Chromium launched; opening the workbench');
  page = await h.openWorkbench(browser, server.url, ws);
  step('workbench ready');

  await h.openFile(page, 'hello.py');
  step('hello.py open');
  const line = `# smoke ${token}`;
  await h.typeInEditor(page, `${line}\n`, { atEnd: true });
  await h.saveActiveEditor(page);
  const saved = await waitFor('hello.py to change on disk', () => {
    const text = fs.readFileSync(hello, 'utf8');
    return text !== original && text;
  });
  if (saved !== `${original}${line}\n`) fail(`hello.py on disk is ${JSON.stringify(saved)}, expected ${JSON.stringify(original + line + '\n')}`);
  step('typed and saved: hello.py changed on disk as expected');
  await h.screenshot(page, path.join(RESULTS, 'smoke.png'));
  step(`screenshot: ${path.join(RESULTS, 'smoke.png')}`);

  if (WITH_EXTENSION) {
    const marker = path.join(ws, 'smoke-marker.json');
    await h.runCommand(page, 'Nightlab Smoke: Write Marker');
    const m = JSON.parse(await waitFor('smoke-marker.json', () => fs.existsSync(marker) && fs.readFileSync(marker, 'utf8')));
    if (m.env !== token) fail(`the extension host saw NIGHTLAB_SMOKE_MARKER=${m.env}, expected ${token}`);
    if (!m.trusted) fail('the workspace is not trusted although --disable-workspace-trust was passed');
    step(`runCommand ran the extension's command; env reached the extension host (VS Code ${m.vscode})`);

    await h.runCommand(page, /^Nightlab Smoke: Open Webview$/);
    const frame = await h.findFrame(page, '#smoke-webview', 30_000);
    const heading = await frame.locator('#smoke-webview').textContent();
    if (heading !== 'webview ok') fail(`webview heading is ${JSON.stringify(heading)}`);
    await frame.locator('#smoke-input').click(); // the keyboard is in the webview now
    step('findFrame found the webview content');

    await h.runCommand(page, 'Nightlab Smoke: Notify');
    await h.waitForNotification(page, 'Nightlab smoke notification');
    await h.dismissNotifications(page);
    await waitFor('the notification to go away', async () => (await h.notifications(page)).length === 0, 10_000);
    step('runCommand out of a focused webview; notification seen and dismissed');

    await h.runCommand(page, 'Nightlab Smoke: Ask');
    await h.pickQuickItem(page, 'beta');
    await h.answerInputBox(page, `said ${token}`);
    const answerFile = path.join(ws, 'smoke-answer.json');
    const answer = JSON.parse(await waitFor('smoke-answer.json', () => fs.existsSync(answerFile) && fs.readFileSync(answerFile, 'utf8')));
    if (answer.pick !== 'beta' || answer.text !== `said ${token}`) fail(`quick pick / input box answers arrived as ${JSON.stringify(answer)}`);
    step('pickQuickItem and answerInputBox answered the extension');
    await h.screenshot(page, path.join(RESULTS, 'smoke-webview.png'));
  }
}

let code = 0;
try {
  await main();
  step('PASS');
} catch (e) {
  code = 1;
  console.error(`[smoke] FAIL: ${e.stack || e.message}`);
  if (page) {
    await h.screenshot(page, path.join(RESULTS, 'smoke-failure.png')).catch(() => {});
    console.error(`[smoke] screenshot of the failure: ${path.join(RESULTS, 'smoke-failure.png')}`);
    const errors = h.consoleLogs(page).split('\n').filter((l) => /^(error|pageerror)/.test(l));
    if (errors.length) console.error(`[smoke] page errors (last 20):\n${errors.slice(-20).join('\n')}`);
  }
  if (server) console.error(`[smoke] code-server output (tail):\n${server.logs().slice(-4000)}`);
} finally {
  await browser?.close().catch(() => {});
  await server?.stop().catch(() => {});
  if (tmp && process.env.NIGHTLAB_E2E_KEEP !== '1') fs.rmSync(tmp, { recursive: true, force: true });
  step(`done (exit ${code})`);
}
process.exit(code);
