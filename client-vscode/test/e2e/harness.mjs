// End-to-end harness: a real VS Code (code-server 4.100.3, VS Code 1.100.3) driven by
// Debian's Chromium through playwright-core.
//
//   const server = await startCodeServer({ workspace, settings, vsix, env });
//   const browser = await launchBrowser();
//   const page = await openWorkbench(browser, server.url, workspace);
//   await openFile(page, 'train.py');
//   await runCommand(page, 'Nightlab: Open the Experiments Panel');
//   const frame = await findFrame(page, '#experiments', 30_000);
//   ...
//   await browser.close(); await server.stop();
//
// code-server is installed by scripts/install-code-server.sh (ensureCodeServer() runs it when
// needed). Environment knobs:
//   NIGHTLAB_CODE_SERVER_BIN  code-server's entry point (skips the install script)
//   NIGHTLAB_CODE_SERVER_DIR  where the install script installs (see the script)
//   NIGHTLAB_CHROMIUM         the browser executable (default /usr/bin/chromium)
//   NIGHTLAB_E2E_KEEP=1       keep the temp dirs (user data, logs) after stop()
//   NIGHTLAB_E2E_DEBUG=1      echo code-server's output and the page's console to stderr

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const CLIENT_DIR = path.resolve(HERE, '..', '..');
export const INSTALL_SCRIPT = path.join(CLIENT_DIR, 'scripts', 'install-code-server.sh');
const DEBUG = process.env.NIGHTLAB_E2E_DEBUG === '1';

export const BROWSER_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export const VIEWPORT = { width: 1400, height: 900 };

// Settings that keep a fresh profile quiet and deterministic. The caller's settings win.
export const DEFAULT_SETTINGS = {
  'workbench.startupEditor': 'none',
  'workbench.tips.enabled': false,
  'workbench.enableExperiments': false,
  'workbench.welcomePage.walkthroughs.openOnInstall': false,
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
  'telemetry.telemetryLevel': 'off',
  'update.mode': 'none',
  'extensions.autoUpdate': false,
  'extensions.autoCheckUpdates': false,
  'extensions.ignoreRecommendations': true,
  'chat.commandCenter.enabled': false,
  'git.openRepositoryInParentFolders': 'never',
  'files.autoSave': 'off',
  'editor.acceptSuggestionOnEnter': 'off',
  'editor.quickSuggestions': { other: false, comments: false, strings: false },
  'editor.suggestOnTriggerCharacters': false,
  'editor.autoClosingBrackets': 'never',
  'editor.autoClosingQuotes': 'never',
  'editor.autoIndent': 'none',
  'editor.formatOnType': false,
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error('[harness]', ...a);

// ---------------------------------------------------------------------------------------------
// Process bookkeeping: whatever we start is killed when this process exits, even on a crash.

const live = new Set(); // { pid, tmp, keep }
const browserDirs = new Set();

function descendants(rootPid) {
  // Walk /proc for the whole tree: node-pty terminals call setsid() and leave our process group.
  const children = new Map();
  let entries = [];
  try { entries = fs.readdirSync('/proc'); } catch { return []; }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const st = procStat(e);
    if (!st) continue;
    if (!children.has(st[1])) children.set(st[1], []);
    children.get(st[1]).push(Number(e));
  }
  const out = [];
  const stack = [rootPid];
  while (stack.length) {
    for (const c of children.get(stack.pop()) ?? []) { out.push(c); stack.push(c); }
  }
  return out;
}

function killTree(pid, signal) {
  const pids = descendants(pid);
  try { process.kill(-pid, signal); } catch { /* group gone */ }
  for (const p of [pid, ...pids]) { try { process.kill(p, signal); } catch { /* gone */ } }
}

function procStat(pid) {
  // [state, ppid, pgid] from /proc/PID/stat, or null when the process is gone.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [f[0], Number(f[1]), Number(f[2])];
  } catch { return null; }
}

// Alive and not a zombie (PID 1 in a container may reap late).
function alive(pid) {
  const st = procStat(pid);
  return st !== null && st[0] !== 'Z';
}

function groupAlive(pgid) {
  let entries = [];
  try { entries = fs.readdirSync('/proc'); } catch { return false; }
  return entries.some((e) => {
    if (!/^\d+$/.test(e)) return false;
    const st = procStat(e);
    return st !== null && st[2] === pgid && st[0] !== 'Z';
  });
}

let exitHooked = false;
function hookExit() {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const s of live) {
      killTree(s.pid, 'SIGKILL');
      if (!s.keep) { try { fs.rmSync(s.tmp, { recursive: true, force: true }); } catch { /* ignore */ } }
    }
    for (const d of browserDirs) { try { fs.rmSync(d, { recursive: true, force: true }); } catch { /* ignore */ } }
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => process.exit(128 + os.constants.signals[sig]));
  }
}

// ---------------------------------------------------------------------------------------------
// code-server

let cachedBin = null;

/** Path of code-server's entry point; installs code-server (scripts/install-code-server.sh) if needed. */
export async function ensureCodeServer({ timeoutMs = 15 * 60_000 } = {}) {
  if (cachedBin) return cachedBin;
  const fromEnv = process.env.NIGHTLAB_CODE_SERVER_BIN;
  if (fromEnv) {
    if (!fs.existsSync(fromEnv)) throw new Error(`NIGHTLAB_CODE_SERVER_BIN=${fromEnv} does not exist`);
    return (cachedBin = fromEnv);
  }
  const quick = spawnSync('bash', [INSTALL_SCRIPT, '--print-bin'], { encoding: 'utf8' });
  if (quick.status === 0 && quick.stdout.trim()) return (cachedBin = quick.stdout.trim().split('\n').pop());
  log(`code-server is not installed; running ${INSTALL_SCRIPT} (takes a few minutes the first time)`);
  const { code, stdout } = await runProcess('bash', [INSTALL_SCRIPT], {
    timeoutMs, stderr: 'inherit',
  });
  if (code !== 0) throw new Error(`${INSTALL_SCRIPT} failed with exit code ${code}`);
  const bin = stdout.trim().split('\n').pop();
  if (!bin || !fs.existsSync(bin)) throw new Error(`${INSTALL_SCRIPT} printed no entry point (got "${bin}")`);
  return (cachedBin = bin);
}

/** Runs a command to completion; resolves { code, signal, stdout, stderr, output }. */
function runProcess(cmd, args, { env = process.env, cwd, timeoutMs = 120_000, stderr = 'pipe' } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', stderr], detached: true });
    let stdout = '', err = '', output = '';
    child.stdout.on('data', (d) => { stdout += d; output += d; });
    child.stderr?.on('data', (d) => { err += d; output += d; });
    const timer = setTimeout(() => {
      killTree(child.pid, 'SIGKILL');
      reject(new Error(`timed out after ${timeoutMs} ms: ${cmd} ${args.join(' ')}\n${output}`));
    }, timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr: err, output }); });
  });
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function httpOk(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5_000), redirect: 'manual' });
    await res.arrayBuffer().catch(() => {});
    return res.status;
  } catch {
    return 0;
  }
}

function codeServerEnv(tmp, extra) {
  const env = { ...process.env };
  // Inside a VS Code terminal VSCODE_IPC_HOOK_CLI makes code-server hand its arguments to that
  // editor instead of starting; $PORT overrides --bind-addr.
  for (const k of Object.keys(env)) {
    if (k.startsWith('VSCODE_') || k === 'PORT' || k === 'CODE_SERVER_HOST' || k.startsWith('CODE_SERVER_')
      || k === 'ELECTRON_RUN_AS_NODE') delete env[k];
  }
  Object.assign(env, {
    XDG_CONFIG_HOME: path.join(tmp, 'xdg-config'),
    XDG_DATA_HOME: path.join(tmp, 'xdg-data'),
    XDG_CACHE_HOME: path.join(tmp, 'xdg-cache'),
    TMPDIR: path.join(tmp, 'tmp'),
    CS_DISABLE_FILE_DOWNLOADS: '1',
    // Without it the server runs the login shell (`$SHELL -ilc env`) to resolve "the user's
    // environment" before it starts the extension host; where that shell hangs (it does on these
    // machines) every start waits 10 s for the timeout, and a profile could override our env.
    VSCODE_CLI: '1',
  });
  return { ...env, ...extra };
}

/**
 * Starts code-server on a free port with a throw-away profile.
 *
 * @param {object} o
 * @param {string} [o.workspace]  folder opened by default (openWorkbench names it again anyway)
 * @param {object} [o.settings]   user settings (merged over DEFAULT_SETTINGS)
 * @param {string} [o.vsix]       a .vsix to install first (--install-extension)
 * @param {object} [o.env]        merged into code-server's environment (the extension host and
 *                                the language server inherit it)
 * @param {'disabled'|'prompt'|'restricted'} [o.trust]
 *     'disabled' (default): --disable-workspace-trust, every folder is trusted;
 *     'prompt': Workspace Trust on, the startup dialog appears; answer it with
 *               openWorkbench(..., { trust: 'accept' | 'decline' });
 *     'restricted': Workspace Trust on, no dialog: the folder opens in Restricted Mode.
 * @param {string[]} [o.args]      extra code-server arguments
 * @param {number} [o.startTimeoutMs]
 * @param {boolean} [o.keepTemp]  keep the temp dir after stop() (default: NIGHTLAB_E2E_KEEP=1)
 */
export async function startCodeServer({
  workspace, settings = {}, vsix = null, env = {}, trust = 'disabled', args = [],
  startTimeoutMs = 120_000, keepTemp = process.env.NIGHTLAB_E2E_KEEP === '1',
} = {}) {
  if (!['disabled', 'prompt', 'restricted'].includes(trust)) throw new Error(`trust: unknown value ${trust}`);
  const bin = await ensureCodeServer();
  const nodeExe = process.env.NIGHTLAB_CODE_SERVER_NODE || 'node';
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'nightlab-e2e-'));
  const userDataDir = path.join(tmp, 'user-data');
  const extensionsDir = path.join(tmp, 'extensions');
  for (const d of [userDataDir, extensionsDir, 'xdg-config', 'xdg-data', 'xdg-cache', 'tmp']) {
    await fsp.mkdir(path.resolve(tmp, d), { recursive: true });
  }
  const allSettings = { ...DEFAULT_SETTINGS };
  if (trust !== 'disabled') {
    allSettings['security.workspace.trust.enabled'] = true;
    allSettings['security.workspace.trust.startupPrompt'] = trust === 'prompt' ? 'always' : 'never';
    allSettings['security.workspace.trust.emptyWindow'] = false;
  }
  Object.assign(allSettings, settings);
  await fsp.mkdir(path.join(userDataDir, 'User'), { recursive: true });
  await fsp.writeFile(path.join(userDataDir, 'User', 'settings.json'), JSON.stringify(allSettings, null, 2));

  const fullEnv = codeServerEnv(tmp, env);
  const common = ['--user-data-dir', userDataDir, '--extensions-dir', extensionsDir];

  const record = { pid: 0, tmp, keep: keepTemp };
  hookExit();

  if (vsix) {
    const vsixPath = path.resolve(vsix);
    if (!fs.existsSync(vsixPath)) throw new Error(`vsix not found: ${vsixPath}`);
    const r = await runProcess(nodeExe, [bin, ...common, '--install-extension', vsixPath, '--force'], {
      env: fullEnv, cwd: tmp, timeoutMs: 180_000,
    });
    if (r.code !== 0 || !/successfully installed/i.test(r.output)) {
      if (!keepTemp) await fsp.rm(tmp, { recursive: true, force: true });
      throw new Error(`code-server --install-extension ${vsixPath} failed (exit ${r.code}):\n${r.output}`);
    }
    if (DEBUG) log(r.output.trim());
  }

  let out = '';
  const MAX_LOG = 4 * 1024 * 1024;
  const append = (d) => {
    out += d;
    if (out.length > MAX_LOG) out = out.slice(out.length - MAX_LOG / 2);
    if (DEBUG) process.stderr.write(`[code-server] ${d}`);
  };

  let child, port, url;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const argv = [
      bin, ...common,
      '--bind-addr', `127.0.0.1:${port}`,
      '--auth', 'none',
      '--disable-telemetry',
      '--disable-update-check',
      '--disable-getting-started-override',
      '--ignore-last-opened',
      ...(trust === 'disabled' ? ['--disable-workspace-trust'] : []),
      ...args,
      ...(workspace ? [path.resolve(workspace)] : []),
    ];
    append(`$ ${nodeExe} ${argv.join(' ')}\n`);
    child = spawn(nodeExe, argv, {
      env: fullEnv, cwd: workspace ? path.resolve(workspace) : tmp,
      stdio: ['ignore', 'pipe', 'pipe'], detached: true,
    });
    record.pid = child.pid;
    live.add(record);
    let exited = null;
    child.on('exit', (code, signal) => { exited = { code, signal }; append(`[code-server exited: code ${code}, signal ${signal}]\n`); });
    child.on('error', (e) => { exited = { error: e }; append(`[spawn error: ${e.message}]\n`); });
    child.stdout.on('data', append);
    child.stderr.on('data', append);

    const deadline = Date.now() + startTimeoutMs;
    let ready = false;
    while (Date.now() < deadline && !exited) {
      if ((await httpOk(`${url}/healthz`)) === 200) { ready = true; break; }
      await sleep(250);
    }
    if (ready) break;
    if (!exited) killTree(child.pid, 'SIGKILL');
    live.delete(record);
    if (exited && /EADDRINUSE/.test(out) && attempt < 3) continue; // lost the port race: retry
    if (!keepTemp) await fsp.rm(tmp, { recursive: true, force: true });
    throw new Error(`code-server did not answer on ${url}/healthz within ${startTimeoutMs} ms`
      + `${exited ? ' (it exited)' : ''}. Its output:\n${out.slice(-8000)}`);
  }

  let stopped = null;
  const server = {
    url,
    port,
    pid: child.pid,
    userDataDir,
    extensionsDir,
    tempDir: tmp,
    workspace: workspace ? path.resolve(workspace) : null,
    /** code-server's stdout and stderr so far. */
    logs: () => out,
    /** VS Code's own log files (extension host, output channels, ...) concatenated; read before stop(). */
    vscodeLogs: () => readLogs(path.join(userDataDir, 'logs')),
    /** Kills code-server and everything it started (the whole tree); removes the temp dir. */
    stop: () => (stopped ??= (async () => {
      const running = () => child.exitCode === null && child.signalCode === null;
      // Remember the tree first: once code-server is gone its children are reparented, and
      // terminals (setsid) are outside its process group.
      const tree = new Set(running() ? descendants(child.pid) : []);
      const signal = (sig) => {
        if (running()) for (const p of descendants(child.pid)) tree.add(p);
        try { process.kill(-child.pid, sig); } catch { /* group gone */ }
        for (const p of [...(running() ? [child.pid] : []), ...tree]) { try { process.kill(p, sig); } catch { /* gone */ } }
      };
      signal('SIGTERM');
      for (let i = 0; i < 50 && running(); i++) await sleep(100);
      signal('SIGKILL');
      for (let i = 0; i < 50 && (running() || [...tree].some(alive) || groupAlive(child.pid)); i++) await sleep(100);
      live.delete(record);
      if (!keepTemp) await fsp.rm(tmp, { recursive: true, force: true }).catch(() => {});
      else log(`kept ${tmp}`);
    })()),
  };
  return server;
}

function readLogs(dir) {
  const parts = [];
  const walk = (d) => {
    let entries = [];
    try { entries = fs.readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.log')) {
        try { parts.push(`===== ${path.relative(dir, p)} =====\n${fs.readFileSync(p, 'utf8')}`); } catch { /* ignore */ }
      }
    }
  };
  walk(dir);
  return parts.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Browser

/** Debian's Chromium through playwright-core. Close it with browser.close(). */
export async function launchBrowser({ executablePath, args = [], headless = true, timeoutMs = 60_000 } = {}) {
  const exe = executablePath || process.env.NIGHTLAB_CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(exe)) {
    throw new Error(`no Chromium at ${exe}: run scripts/install-code-server.sh (it installs Debian's chromium) or set NIGHTLAB_CHROMIUM`);
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    throw new Error(`cannot load playwright-core (${e.message}): run "npm ci" in ${CLIENT_DIR}`);
  }
  // Chromium keeps a crash database under XDG_CONFIG_HOME whatever the profile: keep it in a temp dir.
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'nightlab-chromium-'));
  browserDirs.add(home);
  hookExit();
  const cleanup = () => { browserDirs.delete(home); fs.rmSync(home, { recursive: true, force: true }); };
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: exe,
      headless,
      args: [...BROWSER_ARGS.filter((a) => headless || a !== '--headless'), ...args],
      env: { ...process.env, XDG_CONFIG_HOME: path.join(home, 'config'), XDG_CACHE_HOME: path.join(home, 'cache') },
      timeout: timeoutMs,
    });
  } catch (e) {
    cleanup();
    throw e;
  }
  browser.on('disconnected', cleanup);
  return browser;
}

const pageLogs = new WeakMap();

/** The page's console messages and uncaught errors so far (one string). */
export function consoleLogs(page) {
  return (pageLogs.get(page) ?? []).join('\n');
}

/**
 * Opens the workbench on `folder` in a new browser context (viewport 1400x900) and waits until
 * it is ready (workbench, explorer and status bar rendered).
 * @param {'accept'|'decline'|'leave'} [o.trust] how to answer the Workspace Trust dialog, if one
 *   shows up (only with startCodeServer({ trust: 'prompt' })); default 'leave'.
 */
export async function openWorkbench(browser, url, folder, { trust = 'leave', timeoutMs = 120_000, viewport = VIEWPORT } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const lines = [];
  pageLogs.set(page, lines);
  const push = (s) => { lines.push(s); if (lines.length > 5000) lines.splice(0, 1000); if (DEBUG) log(`[page] ${s}`); };
  page.on('console', (m) => push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => push(`pageerror: ${e.message}`));
  page.setDefaultTimeout(30_000);

  const target = folder ? `${url}/?folder=${encodeURIComponent(path.resolve(folder))}` : `${url}/`;
  await page.goto(target, { waitUntil: 'domcontentloaded', timeout: timeoutMs });
  await page.locator('.monaco-workbench').first().waitFor({ state: 'visible', timeout: timeoutMs });
  // The workbench is usable once the status bar and the editor part are laid out.
  await page.locator('.monaco-workbench .part.statusbar').first().waitFor({ state: 'visible', timeout: timeoutMs });
  await page.locator('.monaco-workbench .part.editor').first().waitFor({ state: 'visible', timeout: timeoutMs });

  if (trust !== 'leave') await answerTrustDialog(page, trust, { timeoutMs: 30_000 });
  if (folder) {
    // The explorer shows the folder once the remote file system is connected.
    await page.locator('.explorer-folders-view, .explorer-viewlet').first()
      .waitFor({ state: 'attached', timeout: timeoutMs }).catch(() => {});
  }
  return page;
}

/**
 * Answers the Workspace Trust dialog ("Do you trust the authors of the files in this folder?").
 * Returns true if a dialog was answered, false if none appeared within timeoutMs.
 */
export async function answerTrustDialog(page, answer = 'accept', { timeoutMs = 30_000 } = {}) {
  const dialog = page.locator('.monaco-dialog-box');
  try {
    await dialog.first().waitFor({ state: 'visible', timeout: timeoutMs });
  } catch {
    return false;
  }
  const label = answer === 'accept' ? /^Yes, I trust/ : /^No, I don.t trust/;
  await dialog.getByRole('button', { name: label }).first().click();
  await dialog.first().waitFor({ state: 'hidden', timeout: 30_000 });
  return true;
}

/** Moves keyboard focus out of webview iframes back to the workbench (keys would go to the webview). */
export async function focusWorkbench(page) {
  await page.evaluate(() => {
    const a = document.activeElement;
    if (a && (a.tagName === 'IFRAME' || a.closest?.('.webview'))) a.blur();
  });
}

async function quickInput(page) {
  const widget = page.locator('.quick-input-widget');
  await widget.first().waitFor({ state: 'visible', timeout: 30_000 });
  return widget.first();
}

async function closeQuickInput(page) {
  const widget = page.locator('.quick-input-widget').first();
  if (await widget.isVisible().catch(() => false)) {
    await page.keyboard.press('Escape');
    await widget.waitFor({ state: 'hidden', timeout: 5_000 }).catch(() => {});
  }
}

/** The rows the quick input (command palette, Quick Open, an extension's quick pick) now shows. */
export async function quickPickItems(page) {
  return page.locator('.quick-input-widget .quick-input-list .monaco-list-row').evaluateAll((rows) => rows.map((r) => ({
    index: Number(r.getAttribute('data-index')),
    label: (r.querySelector('.label-name')?.textContent ?? '').trim(),
    description: (r.querySelector('.label-description')?.textContent ?? '').trim(),
    aria: r.getAttribute('aria-label') ?? '',
  })));
}

function matches(row, want) {
  if (want instanceof RegExp) return want.test(row.label) || want.test(row.aria);
  return row.label === want;
}

// After accepting, the widget hides, or (a command that asks for input) shows something else:
// another value, or the list without the row that was clicked.
async function quickInputDone(widget, input, typed, row = null, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await widget.isVisible().catch(() => false))) return;
    if ((await input.inputValue().catch(() => typed)) !== typed) return;
    if (row && !(await row.isVisible().catch(() => false))) return;
    await sleep(100);
  }
}

async function clickRow(widget, input, typed, hit) {
  const row = widget.locator(`.quick-input-list .monaco-list-row[data-index="${hit.index}"]`);
  await row.click();
  await quickInputDone(widget, input, typed, row.filter({ hasText: hit.label }));
}

/**
 * Clicks the row of the open quick input (an extension's showQuickPick, or the palette) whose
 * label equals `label` (or matches a RegExp), typing `filter` first when given.
 */
export async function pickQuickItem(page, label, { filter = null, timeoutMs = 30_000 } = {}) {
  const widget = await quickInput(page);
  const input = widget.locator('.quick-input-box input').first();
  if (filter !== null) await input.fill(filter);
  const typed = await input.inputValue().catch(() => '');
  const deadline = Date.now() + timeoutMs;
  let rows = [];
  while (Date.now() < deadline) {
    rows = await quickPickItems(page);
    const hit = rows.find((r) => matches(r, label));
    if (hit) {
      await clickRow(widget, input, typed, hit);
      return hit;
    }
    await sleep(200);
  }
  throw new Error(`pickQuickItem: no item ${label}; the quick input showed: ${JSON.stringify(rows.map((r) => r.label))}`);
}

/** Types `text` into an open input box (an extension's showInputBox) and presses Enter. */
export async function answerInputBox(page, text, { timeoutMs = 30_000 } = {}) {
  const widget = page.locator('.quick-input-widget').first();
  await widget.waitFor({ state: 'visible', timeout: timeoutMs });
  const input = widget.locator('.quick-input-box input').first();
  await input.fill(text);
  await input.press('Enter');
  await quickInputDone(widget, input, text);
}

/**
 * Runs a command from the command palette (F1) by its label there: category and title, e.g.
 * 'Nightlab: Start the Loop'. A RegExp is matched against the label; pass `query` then, the text
 * typed into the palette (default: the RegExp's source without ^ $ \).
 */
export async function runCommand(page, title, { query = null, timeoutMs = 30_000 } = {}) {
  await focusWorkbench(page);
  await closeQuickInput(page);
  await page.keyboard.press('F1');
  const widget = await quickInput(page);
  const input = widget.locator('.quick-input-box input').first();
  const typed = `>${query ?? (title instanceof RegExp ? title.source.replace(/[\^$\\]/g, '') : title)}`;
  await input.fill(typed);
  const deadline = Date.now() + timeoutMs;
  let rows = [];
  while (Date.now() < deadline) {
    rows = await quickPickItems(page);
    const hit = rows.find((r) => matches(r, title));
    if (hit) {
      await clickRow(widget, input, typed, hit);
      return;
    }
    await sleep(200);
  }
  await closeQuickInput(page);
  throw new Error(`runCommand: no command "${title}" in the palette; it showed: ${JSON.stringify(rows.map((r) => r.label))}`);
}

/**
 * Opens a workspace file by its path relative to the folder through Quick Open (Ctrl+P) and waits
 * until its editor is active. Returns the editor's locator.
 */
export async function openFile(page, relPath, { timeoutMs = 30_000 } = {}) {
  const rel = relPath.split(path.sep).join('/');
  const base = rel.split('/').pop();
  await focusWorkbench(page);
  await closeQuickInput(page);
  await page.keyboard.press('Control+P');
  const widget = await quickInput(page);
  const input = widget.locator('.quick-input-box input').first();
  await input.fill(rel);
  const dir = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
  const deadline = Date.now() + timeoutMs;
  let retypeAt = Date.now() + 5_000;
  let rows = [];
  while (Date.now() < deadline) {
    rows = await quickPickItems(page);
    const hit = rows.find((r) => r.label === base && (!dir || r.description.replace(/\\/g, '/').endsWith(dir)));
    if (hit) {
      await clickRow(widget, input, rel, hit);
      return waitForEditor(page, rel, { timeoutMs: Math.max(5_000, deadline - Date.now()) });
    }
    await sleep(200);
    if (Date.now() > retypeAt) {
      // A search that ran before the file index was ready is not repeated by itself: type again.
      retypeAt = Date.now() + 5_000;
      await input.fill('');
      await input.fill(rel);
    }
  }
  await closeQuickInput(page);
  throw new Error(`openFile: Quick Open found no "${rel}"; it showed: ${JSON.stringify(rows.map((r) => `${r.label} ${r.description}`))}`);
}

/** Waits until the active editor shows a file whose URI ends with relPath; returns its locator. */
export async function waitForEditor(page, relPath, { timeoutMs = 30_000 } = {}) {
  // Encoded the way VS Code's URI.toString() does: everything but [A-Za-z0-9-._~].
  const enc = (seg) => encodeURIComponent(seg).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const suffix = '/' + relPath.split(path.sep).join('/').split('/').map(enc).join('/');
  const editor = page.locator(`.editor-group-container.active .editor-instance .monaco-editor[data-uri$="${suffix}"]`).first();
  await editor.waitFor({ state: 'visible', timeout: timeoutMs });
  return editor;
}

/** Clicks into the active text editor (puts the keyboard there) and returns its locator. */
export async function focusEditor(page) {
  const editor = page.locator('.editor-group-container.active .editor-instance .monaco-editor').first();
  await editor.waitFor({ state: 'visible' });
  await editor.locator('.view-lines').first().click();
  return editor;
}

/** Types into the active editor at the cursor (Ctrl+End first with atEnd). */
export async function typeInEditor(page, text, { atEnd = false, delay = 20 } = {}) {
  await focusEditor(page);
  if (atEnd) await page.keyboard.press('Control+End');
  await page.keyboard.type(text, { delay });
}

/** Saves the active editor (Ctrl+S) and waits until its tab is no longer dirty. */
export async function saveActiveEditor(page, { timeoutMs = 15_000 } = {}) {
  await focusEditor(page);
  await page.keyboard.press('Control+S');
  await page.locator('.editor-group-container.active .tab.active.dirty').first()
    .waitFor({ state: 'detached', timeout: timeoutMs });
}

/** The text of the active editor's visible lines (what is rendered, not the whole model). */
export async function editorText(page) {
  return page.locator('.editor-group-container.active .monaco-editor .view-lines').first()
    .evaluate((el) => [...el.querySelectorAll('.view-line')]
      .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
      .map((l) => l.textContent.replace(/\u00a0/g, ' ')).join('\n'));
}

/**
 * Loops over page.frames() (webview content lives in nested iframes) until one matches.
 * `what` is a CSS selector that must be attached in the frame, or a predicate
 * (frame) => boolean | Promise<boolean>. Returns the frame.
 */
export async function findFrame(page, what, timeoutMs = 30_000, intervalMs = 250) {
  const deadline = Date.now() + timeoutMs;
  const test = typeof what === 'function'
    ? what
    : async (f) => (await f.locator(what).count().catch(() => 0)) > 0;
  while (Date.now() < deadline) {
    for (const f of page.frames()) {
      if (f.isDetached()) continue;
      try { if (await test(f)) return f; } catch { /* frame navigated away */ }
    }
    await sleep(intervalMs);
  }
  throw new Error(`findFrame: no frame matched ${typeof what === 'function' ? 'the predicate' : `"${what}"`} within ${timeoutMs} ms`
    + ` (frames: ${page.frames().map((f) => f.url().slice(0, 100)).join(', ')})`);
}

/** The messages of the notification toasts now visible. */
export async function notifications(page) {
  return page.locator('.notifications-toasts .notification-toast .notification-list-item-message')
    .evaluateAll((els) => els.map((e) => e.textContent.trim()));
}

/** Waits for a notification toast whose message matches `text` (string: substring; or RegExp). */
export async function waitForNotification(page, text, { timeoutMs = 30_000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let seen = [];
  while (Date.now() < deadline) {
    seen = await notifications(page);
    const hit = seen.find((m) => (text instanceof RegExp ? text.test(m) : m.includes(text)));
    if (hit) return hit;
    await sleep(250);
  }
  throw new Error(`waitForNotification: none matched ${text} within ${timeoutMs} ms; visible: ${JSON.stringify(seen)}`);
}

/** Closes all notification toasts (and the notification center). */
export async function dismissNotifications(page) {
  for (let i = 0; i < 20; i++) {
    const close = page.locator('.notifications-toasts .notification-toast .codicon-notifications-clear').first();
    if (!(await close.count())) break;
    // The close button only shows while the toast is hovered.
    await close.locator('xpath=ancestor::div[contains(@class,"notification-toast")]').first().hover().catch(() => {});
    await close.click({ timeout: 2_000 }).catch(() => {});
    await sleep(100);
  }
}

/** Full-page screenshot; creates the directory. */
export async function screenshot(page, file) {
  await fsp.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await page.screenshot({ path: file });
  return file;
}

/** Rejects after ms unless the promise settles first. */
export async function withTimeout(promise, ms, what = 'operation') {
  let timer;
  try {
    return await Promise.race([
      promise,
      new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`${what} timed out after ${ms} ms`)), ms); }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
