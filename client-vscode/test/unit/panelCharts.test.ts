// The panel's chart data (src/panel/model.ts) and its HTML (src/panel/html.ts).
import assert from "node:assert/strict";
import { test } from "node:test";

import type { CurvePoint, ExperimentPayload, ExperimentStatus } from "../../../protocol/nightlab-protocol";
import { makeNonce, renderHtml } from "../../src/panel/html";
import { curveSeries, lossRange, progressRange, progressSeries, stagesOf, thin, type RunCurve } from "../../src/panel/model";

const exp = (number: number, status: ExperimentStatus, metric: number | null, baseline = false): ExperimentPayload => ({
  number, tag: "main", status, description: "", hypothesis: "", metric, agent: "offline", commit: "", parentCommit: "",
  startedAt: "", reason: "", diffSummary: "", baseline, replicatedIn: [],
});

// ---- the progress chart ----------------------------------------------------------------------------

const ledger = [
  exp(7, "running", null),
  exp(6, "keep", 0.95),
  exp(5, "crash", null),
  exp(4, "discard", 0.99),
  exp(3, "keep", 0.97),
  exp(2, "discard", 1.02),
  exp(1, "discard", 1.0, true), // a baseline counts as kept, whatever its status says
  exp(8, "interrupted", null),
];

test("progress: kept and discarded per experiment, crashes marked, the frontier for lower is better", () => {
  const d = progressSeries(ledger, "lower");
  assert.deepEqual(d.x, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(d.kept, [1.0, null, 0.97, null, null, 0.95]);
  assert.deepEqual(d.discarded, [null, 1.02, null, 0.99, null, null]);
  assert.deepEqual(d.frontier, [1.0, 1.0, 0.97, 0.97, 0.97, 0.95]);
  assert.deepEqual(d.crashes, [5]);
});

test("progress: the frontier for higher is better is the running maximum of kept ones", () => {
  const cases: [ExperimentPayload[], (number | null)[]][] = [
    [[exp(1, "keep", 0.5, true), exp(2, "keep", 0.4), exp(3, "keep", 0.7), exp(4, "discard", 0.9)], [0.5, 0.5, 0.7, 0.7]],
    [[exp(1, "crash", null), exp(2, "discard", 0.3), exp(3, "keep", 0.2)], [null, null, 0.2]],
    [[], []],
  ];
  for (const [exps, frontier] of cases) assert.deepEqual(progressSeries(exps, "higher").frontier, frontier);
  // the same ledger under "lower" gives the running minimum
  assert.deepEqual(progressSeries(cases[0][0], "lower").frontier, [0.5, 0.4, 0.4, 0.4]);
});

// ---- the loss curve --------------------------------------------------------------------------------

const pts = (...xs: [number, number, number][]): CurvePoint[] => xs.map(([step, elapsedS, loss]) => ({ step, elapsedS, loss }));

const run = (stage: string, points: CurvePoint[]): RunCurve => ({ stage, points });

test("curve: every run of the experiment and the best's, on one x axis of steps", () => {
  const main = pts([1, 0.5, 5], [2, 1.5, 4]);
  const repeat = pts([1, 0.4, 5.1], [3, 2.0, 3.9]);
  const best = pts([1, 0.5, 4.5], [2, 1.0, 3.5]);
  assert.deepEqual(curveSeries([run("repeat-1", repeat), run("run", main)], { number: 2, points: best }, 7), {
    labels: ["#7 run", "#7 repeat 1", "best #2"],
    kinds: ["run", "run", "best"],
    data: [[1, 2, 3], [5, 4, null], [5.1, null, 3.9], [4.5, 3.5, null]],
  });
});

test("curve: a run without a point has no series, so the legend never names a missing curve", () => {
  const c = curveSeries([run("smoke", []), run("run", pts([1, 0, 5])), run("repeat-1", [])], null, 3);
  assert.deepEqual(c.labels, ["#3 run"]);
  assert.equal(c.data.length, 2);
  assert.deepEqual(curveSeries([], null, null), { labels: [], kinds: [], data: [[]] });
  // the best is the experiment itself: drawn once, as its own run
  assert.deepEqual(curveSeries([run("run", pts([1, 0, 5]))], { number: 3, points: pts([1, 0, 5]) }, 3).labels, ["#3 run"]);
});

test("curve: the stages a finished experiment's runs were recorded under", () => {
  const e = (repeats: number | null, baseline = false) => ({ ...exp(1, "keep", 1, baseline), repeats });
  assert.deepEqual(stagesOf(e(null)), ["smoke", "run"]);
  assert.deepEqual(stagesOf(e(3)), ["smoke", "run", "repeat-1", "repeat-2"]);
  assert.deepEqual(stagesOf(e(5, true)), ["run", "repeat-1", "repeat-2", "repeat-3", "repeat-4"], "a baseline has no smoke run");
});

test("curve: each series thinned to its share of the cap, x ascending, ends kept", () => {
  const long = Array.from({ length: 10_000 }, (_, i) => ({ step: i + 1, elapsedS: i * 0.1, loss: 10 - i / 1000 }));
  const { data } = curveSeries([run("run", long)], { number: 1, points: long.slice(0, 5000) }, 2, 2000);
  const [x, main, best] = data;
  assert.ok(x.length <= 2000, String(x.length));
  assert.equal(main.filter((v) => v !== null).length, 1000);
  assert.equal(best.filter((v) => v !== null).length, 1000);
  assert.ok(x.every((v, i) => i === 0 || v > x[i - 1]), "x ascending");
  assert.equal(x[0], 1);
  assert.equal(x[x.length - 1], long[long.length - 1].step);
  assert.equal(main[main.length - 1], long[long.length - 1].loss);
});

test("thin", () => {
  const cases: [number, number, number[]][] = [
    [5, 10, [0, 1, 2, 3, 4]], [10, 4, [0, 3, 6, 9]], [10, 2, [0, 9]], [10, 1, [9]], [0, 3, []],
  ];
  for (const [n, max, expected] of cases) assert.deepEqual(thin(Array.from({ length: n }, (_, i) => i), max), expected, `${n} to ${max}`);
});

// ---- the page --------------------------------------------------------------------------------------

test("the page: a strict CSP with the nonce, one stylesheet, one script, no inline code", () => {
  const nonce = makeNonce();
  const html = renderHtml({ scriptUri: "https://file+.vscode-resource.x/dist/webview.js", styleUri: "https://r/dist/webview.css",
    cspSource: "https://*.vscode-cdn.net", nonce });
  const csp = /<meta http-equiv="Content-Security-Policy" content="([^"]*)">/.exec(html)?.[1];
  assert.equal(csp, `default-src 'none'; img-src https://*.vscode-cdn.net data:; style-src https://*.vscode-cdn.net 'nonce-${nonce}'; `
    + `font-src https://*.vscode-cdn.net; script-src 'nonce-${nonce}';`);
  assert.equal(html.match(/<script/g)?.length, 1);
  assert.ok(html.includes(`<script nonce="${nonce}" src="https://file+.vscode-resource.x/dist/webview.js"></script>`));
  assert.equal(html.match(/<link rel="stylesheet"/g)?.length, 1);
  assert.ok(html.includes(`href="https://r/dist/webview.css"`));
  assert.doesNotMatch(html, /\son[a-z]+=|style="|<style/i, "no inline handler or style");
});

test("the page escapes what it is given", () => {
  const html = renderHtml({ scriptUri: "x\"><script>alert(1)</script>", styleUri: "s", cspSource: "c", nonce: "n" });
  assert.equal(html.match(/<script/g)?.length, 1);
});

test("nonces: 32 letters and digits, never the same", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const n = makeNonce();
    assert.match(n, /^[A-Za-z0-9]{32}$/);
    seen.add(n);
  }
  assert.equal(seen.size, 200);
});

test("the loss axis leaves out the first steps' high loss, and pads", () => {
  // x 0..10; the first 10% (x < 1) holds the initial loss 10
  // steps 1..11; the first 10% (step < 2) holds the initial loss 10
  const curve = curveSeries([run("run", pts([1, 0, 10], [2, 0.5, 4], [3, 1, 3.5], [6, 5, 3], [11, 10, 2.5]))],
    { number: 1, points: pts([1, 0, 10], [11, 10, 2]) }, 2);
  const [lo, hi] = lossRange(curve)!;
  assert.ok(Math.abs(lo - (2 - 0.16)) < 1e-9 && Math.abs(hi - (4 + 0.16)) < 1e-9, `${lo} ${hi}`);
  assert.equal(lossRange(curveSeries([run("run", pts([1, 0, 3]))], null, 1)), null, "one point: uPlot decides");
  const flat = lossRange(curveSeries([run("run", pts([1, 0, 3], [2, 1, 3]))], null, 1))!;
  assert.ok(flat[0] < 3 && flat[1] > 3, "a flat curve still gets a range");
});

test("the progress axis stays around the kept ones: a wild discard does not flatten the frontier", () => {
  const range = (exps: ExperimentPayload[]) => progressRange(progressSeries(exps, "lower"));
  const kept = [exp(1, "keep", 4.0, true), exp(2, "keep", 3.9)];
  const cases: [string, ExperimentPayload[], [number, number] | null][] = [
    ["nothing", [], null],
    ["kept only", kept, [3.9 - 0.008, 4.0 + 0.008]],
    ["a discard within a kept spread", [...kept, exp(3, "discard", 4.05)], [3.9 - 0.012, 4.05 + 0.012]],
    ["a wild discard: one kept spread above", [...kept, exp(3, "discard", 9)], [3.9 - 0.016, 4.1 + 0.016]],
    ["one kept: 0.2% room", [exp(1, "keep", 1, true), exp(2, "discard", 5)], [1 - 0.00016, 1.002 + 0.00016]],
    ["discards only", [exp(1, "discard", 2), exp(2, "discard", 3)], [2 - 0.08, 3 + 0.08]],
  ];
  for (const [name, exps, expected] of cases) {
    const got = range(exps);
    if (expected === null) assert.equal(got, null, name);
    else assert.ok(got !== null && Math.abs(got[0] - expected[0]) < 1e-9 && Math.abs(got[1] - expected[1]) < 1e-9, `${name}: ${got}`);
  }
});

test("the progress axis fits the near misses: a discard better than the baseline is drawn, not clamped to the edge", () => {
  const range = (exps: ExperimentPayload[], dir: "lower" | "higher" = "lower") => progressRange(progressSeries(exps, dir))!;
  // the baseline alone is kept (room: 0.2% of it); a discard 1% better than it was cut to the edge before
  const nearMiss = [exp(1, "keep", 1.0, true), exp(2, "discard", 0.99), exp(3, "discard", 1.5)];
  const [lo, hi] = range(nearMiss);
  assert.ok(lo < 0.99 && hi < 1.5, `${lo} ${hi}: the near miss inside, the wild discard outside`);
  // the same for higher is better
  const up = [exp(1, "keep", 0.5, true), exp(2, "discard", 0.51), exp(3, "discard", 0.1)];
  const [ulo, uhi] = range(up, "higher");
  assert.ok(uhi > 0.51 && ulo > 0.1, `${ulo} ${uhi}`);
  // a discard worse than the baseline is no near miss: the kept spread still decides
  const worse = [exp(1, "keep", 4.0, true), exp(2, "keep", 3.9), exp(3, "discard", 9)];
  assert.ok(Math.abs(range(worse)[1] - (4.1 + 0.016)) < 1e-9);
  // the state's baseline counts over the ledger's
  const d = progressSeries([exp(1, "keep", 1.0, true), exp(2, "discard", 0.99)], "lower", 0.98);
  assert.equal(d.baseline, 0.98);
  assert.ok(progressRange(d)![0] > 0.99 - 0.003, "0.99 is worse than a 0.98 baseline: no near miss");
});
