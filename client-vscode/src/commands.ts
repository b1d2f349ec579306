/**
 * What the extension's own commands and the panel's clicks do: loop controls (refused in an untrusted
 * workspace), open a diff, accept, reject, the API key. The server's commands do the work; accept's
 * saving and the review badge follow in ServerManager's middleware, whoever sent the accept.
 */
import * as vscode from "vscode";

import { Commands } from "../../protocol/nightlab-protocol";
import { log } from "./common/log";
import { API_KEY_SECRET, loopFolder, type ServerManager } from "./common/server";
import { loopOverrides, readSettings } from "./common/settings";
import { type DiffDocuments, experimentArg } from "./diff/provider";
import type { LoopControl } from "./panel/messages";
import type { PanelProvider } from "./panel/provider";

const ACTIVE = new Set(["proposing", "running", "deciding", "paused"]);

export class Actions {
  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly server: ServerManager,
    private readonly diffs: DiffDocuments,
    private readonly panel: () => PanelProvider | undefined,
  ) {}

  get loopActive(): boolean {
    return ACTIVE.has(this.panel()?.loopState?.state ?? "");
  }

  async control(action: LoopControl): Promise<void> {
    if (action === "start") {
      if (!vscode.workspace.isTrusted) {
        void vscode.window.showWarningMessage("The loop runs this workspace's code: trust the workspace first (Manage Workspace Trust).");
        return;
      }
      const folder = await loopFolder();
      await this.server.command(Commands.loopStart, loopOverrides(readSettings(folder?.uri)));
      return;
    }
    const ids = { pause: Commands.loopPause, resume: Commands.loopResume, stop: Commands.loopStop } as const;
    await this.server.command(ids[action]);
  }

  async openDiff(number: number): Promise<void> {
    await this.diffs.open(await this.diffs.diff(number), this.panel()?.experiment(number));
  }

  async accept(arg: unknown): Promise<void> {
    const target = experimentArg(arg);
    if (!target) return;
    const result = await this.server.command<{ message: string }>(Commands.experimentAccept, target);
    if (result) void vscode.window.setStatusBarMessage(`Nightlab: ${result.message || `accepted #${target.number}`}`, 5000);
  }

  async reject(arg: unknown): Promise<void> {
    const target = experimentArg(arg);
    if (!target) return;
    if (await this.server.command(Commands.experimentReject, { number: target.number })) {
      void vscode.window.setStatusBarMessage(`Nightlab: rejected #${target.number}`, 5000);
    }
  }

  async setApiKey(): Promise<void> {
    const key = await vscode.window.showInputBox({
      prompt: "Anthropic API key (kept in VS Code's secret storage; the server gets it in its environment only)",
      password: true, ignoreFocusOut: true,
    });
    if (!key) return;
    await this.context.secrets.store(API_KEY_SECRET, key.trim());
    if (await this.server.confirmRestart("Using the new key", this.loopActive)) {
      this.server.restart();
      void vscode.window.showInformationMessage("Nightlab: the API key is stored; the language server restarts with it.");
    } else {
      void vscode.window.showInformationMessage("Nightlab: the API key is stored; the server uses it from its next start.");
    }
  }

  async clearApiKey(): Promise<void> {
    await this.context.secrets.delete(API_KEY_SECRET);
    if (await this.server.confirmRestart("Forgetting the key", this.loopActive)) this.server.restart();
  }

  async restartServer(): Promise<void> {
    if (await this.server.confirmRestart("This", this.loopActive)) this.server.restart(0);
  }

  /** The panel's clicks: an exception is a message for the person, not an unhandled rejection. */
  guarded<A extends unknown[]>(what: string, f: (...a: A) => Promise<void>): (...a: A) => Promise<void> {
    return async (...a: A) => {
      try {
        await f(...a);
      } catch (err) {
        log.error(`${what}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
        void vscode.window.showErrorMessage(`Nightlab: ${what} failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
  }
}
