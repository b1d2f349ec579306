/**
 * The `nightlab:` virtual documents behind diff editors: the text of an editable file at an
 * experiment's parent or at the experiment, from the server's `nightlab/experimentDiff`.
 *
 * URI: nightlab:/<number>/<side>/<path>, side "parent" or "experiment". Read-only; the Accept/Reject
 * buttons of a diff editor on such a document find the experiment from it; code lenses offer each hunk.
 */
import * as vscode from "vscode";

import { Methods, type ExperimentDiff, type ExperimentPayload } from "../../../protocol/nightlab-protocol";
import type { ServerManager } from "../common/server";

export const SCHEME = "nightlab";

export function diffUri(number: number, side: "parent" | "experiment", path: string): vscode.Uri {
  return vscode.Uri.from({ scheme: SCHEME, path: `/${number}/${side}/${path}` });
}

/** The experiment number and file path of a `nightlab:` URI, or undefined. */
export function parseDiffUri(uri: vscode.Uri): { number: number; side: string; path: string } | undefined {
  const m = uri.scheme === SCHEME ? /^\/(\d+)\/(parent|experiment)\/(.+)$/.exec(uri.path) : null;
  return m ? { number: Number(m[1]), side: m[2], path: m[3] } : undefined;
}

export class DiffDocuments implements vscode.TextDocumentContentProvider, vscode.CodeLensProvider {
  private readonly diffs = new Map<number, ExperimentDiff>();

  constructor(private readonly server: ServerManager) {}

  remember(diff: ExperimentDiff): void {
    // a few dozen diffs at most (arrow keys in the panel open one per key press); oldest out first
    this.diffs.delete(diff.number);
    this.diffs.set(diff.number, diff);
    while (this.diffs.size > 50) this.diffs.delete(this.diffs.keys().next().value as number);
  }

  async diff(number: number): Promise<ExperimentDiff> {
    let diff = this.diffs.get(number);
    if (!diff) {
      diff = await this.server.request<ExperimentDiff>(Methods.experimentDiff, { number });
      this.remember(diff);
    }
    return diff;
  }

  async provideTextDocumentContent(uri: vscode.Uri): Promise<string> {
    const at = parseDiffUri(uri);
    if (!at) return "";
    const file = (await this.diff(at.number)).files.find((f) => f.path === at.path);
    return (at.side === "parent" ? file?.parent : file?.experiment) ?? "";
  }

  /** "Accept this hunk" above each hunk on the experiment's side of a diff editor. */
  provideCodeLenses(document: vscode.TextDocument): vscode.CodeLens[] {
    const at = parseDiffUri(document.uri);
    const file = at && at.side === "experiment" ? this.diffs.get(at.number)?.files.find((f) => f.path === at.path) : undefined;
    if (!at || !file || file.hunks.length < 2) return [];
    return file.hunks.map((h) => new vscode.CodeLens(new vscode.Range(Math.min(h.experimentStart, document.lineCount - 1), 0, Math.min(h.experimentStart, document.lineCount - 1), 0), {
      title: `Accept only this hunk (${h.summary})`,
      command: "nightlab.acceptExperiment",
      arguments: [{ number: at.number, path: file.path, hunks: [h.index] }],
    }));
  }

  /** Opens the experiment's diff beside the editor, without taking the focus from what the user types. */
  async open(diff: ExperimentDiff, experiment?: ExperimentPayload): Promise<void> {
    this.remember(diff);
    const label = experiment ? `#${diff.number} ${experiment.description}` : `#${diff.number}`;
    const options: vscode.TextDocumentShowOptions = { preserveFocus: true, preview: true, viewColumn: vscode.ViewColumn.Beside };
    if (diff.files.length === 0) {
      void vscode.window.showInformationMessage(`Experiment ${label} changed no file${experiment?.baseline ? " (a baseline run)" : ""}.`);
      return;
    }
    if (diff.files.length === 1) {
      const f = diff.files[0];
      await vscode.commands.executeCommand("vscode.diff", diffUri(diff.number, "parent", f.path),
        diffUri(diff.number, "experiment", f.path), `${f.path} (${label})`, options);
      return;
    }
    // (a multi-file diff editor takes no show options: it opens in the active group)
    const root = vscode.workspace.workspaceFolders?.[0]?.uri;
    await vscode.commands.executeCommand("vscode.changes", label, diff.files.map((f) => [
      root ? vscode.Uri.joinPath(root, f.path) : vscode.Uri.file(f.path),
      diffUri(diff.number, "parent", f.path), diffUri(diff.number, "experiment", f.path)]));
  }
}

/** The argument of accept/reject from a menu (a URI), the panel (a number) or a code lens (an object). */
export function experimentArg(arg: unknown): { number: number; path?: string; hunks?: number[] } | undefined {
  if (typeof arg === "number") return { number: arg };
  if (arg instanceof vscode.Uri) {
    const at = parseDiffUri(arg);
    return at ? { number: at.number } : undefined;
  }
  if (arg && typeof arg === "object" && typeof (arg as { number?: unknown }).number === "number") return arg as { number: number };
  const active = vscode.window.activeTextEditor?.document.uri;
  const at = active ? parseDiffUri(active) : undefined;
  return at ? { number: at.number } : undefined;
}

