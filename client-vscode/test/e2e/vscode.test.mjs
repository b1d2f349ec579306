// End to end in a real VS Code (code-server 4.100.3 in headless Chromium): install the .vsix, open a
// demo workspace made by `nightlab init`, start the loop from the panel (offline agent, a token budget of
// 40,960 so each run takes seconds on the CPU), watch experiments appear live in the panel, open a diff,
// accept an experiment, and check train.py on disk. Meanwhile keystrokes typed into an open editor must
// all land there: nothing the loop does may take the focus.
//
//   npm run package && npm run test:e2e     (the Python with nightlab: $NIGHTLAB_PYTHON, else ../.venv)
// Screenshots go to test-results/ (vscode-panel.png: the panel with experiments in it).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  answerInputBox, CLIENT_DIR, findFrame, focusEditor, launchBrowser, openFile, openWorkbench, runCommand, screenshot,
  startCodeServer, withTimeout,
} from './harness.mjs';

const REPO = path.resolve(CLIENT_DIR, '..');
const PYTHON = process.env.NIGHTLAB_PYTHON || path.join(REPO, '.venv', 'bin', 'python');
const VSIX = path.join(CLIENT_DIR, 'dist', 'nightlab.vsix');
const RESULTS = path.join(CLIENT_DIR, 'test-results');
const TYPED = 'the loop never takes my keyboard. ';
const API_KEY = 'sk-ant-e2e-not-a-real-key-4c1d';

/** Pids of running language servers (python -m nightlab.server). */
function serverPids() {
  return fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes('nightlab.server'); } catch { return false; }
  });
}
const environ = (pid) => { try { return fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0'); } catch { return []; } };

/** The first file under dir (SecretStorage's own database excepted) whose bytes contain text, or null. */
function filesContaining(dir, text) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath ?? entry.path, entry.name);
    try { if (fs.readFileSync(file).includes(text)) return file; } catch { /* gone meanwhile */ }
  }
  return null;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const step = (what) => console.log(`[e2e ${new Date().toISOString().slice(11, 19)}] ${what}`);
const git = (ws, ...args) => execFileSync('git', ['-C', ws, ...args], { encoding: 'utf8' });

function makeWorkspace() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nightlab-e2e-ws-'));
  const ws = path.join(tmp, 'demo');
  execFileSync(PYTHON, ['-m', 'nightlab.server.cli', 'init', ws, '--profile', 'cpu'], { stdio: 'inherit' });
  fs.writeFileSync(path.join(ws, 'notes.txt'), '');
  // A folder named like the package: a server started in the workspace would import it, not nightlab.
  fs.mkdirSync(path.join(ws, 'nightlab'));
  fs.writeFileSync(path.join(ws, 'nightlab', '__init__.py'),
    `open(${JSON.stringify(path.join(tmp, 'SHADOWED'))}, "w").write("workspace code ran")\n`);
  return { tmp, ws };
}

/** The rows the panel shows now: [{number, status, text}]. */
const rows = (frame) => frame.locator('[data-number]').evaluateAll((els) => els.map((e) => ({
  number: Number(e.getAttribute('data-number')), status: e.getAttribute('data-status'), text: e.textContent,
})));

async function until(what, predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(500);
  }
}

async function main() {
  assert.ok(fs.existsSync(VSIX), `no ${VSIX}: run npm run package first`);
  assert.ok(fs.existsSync(PYTHON), `no Python at ${PYTHON}: run ./dev.sh setup or set NIGHTLAB_PYTHON`);
  const { tmp, ws } = makeWorkspace();
  const head = git(ws, 'rev-parse', 'HEAD').trim();
  const server = await startCodeServer({
    workspace: ws, vsix: VSIX,
    env: { NIGHTLAB_CACHE: path.join(tmp, 'cache') },
    settings: {
      'nightlab.python': PYTHON, 'nightlab.agent': 'offline', 'nightlab.budgetTokens': 40960,
      // autoresearch's keep rule: one run per experiment, so a short test sees keeps and discards
      'nightlab.policy': 'strict',
      'nightlab.maxExperiments': 5, 'nightlab.notifyOnNewBest': true,
      'files.autoSave': 'off', 'editor.minimap.enabled': false,
    },
  });
  const browser = await launchBrowser();
  let page;
  try {
    page = await openWorkbench(browser, server.url, ws);
    await page.locator('.statusbar-item', { hasText: 'Nightlab' }).first().waitFor({ state: 'visible', timeout: 90_000 });
    step('workbench open; opening notes.txt and the panel');
    await openFile(page, 'notes.txt');
    await runCommand(page, 'Nightlab: Open the Experiments Panel');
    const panel = await findFrame(page, '[data-action="start"]', 90_000);
    await until('the server to connect (Start enabled)',
      () => panel.locator('[data-action="start"]').isEnabled(), 90_000);

    step('starting the loop from the panel');
    await panel.locator('[data-action="start"]').click();
    await until('experiment #1 to appear', async () => (await rows(panel)).some((r) => r.number === 1), 60_000);

    // The keyboard goes back to notes.txt, and stays there while experiments start, train, finish and a
    // "new best" notification shows: a character every 250 ms, over the whole run.
    await openFile(page, 'notes.txt');
    await focusEditor(page);
    let typed = '';
    let finished = [];
    const deadline = Date.now() + 6 * 60_000;
    while (Date.now() < deadline) {
      const ch = TYPED[typed.length % TYPED.length];
      await page.keyboard.type(ch);
      typed += ch;
      await sleep(250);
      if (typed.length % 8 === 0) {
        finished = (await rows(panel)).filter((r) => r.number > 1 && (r.status === 'keep' || r.status === 'discard'));
        const state = await panel.locator('[data-state]').first().getAttribute('data-state');
        if (typed.length % 64 === 0) step(`loop ${state}: ${(await rows(panel)).map((r) => `#${r.number} ${r.status}`).join(', ')}`);
        if (finished.length >= 2 || (finished.length >= 1 && /stopped|idle/.test(state ?? ''))) break;
      }
    }
    assert.ok(finished.length >= 1, `no finished experiment besides the baseline after 6 minutes: ${JSON.stringify(await rows(panel))}`);
    const statusBar = await page.locator('.statusbar-item', { hasText: 'Nightlab' }).first().textContent();
    assert.match(statusBar, /Nightlab/);
    await page.keyboard.press('Control+S');
    await until('notes.txt saved', () => fs.readFileSync(path.join(ws, 'notes.txt'), 'utf8') === typed, 15_000);
    step(`typed ${typed.length} characters; every one is in notes.txt`);

    await screenshot(page, path.join(RESULTS, 'vscode-panel.png'));
    const table = await rows(panel);
    assert.ok(table.length >= 3, `the panel shows ${table.length} rows`);
    assert.ok(table.some((r) => /\d\.\d{6}/.test(r.text)), 'no val_bpb shown in the table');

    // Review: select the experiment in the panel: a diff editor opens beside, the focus stays in the panel.
    const target = finished[0].number;
    const commit = git(ws, 'rev-parse', `refs/nightlab/main/${target}`).trim();
    const expected = git(ws, 'show', `${commit}:train.py`);
    step(`opening the diff of #${target}`);
    await panel.locator(`[data-number="${target}"]`).click();
    const diffEditor = page.locator('.monaco-diff-editor').first();
    await diffEditor.waitFor({ state: 'visible', timeout: 60_000 });
    const tabs = await page.locator('.tab').evaluateAll((els) => els.map((e) => e.getAttribute('aria-label') ?? ''));
    assert.ok(tabs.some((t) => new RegExp(`train\\.py.*#${target}`).test(t)), `no diff tab for #${target}: ${JSON.stringify(tabs)}`);
    const focusInPanel = await page.evaluate(() => !!document.activeElement?.closest?.('.webview, iframe')
      || document.activeElement?.tagName === 'IFRAME');
    assert.ok(focusInPanel, 'opening the diff took the focus from the panel');
    await screenshot(page, path.join(RESULTS, 'vscode-diff.png'));

    step(`accepting #${target} from the panel`);
    await panel.locator(`[data-number="${target}"] [data-act="accept"]`).click();
    await until(`train.py on disk to become experiment #${target}'s`,
      () => fs.readFileSync(path.join(ws, 'train.py'), 'utf8') === expected, 60_000);
    assert.equal(git(ws, 'rev-parse', 'HEAD').trim(), head, 'accepting moved the user\'s branch');
    await until('the panel to show the review', async () => (await panel.locator(`[data-number="${target}"]`).textContent()).includes('accepted'), 30_000);

    // The diff editor's own Reject button (its title bar), on another experiment.
    const other = table.find((r) => r.number > 1 && r.number !== target && r.status !== 'running')?.number;
    assert.ok(other, `no second experiment to reject: ${JSON.stringify(table)}`);
    {
      step(`rejecting #${other} from its diff editor`);
      await panel.locator(`[data-number="${other}"]`).click();
      await page.locator('.tab', { hasText: `#${other}` }).first().waitFor({ state: 'visible', timeout: 60_000 });
      // editor actions show in the active group only (VS Code's default): the user clicks into the diff first
      await page.locator('.monaco-diff-editor .view-lines').last().click();
      await page.keyboard.press('Escape'); // a hover the click opened would cover the title bar
      await page.mouse.move(700, 5);
      await page.locator('.editor-group-container.active .editor-actions a[aria-label="Reject Experiment"]').first().click();
      const ledger = path.join(ws, '.nightlab', 'main', 'experiments.jsonl');
      await until(`the ledger to record #${other} rejected`, () => fs.readFileSync(ledger, 'utf8').split('\n')
        .some((l) => l.includes('"review":"rejected"') && JSON.parse(l).number === other), 30_000);
    }

    step('stopping the loop');
    await runCommand(page, 'Nightlab: Stop the Loop');
    await until('the loop to stop', async () => /stopped|idle/.test(await panel.locator('[data-state]').first().getAttribute('data-state') ?? ''), 120_000);
    await screenshot(page, path.join(RESULTS, 'vscode-final.png'));

    // The API key goes to SecretStorage and into the restarted server's environment, nowhere else.
    step('setting an API key: the server restarts with it in its environment');
    const before = serverPids();
    await runCommand(page, 'Nightlab: Set Anthropic API Key');
    await answerInputBox(page, API_KEY);
    const pid = await until('a server with the key', () => serverPids().find((p) => !before.includes(p) && environ(p).includes(`ANTHROPIC_API_KEY=${API_KEY}`)), 60_000);
    assert.ok(pid);
    for (const dir of [ws, server.userDataDir]) {
      assert.equal(filesContaining(dir, API_KEY), null, `the key was written under ${dir}`);
    }
  } catch (err) {
    if (page) await screenshot(page, path.join(RESULTS, 'vscode-failure.png')).catch(() => {});
    console.error(server.logs().slice(-4000));
    console.error((server.vscodeLogs?.() ?? '').slice(-8000));
    throw err;
  } finally {
    await browser.close().catch(() => {});
    await server.stop();
  }
  try {
    await untrusted(ws);
    await missingPackage(tmp, ws);
    assert.ok(!fs.existsSync(path.join(tmp, 'SHADOWED')), "a Python started by the extension imported the workspace's nightlab/ folder");
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  step('passed');
}

/** Runs `scenario(page)` in a fresh code-server on `ws`; a screenshot on failure. */
async function inVSCode(name, ws, options, scenario) {
  const server = await startCodeServer({ workspace: ws, vsix: VSIX, ...options });
  const browser = await launchBrowser();
  let page;
  try {
    page = await openWorkbench(browser, server.url, ws);
    // the extension is active once its status bar item shows; its commands are in the palette by then
    await page.locator('.statusbar-item', { hasText: 'Nightlab' }).first().waitFor({ state: 'visible', timeout: 90_000 });
    await scenario(page);
  } catch (err) {
    if (page) await screenshot(page, path.join(RESULTS, `vscode-${name}-failure.png`)).catch(() => {});
    console.error(server.logs().slice(-4000));
    throw err;
  } finally {
    await browser.close().catch(() => {});
    await server.stop();
  }
}

/** Workspace Trust: in an untrusted workspace the panel shows the ledger, the loop cannot start. */
async function untrusted(ws) {
  step('untrusted workspace: results shown, the loop cannot start');
  await inVSCode('untrusted', ws, { trust: 'restricted', settings: { 'nightlab.python': PYTHON } }, async (page) => {
    await runCommand(page, 'Nightlab: Open the Experiments Panel');
    const panel = await findFrame(page, '[data-action="start"]', 90_000);
    await until('the ledger in the panel', async () => (await rows(panel)).length >= 3, 90_000);
    assert.equal(await panel.locator('[data-action="start"]').isEnabled(), false, 'Start is enabled in an untrusted workspace');
    assert.match(await panel.locator('body').textContent(), /untrusted/i);
    const ledger = path.join(ws, '.nightlab', 'main', 'experiments.jsonl');
    const before = fs.readFileSync(ledger, 'utf8');
    await runCommand(page, 'Nightlab: Start the Loop');
    await until('the refusal', async () => (await page.locator('.notifications-toasts').textContent()).includes('trust'), 30_000);
    await sleep(3000);
    assert.equal(fs.readFileSync(ledger, 'utf8'), before, 'the loop ran in an untrusted workspace');
    await screenshot(page, path.join(RESULTS, 'vscode-untrusted.png'));
  });
}

/** An interpreter without the nightlab package: the extension says so and offers to install it there. */
async function missingPackage(tmp, ws) {
  step('an interpreter without nightlab: a plain message that offers to install it');
  const venv = path.join(tmp, 'bare-venv');
  execFileSync(PYTHON, ['-m', 'venv', '--without-pip', venv]);
  const bare = path.join(venv, 'bin', 'python');
  await inVSCode('missing', ws, { settings: { 'nightlab.python': bare } }, async (page) => {
    const toast = page.locator('.notifications-toasts .notification-toast', { hasText: 'has no nightlab package' }).first();
    await toast.waitFor({ state: 'visible', timeout: 90_000 });
    assert.match(await toast.textContent(), new RegExp(`${bare.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    await toast.getByRole('button', { name: 'Install Nightlab There' }).waitFor({ state: 'visible', timeout: 10_000 });
    await screenshot(page, path.join(RESULTS, 'vscode-missing-package.png'));
  });
}

await withTimeout(main(), 15 * 60_000, 'the end-to-end test').catch((err) => {
  console.error(err);
  process.exit(1);
});
