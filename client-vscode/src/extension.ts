/**
 * Nightlab's VS Code extension: wires the language server, the side panel, the diff documents and the
 * status bar together. The work is done in common/, panel/, diff/, commands.ts and status.ts.
 */
import * as vscode from "vscode";

import { Methods, type ExperimentFinishedParams } from "../../protocol/nightlab-protocol";
import { Actions } from "./commands";
import { log, logChannel } from "./common/log";
import { ServerManager } from "./common/server";
import { readSettings, RESTART_SETTINGS } from "./common/settings";
import { DiffDocuments, experimentArg, SCHEME } from "./diff/provider";
import { PanelProvider } from "./panel/provider";
import { StatusBar } from "./status";

let server: ServerManager | undefined;

export function activate(context: vscode.ExtensionContext): void {
  let panel: PanelProvider | undefined;
  // the server answers showDiff (its code lenses, hovers) by way of the diff documents
  let diffs: DiffDocuments | undefined;
  const s: ServerManager = new ServerManager(context, async (diff) => diffs?.open(diff, panel?.experiment(diff.number)));
  server = s;
  diffs = new DiffDocuments(s);
  const actions = new Actions(context, s, diffs, () => panel);
  const guarded = actions.guarded.bind(actions);
  panel = new PanelProvider(context.extensionUri, s, {
    // the panel names the folder it shows (multi-root): each action acts on that one
    control: guarded("the loop command", (a, root) => actions.control(a, root)),
    select: guarded("opening the diff", (n) => actions.openDiff(n)),
    accept: guarded("accepting", (n, root) => actions.accept(n, root)),
    reject: guarded("rejecting", (n, root) => actions.reject(n, root)),
    rerun: guarded("re-running", (n, root) => actions.rerun(n, root)),
    applyBest: guarded("applying the best", (root) => actions.applyBest(root)),
  });

  context.subscriptions.push(
    logChannel(), s, panel, new StatusBar(s),
    vscode.window.registerWebviewViewProvider(PanelProvider.viewId, panel),
    vscode.workspace.registerTextDocumentContentProvider(SCHEME, diffs),
    vscode.languages.registerCodeLensProvider({ scheme: SCHEME }, diffs),
    vscode.commands.registerCommand("nightlab.openPanel", () => panel?.reveal(false)),
    vscode.commands.registerCommand("nightlab.startLoop", guarded("starting the loop", () => actions.control("start"))),
    vscode.commands.registerCommand("nightlab.pauseLoop", guarded("pausing the loop", () => actions.control("pause"))),
    vscode.commands.registerCommand("nightlab.resumeLoop", guarded("resuming the loop", () => actions.control("resume"))),
    vscode.commands.registerCommand("nightlab.stopLoop", guarded("stopping the loop", () => actions.control("stop"))),
    vscode.commands.registerCommand("nightlab.openDiff", guarded("opening the diff", async (arg?: unknown) => {
      const number = experimentArg(arg)?.number ?? Number(await vscode.window.showInputBox({ prompt: "Experiment number" }));
      if (Number.isInteger(number) && number > 0) await actions.openDiff(number);
    })),
    vscode.commands.registerCommand("nightlab.acceptExperiment", guarded("accepting", (arg?: unknown) => actions.accept(arg))),
    vscode.commands.registerCommand("nightlab.rejectExperiment", guarded("rejecting", (arg?: unknown) => actions.reject(arg))),
    vscode.commands.registerCommand("nightlab.setApiKey", guarded("storing the key", () => actions.setApiKey())),
    vscode.commands.registerCommand("nightlab.clearApiKey", guarded("forgetting the key", () => actions.clearApiKey())),
    vscode.commands.registerCommand("nightlab.restartServer", guarded("restarting the server", () => actions.restartServer())),
    vscode.commands.registerCommand("nightlab.showLog", () => logChannel().show(true)),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (!RESTART_SETTINGS.some((k) => e.affectsConfiguration(k))) return;
      if (await s.confirmRestart("The new setting", actions.loopActive)) s.restart();
    }),
    vscode.workspace.onDidGrantWorkspaceTrust(() => s.restart()),
    s.onReview(({ number, review }) => {
      const e = panel?.experiment(number);
      if (e) panel?.updateExperiment({ ...e, review });
    }),
    s.onNotification((n) => {
      if (n.method !== Methods.experimentFinished) return;
      const p = n.params as ExperimentFinishedParams;
      if (p.newBest && readSettings().notifyOnNewBest) {
        void vscode.window.showInformationMessage(
          `Nightlab: #${p.experiment.number} is the new best: ${p.experiment.metric?.toFixed(6)} (${p.experiment.description})`, "Show Diff")
          .then((a) => (a ? actions.openDiff(p.experiment.number) : undefined));
      }
    }),
  );
  log.info("Nightlab activated");
  void s.start(); // activation does not wait for the server (or for an answer to "install nightlab?")
}

/**
 * The server lets go of a running loop on shutdown (the loop is a process of its own and goes on), or
 * stops it first when nightlab.stopLoopOnExit is on: wait for either, so the server does not outlive the window.
 */
export async function deactivate(): Promise<void> {
  await server?.stop();
}
