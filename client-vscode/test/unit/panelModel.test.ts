// The panel's model (src/panel/model.ts): host messages, the table, formatting, the controls.
import assert from "node:assert/strict";
import { test } from "node:test";

import type { ExperimentPayload, LoopStatePayload, ProgressPayload } from "../../../protocol/nightlab-protocol";
import type { ToWebview } from "../../src/panel/messages";
import {
  acceptWarning, addSample, applyMessage, canAccept, canApplyBest, canReview, countByStatus, deltaClass, enabledControls, filterRows,
  fmtBudget, fmtDelta, fmtDuration, fmtMetric, fmtSigma, inFileLabel, initialModel, LIVE_SAMPLE_CAP, livePoints,
  moveSelection, nextSort, numberDigits, reviewTitle, scrollToRow, sortRows, statusLabel, upsert, visibleWindow,
  type Filter, type PanelModel,
} from "../../src/panel/model";
import { RootStore } from "../../src/panel/roots";
import { settingsView } from "../../src/panel/settingsView";

export const exp = (number: number, over: Partial<ExperimentPayload> = {}): ExperimentPayload => ({
  number, tag: "main", status: "keep", description: `change ${number}`, hypothesis: "", metric: 1 - number / 100,
  agent: "offline", commit: `c${number}`, parentCommit: `c${number - 1}`, startedAt: "2025-03-05T23:00:00Z",
  reason: "", diffSummary: "train.py: +1 -1 lines", baseline: false, replicatedIn: [], ...over,
});

export const loop = (over: Partial<LoopStatePayload> = {}): LoopStatePayload => ({
  state: "running", reason: "", tag: "main", agent: "offline", budget: "60 s", metricName: "val_bpb",
  direction: "lower", best: null, baseline: null, experimentsRun: 0, running: [], costUsd: 0, policy: "noise",
  sandbox: "auto", died: false, lineages: [], ...over,
});

const sample = (number: number, step: number, over: Partial<ProgressPayload> = {}): ProgressPayload => ({
  number, step, elapsedS: step * 0.5, loss: 5 - step / 100, stage: "run", fraction: step / 100, ...over,
});

const apply = (...msgs: ToWebview[]): PanelModel => msgs.reduce(applyMessage, initialModel());
const numbers = (m: PanelModel) => m.experiments.map((e) => e.number);

// ---- messages -------------------------------------------------------------------------------------

test("reset: the whole picture, newest first, trust and problem", () => {
  const m = apply({ type: "reset", state: loop({ running: [3] }), experiments: [exp(1), exp(3, { status: "running" }), exp(2)],
    trusted: false, problem: "no nightlab package" });
  assert.equal(m.loaded, true);
  assert.deepEqual(numbers(m), [3, 2, 1]);
  assert.equal(m.trusted, false);
  assert.equal(m.problem, "no nightlab package");
  assert.equal(m.live?.number, 3, "the live curve follows the running experiment");
  assert.equal(apply({ type: "reset", state: null, experiments: [], trusted: true }).problem, null);
});

test("experiment: inserted in order, replaced by number", () => {
  let m = apply({ type: "reset", state: null, experiments: [exp(1), exp(4)], trusted: true });
  m = applyMessage(m, { type: "experiment", experiment: exp(2) });
  m = applyMessage(m, { type: "experiment", experiment: exp(5, { status: "running" }) });
  assert.deepEqual(numbers(m), [5, 4, 2, 1]);
  const before = m.experiments;
  m = applyMessage(m, { type: "experiment", experiment: exp(5, { status: "discard", metric: 2 }) });
  assert.deepEqual(numbers(m), [5, 4, 2, 1]);
  assert.equal(m.experiments[0].status, "discard");
  assert.notEqual(m.experiments, before, "a new array: the view redraws by reference");
  assert.equal(before[0].status, "running", "the old model is untouched");
});

test("upsert keeps newest first for any insertion order", () => {
  const orders = [[1, 2, 3, 4, 5], [5, 4, 3, 2, 1], [3, 1, 5, 2, 4, 3, 1]];
  for (const order of orders) {
    const list = order.reduce((l: ExperimentPayload[], n) => upsert(l, exp(n)), []);
    assert.deepEqual(list.map((e) => e.number), [...new Set(order)].sort((a, b) => b - a), order.join());
  }
});

test("loopState: kept whole; a newer running experiment restarts the live curve", () => {
  let m = apply({ type: "reset", state: loop({ running: [1] }), experiments: [exp(1, { status: "running" })], trusted: true });
  m = applyMessage(m, { type: "progress", progress: sample(1, 1) });
  assert.equal(livePoints(m.live).length, 1);
  const s = loop({ state: "deciding", running: [1], reason: "deciding" });
  m = applyMessage(m, { type: "loopState", state: s });
  assert.equal(m.state, s);
  assert.equal(livePoints(m.live).length, 1, "same experiment: same curve");
  m = applyMessage(m, { type: "loopState", state: loop({ state: "proposing", running: [] }) });
  assert.equal(m.live?.number, 1, "nothing runs: the last curve stays");
  m = applyMessage(m, { type: "loopState", state: loop({ running: [2] }) });
  assert.deepEqual([m.live?.number, livePoints(m.live).length], [2, 0]);
});

test("progress: only the newest running experiment; each stage its own curve, restarted on a step back", () => {
  const running = loop({ running: [4, 5] });
  let m = apply({ type: "reset", state: running, experiments: [], trusted: true });
  const stages = () => Object.fromEntries((m.live?.runs ?? []).map((r) => [r.stage, r.points.length]));
  const steps: [ProgressPayload, number | null, Record<string, number>][] = [
    // sample, live number after it, points per stage after it
    [sample(4, 1), 5, {}], // an older one of two running: ignored
    [sample(5, 1, { stage: "smoke" }), 5, { smoke: 1 }], // the smoke run is a run too
    [sample(5, 2, { stage: "smoke" }), 5, { smoke: 2 }],
    [sample(5, 1), 5, { smoke: 2, run: 1 }], // the main run starts: the smoke run's curve stays
    [sample(5, 2), 5, { smoke: 2, run: 2 }],
    [sample(5, 3, { loss: null }), 5, { smoke: 2, run: 2 }], // a sample without a loss adds nothing
    [sample(5, 4), 5, { smoke: 2, run: 3 }],
    [sample(5, 1), 5, { smoke: 2, run: 1 }], // the step went back: the same stage ran again
    [sample(5, 2, { stage: "repeat-1" }), 5, { smoke: 2, run: 1, "repeat-1": 1 }], // a confirmation: the chart keeps the run
    [sample(5, 3, { stage: "repeat-1" }), 5, { smoke: 2, run: 1, "repeat-1": 2 }],
    [sample(6, 1), 6, { run: 1 }], // a newer number than the state knows (it lags)
    [sample(5, 9), 6, { run: 1 }], // never back to an older one
  ];
  for (const [i, [p, number, count]] of steps.entries()) {
    m = applyMessage(m, { type: "progress", progress: p });
    assert.deepEqual([m.live?.number, stages()], [number, count], `step ${i}: ${JSON.stringify(p)}`);
  }
  assert.equal(m.live?.stage, "run");
});

test("progress: a baseline's repeats leave every run's curve, in stage order", () => {
  let m = apply({ type: "reset", state: loop({ running: [1] }), experiments: [exp(1, { status: "running", baseline: true })], trusted: true });
  for (const stage of ["run", "repeat-1", "repeat-2"]) {
    for (let step = 1; step <= 3; step++) m = applyMessage(m, { type: "progress", progress: sample(1, step, { stage }) });
  }
  assert.deepEqual(m.live?.runs.map((r) => [r.stage, r.points.length]), [["run", 3], ["repeat-1", 3], ["repeat-2", 3]]);
  assert.equal(m.live?.stage, "repeat-2");
});

test("curve: a recorded run fills the detail's curves and a live run opened mid-run", () => {
  const pts = [{ step: 1, elapsedS: 0, loss: 5 }, { step: 2, elapsedS: 1, loss: 4 }];
  let m = apply({ type: "reset", state: loop({ running: [3] }), experiments: [], trusted: true });
  m = applyMessage(m, { type: "curve", number: 3, stage: "repeat-1", points: pts });
  m = applyMessage(m, { type: "curve", number: 3, stage: "run", points: pts });
  assert.deepEqual(m.live?.runs.map((r) => r.stage), ["run", "repeat-1"]);
  assert.deepEqual(m.curves?.runs.map((r) => r.stage), ["run", "repeat-1"]);
  m = applyMessage(m, { type: "curve", number: 2, stage: "run", points: pts });
  assert.deepEqual([m.curves?.number, m.curves?.runs.length, m.live?.number], [2, 1, 3], "another experiment's: the detail's only");
});

test("addSample on its own: an older number than the newest running one starts nothing", () => {
  assert.equal(addSample(null, sample(4, 1), 5), null);
  assert.deepEqual(livePoints(addSample(null, sample(5, 1), 5)), [{ step: 1, elapsedS: 0.5, loss: 4.99 }]);
  assert.equal(addSample(null, sample(6, 1), null)?.number, 6, "no state yet: the sample's own number");
});

test("progress: a message that changes nothing keeps the model object", () => {
  const m = apply({ type: "reset", state: loop({ running: [5] }), experiments: [], trusted: true });
  assert.equal(applyMessage(m, { type: "progress", progress: sample(4, 1) }), m);
});

test("progress: the live samples stay bounded over a long night", () => {
  let live = null;
  for (let i = 1; i <= LIVE_SAMPLE_CAP * 2 + 1; i++) live = addSample(live, sample(1, i), 1);
  const points = livePoints(live);
  assert.ok(points.length <= LIVE_SAMPLE_CAP, String(points.length));
  assert.equal(points[points.length - 1].step, LIVE_SAMPLE_CAP * 2 + 1, "the newest is kept");
  assert.equal(points[0].step, 1, "the first is kept");
});

test("bestCurve, trust and error", () => {
  let m = apply({ type: "bestCurve", number: 3, points: [{ step: 1, elapsedS: 0, loss: 4 }] });
  assert.deepEqual(m.best, { number: 3, points: [{ step: 1, elapsedS: 0, loss: 4 }] });
  m = applyMessage(m, { type: "trust", trusted: false });
  assert.equal(m.trusted, false);
  m = applyMessage(m, { type: "error", message: "no experiment #99" });
  assert.equal(m.error, "no experiment #99");
});

// ---- the table -------------------------------------------------------------------------------------

const ledger = [exp(6, { status: "running" }), exp(5, { status: "crash" }), exp(4, { status: "discard" }),
  exp(3, { status: "keep" }), exp(2, { status: "interrupted" }), exp(1, { status: "keep", baseline: true })];

test("filter by status", () => {
  const cases: [Filter, number[]][] = [
    ["all", [6, 5, 4, 3, 2, 1]], ["keep", [3, 1]], ["discard", [4]], ["crash", [5]], ["running", [6]], ["interrupted", [2]],
  ];
  for (const [filter, expected] of cases) assert.deepEqual(filterRows(ledger, filter).map((e) => e.number), expected, filter);
  assert.deepEqual(countByStatus(ledger), { all: 6, keep: 2, discard: 1, crash: 1, running: 1, interrupted: 1 });
});

test("the virtual window: rows in view plus overscan, clamped at both ends", () => {
  // total, scrollTop, viewport, rowHeight, overscan -> start, end, offset
  const cases: [number, number, number, number, number, number, number, number][] = [
    [0, 0, 400, 22, 8, 0, 0, 0], // nothing
    [5, 0, 400, 22, 8, 0, 5, 0], // fewer rows than fit
    [1000, 0, 440, 22, 8, 0, 29, 0], // top: 20 in view + 1 partial + 8 below
    [1000, 2200, 440, 22, 8, 92, 129, 92 * 22], // middle: row 100 first, 8 above
    [1000, 2211, 440, 22, 8, 92, 129, 92 * 22], // half a row further: the same window
    [1000, 21560, 440, 22, 8, 972, 1000, 972 * 22], // bottom: the last 20 and overscan above
    [1000, 999999, 440, 22, 8, 972, 1000, 972 * 22], // past the end (the list shrank): the last rows
    [1000, -50, 440, 22, 8, 0, 29, 0], // overscrolled above
    [1000, 0, 0, 22, 8, 0, 10, 0], // not laid out yet: still a row
  ];
  for (const [total, top, viewport, h, over, start, end, offset] of cases) {
    assert.deepEqual(visibleWindow(total, top, viewport, h, over), { start, end, offset }, `${total} rows at ${top}`);
  }
});

test("the window never renders more than the viewport and overscan, for any scroll", () => {
  for (let top = 0; top < 5000 * 22; top += 997) {
    const w = visibleWindow(5000, top, 300, 22, 8);
    assert.ok(w.end - w.start <= Math.ceil(300 / 22) + 1 + 16, `${top}: ${w.start}..${w.end}`);
    assert.ok(w.start * 22 <= Math.max(0, top) && (w.end * 22 >= Math.min(top + 300, 5000 * 22)), `${top} is covered`);
  }
});

test("scrolling a row into view", () => {
  const cases: [number, number, number][] = [[0, 100, 0], [10, 0, 10 * 22 + 22 - 110], [3, 0, 0], [2, 100, 44]];
  for (const [index, top, expected] of cases) assert.equal(scrollToRow(index, top, 110, 22), expected, `row ${index} from ${top}`);
});

test("moving the selection with the keys", () => {
  const cases: [number | null, number, number | null][] = [
    [null, 1, 6], [null, -1, 1], [6, 1, 5], [6, -1, 6], [1, 1, 1], [4, -Infinity, 6], [4, Infinity, 1], [99, 1, 6], [3, 10, 1],
  ];
  for (const [from, delta, to] of cases) assert.equal(moveSelection(ledger, from, delta), to, `${from} ${delta}`);
  assert.equal(moveSelection([], 3, 1), null);
});

test("accept and reject only for finished changes", () => {
  assert.deepEqual(ledger.map((e) => [e.number, canReview(e)]), [[6, false], [5, false], [4, true], [3, true], [2, false], [1, false]]);
  // the detail view's Accept also takes a crash's or an interrupted run's change (the host asks first)
  assert.deepEqual(ledger.map((e) => [e.number, canAccept(e)]), [[6, false], [5, true], [4, true], [3, true], [2, true], [1, false]]);
});

test("accepting a change the loop did not keep asks first", () => {
  const cases: [ExperimentPayload["status"], boolean][] = [["keep", false], ["discard", true], ["crash", true], ["interrupted", true]];
  for (const [status, asks] of cases) {
    const q = acceptWarning(exp(4, { status, reason: "worse by 0.01" }));
    assert.equal(q !== null, asks, status);
    if (q) assert.match(q, new RegExp(`#4 was a ${status} \\(worse by 0\\.01\\).*anyway\\?$`));
  }
  assert.equal(acceptWarning(undefined), null, "unknown to the panel: no question");
});

test("filter by words in the description or the reason, with the status", () => {
  const rows = [exp(3, { description: "MATRIX_LR 0.02 -> 0.04", reason: "worse by 0.01" }),
    exp(2, { status: "discard", description: "DEPTH 4 -> 6", reason: "Within noise: +0.0001" }),
    exp(1, { description: "warmup 0 -> 100", reason: "better than the best" })];
  const cases: [Filter, string, number[]][] = [
    ["all", "", [3, 2, 1]], ["all", "lr", [3]], ["all", "NOISE", [2]], ["all", "better", [1]], ["all", "0.0", [3, 2]],
    ["all", "depth noise", [2]], ["all", "depth better", []], ["keep", "0.0", [3]], ["discard", "  ", [2]],
  ];
  for (const [filter, text, expected] of cases) {
    assert.deepEqual(filterRows(rows, filter, text).map((e) => e.number), expected, `${filter} ${JSON.stringify(text)}`);
  }
  assert.equal(filterRows(rows, "all", " "), rows, "nothing to filter: the same array");
});

test("sort by a column: values ascending or descending, rows without one last, ties newest first", () => {
  const rows = [exp(5, { metric: null, status: "running", reason: "" }), exp(4, { metric: 0.97, delta: 0.01, reason: "b" }),
    exp(3, { metric: 0.95, delta: -0.02, reason: "a", durationS: 30 }), exp(2, { metric: 0.97, delta: null, reason: "c", durationS: 10 }),
    exp(1, { metric: 0.99, reason: "", durationS: 20 })];
  const cases: [Parameters<typeof sortRows>[1], number[]][] = [
    [{ key: "number", desc: true }, [5, 4, 3, 2, 1]],
    [{ key: "number", desc: false }, [1, 2, 3, 4, 5]],
    [{ key: "metric", desc: false }, [3, 4, 2, 1, 5]],
    [{ key: "metric", desc: true }, [1, 4, 2, 3, 5]],
    [{ key: "delta", desc: false }, [3, 4, 5, 2, 1]],
    [{ key: "reason", desc: false }, [3, 4, 2, 5, 1]],
    [{ key: "time", desc: true }, [3, 1, 2, 5, 4]],
  ];
  for (const [sort, expected] of cases) assert.deepEqual(sortRows(rows, sort).map((e) => e.number), expected, JSON.stringify(sort));
  assert.equal(sortRows(rows, { key: "number", desc: true }), rows, "the list's own order: no copy");
  assert.deepEqual(nextSort({ key: "number", desc: true }, "number"), { key: "number", desc: false });
  assert.deepEqual(nextSort({ key: "number", desc: true }, "metric"), { key: "metric", desc: false });
  assert.deepEqual(nextSort({ key: "metric", desc: false }, "metric"), { key: "metric", desc: true });
});

test("the # column fits the largest number: four digits are not cut", () => {
  assert.equal(numberDigits([]), 2);
  assert.equal(numberDigits([exp(7)]), 2);
  assert.equal(numberDigits([exp(999), exp(1000)]), 4);
  assert.equal(numberDigits([exp(12345)]), 5);
});

test("the verdict badge always says the verdict; the file's state and the review are their own", () => {
  const cases: [Partial<ExperimentPayload>, string, string, string | null][] = [
    [{ status: "discard", inFile: "all" }, "discard", "in file", null],
    [{ status: "discard", inFile: "some" }, "discard", "partly in file", null],
    [{ status: "keep", inFile: "none", review: "accepted", reviewedAt: "2026-11-27T01:20:05+00:00" }, "keep", "",
      "accepted by you on 2026-11-27 01:20"],
    [{ status: "crash", inFile: null, review: "rejected" }, "crash", "", "rejected by you"],
  ];
  for (const [over, verdict, inFile, review] of cases) {
    const e = exp(3, over);
    assert.deepEqual([statusLabel(e), inFileLabel(e), reviewTitle(e)], [verdict, inFile, review], JSON.stringify(over));
  }
});

// ---- formatting ------------------------------------------------------------------------------------

test("formatting", () => {
  const cases: [string, string][] = [
    [fmtMetric(0.9979), "0.997900"], [fmtMetric(null), ""], [fmtMetric(undefined), ""],
    [fmtDelta(0.0012), "+0.001200"], [fmtDelta(-0.0137), "\u22120.013700"], [fmtDelta(0), "\u00b10.000000"], [fmtDelta(null), ""],
    [fmtSigma(0.00213), "0.0021"], [fmtSigma(0.00001), "1.0e-5"], [fmtSigma(null), ""],
    [fmtDuration(42.4), "42s"], [fmtDuration(245), "4m05s"], [fmtDuration(3720), "1h02m"], [fmtDuration(null), ""],
    [fmtBudget("tokens", 1000000), "1,000,000 tokens"], [fmtBudget("time", 60), "60 s"], [fmtBudget(null, 5), ""],
  ];
  for (const [got, expected] of cases) assert.equal(got, expected);
});

test("a delta is better or worse by the metric's direction", () => {
  const cases: [number | null, "lower" | "higher", string][] = [
    [-0.01, "lower", "better"], [0.01, "lower", "worse"], [-0.01, "higher", "worse"], [0.01, "higher", "better"],
    [0, "lower", ""], [null, "lower", ""],
  ];
  for (const [v, dir, expected] of cases) assert.equal(deltaClass(v, dir), expected, `${v} ${dir}`);
});

// ---- controls --------------------------------------------------------------------------------------

test("which controls are enabled, per state and trust", () => {
  const all = (start: boolean, pause: boolean, resume: boolean, stop: boolean) => ({ start, pause, resume, stop });
  const cases: [LoopStatePayload["state"] | null, boolean, ReturnType<typeof all>][] = [
    [null, true, all(true, false, false, false)],
    ["idle", true, all(true, false, false, false)],
    ["proposing", true, all(false, true, false, true)],
    ["running", true, all(false, true, false, true)],
    ["deciding", true, all(false, true, false, true)],
    ["paused", true, all(false, false, true, true)],
    ["stopped", true, all(true, false, false, false)],
    ["errored", true, all(true, false, false, false)],
    ...(["idle", "running", "paused", "stopped", null] as const).map((s) =>
      [s, false, all(false, false, false, false)] as [LoopStatePayload["state"] | null, boolean, ReturnType<typeof all>]),
  ];
  for (const [state, trusted, expected] of cases) {
    assert.deepEqual(enabledControls(state === null ? null : loop({ state }), trusted), expected, `${state} trusted=${trusted}`);
  }
  assert.deepEqual(enabledControls(null, true, false), all(false, false, false, false), "no server: nothing");
});

test("Apply best: a best that is not the baseline, with a server", () => {
  const base = apply({ type: "reset", state: loop({ best: { number: 3, metric: 0.9 } }),
    experiments: [exp(1, { baseline: true }), exp(3)], trusted: true });
  assert.equal(canApplyBest(base), true);
  assert.equal(canApplyBest(applyMessage(base, { type: "loopState", state: loop({ best: { number: 1, metric: 0.99 } }) })), false,
    "the baseline is the best: nothing to apply");
  assert.equal(canApplyBest(applyMessage(base, { type: "loopState", state: loop({ best: null }) })), false);
  assert.equal(canApplyBest(apply({ type: "reset", state: loop({ best: { number: 3, metric: 0.9 } }), experiments: [exp(3)],
    trusted: true, problem: "no server" })), false);
});

// ---- the header's settings ---------------------------------------------------------------------------

test("the header's settings: the loop's own while it runs; else the extension's settings over nightlab.toml", () => {
  const toml = loop({ state: "idle", pid: null, budget: "300 s", policy: "noise", agent: "anthropic", model: "claude-x",
    sandbox: "auto" });
  const view = (s: LoopStatePayload, over = {}) => settingsView(s, over)!.items.map((i) => `${i.key}=${i.value}:${i.source}`);
  assert.deepEqual(view(toml), ["budget=300 s:toml", "policy=noise:toml", "agent=anthropic:toml", "model=claude-x:toml",
    "sandbox=auto:toml"]);
  assert.deepEqual(view(toml, { budgetTokens: 200000, agent: "offline" }),
    ["budget=200,000 tokens:settings", "policy=noise:toml", "agent=offline:settings", "sandbox=auto:toml"],
    "the offline agent has no model");
  assert.deepEqual(view(toml, { budgetSeconds: 60, model: "claude-y" }),
    ["budget=60 s:settings", "policy=noise:toml", "agent=anthropic:toml", "model=claude-y:settings", "sandbox=auto:toml"]);
  const running = { ...toml, state: "running" as const, pid: 4242 };
  assert.deepEqual(view(running, { budgetTokens: 200000 }), ["budget=300 s:loop", "policy=noise:loop", "agent=anthropic:loop",
    "model=claude-x:loop", "sandbox=auto:loop"], "a running loop: what it runs with, whatever the settings say now");
  assert.equal(settingsView(running, {})!.live, true);
  assert.equal(settingsView({ ...toml, state: "stopped", pid: 4242, died: true }, {})!.live, false, "a dead loop runs nothing");
  assert.equal(settingsView(null, {}), null);
});

// ---- the host's folders --------------------------------------------------------------------------------

test("each folder keeps its own loop state and ledger; the panel shows the chosen one", () => {
  let primary: string | null = "/ws/a";
  const store = new RootStore(() => primary);
  const stateOf = (root: string, over: Partial<LoopStatePayload> = {}) => loop({ root, ...over });
  assert.equal(store.apply("nightlab/loopState", stateOf("/ws/a", { state: "running" })), "/ws/a");
  assert.equal(store.apply("nightlab/loopState", stateOf("/ws/b", { state: "idle" })), "/ws/b");
  store.apply("nightlab/experimentStarted", { experiment: exp(1, { status: "running" }), root: "/ws/b" });
  store.apply("nightlab/experimentFinished", { experiment: exp(7), root: "/ws/a" });
  store.apply("nightlab/experimentFinished", { experiment: exp(8) }); // no root: the server's first folder
  assert.equal(store.chosen, "/ws/a", "by default the server's first folder");
  assert.deepEqual([...store.current().experiments.keys()], [7, 8]);
  assert.equal(store.current().state?.state, "running");
  assert.equal(store.isChosen("/ws/b"), false);
  store.choose("/ws/b");
  assert.deepEqual([store.chosen, store.current().state?.state, [...store.current().experiments.keys()]], ["/ws/b", "idle", [1]]);
  assert.deepEqual(store.choices(), [{ root: "/ws/a", label: "a", state: "running" }, { root: "/ws/b", label: "b", state: "idle" }]);
  primary = null;
  assert.equal(store.chosen, "/ws/b", "a folder picked stays picked");
  store.clear();
  assert.deepEqual(store.choices(), [], "a server restart: nothing known until it says again");
});
