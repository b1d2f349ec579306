/**
 * Starts, restarts and stops the language server (`python -m nightlab.server`) through
 * vscode-languageclient, and re-emits Nightlab's notifications as VS Code events.
 *
 * The server runs our own package, not the workspace's code: it starts in untrusted workspaces too, so
 * the panel can show the ledger. What runs workspace code (starting the loop, reruns, baselines) is
 * refused here, before it reaches the server, while the workspace is untrusted.
 */
import { existsSync, realpathSync } from "node:fs";
import * as vscode from "vscode";
import {
  LanguageClient,
  type LanguageClientOptions,
  RevealOutputChannelOn,
  type ServerOptions,
  State,
} from "vscode-languageclient/node";

import {
  Commands,
  EXPERIMENTAL_CAPABILITY,
  Methods,
  PROTOCOL_VERSION,
  type AcceptResult,
  type ExperimentDiff,
} from "../../../protocol/nightlab-protocol";
import { logChannel, log } from "./log";
import { bundledWheel, checkNightlab, checkNightlabOnce, findPython, forgetCheck, installWheel, safeCwd, type Interpreter, type NightlabCheck } from "./python";
import { initializationOptions, readSettings } from "./settings";

/** When the extension's code was loaded (the bundle evaluated): the log says how long activation took after it. */
const LOADED_AT = Date.now();

export type ServerStatus = "starting" | "running" | "stopped" | "errored" | "unavailable";

export interface Notification {
  method: string;
  params: any;
}

/** Commands that run the workspace's code: refused in an untrusted workspace. */
const RUNS_CODE: ReadonlySet<string> = new Set([Commands.loopStart, Commands.experimentRerun, Commands.baselineMeasure]);

export const API_KEY_SECRET = "nightlab.anthropicApiKey";
/** Whether SecretStorage holds an API key, as last read (globalState: a flag, never the key). */
const KEY_STORED = "nightlab.apiKeyStored";

function realRoot(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/** The workspace folder of the loop: the first with a nightlab.toml (or autoresearch's files), else the first. */
export async function loopFolder(): Promise<vscode.WorkspaceFolder | undefined> {
  const folders = vscode.workspace.workspaceFolders ?? [];
  for (const folder of folders) {
    for (const marker of ["nightlab.toml", "prepare.py"]) {
      const uri = vscode.Uri.joinPath(folder.uri, marker);
      // a file: folder is on the extension host's machine: a stat here needs no await (in a reloaded
      // window each await lets the extension host's other start-up work go first, the server unspawned)
      if (uri.scheme === "file") {
        if (existsSync(uri.fsPath)) return folder;
        continue;
      }
      try {
        await vscode.workspace.fs.stat(uri);
        return folder;
      } catch {
        // not this one
      }
    }
  }
  return folders[0];
}

export class ServerManager implements vscode.Disposable {
  private client: LanguageClient | undefined;
  /** the start in progress: a second start() waits for it instead of making a second client */
  private starting: Promise<void> | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  /** files that had unsaved changes when an accept was sent (see `afterAccept`) */
  private dirtyBeforeAccept = new Set<string>();
  private readonly notifications = new vscode.EventEmitter<Notification>();
  private readonly statusChanged = new vscode.EventEmitter<ServerStatus>();
  private readonly failures = new vscode.EventEmitter<string>();
  private readonly reviewed = new vscode.EventEmitter<{ number: number; review: "accepted" | "rejected" }>();
  /** an experiment was accepted or rejected (the ledger records it; no notification says so) */
  readonly onReview = this.reviewed.event;
  readonly onNotification = this.notifications.event;
  /** a command failed: the message, for the panel to show where the user clicked */
  readonly onCommandError = this.failures.event;
  readonly onStatus = this.statusChanged.event;
  status: ServerStatus = "stopped";
  /** the loop folder's path (the server's `root`), once started */
  root: string | null = null;
  /** the running server's nightlab.stopLoopOnExit (what it was started with: a new value takes effect on restart) */
  private stopsLoopOnExit = false;
  /** why the server is not running, in words a person can act on */
  problem: string | null = null;

  /** the first start (the window's): it may go without waiting on SecretStorage (see `apiKey`) */
  private firstStart = true;
  private readonly keyWatch: vscode.Disposable;

  constructor(
    private readonly context: vscode.ExtensionContext,
    /** opens a diff editor; the server's showDiff command is answered here */
    private readonly showDiff: (diff: ExperimentDiff) => Promise<void>,
  ) {
    // the flag follows the key wherever it is stored or deleted (this window, another, a declined restart)
    this.keyWatch = context.secrets.onDidChange((e) => {
      if (e.key === API_KEY_SECRET) void Promise.resolve(context.secrets.get(API_KEY_SECRET)).then((key) => this.keyRead(key), () => undefined);
    });
  }

  get running(): boolean {
    return this.client?.state === State.Running;
  }

  start(): Promise<void> {
    if (this.client) return Promise.resolve();
    this.starting ??= this.doStart().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const began = Date.now();
    const since = () => `${Date.now() - began} ms`; // where a (re)start's time goes, in the log
    log.info(`starting the server (the extension's code was loaded ${began - LOADED_AT} ms before)`);
    const secret = this.apiKey();
    const folder = await loopFolder();
    if (!folder) {
      this.problem = "Open a folder with a nightlab.toml (made by `nightlab init`) to use Nightlab.";
      return this.setStatus("unavailable");
    }
    this.setStatus("starting");
    const settings = readSettings(folder.uri);
    this.stopsLoopOnExit = settings.stopLoopOnExit;
    this.root = realRoot(folder.uri.fsPath); // the server names folders by their resolved path
    // An untrusted workspace does not choose the interpreter: the Python extension may have picked the
    // workspace's own .venv, whose site-packages run code at start-up.
    const python = await findPython(settings.python, folder.uri, vscode.workspace.isTrusted);
    log.info(`python: ${python.path} (${python.source}), ${since()}`);
    const extension = String(this.context.extension.packageJSON.version ?? "");
    let check: NightlabCheck & { cached?: boolean } = await checkNightlabOnce(python.path, this.context.globalState, extension);
    log.info(`nightlab ${check.cached ? "check cached" : "checked"}: ${check.ok ? check.version : check.detail}, ${since()}`);
    if (!check.ok && check.missing === "package") check = await this.offerInstall(python.path, check.detail);
    if (!check.ok) return this.fail("unavailable", this.unusable(python, check));
    const key = await secret.now;
    log.info(`starting the language server: ${python.path} -m nightlab.server (nightlab ${check.version}, ${python.source}), ${since()}`);
    const env: NodeJS.ProcessEnv = { ...python.env };
    if (key) env.ANTHROPIC_API_KEY = key; // the server's environment only: never a file, never a setting
    // Not the workspace as the working directory: `python -m` would import a nightlab/ folder found there.
    // --warm: served by this user's warm process when there is one (a Reload Window gets a server at once,
    // not after seconds of imports); the first start runs cold and leaves one (server/lsp/warm.py)
    const serverOptions: ServerOptions = { command: python.path, args: ["-m", "nightlab.server", "--warm"], options: { env, cwd: safeCwd() } };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [
        { scheme: "file", language: "python" },
        { scheme: "file", pattern: "**/nightlab.toml" },
      ],
      outputChannel: logChannel(),
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: initializationOptions(settings),
      middleware: {
        executeCommand: async (command, args, next) => {
          if (RUNS_CODE.has(command) && !vscode.workspace.isTrusted) {
            void vscode.window.showWarningMessage("Nightlab runs the workspace's code only in a trusted workspace. Trust it first (Manage Workspace Trust).");
            return undefined;
          }
          if (command === Commands.experimentAccept) this.beforeAccept();
          const result = await next(command, args);
          if (command === Commands.experimentShowDiff && result) await this.showDiff(result as ExperimentDiff);
          // accept/reject from anywhere (panel, diff editor, the server's code lenses) end the same way
          if (command === Commands.experimentAccept && result) await this.afterAccept(folder, result as AcceptResult);
          if (command === Commands.experimentAccept || command === Commands.experimentReject) {
            const number = (args[0] as { number?: number } | undefined)?.number;
            if (typeof number === "number") this.reviewed.fire({ number, review: command === Commands.experimentAccept ? "accepted" : "rejected" });
          }
          return result;
        },
      },
    };
    const client = new LanguageClient("nightlab", "Nightlab", serverOptions, clientOptions);
    this.client = client;
    void secret.later.then((stored) => {
      if (!stored || this.client !== client) return;
      // a key stored since the flag was last written: this server has none in its environment
      if (this.stopsLoopOnExit) log.warn("an API key is stored but this server started without it: restart the server to use it");
      else this.restart();
    });
    for (const method of [Methods.loopState, Methods.experimentStarted, Methods.experimentProgress, Methods.experimentFinished]) {
      // one loop per folder on the server: every folder's goes on (the panel keeps each folder's state)
      client.onNotification(method, (params: unknown) => this.notifications.fire({ method, params }));
    }
    client.onDidChangeState((e) => {
      if (this.client !== client) return;
      // vscode-languageclient restarts a server that crashed (a few times): follow it both ways
      if (e.newState === State.Stopped && this.status === "running") {
        this.problem = "The Nightlab language server stopped; see Output > Nightlab (Nightlab: Restart the Language Server).";
        this.setStatus("errored");
      } else if (e.newState === State.Running && this.status === "errored") {
        this.problem = null;
        this.setStatus("running");
      }
    });
    try {
      await client.start();
    } catch (err) {
      this.client = undefined;
      void client.dispose().catch(() => undefined);
      if (check.cached) {
        // the check was skipped: this interpreter had nightlab when it passed; has it still?
        await forgetCheck(this.context.globalState);
        const again = await checkNightlab(python.path);
        if (!again.ok) return this.fail("unavailable", this.unusable(python, again));
      }
      return this.fail("errored", `The Nightlab language server did not start: ${String(err)}. See Output > Nightlab.`);
    }
    const version = client.initializeResult?.capabilities.experimental?.[EXPERIMENTAL_CAPABILITY];
    if (version !== PROTOCOL_VERSION) {
      const older = typeof version !== "number" || version < PROTOCOL_VERSION ? "the nightlab Python package" : "the extension";
      void vscode.window.showWarningMessage(
        `Nightlab: the server speaks protocol ${version ?? "unknown"}, the extension ${PROTOCOL_VERSION}: update ${older}.`);
    }
    this.problem = null;
    log.info(`the language server is running, ${since()} after the start`);
    this.setStatus("running");
  }

  /**
   * The API key for the server's environment. SecretStorage answers through the window, which is still
   * busy with its own start-up after a Reload Window: 0.15 to 0.9 s, the e2e's log showed, before the
   * server could be spawned. So the window's first start, when no key was stored at the last read (the
   * flag, kept by `keyWatch` and each read), spawns without waiting (`now` is undefined); `later` says
   * whether a key turned up all the same, for a restart with it.
   */
  private apiKey(): { now: Promise<string | undefined>; later: Promise<boolean> } {
    const read = Promise.resolve(this.context.secrets.get(API_KEY_SECRET)).catch((err) => {
      log.warn(`reading the API key from SecretStorage: ${String(err)}`);
      return undefined;
    });
    void read.then((key) => this.keyRead(key));
    const first = this.firstStart;
    this.firstStart = false;
    if (first && this.context.globalState.get<boolean>(KEY_STORED) === false) {
      return { now: Promise.resolve(undefined), later: read.then((key) => !!key) };
    }
    return { now: read, later: Promise.resolve(false) };
  }

  private async keyRead(key: string | undefined): Promise<void> {
    try {
      await this.context.globalState.update(KEY_STORED, !!key);
    } catch (err) {
      log.warn(`remembering whether an API key is stored: ${String(err)}`);
    }
  }

  async stop(): Promise<void> {
    await this.starting?.catch(() => undefined);
    const client = this.client;
    this.client = undefined;
    if (client) {
      try {
        // the server lets go of a running loop (it goes on, in its own process), or stops it first when
        // nightlab.stopLoopOnExit is on (its runs recorded as interrupted)
        await client.stop(30_000);
      } catch (err) {
        log.warn(`stopping the server: ${String(err)}`);
      }
    }
    this.setStatus("stopped");
  }

  /** Debounced: a burst of setting changes restarts once. */
  restart(delayMs = 300): void {
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      this.stop().then(() => this.start()).catch((err) => log.error(`restarting the server: ${String(err)}`));
    }, delayMs);
  }

  /**
   * A restart lets go of a running loop, which goes on and is attached to again; only with
   * nightlab.stopLoopOnExit on does it stop the loop (the server records its runs as interrupted). Asks
   * first then, when a loop runs; answers whether to go on.
   */
  async confirmRestart(why: string, loopActive: boolean): Promise<boolean> {
    if (!loopActive || !this.stopsLoopOnExit) return true;
    const go = "Restart Now";
    const answer = await vscode.window.showWarningMessage(
      `${why} needs the Nightlab server to restart, which stops the running loop (nightlab.stopLoopOnExit is on: `
        + "the current experiment is recorded as interrupted and runs again on the next start).",
      { modal: true }, go);
    return answer === go;
  }

  /** The loop folder's path in a request or command argument that names none. */
  private withRoot<T extends object>(params: T): T {
    return this.root && !("root" in params && (params as { root?: unknown }).root) ? { ...params, root: this.root } : params;
  }

  private beforeAccept(): void {
    this.dirtyBeforeAccept = new Set(vscode.workspace.textDocuments.filter((d) => d.isDirty).map((d) => d.uri.toString()));
  }

  /** A file that had no unsaved change is saved with the accepted change; a dirty buffer stays the user's. */
  private async afterAccept(folder: vscode.WorkspaceFolder, result: AcceptResult): Promise<void> {
    log.info(`accept #${result.number}: ${result.message} (${result.files.join(", ") || "no file changed"})`);
    for (const path of result.files) {
      const uri = vscode.Uri.joinPath(folder.uri, path);
      if (this.dirtyBeforeAccept.has(uri.toString())) continue;
      const doc = await vscode.workspace.openTextDocument(uri);
      if (!(await doc.save())) log.warn(`accept #${result.number}: ${path} was not saved`);
    }
  }

  async request<R>(method: string, params: object): Promise<R> {
    if (!this.client || !this.running) throw new Error(this.problem ?? "the Nightlab language server is not running");
    return this.client.sendRequest<R>(method, this.withRoot(params));
  }

  /** Runs one of the server's commands (vscode-languageclient registered their ids); errors reach the user. */
  async command<R>(id: string, arg?: object, { quiet = false } = {}): Promise<R | undefined> {
    if (!this.running) {
      if (quiet) return undefined;
      this.reportFailure(this.problem ?? "The Nightlab language server is not running (Nightlab: Restart the Language Server).");
      return undefined;
    }
    try {
      return await vscode.commands.executeCommand<R>(id, this.withRoot(arg ?? {}));
    } catch (err) {
      if (quiet) {
        log.warn(`${id}: ${String(err)}`);
        return undefined;
      }
      // the server's message is for a person ("SessionError: ..." prefixes are the server's plumbing)
      this.reportFailure((err instanceof Error ? err.message : String(err)).replace(/^[\w.]*Error: /, ""));
      return undefined;
    }
  }

  private reportFailure(message: string): void {
    void vscode.window.showErrorMessage(`Nightlab: ${message}`);
    this.failures.fire(message);
  }

  private async offerInstall(python: string, detail: string) {
    const wheel = bundledWheel(this.context.extensionPath);
    const install = "Install Nightlab There";
    const choose = "Choose Another Python";
    const answer = await vscode.window.showErrorMessage(
      `The Python at ${python} has no nightlab package (${detail}). Nightlab's language server needs it.`,
      ...(wheel ? [install] : []), choose);
    if (answer === choose) void vscode.commands.executeCommand("workbench.action.openSettings", "nightlab.python");
    if (answer !== install || !wheel) return checkNightlab(python);
    try {
      await installWheel(python, wheel);
    } catch (err) {
      void vscode.window.showErrorMessage(`Installing Nightlab into ${python} failed: ${String(err)}. See Output > Nightlab.`);
    }
    return checkNightlab(python);
  }

  /** Why this interpreter cannot run the server, in words a person can act on. */
  private unusable(python: Interpreter, check: NightlabCheck & { ok: false }): string {
    return check.missing === "python"
      ? `Nightlab cannot run Python: ${check.detail} (from ${python.source}). Set nightlab.python to a Python 3.10+ interpreter.`
      : `The Python at ${python.path} (${python.source}) has no nightlab package: ${check.detail}. Install it there (pip install nightlab) or set nightlab.python.`;
  }

  private fail(status: ServerStatus, problem: string): void {
    this.problem = problem;
    log.error(problem);
    void vscode.window.showErrorMessage(problem);
    this.setStatus(status);
  }

  private setStatus(status: ServerStatus): void {
    this.status = status;
    this.statusChanged.fire(status);
  }

  dispose(): void {
    clearTimeout(this.restartTimer);
    void this.stop(); // deactivate() awaits stop() itself; this is for a dispose without it
    this.keyWatch.dispose();
    this.notifications.dispose();
    this.statusChanged.dispose();
    this.failures.dispose();
    this.reviewed.dispose();
  }
}
