/**
 * The panel's logic without a page: what the host's messages do to the panel's model (the loop's
 * state, the ledger, the live run's curves, the curves asked for), which loop controls are enabled.
 * The table's order and filters are in rows.ts, the charts' data in chartData.ts, formatting in
 * format.ts (re-exported here). The webview (panel/webview/) draws what these decide; the unit tests
 * test them.
 * Must not import: vscode, the DOM (no `document`, no `window`), uPlot.
 */
import type {
  CurvePoint,
  ExperimentPayload,
  LoopStartOverrides,
  LoopState,
  LoopStatePayload,
  ProgressPayload,
} from "../../../protocol/nightlab-protocol";
import { stageRank, thin, type RunCurve } from "./chartData";
import type { LoopControl, RootChoice, ToWebview } from "./messages";
import { sortNewestFirst, upsert } from "./rows";

export * from "./chartData";
export * from "./format";
export * from "./rows";

// ---------------------------------------------------------------------------------------------------
// The model

/** The running experiment's loss so far: every run of it (smoke, main run, repeats), each its own curve. */
export interface LiveRun {
  number: number;
  /** the stage of the last sample */
  stage: string;
  /** one per stage seen, in stage order; a stage's points restart when its step goes back */
  runs: readonly RunCurve[];
  /** 0..1 of the budget, from the last sample that said */
  fraction: number | null;
}

export interface BestCurve {
  number: number;
  points: readonly CurvePoint[];
}

/** The recorded curves of one experiment's runs, as the host sent them (the detail view's chart). */
export interface ExperimentCurves {
  number: number;
  runs: readonly RunCurve[];
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
  curves: ExperimentCurves | null;
  /** the folder shown, and the folders with a loop (the picker shows them when more than one) */
  root: string | null;
  roots: readonly RootChoice[];
  /** the extension's settings over nightlab.toml (what Start sends) */
  overrides: LoopStartOverrides;
}

/** Samples of each live run kept before they are thinned (to half): memory stays bounded overnight. */
export const LIVE_SAMPLE_CAP = 4000;

export function initialModel(): PanelModel {
  return { loaded: false, state: null, experiments: [], trusted: true, problem: null, error: null, live: null, best: null,
    curves: null, root: null, roots: [], overrides: {} };
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
      const root = msg.root ?? null;
      const same = root === model.root;
      const live = running === null ? null
        : same && model.live?.number === running ? model.live : emptyLive(running);
      return { ...model, loaded: true, state: msg.state, experiments, trusted: msg.trusted,
        problem: msg.problem ?? null, live, root, roots: msg.roots ?? (same ? model.roots : []),
        overrides: msg.overrides ?? model.overrides, best: same ? model.best : null, curves: same ? model.curves : null };
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
    case "curve":
      return addCurve(model, msg.number, msg.stage, msg.points);
    case "bestCurve":
      return { ...model, best: { number: msg.number, points: msg.points } };
    case "roots":
      return { ...model, roots: msg.roots };
    case "overrides":
      return { ...model, overrides: msg.overrides };
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
  return { number, stage: "run", runs: [], fraction: null };
}

/** The experiment the live curve follows: the newest of those training now, or null. */
export function newestRunning(state: LoopStatePayload | null): number | null {
  return state && state.running.length ? Math.max(...state.running) : null;
}

/** `runs` with one stage's points replaced (or added, in stage order). */
function withRun(runs: readonly RunCurve[], stage: string, points: readonly CurvePoint[]): RunCurve[] {
  const out = runs.filter((r) => r.stage !== stage);
  out.push({ stage, points });
  return out.sort((a, b) => stageRank(a.stage) - stageRank(b.stage));
}

/**
 * A recorded curve from the host: the detail view's (the experiment asked for), and the live run's
 * when it is that experiment's and holds more than the samples seen (a panel opened mid-run).
 */
function addCurve(model: PanelModel, number: number, stage: string, points: readonly CurvePoint[]): PanelModel {
  const curves = model.curves?.number === number
    ? { number, runs: withRun(model.curves.runs, stage, points) }
    : { number, runs: withRun([], stage, points) };
  let live = model.live;
  if (live !== null && live.number === number) {
    const have = live.runs.find((r) => r.stage === stage)?.points.length ?? 0;
    if (points.length > have) live = { ...live, runs: withRun(live.runs, stage, points) };
  }
  return { ...model, curves, live };
}

/**
 * The live run after one progress sample. The curves follow the newest running experiment and never
 * go back to an older one (a higher number than the state knows counts: the state may lag). Each
 * stage (smoke, run, repeat-<k>) is a curve of its own, kept while the next one trains, so that the
 * chart never goes blank during a baseline's repeats or a confirmation run; a stage's curve restarts
 * when its step goes back (it ran again).
 */
export function addSample(live: LiveRun | null, p: ProgressPayload, running: number | null): LiveRun | null {
  if (running !== null && p.number < running) return live;
  if (live !== null && p.number < live.number) return live;
  const base: LiveRun = live !== null && live.number === p.number ? live : emptyLive(p.number);
  const fraction = p.stage !== base.stage ? p.fraction ?? null : p.fraction ?? base.fraction;
  const loss = p.loss;
  if (loss === null || loss === undefined || !Number.isFinite(loss)) {
    return base === live && fraction === live.fraction && p.stage === live.stage ? live : { ...base, stage: p.stage, fraction };
  }
  const prior = base.runs.find((r) => r.stage === p.stage)?.points ?? [];
  const last = prior[prior.length - 1];
  let points = last !== undefined && p.step <= last.step ? [] : prior.slice();
  points.push({ step: p.step, elapsedS: p.elapsedS, loss });
  if (points.length > LIVE_SAMPLE_CAP) points = thin(points, LIVE_SAMPLE_CAP / 2);
  return { ...base, stage: p.stage, runs: withRun(base.runs, p.stage, points), fraction };
}

/** The points of one stage of the live run ([] when it has none). */
export function livePoints(live: LiveRun | null, stage = "run"): readonly CurvePoint[] {
  return live?.runs.find((r) => r.stage === stage)?.points ?? [];
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

/** Apply best: there is a best, it is not the baseline (nothing to apply), and a server to ask. */
export function canApplyBest(m: PanelModel): boolean {
  const best = m.state?.best?.number;
  if (best === undefined || !m.loaded || m.problem) return false;
  const e = m.experiments.find((x) => x.number === best);
  return e !== undefined ? !e.baseline : true;
}
