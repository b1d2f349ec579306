/**
 * Which Python runs the language server: the `nightlab.python` setting, then the Python extension's
 * interpreter for the workspace, then `python3`. Checks that it has the `nightlab` package and, when
 * it has not, installs the wheel the .vsix carries (only when the user says so).
 */
import { execFile, spawn } from "node:child_process";
import { lstatSync, readdirSync, statSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as vscode from "vscode";

import { log } from "./log";

export interface Interpreter {
  path: string;
  /** where it came from, for messages: "the nightlab.python setting", ... */
  source: string;
  /** the environment to run it with (see `safeEnv`) */
  env: NodeJS.ProcessEnv;
}

/**
 * Python puts the working directory (or the script's folder) first on sys.path: a workspace holding a
 * `nightlab/` or `pygls/` folder would be imported instead of the installed package. Every Python the
 * extension starts runs outside the workspace, with PYTHONSAFEPATH (3.11+) for good measure.
 */
export function safeCwd(): string {
  return os.tmpdir();
}

function safeEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PYTHONSAFEPATH: "1" };
}

interface PythonExtensionApi {
  environments?: {
    getActiveEnvironmentPath(resource?: vscode.Uri): { path: string } | undefined;
    resolveEnvironment(env: { path: string } | string): Promise<{ executable?: { uri?: vscode.Uri } } | undefined>;
  };
}

export async function findPython(configured: string, resource?: vscode.Uri, trusted = true): Promise<Interpreter> {
  const env = safeEnv();
  // (in an untrusted workspace VS Code ignores a workspace value of nightlab.python: it is restricted)
  if (configured) return { path: configured, source: "the nightlab.python setting", env };
  const ext = trusted ? vscode.extensions.getExtension<PythonExtensionApi>("ms-python.python") : undefined;
  if (ext) {
    try {
      const api = ext.isActive ? ext.exports : await ext.activate();
      const active = api.environments?.getActiveEnvironmentPath(resource);
      const resolved = active ? await api.environments?.resolveEnvironment(active) : undefined;
      const exe = resolved?.executable?.uri?.fsPath;
      if (exe) return { path: exe, source: "the Python extension's interpreter", env };
    } catch (err) {
      log.warn(`the Python extension did not name an interpreter: ${String(err)}`);
    }
  }
  return { path: "python3", source: trusted ? "python3 on PATH" : "python3 on PATH (an untrusted workspace does not choose it)", env };
}

export type NightlabCheck =
  | { ok: true; version: string }
  | { ok: false; missing: "python" | "package"; detail: string };

const CHECK = "import importlib.metadata as m, nightlab.server; print(m.version('nightlab'))";

/** Where a passed check is remembered (the extension's globalState): the interpreter, as `stamp` saw it. */
const CHECKED_KEY = "nightlab.checkedPython";

interface Checked {
  stamp: string;
  version: string;
}

/**
 * The interpreter's file as it is now, with the extension's version: a new interpreter at that path (a
 * venv made again) or another extension checks again. Null for a bare name (`python3` on PATH), which
 * could be another file each time: that one is always checked.
 */
function stamp(python: string, extension: string): string | null {
  if (!path.isAbsolute(python)) return null;
  try {
    // lstat: a venv's python is a link, made anew with the venv; stat: the interpreter it points at
    return `${python}|${lstatSync(python).mtimeMs}|${statSync(python).mtimeMs}|${extension}`;
  } catch {
    return null;
  }
}

/**
 * The check, skipped when this interpreter passed it before (same file, same extension): it costs a
 * Python start (0.3 s and more while a reloaded window starts, in the e2e's log) that every start and
 * every Reload Window paid before the server itself started. `cached` says it was skipped: when the
 * server then fails to start (nightlab uninstalled since), the caller runs `checkNightlab` to say why,
 * after `forgetCheck`. (The version it returns is the one checked then: the log's, not the protocol's,
 * which the server's initialize answer says.)
 */
export async function checkNightlabOnce(
  python: string, memo: vscode.Memento, extension: string,
): Promise<NightlabCheck & { cached?: boolean }> {
  const key = stamp(python, extension);
  const known = memo.get<Checked>(CHECKED_KEY);
  if (key !== null && known?.stamp === key) return { ok: true, version: known.version, cached: true };
  const check = await checkNightlab(python);
  if (check.ok && key !== null) await memo.update(CHECKED_KEY, { stamp: key, version: check.version } satisfies Checked);
  return check;
}

export function forgetCheck(memo: vscode.Memento): Thenable<void> {
  return memo.update(CHECKED_KEY, undefined);
}

/** Does this interpreter run and have the nightlab package? */
export function checkNightlab(python: string): Promise<NightlabCheck> {
  return new Promise((resolve) => {
    execFile(python, ["-c", CHECK], { timeout: 60_000, cwd: safeCwd(), env: safeEnv() }, (err, stdout, stderr) => {
      if (!err) return resolve({ ok: true, version: stdout.trim() });
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "EACCES") {
        return resolve({ ok: false, missing: "python", detail: `${python} cannot be run (${code})` });
      }
      resolve({ ok: false, missing: "package", detail: (stderr || err.message).trim().split("\n").slice(-1)[0] });
    });
  });
}

/** The nightlab wheel packaged with the extension, if any. */
export function bundledWheel(extensionPath: string): string | undefined {
  const dir = path.join(extensionPath, "dist", "wheels");
  try {
    const wheel = readdirSync(dir).find((f) => f.startsWith("nightlab-") && f.endsWith(".whl"));
    return wheel ? path.join(dir, wheel) : undefined;
  } catch {
    return undefined;
  }
}

/** `python -m pip install <wheel>`, its output in the log, with a progress notification. */
export async function installWheel(python: string, wheel: string): Promise<void> {
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Installing Nightlab into ${python}`, cancellable: false },
    () =>
      new Promise<void>((resolve, reject) => {
        log.info(`${python} -m pip install ${wheel}`);
        const proc = spawn(python, ["-m", "pip", "install", wheel], { stdio: ["ignore", "pipe", "pipe"], cwd: safeCwd(), env: safeEnv() });
        let tail = "";
        const take = (chunk: Buffer) => {
          const text = chunk.toString();
          tail = (tail + text).slice(-2000);
          for (const line of text.split(/\r?\n/)) if (line) log.info(`pip: ${line}`);
        };
        proc.stdout.on("data", take);
        proc.stderr.on("data", take);
        proc.on("error", reject);
        proc.on("close", (code) =>
          code === 0 ? resolve() : reject(new Error(`pip exited with ${code}: ${tail.trim().split("\n").slice(-1)[0]}`)),
        );
      }),
  );
}
