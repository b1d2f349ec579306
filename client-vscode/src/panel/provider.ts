/**
 * The host side of the side panel (a webview view): keeps every folder's loop state and ledger as the
 * server reports them (roots.ts), feeds the webview the chosen folder's, and turns its clicks into the
 * server's commands, with the folder's `root` in their arguments.
 *
 * The webview is a thin shell (see messages.ts): it is rebuilt whenever the view is shown again, asks
 * for the picture with "ready", and gets a "reset" with everything, then live messages.
 */
import { realpathSync } from "node:fs";
import * as vscode from "vscode";

import {
  Commands,
  Methods,
  type ExperimentCurve,
  type ExperimentPayload,
  type ExperimentsPage,
  type LoopStartOverrides,
  type LoopStatePayload,
  type ProgressPayload,
} from "../../../protocol/nightlab-protocol";
import { log } from "../common/log";
import type { Notification, ServerManager } from "../common/server";
import { loopOverrides, readSettings } from "../common/settings";
import { makeNonce, renderHtml } from "./html";
import type { FromWebview, LoopControl, ToWebview } from "./messages";
import { RootStore } from "./roots";

/**
 * What the panel's clicks do; `root` is the folder the panel shows (null: the server's first). Actions
 * (commands.ts) also read the chosen folder from `PanelProvider.root` when they are not given one. Without
 * rerun/applyBest here, the panel runs the extension's commands nightlab.rerunExperiment and
 * nightlab.applyBest (commands.ts registers them).
 */
export interface PanelActions {
  control(action: LoopControl, root?: string | null): Promise<void>;
  select(number: number, root?: string | null): Promise<void>;
  accept(number: number, root?: string | null): Promise<void>;
  reject(number: number, root?: string | null): Promise<void>;
  rerun?(number: number, root?: string | null): Promise<void>;
  applyBest?(root?: string | null): Promise<void>;
}

/** The longest run of repeats asked for when a view is shown again mid-run. */
const MAX_REPEATS_REPLAYED = 8;

function realRoot(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

export class PanelProvider implements vscode.WebviewViewProvider, vscode.Disposable {
  static readonly viewId = "nightlab.panel";
  private view: vscode.WebviewView | undefined;
  private readonly roots: RootStore;
  private readonly disposables: vscode.Disposable[] = [];
  private viewDisposables: vscode.Disposable[] = [];

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly server: ServerManager,
    private readonly actions: PanelActions,
  ) {
    this.roots = new RootStore(() => server.root, (root) => this.folderOf(root)?.name ?? root.split(/[\\/]/).pop() ?? root);
    this.disposables.push(
      server.onNotification((n) => this.onNotification(n)),
      server.onCommandError((message) => this.post({ type: "error", message })),
      server.onStatus((s) => (s === "running" ? void this.reload() : this.postReset())),
      vscode.workspace.onDidGrantWorkspaceTrust(() => this.post({ type: "trust", trusted: true })),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration("nightlab")) this.post({ type: "overrides", overrides: this.overrides() });
      }),
    );
  }

  /** The chosen folder's loop state. */
  get loopState(): LoopStatePayload | null {
    return this.roots.current().state;
  }

  /** The folder the panel shows (the server's name for it), or null before the server said. */
  get root(): string | null {
    return this.roots.chosen;
  }

  experiment(number: number, root?: string | null): ExperimentPayload | undefined {
    return this.roots.get(root || this.roots.chosen || "").experiments.get(number);
  }

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    const dist = vscode.Uri.joinPath(this.extensionUri, "dist");
    view.webview.options = { enableScripts: true, localResourceRoots: [dist] };
    view.webview.html = renderHtml({
      scriptUri: view.webview.asWebviewUri(vscode.Uri.joinPath(dist, "webview.js")).toString(),
      styleUri: view.webview.asWebviewUri(vscode.Uri.joinPath(dist, "webview.css")).toString(),
      cspSource: view.webview.cspSource,
      nonce: makeNonce(),
    });
    for (const d of this.viewDisposables) d.dispose();
    this.viewDisposables = [
      view.webview.onDidReceiveMessage((m: FromWebview) => void this.onMessage(m)),
      view.onDidDispose(() => {
        if (this.view === view) this.view = undefined;
      }),
    ];
  }

  private folderOf(root: string): vscode.WorkspaceFolder | undefined {
    return (vscode.workspace.workspaceFolders ?? []).find((f) => realRoot(f.uri.fsPath) === root);
  }

  /** The workspace folders with a loop: a nightlab.toml (or autoresearch's prepare.py), by resolved path. */
  private async loopRoots(): Promise<string[]> {
    const out: string[] = [];
    for (const folder of vscode.workspace.workspaceFolders ?? []) {
      for (const marker of ["nightlab.toml", "prepare.py"]) {
        try {
          await vscode.workspace.fs.stat(vscode.Uri.joinPath(folder.uri, marker));
          out.push(realRoot(folder.uri.fsPath));
          break;
        } catch {
          // not this marker
        }
      }
    }
    return out;
  }

  /** What Start sends for the chosen folder: the extension's settings (nightlab.*) over nightlab.toml. */
  private overrides(): LoopStartOverrides {
    const root = this.roots.chosen;
    return loopOverrides(readSettings(root ? this.folderOf(root)?.uri : undefined));
  }

  /** Everything from the server again: after a (re)start of the server. */
  async reload(): Promise<void> {
    this.roots.clear();
    // Every folder at once, the server's own (the one shown, but for a pick) before the workspace's loop
    // folders are even looked up: a Reload Window mid-run waits for that folder's first answers only.
    const loading = new Map<string, Promise<void>>();
    const load = (root: string) => {
      if (!loading.has(root)) loading.set(root, this.load(root).catch((err) => {
        // one folder's ledger that cannot be read does not hide the others'
        log.warn(`reading the ledger of ${root}: ${String(err)}`);
        if (this.roots.isChosen(root)) {
          this.post({ type: "error", message: `Reading the experiments failed: ${err instanceof Error ? err.message : String(err)}` });
        }
      }));
    };
    if (this.server.root) load(this.server.root);
    for (const root of await this.loopRoots()) load(root);
    await Promise.all(loading.values());
    this.postReset();
    await this.refreshBestCurve(this.roots.chosen ?? "");
  }

  /**
   * The folder's state and ledger. The chosen folder's state and first page are posted as soon as both
   * are in, with its running experiments' curves; the rest of the ledger after (reload's reset). Each
   * answer is applied as it comes, so a notification after it (the attach's state) is never overwritten.
   */
  private async load(root: string): Promise<void> {
    const d = this.roots.get(root);
    d.experiments.clear();
    const page = (offset: number) => this.server.request<ExperimentsPage>(Methods.experiments, { offset, limit: 500, root })
      .then((p) => {
        for (const e of p.experiments) d.experiments.set(e.number, e);
        return p;
      });
    const state = this.server.command<LoopStatePayload>(Commands.loopStatus, { root }, { quiet: true }).then((s) => {
      d.state = s ?? null;
      log.info(`panel: loop status of ${root}: ${d.state?.state ?? "none"}, running [${d.state?.running.join(", ") ?? ""}]`);
    });
    let [, p] = await Promise.all([state, page(0)]);
    if (this.roots.isChosen(root)) {
      this.postReset();
      void this.replayRunning();
    }
    for (let offset = p.experiments.length; p.experiments.length && offset < p.total; offset += p.experiments.length) {
      p = await page(offset);
    }
    log.info(`panel: ledger of ${root}: ${d.experiments.size} experiments`);
  }

  private async onMessage(m: FromWebview): Promise<void> {
    const root = this.roots.chosen;
    switch (m.type) {
      case "ready":
        this.postReset();
        void this.replayRunning();
        return;
      case "control":
        return this.actions.control(m.action, root);
      case "select":
      case "openDiff":
        return this.actions.select(m.number, root);
      case "accept":
        return this.actions.accept(m.number, root);
      case "reject":
        return this.actions.reject(m.number, root);
      case "rerun":
        if (this.actions.rerun) return this.actions.rerun(m.number, root);
        await vscode.commands.executeCommand("nightlab.rerunExperiment", { number: m.number, root: root ?? undefined });
        return;
      case "applyBest":
        if (this.actions.applyBest) return this.actions.applyBest(root);
        await vscode.commands.executeCommand("nightlab.applyBest", { root: root ?? undefined });
        return;
      case "curves":
        return this.sendCurves(m.number, m.stages, root);
      case "chooseRoot":
        this.roots.choose(m.root);
        this.postReset();
        void this.replayRunning();
        if (!this.roots.current().bestCurve) await this.refreshBestCurve(m.root);
        return;
      case "chooseLineage":
        return this.showLineage(root, m.lineage);
    }
  }

  private onNotification(n: Notification): void {
    const root = this.roots.apply(n.method, n.params);
    const shown = this.roots.isChosen(root);
    switch (n.method) {
      case Methods.loopState: {
        const state = n.params as LoopStatePayload;
        this.post({ type: "roots", roots: this.roots.choices() });
        if (shown) this.post({ type: "loopState", state });
        const best = this.roots.get(root).bestCurve;
        if (state.best && state.best.number !== best?.number) void this.refreshBestCurve(root);
        return;
      }
      case Methods.experimentStarted:
      case Methods.experimentFinished:
        if (shown) this.post({ type: "experiment", experiment: (n.params as { experiment: ExperimentPayload }).experiment });
        return;
      case Methods.experimentProgress:
        if (shown) this.post({ type: "progress", progress: n.params as ProgressPayload });
        return;
    }
  }

  /** The review (accepted/rejected) is in the server's answer, not in a notification. */
  updateExperiment(e: ExperimentPayload, root?: string | null): void {
    const r = root || this.roots.chosen || "";
    this.roots.get(r).experiments.set(e.number, e);
    if (this.roots.isChosen(r)) this.post({ type: "experiment", experiment: e });
  }

  private async refreshBestCurve(root: string): Promise<void> {
    const d = this.roots.get(root);
    const best = d.state?.best?.number;
    if (best === undefined || !this.server.running) return;
    try {
      const curve = await this.server.request<ExperimentCurve>(Methods.experimentCurve, { number: best, stage: "run", root: root || undefined });
      if (curve.number !== d.state?.best?.number) return; // a newer best arrived meanwhile
      d.bestCurve = { number: curve.number, points: curve.points };
      if (this.roots.isChosen(root)) this.post({ type: "bestCurve", number: curve.number, points: curve.points });
    } catch (err) {
      log.warn(`the curve of #${best}: ${String(err)}`);
    }
  }

  /** The recorded curves of an experiment's runs, one "curve" message each (an empty one for none). */
  private async sendCurves(number: number, stages: string[], root: string | null): Promise<void> {
    for (const stage of stages.slice(0, MAX_REPEATS_REPLAYED + 2)) {
      try {
        const curve = await this.server.request<ExperimentCurve>(Methods.experimentCurve, { number, stage, root: root || undefined });
        if (this.roots.isChosen(root ?? "")) this.post({ type: "curve", number, stage, points: curve.points });
      } catch (err) {
        log.warn(`the curve of #${number} (${stage}): ${String(err)}`);
      }
    }
  }

  private postReset(): void {
    if (!this.view) return;
    const d = this.roots.current();
    const choices = this.roots.choices();
    this.post({
      type: "reset",
      // no server, no loop state: controls that need one are off until it is back
      state: this.server.running ? d.state : null,
      experiments: [...d.experiments.values()].sort((a, b) => a.number - b.number),
      trusted: vscode.workspace.isTrusted,
      problem: this.server.problem,
      root: this.roots.chosen,
      roots: choices.length > 1 ? choices : [],
      overrides: this.overrides(),
    });
    log.info(`panel: reset posted (${d.state?.state ?? "no state"}, ${d.experiments.size} experiments)`);
    if (d.bestCurve) this.post({ type: "bestCurve", ...d.bestCurve });
  }

  /**
   * A view shown again mid-run gets the running experiments' curves so far, from their events files:
   * the smoke run, the main run and the repeats (until one has no curve yet). Asked all at once, posted
   * in stage order (a repeat's curve without points ends the list).
   */
  private async replayRunning(): Promise<void> {
    const root = this.roots.chosen;
    const stages = ["smoke", "run"];
    for (let k = 1; k <= MAX_REPEATS_REPLAYED; k++) stages.push(`repeat-${k}`);
    await Promise.all((this.roots.current().state?.running ?? []).map(async (number) => {
      const curves = stages.map((stage) =>
        this.server.request<ExperimentCurve>(Methods.experimentCurve, { number, stage, root: root || undefined }).then(
          (curve) => curve,
          (err) => {
            log.warn(`the curve of running #${number} (${stage}): ${String(err)}`);
            return null;
          }));
      for (const [i, stage] of stages.entries()) {
        const curve = await curves[i];
        if (curve === null || (!curve.points.length && stage.startsWith("repeat-"))) break;
        if (!curve.points.length) continue;
        this.post({ type: "curve", number, stage, points: curve.points });
        log.info(`panel: curve of running #${number} (${stage}) posted: ${curve.points.length} points`);
      }
    }));
  }

  post(message: ToWebview): void {
    void this.view?.webview.postMessage(message);
  }

  /** Shows the panel; `preserveFocus` keeps the keyboard where it is. */
  reveal(preserveFocus = true): void {
    if (this.view) this.view.show(preserveFocus);
    else void vscode.commands.executeCommand(`${PanelProvider.viewId}.focus`);
  }

  /**
   * Another lineage of the folder's loop ([[lineage]] tables): the server follows it from now on (its
   * experiments, lenses, notifications and commands), and the panel shows its ledger.
   */
  private async showLineage(root: string | null, lineage: string): Promise<void> {
    const folder = root ?? this.server.root;
    const state = await this.server.command<LoopStatePayload>(Commands.loopLineage, { root: folder ?? undefined, lineage });
    if (!state || !folder) return;
    await this.load(folder);
    this.roots.get(folder).bestCurve = null;
    this.postReset();
    void this.replayRunning();
    await this.refreshBestCurve(folder);
  }

  dispose(): void {
    for (const d of [...this.disposables, ...this.viewDisposables]) d.dispose();
  }
}
