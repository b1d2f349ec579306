/**
 * How the panel writes numbers, durations, budgets and badges. Pure functions, tested in test/unit.
 * Must not import: vscode, the DOM.
 */
import type { ExperimentPayload, MetricDirection } from "../../../protocol/nightlab-protocol";

const MINUS = "\u2212";

export function fmtMetric(v: number | null | undefined): string {
  return v === null || v === undefined || !Number.isFinite(v) ? "" : v.toFixed(6).replace("-", MINUS);
}

/** Signed, 6 decimals: "+0.001200", "−0.013700"; "" when there is none. */
export function fmtDelta(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "";
  return (v > 0 ? "+" : v < 0 ? MINUS : "\u00b1") + Math.abs(v).toFixed(6);
}

/** "better" / "worse" for a delta under the metric's direction; "" for none or zero. */
export function deltaClass(v: number | null | undefined, direction: MetricDirection): "better" | "worse" | "" {
  if (v === null || v === undefined || !Number.isFinite(v) || v === 0) return "";
  return (v < 0) === (direction === "lower") ? "better" : "worse";
}

export function fmtSigma(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "";
  return v !== 0 && Math.abs(v) < 1e-4 ? v.toExponential(1) : v.toFixed(4);
}

/** "42s", "4m05s", "1h02m". */
export function fmtDuration(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s) || s < 0) return "";
  if (s < 60) return `${Math.round(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s - m * 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

export function fmtCost(usd: number): string {
  return usd < 10 ? `$${usd.toFixed(2)}` : `$${usd.toFixed(0)}`;
}

/** "1,000,000" (the server's own budget text groups digits the same way). */
export function fmtInt(n: number): string {
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** A budget as the server writes it: "60 s", "200,000 tokens"; "" when unknown. */
export function fmtBudget(mode: string | null | undefined, amount: number | null | undefined): string {
  if (amount === null || amount === undefined || !Number.isFinite(amount)) return "";
  if (mode === "tokens") return `${fmtInt(amount)} tokens`;
  if (mode === "time") return `${+amount.toFixed(3)} s`;
  return "";
}

/** The verdict badge's words: always the status (the person's review has a badge of its own). */
export function statusLabel(e: ExperimentPayload): string {
  return e.status;
}

/** The badge beside the verdict that says whether the change is in the user's files; "" for none. */
export function inFileLabel(e: ExperimentPayload): string {
  return e.inFile === "all" ? "in file" : e.inFile === "some" ? "partly in file" : "";
}

/** The review badge's tooltip: "accepted by you on 2026-11-27 01:20". */
export function reviewTitle(e: ExperimentPayload): string | null {
  if (!e.review) return null;
  const at = e.reviewedAt ? ` on ${e.reviewedAt.replace("T", " ").replace(/:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$/, "")}` : "";
  return `${e.review} by you${at}`;
}

/** The row's tooltip: what changed, why it was decided, and what the agent expected. */
export function rowTitle(e: ExperimentPayload): string {
  const lines = [`#${e.number} ${e.description}`];
  if (e.reason) lines.push(e.reason);
  if (e.hypothesis) lines.push(`Hypothesis: ${e.hypothesis}`);
  if (e.diffSummary) lines.push(e.diffSummary);
  return lines.join("\n");
}

/** The loop's cost is shown only for agents that spend money. */
export function showsCost(agent: string | undefined): boolean {
  return agent === "anthropic" || agent === "claude";
}

/** The best against the baseline, in percent (signed as the metric moved), or null. */
export function gainPercent(best: number | null | undefined, baseline: number | null | undefined): number | null {
  if (best === null || best === undefined || baseline === null || baseline === undefined || baseline === 0) return null;
  return (100 * (best - baseline)) / Math.abs(baseline);
}
