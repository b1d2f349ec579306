/**
 * Many machines in the panel: a workspace's [[lineage]] tables (one loop process runs them all, each a
 * tag with its own baseline, noise and frontier) and the Ray cluster its runs go to. One row per lineage
 * (whether its loop runs, what a run asks the cluster for, its experiments, its best against its own
 * baseline, the ideas it took from the others and kept, its own that held elsewhere); the cluster's nodes
 * and what the runs hold now. The panel shows one lineage's experiments: `shown` marks it.
 * Must not import: vscode, the DOM.
 */
import type { ClusterPayload, LoopStatePayload } from "../../../protocol/nightlab-protocol";
import { fmtMetric, gainPercent } from "./format";

export interface LineageRow {
  name: string;
  shown: boolean;
  running: boolean;
  resources: string;
  focus: string;
  experiments: string;
  best: string;
  gain: string;
  /** "ports kept 1 of 2": other lineages' keeps judged here */
  ports: string;
  /** "replicated 1": its own keeps another lineage kept a port of */
  replicated: string;
}

export interface ClusterView {
  title: string;
  inUse: string;
  nodes: { label: string; resources: string }[];
  error: string;
}

const MINUS = "\u2212";

/** The lineages' rows; none for a workspace without [[lineage]] tables. */
export function lineageRows(state: LoopStatePayload | null): LineageRow[] {
  return (state?.lineages ?? []).map((l) => {
    const gain = gainPercent(l.best?.metric, l.baseline);
    return {
      name: l.name,
      shown: l.name === state?.tag,
      running: l.running,
      resources: l.resources || "default resources",
      focus: l.focus,
      experiments: `${l.experiments} experiment${l.experiments === 1 ? "" : "s"}`,
      best: l.best ? `best ${fmtMetric(l.best.metric)} (#${l.best.number})` : "no best yet",
      gain: gain === null || Math.abs(gain) < 5e-5 ? "" : `${gain > 0 ? "+" : MINUS}${Math.abs(gain).toFixed(2)}%`,
      ports: l.ports ? `ports kept ${l.portsKept} of ${l.ports}` : "",
      replicated: l.replicated ? `replicated elsewhere ${l.replicated}` : "",
    };
  });
}

function amounts(r: Record<string, number>, of?: Record<string, number>): string {
  return Object.keys(of ?? r).sort().map((k) => (of ? `${k} ${fmtAmount(r[k] ?? 0)}/${fmtAmount(of[k])}` : `${k} ${fmtAmount(r[k])}`))
    .join(" \u00b7 ");
}

function fmtAmount(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(2).replace(/0+$/, "");
}

/** The cluster the loop's runs go to, as its loop process last saw it; null when not on Ray. */
export function clusterView(cluster: ClusterPayload | null | undefined): ClusterView | null {
  if (!cluster) return null;
  const n = cluster.nodes.length;
  return {
    title: `Ray cluster ${cluster.address}` + (cluster.error ? "" : ` \u00b7 ${n} node${n === 1 ? "" : "s"}`),
    inUse: cluster.error ? "" : `in use: ${amounts(cluster.inUse, cluster.total) || "nothing"}`,
    nodes: cluster.nodes.map((node) => ({ label: `${node.address} (${node.id.slice(0, 12)})`, resources: amounts(node.resources) })),
    error: cluster.error,
  };
}
