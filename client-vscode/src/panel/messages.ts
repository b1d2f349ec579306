/**
 * The messages between the extension host (panel/provider.ts) and the panel's webview (panel/webview/).
 * The only vocabulary the two share; payloads are the protocol's own types, passed through unchanged.
 * Must not import: vscode (the webview bundle and the unit tests include this file).
 */
import type {
  CurvePoint,
  ExperimentPayload,
  ExperimentStatus,
  LoopStartOverrides,
  LoopStatePayload,
  ProgressPayload,
} from "../../../protocol/nightlab-protocol";

/** A workspace folder with a loop (a nightlab.toml): the header's folder picker lists these. */
export interface RootChoice {
  /** the server's name for it: the folder's resolved path */
  root: string;
  /** the folder's name, for the picker */
  label: string;
  /** where its loop stands, when the server said */
  state: LoopStatePayload["state"] | null;
}

/** Host -> webview. */
export type ToWebview =
  /** The whole picture of the chosen folder, sent when the webview (re)loads, the server restarts, or
   *  the user picks another folder. */
  | {
      type: "reset";
      state: LoopStatePayload | null;
      experiments: ExperimentPayload[];
      /** false in an untrusted workspace: results are shown, the loop cannot start */
      trusted: boolean;
      /** why there is no server, when there is none (no interpreter, no nightlab package, ...) */
      problem?: string | null;
      /** the folder shown (null: the server's first) */
      root?: string | null;
      /** the folders with a loop, when more than one */
      roots?: RootChoice[];
      /** what the extension's settings (nightlab.*) put over nightlab.toml when Start is pressed */
      overrides?: LoopStartOverrides;
    }
  | { type: "loopState"; state: LoopStatePayload }
  /** An experiment started or finished (insert or replace by number). */
  | { type: "experiment"; experiment: ExperimentPayload }
  | { type: "progress"; progress: ProgressPayload }
  /** The best experiment's loss curve (its main run), to draw under the running one. */
  | { type: "bestCurve"; number: number; points: CurvePoint[] }
  /** One run's recorded loss curve (stage "run", "smoke" or "repeat-<k>"), asked for with "curves". */
  | { type: "curve"; number: number; stage: string; points: CurvePoint[] }
  /** The folders with a loop and their states changed (the picker's list). */
  | { type: "roots"; roots: RootChoice[] }
  /** The extension's settings changed. */
  | { type: "overrides"; overrides: LoopStartOverrides }
  | { type: "trust"; trusted: boolean }
  /** The host's answer to a request that failed, shown in the panel's message line. */
  | { type: "error"; message: string };

export type LoopControl = "start" | "pause" | "resume" | "stop";

/** Webview -> host. */
export type FromWebview =
  /** The webview's script has loaded; the host answers with "reset". */
  | { type: "ready" }
  | { type: "control"; action: LoopControl }
  /** Open the experiment's diff (preserving focus): a click on its row. */
  | { type: "select"; number: number }
  /** The detail view's Open diff. */
  | { type: "openDiff"; number: number }
  | { type: "accept"; number: number }
  | { type: "reject"; number: number }
  | { type: "rerun"; number: number }
  /** nightlab.experiment.applyBest on the chosen folder */
  | { type: "applyBest" }
  /** Send the recorded curves of these runs of an experiment (answered with "curve" messages). */
  | { type: "curves"; number: number; stages: string[] }
  /** Show another folder's loop (answered with "reset"). */
  | { type: "chooseRoot"; root: string }
  /** Show another lineage of the folder's loop ([[lineage]] tables; answered with "reset"). */
  | { type: "chooseLineage"; lineage: string };

export type SortKey = "number" | "status" | "metric" | "delta" | "sigma" | "description" | "reason" | "time";

export interface SortOrder {
  key: SortKey;
  /** true: descending */
  desc: boolean;
}

/** What the webview keeps with setState(), so a hidden and shown panel looks the same. */
export interface WebviewState {
  filter: ExperimentStatus | "all";
  /** words to find in the description or the reason ("" shows all) */
  text: string;
  sort: SortOrder;
  /** column widths the user dragged, in pixels */
  widths: Partial<Record<SortKey, number>>;
  selected: number | null;
  scrollTop: number;
}
