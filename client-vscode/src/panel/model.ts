/**
 * The panel's logic without a page: what the host's messages do to the panel's model, the experiments
 * table (order, filter, the window of rows virtual scrolling renders), formatting, the charts' data and
 * which loop controls are enabled. The webview (panel/webview/) draws what this decides; the unit tests
 * test it here.
 * Must not import: vscode, the DOM (no `document`, no `window`), uPlot.
 */
import type {
  CurvePoint,
  ExperimentPayload,
  ExperimentStatus,
  LoopState,
  LoopStatePayload,
  MetricDirection,
  ProgressPayload,
} from "../../../protocol/nightlab-protocol";
import type { LoopControl, ToWebview } from "./messages";

// ---------------------------------------------------------------------------------------------------
// The model

/** The running experiment's loss so far: one run (number and stage) of it. */
export interface LiveRun {
  number: number;
  /** the stage of the last sample; samples are kept for stage "run" only */
  stage: string;
  samples: readonly CurvePoint[];
  /** 0..1 of the budget, from the last sample that said */
  fraction: number | null;
}

export interface BestCurve {
  number: number;
  points: readonly CurvePoint[];
}

export interface PanelModel {
  /** false until the host's first "reset" */
  loaded: boolean;
  state: LoopStatePayload | null;
  /** newest (highest number) first */
  experiments: readonly ExperimentPayload[];
  trusted: boolean;
  problem: string | null;
  /** the last failed request, until dismissed */
  error: string | null;
  live: LiveRun | null;
  best: BestCurve | null;
}

export type Filter = ExperimentStatus | "all";
export const FILTERS: readonly Filter[] = ["all", "keep", "discard", "crash", "running", "interrupted"];

/** Samples of the live run kept before they are thinned (to half): memory stays bounded overnight. */
export const LIVE_SAMPLE_CAP = 4000;

export function initialModel(): PanelModel {
  return { loaded: false, state: null, experiments: [], trusted: true, problem: null, error: null, live: null, best: null };
}

/**
 * The model after one host message. A new object; the parts a message does not touch are the same
 * objects as before, so the view redraws what changed by comparing references.
 */
export function applyMessage(model: PanelModel, msg: ToWebview): PanelModel {
  switch (msg.type) {
    case "reset": {
      const experiments = sortNewestFirst(msg.experiments);
      const running = newestRunning(msg.state);
      const live = running === null ? null
        : model.live?.number === running ? model.live : emptyLive(running);
      return { ...model, loaded: true, state: msg.state, experiments, trusted: msg.trusted,
        problem: msg.problem ?? null, live };
    }
    case "loopState": {
      const running = newestRunning(msg.state);
      const live = running !== null && (model.live === null || running > model.live.number) ? emptyLive(running) : model.live;
      return { ...model, state: msg.state, live };
    }
    case "experiment": {
      const e = msg.experiment;
      const experiments = upsert(model.experiments, e);
      const live = e.status === "running" && (model.live === null || e.number > model.live.number)
        ? emptyLive(e.number) : model.live;
      return { ...model, experiments, live };
    }
    case "progress": {
      const live = addSample(model.live, msg.progress, newestRunning(model.state));
      return live === model.live ? model : { ...model, live };
    }
    case "bestCurve":
      return { ...model, best: { number: msg.number, points: msg.points } };
    case "trust":
      return { ...model, trusted: msg.trusted };
    case "error":
      return { ...model, error: msg.message };
  }
}

export function dismissError(model: PanelModel): PanelModel {
  return model.error === null ? model : { ...model, error: null };
}

function emptyLive(number: number): LiveRun {
  return { number, stage: "run", samples: [], fraction: null };
}

/** The experiment the live curve follows: the newest of those training now, or null. */
export function newestRunning(state: LoopStatePayload | null): number | null {
  return state && state.running.length ? Math.max(...state.running) : null;
}

/**
 * The live run after one progress sample. The curve follows the newest running experiment and never
 * goes back to an older one (a higher number than the state knows counts: the state may lag). The
 * series restarts when the number or the stage changes, or when the step goes back (the stage ran
 * again). Only stage "run" is drawn: smoke runs and confirmation repeats are other runs of the same code.
 */
export function addSample(live: LiveRun | null, p: ProgressPayload, running: number | null): LiveRun | null {
  if (running !== null && p.number < running) return live;
  if (live !== null && p.number < live.number) return live;
  let base: LiveRun = live !== null && live.number === p.number ? live : emptyLive(p.number);
  if (base.stage !== p.stage) base = { ...base, stage: p.stage, samples: [], fraction: null };
  const fraction = p.fraction ?? base.fraction;
  const loss = p.loss;
  if (p.stage !== "run" || loss === null || loss === undefined || !Number.isFinite(loss)) {
    return base === live && fraction === live.fraction ? live : { ...base, fraction };
  }
  const last = base.samples[base.samples.length - 1];
  let samples = last !== undefined && p.step <= last.step ? [] : base.samples.slice();
  samples.push({ step: p.step, elapsedS: p.elapsedS, loss });
  if (samples.length > LIVE_SAMPLE_CAP) samples = thin(samples, LIVE_SAMPLE_CAP / 2);
  return { ...base, samples, fraction };
}

// ---------------------------------------------------------------------------------------------------
// The experiments table

export function sortNewestFirst(experiments: readonly ExperimentPayload[]): ExperimentPayload[] {
  return [...experiments].sort((a, b) => b.number - a.number);
}

/** Insert or replace by number, keeping newest first (binary search: 5,000 rows stay cheap). */
export function upsert(list: readonly ExperimentPayload[], e: ExperimentPayload): ExperimentPayload[] {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid].number > e.number) lo = mid + 1;
    else hi = mid;
  }
  const out = list.slice();
  if (lo < list.length && list[lo].number === e.number) out[lo] = e;
  else out.splice(lo, 0, e);
  return out;
}

export function filterRows(list: readonly ExperimentPayload[], filter: Filter): readonly ExperimentPayload[] {
  return filter === "all" ? list : list.filter((e) => e.status === filter);
}

export function countByStatus(list: readonly ExperimentPayload[]): Record<Filter, number> {
  const counts: Record<Filter, number> = { all: list.length, keep: 0, discard: 0, crash: 0, running: 0, interrupted: 0 };
  for (const e of list) counts[e.status] += 1;
  return counts;
}

export interface RowWindow {
  /** first row rendered */
  start: number;
  /** one past the last row rendered */
  end: number;
  /** where the first rendered row sits, in pixels from the top of the list */
  offset: number;
}

/**
 * The rows to render for a scroll position: the ones in view plus `overscan` on each side, clamped to
 * the list. A scrollTop past the end (the list shrank under a filter) shows the last rows.
 */
export function visibleWindow(total: number, scrollTop: number, viewport: number, rowHeight: number,
  overscan: number): RowWindow {
  if (total <= 0 || rowHeight <= 0) return { start: 0, end: 0, offset: 0 };
  const inView = Math.max(1, Math.ceil(Math.max(0, viewport) / rowHeight));
  const maxFirst = Math.max(0, total - inView);
  const first = Math.min(maxFirst, Math.max(0, Math.floor(scrollTop / rowHeight)));
  const start = Math.max(0, first - overscan);
  const end = Math.min(total, first + inView + 1 + overscan);
  return { start, end, offset: start * rowHeight };
}

/** The scrollTop that brings row `index` into view (unchanged when it is already). */
export function scrollToRow(index: number, scrollTop: number, viewport: number, rowHeight: number): number {
  const top = index * rowHeight;
  if (top < scrollTop) return top;
  if (top + rowHeight > scrollTop + viewport) return Math.max(0, top + rowHeight - viewport);
  return scrollTop;
}

/** The number the selection moves to with a key (delta rows; ±Infinity: first/last), or null. */
export function moveSelection(rows: readonly ExperimentPayload[], selected: number | null, delta: number): number | null {
  if (rows.length === 0) return null;
  const at = selected === null ? -1 : rows.findIndex((e) => e.number === selected);
  const from = at === -1 ? (delta > 0 ? -1 : rows.length) : at;
  const to = Math.min(rows.length - 1, Math.max(0, from + (Number.isFinite(delta) ? delta : delta > 0 ? rows.length : -rows.length)));
  return rows[to].number;
}

/** Accept/Reject make sense for a finished change: kept or discarded, not the baseline. */
export function canReview(e: ExperimentPayload): boolean {
  return (e.status === "keep" || e.status === "discard") && !e.baseline;
}

// ---------------------------------------------------------------------------------------------------
// Formatting

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

/** The badge's words: the person's verdict when there is one, else the status. */
export function statusLabel(e: ExperimentPayload): string {
  return e.review ?? e.status;
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

// ---------------------------------------------------------------------------------------------------
// Loop controls

export const ACTIVE: readonly LoopState[] = ["proposing", "running", "deciding"];

/**
 * Which controls may be pressed. Nothing in an untrusted workspace (the loop runs its code) or without a
 * server; Start with no loop (no state, idle, stopped, errored); Pause while active; Resume when paused;
 * Stop while active or paused.
 */
export function enabledControls(state: LoopStatePayload | null, trusted: boolean, serverUp = true): Record<LoopControl, boolean> {
  if (!trusted || !serverUp) return { start: false, pause: false, resume: false, stop: false };
  const s = state?.state ?? null;
  const active = s !== null && ACTIVE.includes(s);
  return {
    start: s === null || s === "idle" || s === "stopped" || s === "errored",
    pause: active,
    resume: s === "paused",
    stop: active || s === "paused",
  };
}

// ---------------------------------------------------------------------------------------------------
// Chart data (uPlot's aligned arrays: x first, then one array per series, null where it has no point)

export interface ProgressData {
  /** experiment numbers, ascending */
  x: number[];
  kept: (number | null)[];
  discarded: (number | null)[];
  /** the best kept metric so far: a step line */
  frontier: (number | null)[];
  /** numbers of crashed experiments (no metric: drawn as marks on the x axis) */
  crashes: number[];
}

/** autoresearch's progress.png: kept and discarded metrics per experiment, and the kept frontier. */
export function progressSeries(experiments: readonly ExperimentPayload[], direction: MetricDirection): ProgressData {
  const rows = experiments
    .filter((e) => e.status === "crash"
      || ((e.status === "keep" || e.status === "discard") && typeof e.metric === "number" && Number.isFinite(e.metric)))
    .sort((a, b) => a.number - b.number);
  const out: ProgressData = { x: [], kept: [], discarded: [], frontier: [], crashes: [] };
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
    }
    out.frontier.push(best);
  }
  return out;
}

/**
 * The metric axis's range for the progress chart: around the kept experiments, with room of one kept
 * spread on each side (at least 0.2% of the metric), so that one wild discard does not flatten the
 * frontier; discards beyond it are drawn as marks on the chart's edge. null: nothing to plot.
 */
export function progressRange(d: ProgressData): [number, number] | null {
  const finite = (a: (number | null)[]) => a.filter((v): v is number => v !== null && Number.isFinite(v));
  const kept = finite(d.kept);
  const all = [...kept, ...finite(d.discarded)];
  if (!all.length) return null;
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (kept.length) {
    const kLo = Math.min(...kept);
    const kHi = Math.max(...kept);
    const span = Math.max(kHi - kLo, Math.abs(kHi) * 0.002);
    lo = Math.max(lo, kLo - span);
    hi = Math.min(hi, kHi + span);
  }
  const pad = (hi - lo) * 0.08 || Math.abs(lo) * 0.01 || 1;
  return [lo - pad, hi + pad];
}

export type CurveX = "elapsedS" | "step";

export interface CurveData {
  /** which field is x: budgeted seconds, or the step when no series has two distinct times */
  xKey: CurveX;
  /** [x, running loss, best loss] */
  data: [number[], (number | null)[], (number | null)[]];
}

/**
 * The running run's loss over the best run's, on one x axis. x is budgeted time (elapsedS) unless no
 * series spans any time: the trainer does not budget its warm-up steps, so a short run's samples all
 * say 0 s, and then x is the step. Each series is thinned to half of `maxPoints`.
 */
export function curveSeries(running: readonly CurvePoint[], best: readonly CurvePoint[], maxPoints = 2000): CurveData {
  const spans = (pts: readonly CurvePoint[]) => pts.some((p) => p.elapsedS !== pts[0].elapsedS);
  const xKey: CurveX = spans(running) || spans(best) ? "elapsedS" : "step";
  const half = Math.max(2, Math.floor(maxPoints / 2));
  const byX = (pts: readonly CurvePoint[]) =>
    thin(pts.filter((p) => Number.isFinite(p.loss)), half).sort((a, b) => a[xKey] - b[xKey]);
  const r = byX(running);
  const b = byX(best);
  const x: number[] = [];
  const ry: (number | null)[] = [];
  const by: (number | null)[] = [];
  let i = 0;
  let j = 0;
  while (i < r.length || j < b.length) {
    const rx = i < r.length ? r[i][xKey] : Infinity;
    const bx = j < b.length ? b[j][xKey] : Infinity;
    if (rx === bx) {
      x.push(rx); ry.push(r[i++].loss); by.push(b[j++].loss);
    } else if (rx < bx) {
      x.push(rx); ry.push(r[i++].loss); by.push(null);
    } else {
      x.push(bx); ry.push(null); by.push(b[j++].loss);
    }
  }
  return { xKey, data: [x, ry, by] };
}

/**
 * The loss axis's range: from the lowest loss to the highest after the first `skip` of the x range, so
 * the first steps' high loss (10 at initialization, the unbudgeted warm-up piled at 0 s) does not flatten
 * the part where runs differ. Their lines leave the top of the chart. null: too few points, uPlot decides.
 */
export function lossRange(curve: CurveData, skip = 0.1): [number, number] | null {
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
