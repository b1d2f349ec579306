// End to end in a real VS Code (code-server 4.100.3 in headless Chromium): install the .vsix, open a
// demo workspace made by `nightlab init` where a loop started from a terminal (`nightlab run --detach`)
// already runs: the panel shows it live and its Stop stops it. Then start the loop from the panel
// (offline agent, a token budget of 40,960 so each run takes seconds on the CPU), watch experiments appear
// live in the panel, open a diff, accept an experiment, and check train.py on disk. Meanwhile keystrokes
// typed into an open editor must all land there: nothing the loop does may take the focus. The loop is a
// process of its own: a Reload Window mid-run finds the same loop and reattaches, the run is recorded
// once; a loop killed with -9 is shown as died, and the next Start recovers.
//
//   npm run package && npm run test:e2e     (the Python with nightlab: $NIGHTLAB_PYTHON, else ../.venv)
// Screenshots go to test-results/ (vscode-panel.png: the panel with experiments in it), and the panel's
// for the README to docs/images/ (panel-table.png, panel-detail.png, panel-charts.png).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  answerInputBox, CLIENT_DIR, findFrame, focusEditor, launchBrowser, openFile, openWorkbench, runCommand, screenshot,
  startCodeServer, withTimeout,
} from './harness.mjs';
import { alive, baselines, finalRecords, inFlight, killLoops, lastLogLine, ledger, loopInfo, nightlab } from './loop.mjs';

const REPO = path.resolve(CLIENT_DIR, '..');
const PYTHON = process.env.NIGHTLAB_PYTHON || path.join(REPO, '.venv', 'bin', 'python');
const VSIX = path.join(CLIENT_DIR, 'dist', 'nightlab.vsix');
const RESULTS = path.join(CLIENT_DIR, 'test-results');
const IMAGES = path.join(REPO, 'docs', 'images');
const BUDGET = 40960;
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

async function until(what, predicate, timeoutMs, everyMs = 500) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

const loopState = async (panel) => (await panel.locator('[data-state]').first().getAttribute('data-state')) ?? '';
/** The loss chart's points of the running experiment's runs (0 before its first step is reported). */
const runningPoints = async (panel) => Number(await panel.locator('.chart.loss').first().getAttribute('data-running-points') ?? 0);
/** The number of an experiment the panel shows running with a curve of its own, or null. */
async function runningWithCurve(panel) {
  const running = (await rows(panel)).filter((r) => r.status === 'running');
  return running.length && (await runningPoints(panel)) > 0 ? running[0].number : null;
}
const seconds = (t0) => ((Date.now() - t0) / 1000).toFixed(1);
/** How long things took, seconds, for the record (test-results/e2e-timings.json); nothing asserts on them. */
const timings = {};

async function main() {
  assert.ok(fs.existsSync(VSIX), `no ${VSIX}: run npm run package first`);
  assert.ok(fs.existsSync(PYTHON), `no Python at ${PYTHON}: run ./dev.sh setup or set NIGHTLAB_PYTHON`);
  const { tmp, ws } = makeWorkspace();
  const head = git(ws, 'rev-parse', 'HEAD').trim();
  const env = { NIGHTLAB_CACHE: path.join(tmp, 'cache') };
  const t0 = Date.now();
  // Acceptance 2: a loop started from a terminal before the editor opens
  step('nightlab run --detach from a terminal, before VS Code opens the folder');
  nightlab(PYTHON, env, 'run', '--detach', '--workspace', ws, '--agent', 'offline', '--budget-tokens', String(BUDGET),
    '--policy', 'strict', '--max-experiments', '2');
  const cliLoop = loopInfo(ws);
  assert.ok(cliLoop?.pid && alive(cliLoop.pid), `no loop process after nightlab run --detach: ${JSON.stringify(cliLoop)}`);
  let server, browser, page;
  try {
    server = await startCodeServer({
      workspace: ws, vsix: VSIX, env,
      settings: {
        'nightlab.python': PYTHON, 'nightlab.agent': 'offline', 'nightlab.budgetTokens': BUDGET,
        // autoresearch's keep rule: one run per experiment, so a short test sees keeps and discards
        'nightlab.policy': 'strict',
        'nightlab.maxExperiments': 8, 'nightlab.notifyOnNewBest': true,
        'files.autoSave': 'off', 'editor.minimap.enabled': false,
      },
    });
    browser = await launchBrowser();
    page = await openWorkbench(browser, server.url, ws);
    await page.locator('.statusbar-item', { hasText: 'Nightlab' }).first().waitFor({ state: 'visible', timeout: 90_000 });
    step('workbench open; opening notes.txt and the panel');
    await openFile(page, 'notes.txt');
    await runCommand(page, 'Nightlab: Open the Experiments Panel');
    let panel = await findFrame(page, '[data-action="start"]', 90_000);

    const live = await until('the panel to show the terminal\'s loop live (a running experiment, its curve)',
      () => runningWithCurve(panel), 120_000);
    assert.equal(loopInfo(ws)?.pid, cliLoop.pid, 'the panel\'s loop is not the one started from the terminal');
    step(`the panel shows the terminal's loop (pid ${cliLoop.pid}) live: #${live} running; Stop from the panel`);
    await panel.locator('[data-action="stop"]').click();
    await until('the loop to stop', async () => /stopped|idle/.test(await loopState(panel)), 120_000);
    await until(`the loop process ${cliLoop.pid} to exit`, () => !alive(cliLoop.pid), 60_000);
    const status = nightlab(PYTHON, env, 'status', '--workspace', ws);
    assert.match(status, /loop: not running/, `nightlab status after Stop in the panel:\n${status}`);
    const lastNumber = Math.max(0, ...ledger(ws).map((r) => r.number));

    await until('the server to connect (Start enabled)',
      () => panel.locator('[data-action="start"]').isEnabled(), 90_000);
    step('starting the loop from the panel');
    await panel.locator('[data-action="start"]').click();
    await until(`experiment #${lastNumber + 1} to appear`, async () => (await rows(panel)).some((r) => r.number === lastNumber + 1), 60_000);

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
        const base = baselines(ws);
        finished = (await rows(panel)).filter((r) => !base.has(r.number) && (r.status === 'keep' || r.status === 'discard'));
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
    // Accept applies the experiment's own change: one that builds on the user's train.py becomes its file.
    // A keep: accepting a change the loop did not keep asks first (answered below when it does).
    const original = git(ws, 'show', `${head}:train.py`);
    const onHead = finished.filter((r) => {
      const parent = ledger(ws).find((e) => e.number === r.number)?.parent_commit;
      return parent && git(ws, 'show', `${parent}:train.py`) === original;
    });
    assert.ok(onHead.length, `no finished experiment builds on the user's train.py: ${JSON.stringify(finished)}`);
    const target = (onHead.find((r) => r.status === 'keep') ?? onHead[0]).number;
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
    await answerAcceptAnyway(page);
    await until(`train.py on disk to become experiment #${target}'s`,
      () => fs.readFileSync(path.join(ws, 'train.py'), 'utf8') === expected, 60_000);
    assert.equal(git(ws, 'rev-parse', 'HEAD').trim(), head, 'accepting moved the user\'s branch');
    await until('the panel to show the review', async () => (await panel.locator(`[data-number="${target}"]`).textContent()).includes('accepted'), 30_000);

    // The diff editor's own Reject button (its title bar), on another experiment.
    const other = table.find((r) => !baselines(ws).has(r.number) && r.number !== target
      && r.status !== 'running' && r.status !== 'interrupted')?.number;
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

    // the README's screenshots while the reattached panel shows the run in progress
    panel = await reloadDuringARun(page, panel, ws, () => server.vscodeLogs(), (again) => panelScreenshots(page, again, target));
    panel = await killedLoop(page, panel, ws);

    // The API key goes to SecretStorage and into the restarted server's environment, nowhere else. The
    // restart lets go of the running loop (nightlab.stopLoopOnExit is off): no question, the loop goes on.
    const last = loopInfo(ws)?.pid;
    step(`setting an API key while the loop (pid ${last}) runs: the server restarts with it in its environment`);
    const before = serverPids();
    await runCommand(page, 'Nightlab: Set Anthropic API Key');
    await answerInputBox(page, API_KEY);
    const pid = await until('a server with the key', () => serverPids().find((p) => !before.includes(p) && environ(p).includes(`ANTHROPIC_API_KEY=${API_KEY}`)), 60_000);
    assert.ok(pid);
    assert.equal(await page.locator('.monaco-dialog-box').count(), 0, 'a question before a restart that keeps the loop');
    for (const dir of [ws, server.userDataDir]) {
      assert.equal(filesContaining(dir, API_KEY), null, `the key was written under ${dir}`);
    }
    await until('the restarted server to show the loop running', async () => /running|proposing|deciding/.test(await loopState(panel)), 60_000);
    assert.equal(loopInfo(ws)?.pid, last, 'the restart changed the loop process');
    assert.ok(alive(last), `the loop process ${last} ended with the server's restart`);

    step('stopping the loop');
    await runCommand(page, 'Nightlab: Stop the Loop');
    await until('the loop to stop', async () => /stopped|idle/.test(await loopState(panel)), 120_000);
    await until(`the loop process ${last} to exit`, () => !alive(last), 60_000);
    await screenshot(page, path.join(RESULTS, 'vscode-final.png'));
  } catch (err) {
    if (page) await screenshot(page, path.join(RESULTS, 'vscode-failure.png')).catch(() => {});
    if (server) {
      console.error(server.logs().slice(-4000));
      console.error((server.vscodeLogs?.() ?? '').slice(-8000));
    }
    throw err;
  } finally {
    await browser?.close().catch(() => {});
    await server?.stop();
    // a detached loop outlives code-server by design: whatever the test left running goes now
    const left = killLoops(ws);
    if (left.length) step(`killed loop processes left running: ${left.join(', ')}`);
  }
  try {
    await untrusted(ws);
    await missingPackage(tmp, ws);
    assert.ok(!fs.existsSync(path.join(tmp, 'SHADOWED')), "a Python started by the extension imported the workspace's nightlab/ folder");
  } finally {
    killLoops(ws);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  timings.totalSeconds = Number(seconds(t0));
  fs.writeFileSync(path.join(RESULTS, 'e2e-timings.json'), `${JSON.stringify(timings, null, 2)}\n`);
  step(`passed in ${seconds(t0)} s`);
}

/** The modal before accepting a change the loop did not keep ("Accept anyway"), when it shows. */
async function answerAcceptAnyway(page) {
  const dialog = page.locator('.monaco-dialog-box');
  const shown = await dialog.first().waitFor({ state: 'visible', timeout: 3_000 }).then(() => true, () => false);
  if (!shown) return;
  await dialog.getByRole('button', { name: 'Accept anyway' }).first().click();
  await dialog.first().waitFor({ state: 'hidden', timeout: 30_000 });
}

/**
 * Acceptance 1: Reload Window while an experiment runs. The loop process is the same, the panel shows
 * the running experiment and its curve again, and that experiment is recorded once, finished.
 */
async function reloadDuringARun(page, panel, ws, vscodeLogs, whileItRuns) {
  const number = await until('an experiment running with a curve', () => runningWithCurve(panel), 180_000);
  const { pid } = loopInfo(ws);
  step(`reloading the window while #${number} runs (loop pid ${pid})`);
  await page.evaluate(() => { window.nightlabBeforeReload = true; });
  // t0 before the palette opens (the figure CI recorded first); `clicked` once the command is clicked
  const t0 = Date.now();
  await runCommand(page, 'Developer: Reload Window');
  const clicked = Date.now();
  timings.reloadCommandClicked = Number(seconds(t0));
  await until('the window to reload', () => page.evaluate(() => !window.nightlabBeforeReload).catch(() => false), 60_000, 100);
  await page.locator('.statusbar-item', { hasText: 'Nightlab' }).first().waitFor({ state: 'visible', timeout: 60_000 });
  timings.workbenchBackAfterReload = Number(seconds(t0));
  timings.workbenchBackAfterReloadCommand = Number(seconds(clicked));
  step(`the workbench is back ${seconds(t0)} s after the reload, the extension active`);
  const again = await findFrame(page, async (f) => (await f.locator(`[data-number="${number}"][data-status="running"]`).count()) > 0
    && (await runningPoints(f)) > 0, 60_000, 100);
  timings.panelReattachedAfterReload = Number(seconds(t0));
  timings.panelReattachedAfterReloadCommand = Number(seconds(clicked));
  step(`the panel reattached ${seconds(t0)} s after the reload (${seconds(clicked)} s after the command): #${number} running with its curve`);
  assert.equal(loopInfo(ws)?.pid, pid, 'the reload changed the loop process');
  assert.ok(alive(pid), `the loop process ${pid} ended with the reload`);
  await whileItRuns(again);
  await until(`#${number} to finish`, () => finalRecords(ws, number).length > 0, 180_000);
  const ends = finalRecords(ws, number);
  assert.equal(ends.length, 1, `#${number} was recorded ${ends.length} times: ${JSON.stringify(ends.map((r) => r.status))}`);
  assert.match(ends[0].status, /^(keep|discard|crash)$/, `#${number} ended ${ends[0].status}`);
  assert.equal(loopInfo(ws)?.pid, pid, 'another loop process recorded the experiment');
  // read late: VS Code writes its log files a moment after the lines are logged
  const logs = vscodeLogs();
  timings.reattachSteps = reattachSteps(logs, clicked);
  fs.writeFileSync(path.join(RESULTS, 'reattach-log.txt'), reattachLog(logs, clicked, 15));
  step(`after the reload command: ${JSON.stringify(timings.reattachSteps)}`);
  return again;
}

/**
 * The extension's log lines that mark the reattach: each first one's seconds after `since` (a Date.now()).
 * The lines logged before the log file opens carry the time they were written, not logged: the start's
 * own lines say how many ms after it began they came, and the start's end when it began.
 */
const REATTACH_STEPS = {
  extensionActivating: /_doActivateExtension nightlab\.nightlab/,
  firstReset: /^panel: reset posted/,
  stateLoaded: /^panel: loop status of/,
  resetWithState: /^panel: reset posted \((?!no state)/,
  ledgerLoaded: /^panel: ledger of/,
  runningCurve: /^panel: curve of running/,
};
const START_STEPS = {
  pythonFound: /^python: .*, (\d+) ms$/,
  nightlabChecked: /^nightlab (?:checked|check cached): .*, (\d+) ms$/,
  serverSpawned: /^starting the language server: .*, (\d+) ms$/,
};

function reattachSteps(logs, since) {
  const out = {};
  const lines = [...logLines(logs, since)];
  const first = (re) => lines.find((l) => re.test(l.message));
  const running = first(/^the language server is running, \d+ ms after the start/);
  if (running) {
    const began = running.s - Number(/(\d+) ms after/.exec(running.message)[1]) / 1000;
    const at = (ms) => Number((began + Number(ms) / 1000).toFixed(2));
    const loaded = first(/^starting the server \(the extension's code was loaded \d+ ms before\)/);
    if (loaded) out.extensionLoaded = at(-Number(/loaded (\d+) ms/.exec(loaded.message)[1]));
    out.serverStartBegan = at(0);
    for (const [name, re] of Object.entries(START_STEPS)) {
      const line = first(re);
      if (line) out[name] = at(re.exec(line.message)[1]);
    }
    out.serverRunning = running.s;
  }
  for (const [name, re] of Object.entries(REATTACH_STEPS)) {
    const line = first(re);
    if (line) out[name] = line.s;
  }
  return out;
}

/** VS Code's log lines, "2026-12-01 19:10:00.123 [info] message" (local time, as Date parses it), from `since` on. */
function* logLines(logs, since) {
  let file = '';
  for (const line of logs.split('\n')) {
    const head = /^===== (.*) =====$/.exec(line);
    if (head) file = head[1];
    const m = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \[\w+\] (.*)$/.exec(line);
    const at = m ? new Date(m[1].replace(' ', 'T')).getTime() : NaN;
    if (at >= since) yield { file, s: Number(((at - since) / 1000).toFixed(2)), message: m[2] };
  }
}

/** Every log line of the first `seconds` after `since`, in time order, for test-results/reattach-log.txt. */
function reattachLog(logs, since, seconds) {
  return [...logLines(logs, since)].filter((l) => l.s <= seconds).sort((a, b) => a.s - b.s)
    .map((l) => `${l.s.toFixed(2).padStart(6)} ${path.basename(l.file)}: ${l.message.slice(0, 200)}`).join('\n') + '\n';
}

/** Acceptance 7: the panel wide and tall enough to read: its table, an experiment's detail view, its charts. */
async function panelScreenshots(page, panel, number) {
  step(`screenshots of the panel for the README (detail view of #${number})`);
  await page.setViewportSize({ width: 1600, height: 1600 });
  const sidebar = await page.locator('.part.sidebar').first().boundingBox();
  if (sidebar) {
    // the sidebar's sash is its right edge: drag it so the panel gets most of the window
    const x = sidebar.x + sidebar.width + 1, y = sidebar.y + sidebar.height / 2;
    await page.mouse.move(x, y);
    await page.mouse.down();
    await page.mouse.move(1150, y, { steps: 10 });
    await page.mouse.up();
  }
  await until('the running curve in the wider panel', async () => (await runningPoints(panel)) > 0, 30_000);
  await panel.locator('section.charts').first().screenshot({ path: path.join(IMAGES, 'panel-charts.png') });
  await panel.locator(`.row[data-number="${number}"]`).click();
  await panel.locator(`.detail[data-detail="${number}"]`).waitFor({ state: 'visible', timeout: 30_000 });
  await until('the detail view\'s runs chart', async () => (await panel.locator('.detail .chart.runs').count()) > 0, 30_000);
  await panel.locator('.experiments').first().screenshot({ path: path.join(IMAGES, 'panel-table.png') });
  await panel.locator(`.detail[data-detail="${number}"]`).screenshot({ path: path.join(IMAGES, 'panel-detail.png') });
  await page.setViewportSize({ width: 1400, height: 900 });
}

/**
 * Acceptance 3: `kill -9` of the loop process: the panel says the loop died, with the log's last line;
 * the next Start (a new loop process) records the killed experiment as interrupted and goes on.
 */
async function killedLoop(page, panel, ws) {
  await until('an experiment running with a curve', () => runningWithCurve(panel), 180_000);
  await until('an experiment in flight in the ledger', () => inFlight(ws).length > 0, 60_000, 100);
  const { pid } = loopInfo(ws);
  assert.equal(await panel.locator('.banner.died').first().isVisible(), false, 'the died banner shows before the kill');
  step(`kill -9 of the loop process ${pid} while #${inFlight(ws).join(', #')} runs`);
  process.kill(pid, 'SIGKILL');
  const t0 = Date.now();
  await until('the panel to say the loop died', () => panel.locator('.banner.died').first().isVisible(), 60_000, 100);
  timings.diedShownAfterKill = Number(seconds(t0));
  step(`the panel said the loop died ${seconds(t0)} s after kill -9`);
  // read once the loop is dead: the experiment the kill caught (the one the panel showed may have just ended)
  const killed = inFlight(ws);
  assert.ok(killed.length > 0, 'no experiment was in flight when the loop was killed');
  const number = killed[0];
  const banner = await panel.locator('.banner.died').first().textContent();
  const line = lastLogLine(ws);
  assert.ok(banner.includes(line), `the died banner does not show the log's last line "${line}": ${banner}`);
  assert.equal(await loopState(panel), 'errored');

  step('Start from the panel after the loop died');
  await until('Start enabled', () => panel.locator('[data-action="start"]').isEnabled(), 30_000);
  await panel.locator('[data-action="start"]').click();
  const next = await until('a new loop process', () => {
    const info = loopInfo(ws);
    return info?.pid && info.pid !== pid && alive(info.pid) ? info.pid : null;
  }, 60_000);
  await until(`#${number} recorded as interrupted`, () => finalRecords(ws, number).some((r) => r.status === 'interrupted'), 60_000);
  const ends = finalRecords(ws, number);
  assert.deepEqual(ends.map((r) => r.status), ['interrupted'], `#${number} ended ${JSON.stringify(ends.map((r) => r.status))}`);
  const after = await until('the new loop to start an experiment after the killed one',
    () => ledger(ws).find((r) => r.number > number)?.number, 120_000);
  step(`the new loop (pid ${next}) recorded #${number} interrupted and goes on with #${after}`);
  await until(`the panel to show #${after}`, async () => (await rows(panel)).some((r) => r.number === after), 30_000);
  await until('the died banner to go', async () => !(await panel.locator('.banner.died').first().isVisible()), 30_000);
  return panel;
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
