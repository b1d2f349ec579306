/**
 * What the extension's own commands and the panel's clicks do: loop controls (refused in an untrusted
 * workspace), open a diff, accept (asking first for a change the loop did not keep), reject, re-run,
 * Apply best, the API key. The server's commands do the work; accept's saving and the review badge
 * follow in ServerManager's middleware, whoever sent the accept. Each acts on the folder the panel
 * shows unless it is given one (`root`).
 */
import * as vscode from "vscode";

import { Commands, type AcceptResult } from "../../protocol/nightlab-protocol";
import { log } from "./common/log";
import { API_KEY_SECRET, loopFolder, type ServerManager } from "./common/server";
import { loopOverrides, readSettings } from "./common/settings";
import { type DiffDocuments, experimentArg } from "./diff/provider";
import type { LoopControl } from "./panel/messages";
import { acceptWarning } from "./panel/rows";
import type { PanelProvider } from "./panel/provider";

const ACTIVE = new Set(["proposing", "running", "deciding", "paused"]);

function rootArg(arg: unknown): string | undefined {
  const r = arg && typeof arg === "object" ? (arg as { root?: unknown }).root : undefined;
  return typeof r === "string" && r ? r : undefined;
}

export class Actions {
  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly server: ServerManager,
    private readonly diffs: DiffDocuments,
    private readonly panel: () => PanelProvider | undefined,
  ) {
    // the panel's Apply best and Re-run run these (extension.ts wires the other commands)
    for (const [id, f] of [
      ["nightlab.applyBest", (arg?: unknown) => this.applyBest(rootArg(arg))],
      ["nightlab.rerunExperiment", (arg?: unknown) => this.rerun(arg)],
    ] as const) {
      try {
        context.subscriptions.push(vscode.commands.registerCommand(id, this.guarded(id.slice("nightlab.".length), f)));
      } catch (err) {
        log.warn(`registering ${id}: ${String(err)}`);
      }
    }
  }

  get loopActive(): boolean {
    return ACTIVE.has(this.panel()?.loopState?.state ?? "");
  }

  /** The folder to act on: the one named, else the one the panel shows, else the server's first. */
  private root(root?: string | null): string | undefined {
    return root || this.panel()?.root || undefined;
  }

  async control(action: LoopControl, root?: string | null): Promise<void> {
    const at = this.root(root);
    if (action === "start") {
      if (!vscode.workspace.isTrusted) {
        void vscode.window.showWarningMessage("The loop runs this workspace's code: trust the workspace first (Manage Workspace Trust).");
        return;
      }
      const folder = (at && vscode.workspace.getWorkspaceFolder(vscode.Uri.file(at))) || await loopFolder();
      await this.server.command(Commands.loopStart, { ...loopOverrides(readSettings(folder?.uri)), ...(at ? { root: at } : {}) });
      return;
    }
    const ids = { pause: Commands.loopPause, resume: Commands.loopResume, stop: Commands.loopStop } as const;
    await this.server.command(ids[action], at ? { root: at } : {});
  }

  async openDiff(number: number): Promise<void> {
    await this.diffs.open(await this.diffs.diff(number), this.panel()?.experiment(number));
  }

  async accept(arg: unknown, root?: string | null): Promise<void> {
    const target = experimentArg(arg);
    if (!target) return;
    const at = this.root(rootArg(arg) ?? root);
    const question = acceptWarning(this.panel()?.experiment(target.number, at));
    if (question) {
      const go = "Accept anyway";
      if (await vscode.window.showWarningMessage(question, { modal: true }, go) !== go) return;
    }
    const result = await this.server.command<AcceptResult>(Commands.experimentAccept, { ...target, ...(at ? { root: at } : {}) });
    if (result) await this.afterApply(result, `accepted #${target.number}`);
  }

  async reject(arg: unknown, root?: string | null): Promise<void> {
    const target = experimentArg(arg);
    if (!target) return;
    const at = this.root(rootArg(arg) ?? root);
    if (await this.server.command(Commands.experimentReject, { number: target.number, ...(at ? { root: at } : {}) })) {
      void vscode.window.setStatusBarMessage(`Nightlab: rejected #${target.number}`, 5000);
    }
  }

  async rerun(arg: unknown, root?: string | null): Promise<void> {
    const target = experimentArg(arg);
    if (!target) return;
    const at = this.root(rootArg(arg) ?? root);
    const result = await this.server.command<{ message: string }>(Commands.experimentRerun,
      { number: target.number, ...(at ? { root: at } : {}) });
    if (result) void vscode.window.setStatusBarMessage(`Nightlab: ${result.message || `#${target.number} runs again`}`, 5000);
  }

  /** nightlab.experiment.applyBest: the best experiment's change (and what it builds on) into the buffers. */
  async applyBest(root?: string | null): Promise<void> {
    const at = this.root(root);
    const result = await this.server.command<AcceptResult>(Commands.experimentApplyBest, at ? { root: at } : {});
    if (result) await this.afterApply(result, `applied #${result.number}`);
  }

  /**
   * What an accept or Apply best did. Hunks that met the user's own edits were left out (`conflicts`):
   * say which, and open the experiment's diff so the user can take them by hand.
   */
  private async afterApply(result: AcceptResult, fallback: string): Promise<void> {
    const conflicts = result.conflicts ?? [];
    if (!conflicts.length) {
      void vscode.window.setStatusBarMessage(`Nightlab: ${result.message || fallback}`, 5000);
      return;
    }
    log.info(`#${result.number}: left out where your edits are: ${conflicts.join("; ")}`);
    void vscode.window.showWarningMessage(`Nightlab: ${result.message || fallback}. Left out where your own edits are: `
      + `${conflicts.join("; ")}. The diff is open: take those hunks by hand.`);
    await this.openDiff(result.number);
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
