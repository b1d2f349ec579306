/**
 * Nightlab's VS Code extension: wires the language server, the side panel, the diff documents and the
 * status bar together. The work is done in common/, panel/, diff/ and status.ts; nothing else lives here.
 */
import * as vscode from "vscode";

import { Commands, type AcceptResult, type ExperimentFinishedParams } from "../../protocol/nightlab-protocol";
import { log, logChannel } from "./common/log";
import { API_KEY_SECRET, ServerManager } from "./common/server";
import { loopOverrides, readSettings, RESTART_SETTINGS } from "./common/settings";
import { DiffDocuments, experimentArg, SCHEME } from "./diff/provider";
import type { LoopControl } from "./panel/messages";
import { PanelProvider } from "./panel/provider";
import { StatusBar } from "./status";

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  // the server answers showDiff (from its code lenses and hovers) by way of the diff documents
  let panel: PanelProvider | undefined;
  const server: ServerManager = new ServerManager(context, (diff) => diffs.open(diff, panel?.experiment(diff.number)));
  const diffs = new DiffDocuments(server);

  const control = async (action: LoopControl) => {
    if (action === "start") {
      if (!vscode.workspace.isTrusted) {
        void vscode.window.showWarningMessage("The loop runs this workspace's code: trust the workspace first (Manage Workspace Trust).");
        return;
      }
      const folder = vscode.workspace.workspaceFolders?.[0];
      await server.command(Commands.loopStart, loopOverrides(readSettings(folder?.uri)));
    } else {
      const ids = { pause: Commands.loopPause, resume: Commands.loopResume, stop: Commands.loopStop } as const;
      await server.command(ids[action]);
    }
  };

  const openDiff = async (number: number) => {
    try {
      await diffs.open(await diffs.diff(number), panel?.experiment(number));
    } catch (err) {
      void vscode.window.showErrorMessage(`Nightlab: the diff of #${number}: ${err instanceof Error ? err.message : String(err)}`);
    }
  };

  const accept = async (arg: unknown) => {
    const target = experimentArg(arg);
    if (!target) return;
    const root = vscode.workspace.workspaceFolders?.[0]?.uri;
    // A file with no unsaved change becomes the accepted file on disk; a buffer the user is editing stays
    // theirs to save (the edit is one undo step in it either way).
    const diff = await diffs.diff(target.number).catch(() => undefined);
    const clean = new Set((diff?.files ?? []).map((f) => f.path).filter((p) => {
      const doc = root && vscode.workspace.textDocuments.find((d) => d.uri.toString() === vscode.Uri.joinPath(root, p).toString());
      return !doc || !doc.isDirty;
    }));
    const result = await server.command<AcceptResult>(Commands.experimentAccept, target);
    if (!result) return;
    log.info(`accept #${target.number}: ${result.message} (${result.files.join(", ") || "no file changed"})`);
    for (const path of result.files) {
      if (!root || !clean.has(path)) continue;
      const doc = await vscode.workspace.openTextDocument(vscode.Uri.joinPath(root, path));
      if (!(await doc.save())) log.warn(`accept #${target.number}: ${path} was not saved`);
    }
    const e = panel?.experiment(target.number);
    if (e) panel?.updateExperiment({ ...e, review: "accepted" });
    void vscode.window.setStatusBarMessage(`Nightlab: ${result.message || `accepted #${target.number}`}`, 5000);
  };

  const reject = async (arg: unknown) => {
    const target = experimentArg(arg);
    if (!target) return;
    if (!(await server.command(Commands.experimentReject, { number: target.number }))) return;
    const e = panel?.experiment(target.number);
    if (e) panel?.updateExperiment({ ...e, review: "rejected" });
    void vscode.window.setStatusBarMessage(`Nightlab: rejected #${target.number}`, 5000);
  };

  // the panel's clicks: an exception is a message for the person, not an unhandled rejection
  const guarded = <A extends unknown[]>(what: string, f: (...a: A) => Promise<void>) => async (...a: A) => {
    try {
      await f(...a);
    } catch (err) {
      log.error(`${what}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
      void vscode.window.showErrorMessage(`Nightlab: ${what} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  panel = new PanelProvider(context.extensionUri, server, {
    control: guarded("the loop command", control), select: guarded("opening the diff", openDiff),
    accept: guarded("accepting", accept), reject: guarded("rejecting", reject),
  });
  const status = new StatusBar(server);

  context.subscriptions.push(
    logChannel(), server, panel, status, 
    vscode.window.registerWebviewViewProvider(PanelProvider.viewId, panel),
    vscode.workspace.registerTextDocumentContentProvider(SCHEME, diffs),
    vscode.languages.registerCodeLensProvider({ scheme: SCHEME }, diffs),
    vscode.commands.registerCommand("nightlab.openPanel", () => panel?.reveal(false)),
    vscode.commands.registerCommand("nightlab.startLoop", () => control("start")),
    vscode.commands.registerCommand("nightlab.pauseLoop", () => control("pause")),
    vscode.commands.registerCommand("nightlab.resumeLoop", () => control("resume")),
    vscode.commands.registerCommand("nightlab.stopLoop", () => control("stop")),
    vscode.commands.registerCommand("nightlab.openDiff", async (arg?: unknown) => {
      const number = experimentArg(arg)?.number ?? Number(await vscode.window.showInputBox({ prompt: "Experiment number" }));
      if (Number.isInteger(number) && number > 0) await openDiff(number);
    }),
    vscode.commands.registerCommand("nightlab.acceptExperiment", accept),
    vscode.commands.registerCommand("nightlab.rejectExperiment", reject),
    vscode.commands.registerCommand("nightlab.setApiKey", async () => {
      const key = await vscode.window.showInputBox({ prompt: "Anthropic API key (kept in VS Code's secret storage; the server gets it in its environment only)", password: true, ignoreFocusOut: true });
      if (!key) return;
      await context.secrets.store(API_KEY_SECRET, key.trim());
      server.restart();
      void vscode.window.showInformationMessage("Nightlab: the API key is stored; the language server restarts with it.");
    }),
    vscode.commands.registerCommand("nightlab.clearApiKey", async () => {
      await context.secrets.delete(API_KEY_SECRET);
      server.restart();
    }),
    vscode.commands.registerCommand("nightlab.restartServer", () => server.restart(0)),
    vscode.commands.registerCommand("nightlab.showLog", () => logChannel().show(true)),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (RESTART_SETTINGS.some((s) => e.affectsConfiguration(s))) server.restart();
    }),
    vscode.workspace.onDidGrantWorkspaceTrust(() => server.restart()),
    server.onNotification((n) => {
      if (n.method !== "nightlab/experimentFinished") return;
      const p = n.params as ExperimentFinishedParams;
      if (p.newBest && readSettings().notifyOnNewBest) {
        void vscode.window.showInformationMessage(`Nightlab: #${p.experiment.number} is the new best: ${p.experiment.metric?.toFixed(6)} (${p.experiment.description})`, "Show Diff")
          .then((a) => (a ? openDiff(p.experiment.number) : undefined));
      }
    }),
  );
  log.info("Nightlab activated");
  await server.start();
}

export function deactivate(): void {
  // the disposables (the server among them) stop with the extension
}
