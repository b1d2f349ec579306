/**
 * The host's picture of every folder's loop (multi-root: each folder with a nightlab.toml has its own
 * loop, ledger and best curve), keyed by the server's name for the folder, its resolved path. The
 * panel shows one, the chosen one; the header's picker lists those the server has a state for.
 * Must not import: vscode (unit-tested under plain Node).
 */
import { Methods, type CurvePoint, type ExperimentPayload, type LoopStatePayload } from "../../../protocol/nightlab-protocol";
import type { RootChoice } from "./messages";

export interface RootData {
  root: string;
  state: LoopStatePayload | null;
  experiments: Map<number, ExperimentPayload>;
  bestCurve: { number: number; points: CurvePoint[] } | null;
}

export class RootStore {
  private readonly data = new Map<string, RootData>();
  private picked: string | null = null;

  /** `fallback`: the folder a notification without a root belongs to (the server's first folder). */
  constructor(private readonly fallback: () => string | null, private readonly label: (root: string) => string = basename) {}

  /** The folder shown: the one picked, else the fallback, else the first known. */
  get chosen(): string | null {
    if (this.picked !== null) return this.picked;
    return this.fallback() ?? this.data.keys().next().value ?? null;
  }

  choose(root: string): void {
    this.picked = root;
    this.get(root);
  }

  get(root: string): RootData {
    let d = this.data.get(root);
    if (!d) {
      d = { root, state: null, experiments: new Map(), bestCurve: null };
      this.data.set(root, d);
    }
    return d;
  }

  /** The chosen folder's data (an empty one when nothing is known yet). */
  current(): RootData {
    return this.get(this.chosen ?? "");
  }

  rootOf(params: { root?: string | null } | null | undefined): string {
    return params?.root || this.fallback() || "";
  }

  isChosen(root: string): boolean {
    return root === (this.chosen ?? "");
  }

  /** Records one of the server's notifications; returns the folder it is about. */
  apply(method: string, params: any): string {
    const root = this.rootOf(params);
    const d = this.get(root);
    if (method === Methods.loopState) d.state = params as LoopStatePayload;
    else if (method === Methods.experimentStarted || method === Methods.experimentFinished) {
      const e = params.experiment as ExperimentPayload;
      d.experiments.set(e.number, e);
    }
    return root;
  }

  clear(): void {
    for (const d of this.data.values()) {
      d.state = null;
      d.experiments.clear();
      d.bestCurve = null;
    }
  }

  /** The folders with a state, by name: the picker shows them when there is more than one. */
  choices(): RootChoice[] {
    return [...this.data.values()].filter((d) => d.state !== null && d.root !== "")
      .map((d) => ({ root: d.root, label: this.label(d.root), state: d.state?.state ?? null }))
      .sort((a, b) => a.label.localeCompare(b.label) || a.root.localeCompare(b.root));
  }
}

export function basename(path: string): string {
  const parts = path.split(/[\\/]+/).filter(Boolean);
  return parts[parts.length - 1] ?? path;
}
