/**
 * Starts, restarts and stops the language server (`python -m nightlab.server`) through
 * vscode-languageclient, and re-emits Nightlab's notifications as VS Code events.
 *
 * The server runs our own package, not the workspace's code: it starts in untrusted workspaces too, so
 * the panel can show the ledger. What runs workspace code (starting the loop, reruns, baselines) is
 * refused here, before it reaches the server, while the workspace is untrusted.
 */
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
  type ExperimentDiff,
} from "../../../protocol/nightlab-protocol";
import { logChannel, log } from "./log";
import { bundledWheel, checkNightlab, findPython, installWheel } from "./python";
import { initializationOptions, readSettings } from "./settings";

export type ServerStatus = "starting" | "running" | "stopped" | "errored" | "unavailable";

export interface Notification {
  method: string;
  params: any;
}

/** Commands that run the workspace's code: refused in an untrusted workspace. */
const RUNS_CODE: ReadonlySet<string> = new Set([Commands.loopStart, Commands.experimentRerun, Commands.baselineMeasure]);

export const API_KEY_SECRET = "nightlab.anthropicApiKey";

export class ServerManager implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly notifications = new vscode.EventEmitter<Notification>();
  private readonly statusChanged = new vscode.EventEmitter<ServerStatus>();
  private readonly failures = new vscode.EventEmitter<string>();
  readonly onNotification = this.notifications.event;
  /** a command failed: the message, for the panel to show where the user clicked */
  readonly onCommandError = this.failures.event;
  readonly onStatus = this.statusChanged.event;
  status: ServerStatus = "stopped";
  /** why the server is not running, in words a person can act on */
  problem: string | null = null;

  constructor(
    private readonly context: vscode.ExtensionContext,
    /** opens a diff editor; the server's showDiff command is answered here */
    private readonly showDiff: (diff: ExperimentDiff) => Promise<void>,
  ) {}

  get running(): boolean {
    return this.client?.state === State.Running;
  }

  async start(): Promise<void> {
    if (this.client) return;
    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) {
      this.problem = "Open a folder with a nightlab.toml (made by `nightlab init`) to use Nightlab.";
      return this.setStatus("unavailable");
    }
    this.setStatus("starting");
    const settings = readSettings(folder.uri);
    const python = await findPython(settings.python, folder.uri);
    let check = await checkNightlab(python.path);
    if (!check.ok && check.missing === "package") check = await this.offerInstall(python.path, check.detail);
    if (!check.ok) {
      const what = check.missing === "python"
        ? `Nightlab cannot run Python: ${check.detail} (from ${python.source}). Set nightlab.python to a Python 3.10+ interpreter.`
        : `The Python at ${python.path} (${python.source}) has no nightlab package: ${check.detail}. Install it there (pip install nightlab) or set nightlab.python.`;
      return this.fail("unavailable", what);
    }
    log.info(`starting the language server: ${python.path} -m nightlab.server (nightlab ${check.version}, ${python.source})`);
    const key = await this.context.secrets.get(API_KEY_SECRET);
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (key) env.ANTHROPIC_API_KEY = key; // the server's environment only: never a file, never a setting
    const serverOptions: ServerOptions = { command: python.path, args: ["-m", "nightlab.server"], options: { env, cwd: folder.uri.fsPath } };
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
          const result = await next(command, args);
          if (command === Commands.experimentShowDiff && result) await this.showDiff(result as ExperimentDiff);
          return result;
        },
      },
    };
    const client = new LanguageClient("nightlab", "Nightlab", serverOptions, clientOptions);
    this.client = client;
    for (const method of [Methods.loopState, Methods.experimentStarted, Methods.experimentProgress, Methods.experimentFinished]) {
      client.onNotification(method, (params: unknown) => this.notifications.fire({ method, params }));
    }
    client.onDidChangeState((e) => {
      if (e.newState === State.Stopped && this.client === client && this.status === "running") this.setStatus("errored");
    });
    try {
      await client.start();
    } catch (err) {
      this.client = undefined;
      return this.fail("errored", `The Nightlab language server did not start: ${String(err)}. See Output > Nightlab.`);
    }
    const version = client.initializeResult?.capabilities.experimental?.[EXPERIMENTAL_CAPABILITY];
    if (version !== PROTOCOL_VERSION) {
      const older = typeof version !== "number" || version < PROTOCOL_VERSION ? "the nightlab Python package" : "the extension";
      void vscode.window.showWarningMessage(
        `Nightlab: the server speaks protocol ${version ?? "unknown"}, the extension ${PROTOCOL_VERSION}: update ${older}.`);
    }
    this.problem = null;
    this.setStatus("running");
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) {
      try {
        await client.stop(5000);
      } catch (err) {
        log.warn(`stopping the server: ${String(err)}`);
      }
    }
    this.setStatus("stopped");
  }

  /** Debounced: a burst of setting changes restarts once. */
  restart(delayMs = 300): void {
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(async () => {
      await this.stop();
      await this.start();
    }, delayMs);
  }

  async request<R>(method: string, params: object): Promise<R> {
    if (!this.client || !this.running) throw new Error(this.problem ?? "the Nightlab language server is not running");
    return this.client.sendRequest<R>(method, params);
  }

  /** Runs one of the server's commands (vscode-languageclient registered their ids); errors reach the user. */
  async command<R>(id: string, arg?: object): Promise<R | undefined> {
    if (!this.running) {
      this.reportFailure(this.problem ?? "The Nightlab language server is not running (Nightlab: Restart the Language Server).");
      return undefined;
    }
    try {
      return await vscode.commands.executeCommand<R>(id, ...(arg ? [arg] : []));
    } catch (err) {
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
    void this.stop();
    this.notifications.dispose();
    this.statusChanged.dispose();
    this.failures.dispose();
  }
}
