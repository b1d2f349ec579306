/**
 * The charts' data (uPlot's aligned arrays: x first, then one array per series, null where a series
 * has no point) and their axes' ranges: the progress chart (autoresearch's progress.png) and the loss
 * curves of an experiment's runs over the best's.
 * Must not import: vscode, the DOM, uPlot.
 */
import type { CurvePoint, ExperimentPayload, MetricDirection } from "../../../protocol/nightlab-protocol";

export interface ProgressData {
  /** experiment numbers, ascending */
  x: number[];
  kept: (number | null)[];
  discarded: (number | null)[];
  /** the best kept metric so far: a step line */
  frontier: (number | null)[];
  /** numbers of crashed experiments (no metric: drawn as marks on the x axis) */
  crashes: number[];
  /** the baseline's metric (the newest baseline's), or null */
  baseline: number | null;
  direction: MetricDirection;
}

/** autoresearch's progress.png: kept and discarded metrics per experiment, and the kept frontier. */
export function progressSeries(experiments: readonly ExperimentPayload[], direction: MetricDirection,
  baseline?: number | null): ProgressData {
  const rows = experiments
    .filter((e) => e.status === "crash"
      || ((e.status === "keep" || e.status === "discard") && typeof e.metric === "number" && Number.isFinite(e.metric)))
    .sort((a, b) => a.number - b.number);
  const out: ProgressData = { x: [], kept: [], discarded: [], frontier: [], crashes: [], baseline: baseline ?? null, direction };
  let best: number | null = null;
  for (const e of rows) {
    out.x.push(e.number);
    if (e.status === "crash") {
      out.crashes.push(e.number);
      out.kept.push(null);
      out.discarded.push(null);
    } else {
      const m = e.metric as number;
      const kept = e.status === "keep" || e.baseline;
      out.kept.push(kept ? m : null);
      out.discarded.push(kept ? null : m);
      if (kept && (best === null || (direction === "lower" ? m < best : m > best))) best = m;
      if (e.baseline && (baseline === undefined || baseline === null)) out.baseline = m;
    }
    out.frontier.push(best);
  }
  return out;
}

/**
 * The metric axis's range for the progress chart: around the kept experiments and the near misses
 * (discards better than the baseline: the ones worth a second look), with room of one such spread on
 * each side (at least 0.2% of the metric), so that one wild discard does not flatten the frontier;
 * discards beyond it are drawn as marks on the chart's edge. null: nothing to plot.
 */
export function progressRange(d: ProgressData): [number, number] | null {
  const finite = (a: (number | null)[]) => a.filter((v): v is number => v !== null && Number.isFinite(v));
  const kept = finite(d.kept);
  const discarded = finite(d.discarded);
  const all = [...kept, ...discarded];
  if (!all.length) return null;
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (kept.length) {
    const base = d.baseline;
    const near = base === null ? [] : discarded.filter((v) => (d.direction === "lower" ? v < base : v > base));
    const core = [...kept, ...near];
    const kLo = Math.min(...core);
    const kHi = Math.max(...core);
    const span = Math.max(kHi - kLo, Math.abs(kHi) * 0.002);
    lo = Math.max(lo, kLo - span);
    hi = Math.min(hi, kHi + span);
  }
  const pad = (hi - lo) * 0.08 || Math.abs(lo) * 0.01 || 1;
  return [lo - pad, hi + pad];
}

/** Which way a point lies off the range: "above", "below", or null (inside, or no point). */
export function offRange(v: number | null, range: [number, number] | null): "above" | "below" | null {
  if (v === null || range === null) return null;
  return v > range[1] ? "above" : v < range[0] ? "below" : null;
}

// ---------------------------------------------------------------------------------------------------
// Loss curves

/** One run of an experiment: "smoke", "run", or "repeat-<k>" (the k-th confirmation run). */
export interface RunCurve {
  stage: string;
  points: readonly CurvePoint[];
}

/** smoke first, then the main run, then the repeats in order. */
export function stageRank(stage: string): number {
  if (stage === "smoke") return 0;
  if (stage === "run") return 1;
  const m = /^repeat-(\d+)$/.exec(stage);
  return m ? 1 + Number(m[1]) : 1000;
}

/** "run", "smoke", "repeat 2". */
export function stageLabel(stage: string): string {
  return stage.replace(/^repeat-/, "repeat ");
}

/** The stages an experiment's finished runs were recorded under: its repeats say how many full runs. */
export function stagesOf(e: ExperimentPayload): string[] {
  const n = Math.max(1, e.repeats ?? 1);
  const out = e.baseline ? [] : ["smoke"];
  out.push("run");
  for (let k = 1; k < n; k++) out.push(`repeat-${k}`);
  return out;
}

export interface CurveSeries {
  /** the legend's words, one per y series */
  labels: string[];
  /** "best" for the best's run, else "run" (the experiment's own runs) */
  kinds: ("run" | "best")[];
  /** x is the training step (one unit for every run: the warm-up is not budgeted in seconds) */
  data: [number[], ...(number | null)[][]];
}

/**
 * The runs (in stage order) and the best's main run on one x axis of steps. A run with no point has no
 * series, so the legend never names a curve that is not drawn. Each series is thinned to its share
 * of `maxPoints`.
 */
export function curveSeries(runs: readonly RunCurve[], best: { number: number; points: readonly CurvePoint[] } | null,
  number: number | null, maxPoints = 2000): CurveSeries {
  const series: { label: string; kind: "run" | "best"; pts: readonly CurvePoint[] }[] = [];
  for (const r of [...runs].sort((a, b) => stageRank(a.stage) - stageRank(b.stage))) {
    const pts = r.points.filter((p) => Number.isFinite(p.loss));
    if (pts.length) series.push({ label: `${number === null ? "" : `#${number} `}${stageLabel(r.stage)}`, kind: "run", pts });
  }
  const bestPts = best && best.number !== number ? best.points.filter((p) => Number.isFinite(p.loss)) : [];
  if (best && bestPts.length) series.push({ label: `best #${best.number}`, kind: "best", pts: bestPts });
  const share = Math.max(2, Math.floor(maxPoints / Math.max(2, series.length)));
  const thinned = series.map((s) => thin(s.pts, share).sort((a, b) => a.step - b.step));
  const steps = [...new Set(thinned.flatMap((pts) => pts.map((p) => p.step)))].sort((a, b) => a - b);
  const at = new Map(steps.map((s, i) => [s, i]));
  const ys = thinned.map((pts) => {
    const y: (number | null)[] = new Array(steps.length).fill(null);
    for (const p of pts) y[at.get(p.step)!] = p.loss;
    return y;
  });
  return { labels: series.map((s) => s.label), kinds: series.map((s) => s.kind), data: [steps, ...ys] };
}

/**
 * The loss axis's range: from the lowest loss to the highest after the first `skip` of the x range, so
 * the first steps' high loss (10 at initialization) does not flatten the part where runs differ. Their
 * lines leave the top of the chart. null: too few points, uPlot decides.
 */
export function lossRange(curve: { data: [number[], ...(number | null)[][]] }, skip = 0.1): [number, number] | null {
  const [x, ...ys] = curve.data;
  if (x.length < 2) return null;
  const cut = x[0] + skip * (x[x.length - 1] - x[0]);
  let lo = Infinity;
  let hi = -Infinity;
  let tail = -Infinity;
  for (const y of ys) {
    for (let i = 0; i < x.length; i++) {
      const v = y[i];
      if (v === null || !Number.isFinite(v)) continue;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
      if (x[i] >= cut) tail = Math.max(tail, v);
    }
  }
  if (!Number.isFinite(lo)) return null;
  const top = Number.isFinite(tail) ? tail : hi;
  const pad = (top - lo) * 0.08 || Math.abs(lo) * 0.05 || 1;
  return [lo - pad, top + pad];
}

/** At most `max` items, evenly spaced, the first and the last always kept; the same array when short. */
export function thin<T>(items: readonly T[], max: number): T[] {
  const n = items.length;
  if (n <= max) return items.slice();
  if (max <= 1) return n ? [items[n - 1]] : [];
  const out: T[] = [];
  for (let k = 0; k < max; k++) out.push(items[Math.round((k * (n - 1)) / (max - 1))]);
  return out;
}
