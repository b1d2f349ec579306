// The loop process as the end-to-end test sees it from outside VS Code: its loop.json, its ledger, the
// CLI, /proc. A detached loop outlives code-server by design, so the test kills whatever loop it left
// (killLoops) whether it passed or not.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** The running loop's {pid, socket, log} from .nightlab/<tag>/loop.json, or null. */
export function loopInfo(ws, tag = 'main') {
  try { return JSON.parse(fs.readFileSync(path.join(ws, '.nightlab', tag, 'loop.json'), 'utf8')); } catch { return null; }
}

/** Alive and not a zombie. */
export function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch { return false; }
}

/** Every ledger line of the tag, parsed, in order. */
export function ledger(ws, tag = 'main') {
  let text = '';
  try { text = fs.readFileSync(path.join(ws, '.nightlab', tag, 'experiments.jsonl'), 'utf8'); } catch { return []; }
  return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

const FINAL = new Set(['keep', 'discard', 'crash', 'interrupted']);

/** The records of experiment `number` that end it (keep, discard, crash, interrupted). */
/** The experiments with a "running" record and no final one: in flight (or, once the loop died, killed). */
export function inFlight(ws) {
  const records = ledger(ws);
  const done = new Set(records.filter((r) => FINAL.has(r.status)).map((r) => r.number));
  return [...new Set(records.filter((r) => r.status === 'running' && !done.has(r.number)).map((r) => r.number))];
}

export function finalRecords(ws, number) {
  return ledger(ws).filter((r) => r.number === number && FINAL.has(r.status));
}

/** The numbers of the experiments that measured the baseline. */
export function baselines(ws) {
  return new Set(ledger(ws).filter((r) => r.description === 'baseline').map((r) => r.number));
}

/** The last non-empty line of the loop's log. */
export function lastLogLine(ws, tag = 'main') {
  const lines = fs.readFileSync(path.join(ws, '.nightlab', tag, 'loop.log'), 'utf8').split('\n').map((l) => l.trim());
  return lines.filter(Boolean).pop() ?? '';
}

/** `nightlab <args>` (the CLI's own entry point), its stdout. */
export function nightlab(python, env, ...args) {
  return execFileSync(python, ['-m', 'nightlab.server.cli', ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
}

function cmdline(pid) {
  try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'); } catch { return []; }
}

function cwd(pid) {
  try { return fs.readlinkSync(`/proc/${pid}/cwd`); } catch { return ''; }
}

/** Pids of loop processes (`python -m nightlab.server.cli run ...`) on this workspace. */
export function loopPids(ws) {
  return fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
    const argv = cmdline(pid);
    const i = argv.indexOf('nightlab.server.cli');
    if (i < 0 || argv[i + 1] !== 'run' || !alive(pid)) return false;
    return argv.some((a) => a === ws || a.startsWith(`${ws}/`)) || cwd(pid) === ws;
  });
}

/** Kills every loop left on the workspace, with its process group (its runs); returns the pids killed. */
export function killLoops(ws) {
  const pids = new Set(loopPids(ws));
  const info = loopInfo(ws);
  if (info?.pid && alive(info.pid) && cmdline(info.pid).includes('nightlab.server.cli')) pids.add(info.pid);
  for (const pid of pids) {
    try { process.kill(-pid, 'SIGKILL'); } catch { /* not a group leader */ }
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  return [...pids];
}
