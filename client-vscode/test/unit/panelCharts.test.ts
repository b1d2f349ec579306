// The panel's chart data (src/panel/model.ts) and its HTML (src/panel/html.ts).
import assert from "node:assert/strict";
import { test } from "node:test";

import type { CurvePoint, ExperimentPayload, ExperimentStatus } from "../../../protocol/nightlab-protocol";
import { makeNonce, renderHtml } from "../../src/panel/html";
import { curveSeries, lossRange, progressRange, progressSeries, thin } from "../../src/panel/model";

const exp = (number: number, status: ExperimentStatus, metric: number | null, baseline = false): ExperimentPayload => ({
  number, tag: "main", status, description: "", hypothesis: "", metric, agent: "offline", commit: "", parentCommit: "",
  startedAt: "", reason: "", diffSummary: "", baseline,
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

test("curve: the running and the best on one x axis of budgeted seconds", () => {
  const running = pts([1, 0.5, 5], [2, 1.5, 4]);
  const best = pts([1, 0.5, 4.5], [2, 1.0, 3.5], [3, 2.0, 3]);
  assert.deepEqual(curveSeries(running, best), {
    xKey: "elapsedS",
    data: [[0.5, 1.0, 1.5, 2.0], [5, null, 4, null], [4.5, 3.5, null, 3]],
  });
});

test("curve: x is the step when no series spans any time (warm-up steps are not budgeted)", () => {
  const cases: [CurvePoint[], CurvePoint[], "elapsedS" | "step"][] = [
    [pts([1, 0, 5], [2, 0, 4]), pts([1, 0, 5], [2, 0, 4.5], [3, 0, 4]), "step"],
    [pts([1, 0, 5], [2, 0, 4]), pts([1, 0, 5], [11, 0.4, 4]), "elapsedS"],
    [[], [], "step"],
    [pts([1, 0, 5]), [], "step"],
  ];
  for (const [running, best, key] of cases) assert.equal(curveSeries(running, best).xKey, key);
  assert.deepEqual(curveSeries(pts([1, 0, 5], [2, 0, 4]), pts([2, 0, 4.5], [3, 0, 4])).data,
    [[1, 2, 3], [5, 4, null], [null, 4.5, 4]]);
});

test("curve: each series thinned to half the cap, x ascending, ends kept", () => {
  const long = Array.from({ length: 10_000 }, (_, i) => ({ step: i + 1, elapsedS: i * 0.1, loss: 10 - i / 1000 }));
  const { data } = curveSeries(long, long.slice(0, 5000), 2000);
  const [x, run, best] = data;
  assert.ok(x.length <= 2000, String(x.length));
  assert.equal(run.filter((v) => v !== null).length, 1000);
  assert.equal(best.filter((v) => v !== null).length, 1000);
  assert.ok(x.every((v, i) => i === 0 || v >= x[i - 1]), "x ascending");
  assert.equal(x[0], 0);
  assert.equal(x[x.length - 1], long[long.length - 1].elapsedS);
  assert.equal(run[run.length - 1], long[long.length - 1].loss);
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
  const curve = curveSeries(pts([1, 0, 10], [2, 0.5, 8], [3, 1, 4], [4, 5, 3], [5, 10, 2.5]), pts([1, 0, 10], [6, 10, 2]));
  const [lo, hi] = lossRange(curve)!;
  assert.ok(Math.abs(lo - (2 - 0.16)) < 1e-9 && Math.abs(hi - (4 + 0.16)) < 1e-9, `${lo} ${hi}`);
  assert.equal(lossRange(curveSeries(pts([1, 0, 3]), [])), null, "one point: uPlot decides");
  const flat = lossRange(curveSeries(pts([1, 0, 3], [2, 1, 3]), []))!;
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
