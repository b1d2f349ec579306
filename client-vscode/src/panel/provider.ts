/**
 * The host side of the side panel (a webview view): keeps the loop's state and the ledger as the server
 * reports them, feeds the webview, and turns its clicks into the server's commands.
 *
 * The webview is a thin shell (see messages.ts): it is rebuilt whenever the view is shown again, asks
 * for the picture with "ready", and gets a "reset" with everything, then live messages.
 */
import * as vscode from "vscode";

import {
  Commands,
  Methods,
  type CurvePoint,
  type ExperimentCurve,
  type ExperimentFinishedParams,
  type ExperimentPayload,
  type ExperimentStartedParams,
  type ExperimentsPage,
  type LoopStatePayload,
  type ProgressPayload,
} from "../../../protocol/nightlab-protocol";
import { log } from "../common/log";
import type { Notification, ServerManager } from "../common/server";
import { makeNonce, renderHtml } from "./html";
import type { FromWebview, LoopControl, ToWebview } from "./messages";

export interface PanelActions {
  control(action: LoopControl): Promise<void>;
  select(number: number): Promise<void>;
  accept(number: number): Promise<void>;
  reject(number: number): Promise<void>;
}

export class PanelProvider implements vscode.WebviewViewProvider, vscode.Disposable {
  static readonly viewId = "nightlab.panel";
  private view: vscode.WebviewView | undefined;
  private state: LoopStatePayload | null = null;
  private readonly experiments = new Map<number, ExperimentPayload>();
  private bestCurve: { number: number; points: CurvePoint[] } | null = null;
  private readonly disposables: vscode.Disposable[] = [];
  private viewDisposables: vscode.Disposable[] = [];

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly server: ServerManager,
    private readonly actions: PanelActions,
  ) {
    this.disposables.push(
      server.onNotification((n) => this.onNotification(n)),
      server.onCommandError((message) => this.post({ type: "error", message })),
      server.onStatus((s) => (s === "running" ? void this.reload() : this.postReset())),
      vscode.workspace.onDidGrantWorkspaceTrust(() => this.post({ type: "trust", trusted: true })),
    );
  }

  get loopState(): LoopStatePayload | null {
    return this.state;
  }

  experiment(number: number): ExperimentPayload | undefined {
    return this.experiments.get(number);
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

  /** Everything from the server again: after a (re)start of the server. */
  async reload(): Promise<void> {
    this.experiments.clear();
    this.bestCurve = null;
    try {
      this.state = await this.server.command<LoopStatePayload>(Commands.loopStatus, undefined, { quiet: true }) ?? null;
      for (let offset = 0; ; ) {
        const page = await this.server.request<ExperimentsPage>(Methods.experiments, { offset, limit: 500 });
        for (const e of page.experiments) this.experiments.set(e.number, e);
        offset += page.experiments.length;
        if (page.experiments.length === 0 || offset >= page.total) break;
      }
    } catch (err) {
      log.warn(`reading the ledger: ${String(err)}`);
      this.post({ type: "error", message: `Reading the experiments failed: ${err instanceof Error ? err.message : String(err)}` });
    }
    this.postReset();
    void this.replayRunning();
    await this.refreshBestCurve();
  }

  private async onMessage(m: FromWebview): Promise<void> {
    switch (m.type) {
      case "ready":
        this.postReset();
        void this.replayRunning();
        return;
      case "control":
        return this.actions.control(m.action);
      case "select":
        return this.actions.select(m.number);
      case "accept":
        return this.actions.accept(m.number);
      case "reject":
        return this.actions.reject(m.number);
    }
  }

  private onNotification(n: Notification): void {
    switch (n.method) {
      case Methods.loopState: {
        this.state = n.params as LoopStatePayload;
        this.post({ type: "loopState", state: this.state });
        if (this.state.best && this.state.best.number !== this.bestCurve?.number) void this.refreshBestCurve();
        return;
      }
      case Methods.experimentStarted:
      case Methods.experimentFinished: {
        const e = (n.params as ExperimentStartedParams | ExperimentFinishedParams).experiment;
        this.experiments.set(e.number, e);
        this.post({ type: "experiment", experiment: e });
        return;
      }
      case Methods.experimentProgress:
        this.post({ type: "progress", progress: n.params as ProgressPayload });
        return;
    }
  }

  /** The review (accepted/rejected) is in the server's answer, not in a notification. */
  updateExperiment(e: ExperimentPayload): void {
    this.experiments.set(e.number, e);
    this.post({ type: "experiment", experiment: e });
  }

  private async refreshBestCurve(): Promise<void> {
    const best = this.state?.best?.number;
    if (best === undefined || !this.server.running) return;
    try {
      const curve = await this.server.request<ExperimentCurve>(Methods.experimentCurve, { number: best });
      if (curve.number !== this.state?.best?.number) return; // a newer best arrived meanwhile
      this.bestCurve = { number: curve.number, points: curve.points };
      this.post({ type: "bestCurve", number: curve.number, points: curve.points });
    } catch (err) {
      log.warn(`the curve of #${best}: ${String(err)}`);
    }
  }

  private postReset(): void {
    if (!this.view) return;
    this.post({
      type: "reset",
      // no server, no loop state: controls that need one are off until it is back
      state: this.server.running ? this.state : null,
      experiments: [...this.experiments.values()].sort((a, b) => a.number - b.number),
      trusted: vscode.workspace.isTrusted,
      problem: this.server.problem,
    });
    if (this.bestCurve) this.post({ type: "bestCurve", ...this.bestCurve });
  }

  /** A view shown again mid-run gets the running experiment's curve so far, from its events file. */
  private async replayRunning(): Promise<void> {
    for (const number of this.state?.running ?? []) {
      try {
        const curve = await this.server.request<ExperimentCurve>(Methods.experimentCurve, { number });
        for (const p of curve.points) {
          this.post({ type: "progress", progress: { number, step: p.step, elapsedS: p.elapsedS, loss: p.loss, stage: "run" } });
        }
      } catch (err) {
        log.warn(`the curve of running #${number}: ${String(err)}`);
      }
    }
  }

  post(message: ToWebview): void {
    void this.view?.webview.postMessage(message);
  }

  /** Shows the panel; `preserveFocus` keeps the keyboard where it is. */
  reveal(preserveFocus = true): void {
    if (this.view) this.view.show(preserveFocus);
    else void vscode.commands.executeCommand(`${PanelProvider.viewId}.focus`);
  }

  dispose(): void {
    for (const d of [...this.disposables, ...this.viewDisposables]) d.dispose();
  }
}
