/** The status bar item: the loop's state, the running experiment with its time left, the best metric. */
import * as vscode from "vscode";

import { Methods, type LoopStatePayload, type ProgressPayload } from "../../protocol/nightlab-protocol";
import type { Notification, ServerManager } from "./common/server";
import { statusText } from "./statusText";

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem("nightlab.status", vscode.StatusBarAlignment.Left, 10);
  private state: LoopStatePayload | null = null;
  private progress: ProgressPayload | undefined;
  private lastDraw = 0;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly server: ServerManager) {
    this.item.name = "Nightlab";
    this.item.command = "nightlab.openPanel";
    this.disposables.push(server.onNotification((n) => this.onNotification(n)), server.onStatus(() => this.draw()));
    this.draw();
    this.item.show();
  }

  private onNotification(n: Notification): void {
    if (n.method === Methods.loopState) {
      this.state = n.params as LoopStatePayload;
      this.draw();
    } else if (n.method === Methods.experimentProgress) {
      this.progress = n.params as ProgressPayload;
      if (Date.now() - this.lastDraw > 1000) this.draw(); // a few samples a second: once a second is enough
    }
  }

  private draw(): void {
    this.lastDraw = Date.now();
    const s = statusText(this.state, this.progress, { running: this.server.running, problem: this.server.problem });
    this.item.text = s.text;
    this.item.tooltip = s.tooltip;
  }

  dispose(): void {
    this.item.dispose();
    for (const d of this.disposables) d.dispose();
  }
}
