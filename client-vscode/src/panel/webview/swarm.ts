/**
 * The panel's many-machines section (drawn only for a workspace with [[lineage]] tables or runs on a Ray
 * cluster): a row per lineage, the one whose experiments the panel shows marked, a click on another
 * shows that one; then the cluster's nodes and what the runs hold now. Draws what panel/swarmView.ts says.
 * Must not import: vscode.
 */
import type { LoopStatePayload } from "../../../../protocol/nightlab-protocol";
import { clusterView, lineageRows } from "../swarmView";
import { el } from "./dom";

export class SwarmView {
  readonly root = el("section", { class: "swarm", hidden: true, "aria-label": "Lineages and cluster" });
  private drawn = "";

  constructor(private readonly chooseLineage: (name: string) => void) {}

  update(state: LoopStatePayload | null): void {
    const rows = lineageRows(state);
    const cluster = clusterView(state?.cluster);
    const key = JSON.stringify([rows, cluster]);
    if (key === this.drawn) return; // states come often; this part changes rarely
    this.drawn = key;
    this.root.hidden = rows.length === 0 && cluster === null;
    const parts: HTMLElement[] = [];
    if (rows.length) {
      const list = el("div", { class: "lineages", role: "list", "aria-label": "Lineages" });
      for (const r of rows) {
        const row = el("button", { class: r.shown ? "lineage shown" : "lineage", role: "listitem", "data-lineage": r.name,
          "aria-current": r.shown ? "true" : null, title: r.shown ? `The panel shows lineage ${r.name}`
            : `Show lineage ${r.name}'s experiments` + (r.focus ? ` (focus: ${r.focus})` : "") },
        el("span", { class: r.running ? "lineage-dot running" : "lineage-dot", title: r.running ? "its loop runs" : "not running" }),
        el("span", { class: "lineage-name" }, r.name),
        el("span", { class: "lineage-resources" }, r.resources),
        el("span", { class: "lineage-count" }, r.experiments),
        el("span", { class: "lineage-best" }, r.best, r.gain ? el("span", { class: "lineage-gain" }, ` ${r.gain}`) : ""),
        r.ports ? el("span", { class: "lineage-ports" }, r.ports) : "",
        r.replicated ? el("span", { class: "lineage-replicated" }, r.replicated) : "");
        if (!r.shown) row.addEventListener("click", () => this.chooseLineage(r.name));
        list.append(row);
      }
      parts.push(el("div", { class: "swarm-title" }, "Lineages"), list);
    }
    if (cluster) {
      parts.push(el("div", { class: "cluster", "data-nodes": cluster.nodes.length },
        el("div", { class: "swarm-title" }, cluster.title),
        cluster.error ? el("div", { class: "cluster-error" }, cluster.error) : el("div", { class: "cluster-use" }, cluster.inUse),
        ...cluster.nodes.map((n) => el("div", { class: "cluster-node" },
          el("span", { class: "node-label" }, n.label), " ", el("span", { class: "node-resources" }, n.resources)))));
    }
    this.root.replaceChildren(...parts);
  }
}
