import assert from "node:assert/strict";
import { test } from "node:test";

import type { LoopStatePayload, ProgressPayload } from "../../../protocol/nightlab-protocol";
import { clock, statusText, timeLeft } from "../../src/statusText";

const state = (over: Partial<LoopStatePayload> = {}): LoopStatePayload => ({
  state: "running", reason: "", tag: "main", agent: "offline", budget: "60 s", metricName: "val_bpb",
  direction: "lower", best: { number: 3, metric: 2.238044 }, baseline: 2.3, experimentsRun: 4, running: [5],
  costUsd: 0, policy: "noise", sandbox: "auto", died: false, lineages: [], ...over,
});
const sample = (over: Partial<ProgressPayload> = {}): ProgressPayload => ({
  number: 5, step: 10, elapsedS: 15, fraction: 0.25, stage: "run", ...over,
});
const up: { running: boolean; problem: string | null } = { running: true, problem: null };

test("clock", () => {
  for (const [s, text] of [[0, "0:00"], [65, "1:05"], [3723, "1:02:03"], [-3, "0:00"]] as const) assert.equal(clock(s), text);
});

test("time left comes from the budget fraction, and only from a sensible one", () => {
  assert.equal(timeLeft(sample()), 45);
  for (const bad of [{ fraction: null }, { fraction: 0 }, { fraction: 1.5 }, { elapsedS: 0 }]) assert.equal(timeLeft(sample(bad)), null);
});

const cases: [string, LoopStatePayload | null, ProgressPayload | undefined, typeof up, RegExp][] = [
  ["server off names the problem", null, undefined, { running: false, problem: "no nightlab package" }, /Nightlab: off/],
  ["running with time left and the best", state(), sample(), up, /^\$\(sync~spin\) Nightlab #5 · 0:45 left · best 2\.2380 \(#3\)$/],
  ["running without a fraction shows no time", state(), sample({ fraction: null }), up, /Nightlab #5 · best/],
  ["two slots", state({ running: [5, 6] }), sample({ number: 6 }), up, /Nightlab #6 \+1 · 0:45 left/],
  ["a sample of another experiment is not used", state({ running: [7] }), sample(), up, /Nightlab #7 · best/],
  ["stopped", state({ state: "stopped", running: [] }), undefined, up, /^\$\(beaker\) Nightlab: stopped · best 2\.2380/],
  ["paused", state({ state: "paused", running: [] }), undefined, up, /debug-pause.*paused/],
  ["no best yet", state({ best: null, running: [] , state: "proposing"}), undefined, up, /no best yet/],
  ["a loop that died says so", state({ state: "stopped", running: [], died: true, reason: "died: Killed" }), undefined, up,
    /^\$\(error\) Nightlab: loop died · best 2\.2380/],
];
for (const [name, s, p, server, expected] of cases) {
  test(`status text: ${name}`, () => assert.match(statusText(s, p, server).text, expected));
}

test("the tooltip says what the loop does and where the metric stands", () => {
  const tip = statusText(state({ reason: "LR 0.003 -> 0.004" }), sample(), up).tooltip;
  assert.match(tip, /running \(LR 0\.003 -> 0\.004\)/);
  assert.match(tip, /val_bpb best 2\.2380 \(#3\), baseline 2\.3000/);
  assert.equal(statusText(null, undefined, { running: false, problem: "no python" }).tooltip, "no python");
});
