// Many machines in the panel (src/panel/swarmView.ts): the lineages' rows and the cluster's view.
import assert from "node:assert/strict";
import { test } from "node:test";

import type { ClusterPayload, LineagePayload, LoopStatePayload } from "../../../protocol/nightlab-protocol";
import { clusterView, lineageRows } from "../../src/panel/swarmView";
import { loop } from "./panelModel.test";

const lineage = (name: string, over: Partial<LineagePayload> = {}): LineagePayload => ({
  name, resources: "", focus: "", experiments: 0, best: null, baseline: null, running: false, ports: 0, portsKept: 0,
  replicated: 0, ...over,
});

test("a workspace without lineages or a cluster draws nothing", () => {
  assert.deepEqual(lineageRows(loop()), []);
  assert.deepEqual(lineageRows(null), []);
  assert.equal(clusterView(loop().cluster), null);
});

test("a row per lineage, the shown one marked, its best against its own baseline, ports and replications", () => {
  const state: LoopStatePayload = loop({ tag: "cpu", lineages: [
    lineage("gpu", { resources: "num_gpus=1", experiments: 31, best: { number: 12, metric: 0.978112 }, baseline: 0.997755,
      running: true, ports: 2, portsKept: 1, replicated: 1 }),
    lineage("cpu", { experiments: 1, focus: "initialisation and normalisation" }),
  ] });
  const [gpu, cpu] = lineageRows(state);
  assert.deepEqual(gpu, { name: "gpu", shown: false, running: true, resources: "num_gpus=1", focus: "",
    experiments: "31 experiments", best: "best 0.978112 (#12)", gain: "\u22121.97%", ports: "ports kept 1 of 2",
    replicated: "replicated elsewhere 1" });
  assert.equal(cpu.shown, true);
  assert.equal(cpu.experiments, "1 experiment");
  assert.equal(cpu.resources, "default resources");
  assert.equal(cpu.best, "no best yet");
  assert.equal(cpu.gain, "");
  assert.equal(cpu.ports, "");
  assert.equal(cpu.replicated, "");
});

test("the cluster: its nodes with what they have, what the runs hold of the total", () => {
  const cluster: ClusterPayload = {
    address: "10.0.0.1:6379", error: "",
    nodes: [{ id: "a1f3c9d2e4b5ff00", address: "10.0.0.1", resources: { GPU: 8, CPU: 32 } },
      { id: "77c0e1aa9b3f0000", address: "10.0.0.7", resources: { CPU: 8, laptop: 1 } }],
    total: { CPU: 40, GPU: 8, laptop: 1 }, inUse: { CPU: 4.5, GPU: 1 },
  };
  const v = clusterView(cluster)!;
  assert.equal(v.title, "Ray cluster 10.0.0.1:6379 \u00b7 2 nodes");
  assert.equal(v.inUse, "in use: CPU 4.5/40 \u00b7 GPU 1/8 \u00b7 laptop 0/1");
  assert.deepEqual(v.nodes, [{ label: "10.0.0.1 (a1f3c9d2e4b5)", resources: "CPU 32 \u00b7 GPU 8" },
    { label: "10.0.0.7 (77c0e1aa9b3f)", resources: "CPU 8 \u00b7 laptop 1" }]);
  const down = clusterView({ ...cluster, nodes: [], total: {}, inUse: {}, error: "not reachable (ConnectionError: no head)" })!;
  assert.equal(down.title, "Ray cluster 10.0.0.1:6379");
  assert.equal(down.inUse, "");
  assert.equal(down.error, "not reachable (ConnectionError: no head)");
});
