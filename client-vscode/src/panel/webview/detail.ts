/**
 * The detail view of the selected experiment: what the agent expected and changed, in full; the
 * verdict and why; its runs (a loss curve for each, the best's for comparison); timings, budget, cost,
 * where it ran; and its actions (Open diff, Accept, Reject, Re-run). The ledger's payload has no log
 * tail: the view names the run's folder, which holds its logs.
 * Must not import: vscode.
 */
import type { ExperimentPayload } from "../../../../protocol/nightlab-protocol";
import {
  canAccept, canReview, curveSeries, fmtBudget, fmtCost, fmtDelta, fmtDuration, fmtMetric, fmtSigma, inFileLabel,
  reviewTitle, stageLabel, type BestCurve, type ExperimentCurves, type LiveRun,
} from "../model";
import { LossChart } from "./charts";
import { el, setAttr, setText } from "./dom";

export interface DetailEvents {
  openDiff(number: number): void;
  accept(number: number): void;
  reject(number: number): void;
  rerun(number: number): void;
  close(): void;
}

export interface DetailProps {
  experiment: ExperimentPayload | null;
  curves: ExperimentCurves | null;
  live: LiveRun | null;
  best: BestCurve | null;
  metricName: string;
  tag: string;
  trusted: boolean;
  serverUp: boolean;
}

const ACTIONS = [
  { act: "diff", label: "Open diff", title: "Show the change beside the editor" },
  { act: "accept", label: "Accept", title: "Bring this change into your files" },
  { act: "reject", label: "Reject", title: "Record that this change is not wanted" },
  { act: "rerun", label: "Re-run", title: "Run this experiment again (another seed: is it noise?)" },
] as const;

function when(iso: string | null | undefined): string {
  return iso ? iso.replace("T", " ").replace(/(\.\d+)?(Z|[+-]\d\d:\d\d)$/, "") : "";
}

export class DetailView {
  readonly root: HTMLElement;
  private readonly title = el("h3", { class: "detail-title" });
  private readonly badges = el("span", { class: "detail-badges" });
  private readonly facts = el("dl", { class: "detail-facts" });
  private readonly runs = el("ul", { class: "detail-runs" });
  private readonly chart = new LossChart("runs", "Runs");
  private readonly buttons = new Map<string, HTMLButtonElement>();
  private number: number | null = null;
  private drawn: unknown[] = [];

  constructor(events: DetailEvents) {
    const close = el("button", { class: "icon", title: "Close", "aria-label": "Close the detail view" }, "\u00d7");
    close.addEventListener("click", () => events.close());
    const actions = el("div", { class: "detail-actions", role: "toolbar", "aria-label": "Experiment actions" });
    for (const a of ACTIONS) {
      const b = el("button", { class: a.act === "diff" ? "primary small" : "secondary small", "data-detail-act": a.act,
        title: a.title }, a.label);
      b.addEventListener("click", () => {
        const n = this.number;
        if (n === null) return;
        if (a.act === "diff") events.openDiff(n);
        else if (a.act === "accept") events.accept(n);
        else if (a.act === "reject") events.reject(n);
        else events.rerun(n);
      });
      this.buttons.set(a.act, b);
      actions.append(b);
    }
    this.root = el("section", { class: "detail", hidden: true, "aria-label": "The selected experiment" },
      el("div", { class: "detail-head" }, this.title, close), this.badges, actions, this.facts, this.chart.root, this.runs);
  }

  update(p: DetailProps): void {
    const e = p.experiment;
    this.root.hidden = e === null;
    if (e === null) {
      this.number = null;
      setAttr(this.root, "data-detail", null);
      return;
    }
    const key = [e, p.curves, p.live, p.best, p.metricName, p.trusted, p.serverUp];
    if (key.every((v, i) => v === this.drawn[i])) return;
    this.drawn = key;
    this.number = e.number;
    setAttr(this.root, "data-detail", String(e.number));
    setAttr(this.root, "data-status", e.status);
    setText(this.title, `#${e.number} ${e.baseline ? e.description || "baseline" : e.description}`);
    this.drawBadges(e);
    this.drawFacts(e, p);

    const live = p.live !== null && p.live.number === e.number ? p.live : null;
    const runs = live?.runs.length ? live.runs : p.curves?.number === e.number ? p.curves.runs : [];
    const running = e.status === "running";
    this.chart.set({ curve: curveSeries(runs, p.best, e.number), number: e.number, running,
      emptyText: running ? "Waiting for the first loss\u2026" : p.curves?.number === e.number ? "No loss recorded for its runs."
        : "Loading its runs\u2026" });
    this.runs.replaceChildren(...runs.filter((r) => r.points.length).map((r) => {
      const last = r.points[r.points.length - 1];
      return el("li", { "data-stage": r.stage }, `${stageLabel(r.stage)}: ${r.points.length} steps, last loss ${last.loss.toFixed(4)}`);
    }));

    const serverUp = p.serverUp;
    this.buttons.get("diff")!.disabled = !serverUp || running;
    this.buttons.get("accept")!.disabled = !serverUp || !canAccept(e);
    this.buttons.get("reject")!.disabled = !serverUp || !canReview(e);
    this.buttons.get("rerun")!.disabled = !serverUp || !p.trusted || running;
    setAttr(this.buttons.get("accept")!, "title", canReview(e) ? "Bring this change into your files"
      : `Bring this change into your files (it was a ${e.status}: you are asked first)`);
  }

  private drawBadges(e: ExperimentPayload): void {
    const parts: HTMLElement[] = [el("span", { class: `badge verdict ${e.status}` }, e.status)];
    if (e.review) parts.push(el("span", { class: `review ${e.review}`, title: reviewTitle(e) ?? "" }, e.review));
    const inFile = inFileLabel(e);
    if (inFile) parts.push(el("span", { class: `in-file ${e.inFile}` }, inFile));
    if (e.baseline) parts.push(el("span", { class: "tag" }, "baseline"));
    if (e.rerunOf) parts.push(el("span", { class: "tag" }, `re-run of #${e.rerunOf}`));
    if (e.portOf) parts.push(el("span", { class: "tag" }, `port of ${e.portOf}`));
    if (e.replicatedIn?.length) parts.push(el("span", { class: "tag" }, `replicated in ${e.replicatedIn.join(", ")}`));
    this.badges.replaceChildren(...parts);
  }

  private drawFacts(e: ExperimentPayload, p: DetailProps): void {
    const rows: [string, string, string?][] = [];
    const add = (term: string, value: string | null | undefined, cls?: string) => {
      if (value) rows.push([term, value, cls]);
    };
    add("Hypothesis", e.hypothesis, "long");
    add("Description", e.description, "long");
    add("Reason", e.reason, "long");
    const metric = fmtMetric(e.metric);
    add(p.metricName, metric && `${metric}${e.selfReported ? " (self-reported)" : ""}`);
    add("\u0394 vs best before", fmtDelta(e.delta));
    add("\u03c3 (noise)", fmtSigma(e.sigma));
    if (e.z !== null && e.z !== undefined && Number.isFinite(e.z)) add("z", e.z.toFixed(2));
    if (e.repeats) add("Runs", `${e.repeats} full run${e.repeats === 1 ? "" : "s"} behind the metric`);
    add("Budget", fmtBudget(e.budgetMode, e.budgetAmount));
    add("Started", when(e.startedAt));
    add("Finished", when(e.finishedAt));
    add("Wall clock", fmtDuration(e.durationS));
    if (e.costUsd !== null && e.costUsd !== undefined) add("Agent's cost", fmtCost(e.costUsd));
    add("Agent", e.agent);
    add("Ran on", [e.node && `node ${e.node}`, e.device, e.slot].filter(Boolean).join(", "));
    add("Port of", e.portOf && `${e.portOf} (another lineage's keep, judged here by this lineage's baseline)`);
    if (e.replicatedIn?.length) add("Replicated in", e.replicatedIn.join(", "));
    if (e.memoryGb !== null && e.memoryGb !== undefined) add("Memory", `${e.memoryGb.toFixed(1)} GB`);
    add("Change", e.diffSummary);
    add("Commit", e.commit && `${e.commit.slice(0, 10)} (parent ${e.parentCommit.slice(0, 10)})`);
    add("Run folder", `.nightlab/runs/${p.tag || e.tag}/${e.number}`, "path");
    add("Review", reviewTitle(e));
    this.facts.replaceChildren(...rows.flatMap(([term, value, cls]) => [
      el("dt", {}, term), el("dd", { class: cls ?? null }, value)]));
  }
}
