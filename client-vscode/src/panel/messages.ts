/**
 * The messages between the extension host (panel/provider.ts) and the panel's webview (panel/webview/).
 * The only vocabulary the two share; payloads are the protocol's own types, passed through unchanged.
 * Must not import: vscode (the webview bundle and the unit tests include this file).
 */
import type {
  CurvePoint,
  ExperimentPayload,
  ExperimentStatus,
  LoopStatePayload,
  ProgressPayload,
} from "../../../protocol/nightlab-protocol";

/** Host -> webview. */
export type ToWebview =
  /** The whole picture, sent when the webview (re)loads or the server restarts. */
  | {
      type: "reset";
      state: LoopStatePayload | null;
      experiments: ExperimentPayload[];
      /** false in an untrusted workspace: results are shown, the loop cannot start */
      trusted: boolean;
      /** why there is no server, when there is none (no interpreter, no nightlab package, ...) */
      problem?: string | null;
    }
  | { type: "loopState"; state: LoopStatePayload }
  /** An experiment started or finished (insert or replace by number). */
  | { type: "experiment"; experiment: ExperimentPayload }
  | { type: "progress"; progress: ProgressPayload }
  /** The best experiment's loss curve (its main run), to draw under the running one. */
  | { type: "bestCurve"; number: number; points: CurvePoint[] }
  | { type: "trust"; trusted: boolean }
  /** The host's answer to a request that failed, shown in the panel's message line. */
  | { type: "error"; message: string };

export type LoopControl = "start" | "pause" | "resume" | "stop";

/** Webview -> host. */
export type FromWebview =
  /** The webview's script has loaded; the host answers with "reset". */
  | { type: "ready" }
  | { type: "control"; action: LoopControl }
  /** Open the experiment's diff (preserving focus). */
  | { type: "select"; number: number }
  | { type: "accept"; number: number }
  | { type: "reject"; number: number };

/** What the webview keeps with setState(), so a hidden and shown panel looks the same. */
export interface WebviewState {
  filter: ExperimentStatus | "all";
  selected: number | null;
  scrollTop: number;
}
