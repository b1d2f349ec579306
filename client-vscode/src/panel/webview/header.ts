/**
 * The top of the panel: banners (no server, untrusted workspace, a loop that died, a failed request),
 * the folder picker (more than one folder with a loop), where the loop stands (state, reason, best
 * against the baseline, experiments, cost), the settings in effect or those Start would use (and where
 * each comes from), Apply best and the loop's controls. Draws what panel/model.ts decides.
 * Must not import: vscode.
 */
import type { LoopControl } from "../messages";
import { canApplyBest, enabledControls, fmtCost, fmtMetric, gainPercent, showsCost, type PanelModel } from "../model";
import { settingsView, SOURCE_WORDS } from "../settingsView";
import { el, setAttr, setText } from "./dom";

const CONTROLS: { action: LoopControl; label: string; title: string }[] = [
  { action: "start", label: "Start", title: "Start the loop: propose, train, keep or discard, repeat" },
  { action: "pause", label: "Pause", title: "Let the running experiments finish, then wait" },
  { action: "resume", label: "Resume", title: "Start experiments again" },
  { action: "stop", label: "Stop", title: "End the running experiments now (recorded as interrupted) and stop" },
];

const STATE_WORDS: Record<string, string> = {
  idle: "Idle", proposing: "Proposing", running: "Running", deciding: "Deciding", paused: "Paused",
  stopped: "Stopped", errored: "Errored",
};

export interface HeaderEvents {
  control(action: LoopControl): void;
  applyBest(): void;
  chooseRoot(root: string): void;
  dismissError(): void;
}

export class Header {
  readonly root: HTMLElement;
  private readonly problem = el("div", { class: "banner problem", role: "alert", hidden: true });
  private readonly untrusted = el("div", { class: "banner untrusted", hidden: true },
    el("strong", {}, "Untrusted workspace: "), "the loop cannot start here. The experiments already recorded are shown.");
  private readonly errorText = el("span", { class: "text" });
  private readonly error: HTMLElement;
  private readonly stateName = el("span", { class: "state-name" });
  private readonly reason = el("span", { class: "reason" });
  private readonly metricName = el("span", { class: "metric-name" });
  private readonly bestValue = el("span", { class: "best-value" });
  private readonly bestNumber = el("span", { class: "best-number" });
  private readonly gain = el("span", { class: "gain" });
  private readonly facts = el("div", { class: "facts" });
  private readonly died = el("div", { class: "banner died", role: "alert", hidden: true });
  private readonly settings = el("div", { class: "settings" });
  private readonly picker = el("select", { class: "root-picker", "aria-label": "The folder whose loop the panel shows" });
  private readonly pickerLine = el("label", { class: "root-line", hidden: true }, el("span", {}, "Folder"), this.picker);
  private readonly applyBest = el("button", { class: "secondary apply-best", "data-command": "applyBest", disabled: true,
    title: "Merge the best experiment's change (and the kept ones it builds on) into your files" }, "Apply best");
  private readonly buttons = new Map<LoopControl, HTMLButtonElement>();

  constructor(events: HeaderEvents) {
    const dismiss = el("button", { class: "icon", title: "Dismiss", "aria-label": "Dismiss" }, "\u00d7");
    dismiss.addEventListener("click", () => events.dismissError());
    this.error = el("div", { class: "banner error", role: "alert", hidden: true }, this.errorText, dismiss);
    const controls = el("div", { class: "controls", role: "toolbar", "aria-label": "Loop controls" });
    for (const c of CONTROLS) {
      const b = el("button", { class: c.action === "start" ? "primary" : "secondary", "data-action": c.action,
        title: c.title, disabled: true }, c.label);
      b.addEventListener("click", () => events.control(c.action));
      this.buttons.set(c.action, b);
      controls.append(b);
    }
    this.applyBest.addEventListener("click", () => events.applyBest());
    this.picker.addEventListener("change", () => events.chooseRoot(this.picker.value));
    this.root = el("header", { class: "status" },
      this.problem, this.untrusted, this.died, this.error,
      this.pickerLine,
      el("div", { class: "state-line" }, el("span", { class: "state-dot" }), this.stateName, this.reason),
      el("div", { class: "best-line" }, this.metricName, this.bestValue, this.bestNumber, this.gain),
      this.settings,
      this.facts,
      el("div", { class: "control-line" }, controls, this.applyBest));
  }

  update(m: PanelModel): void {
    setText(this.problem, m.problem ?? "");
    this.problem.hidden = !m.problem;
    this.untrusted.hidden = m.trusted;
    setText(this.errorText, m.error ?? "");
    this.error.hidden = !m.error;

    const s = m.state;
    const state = s?.state ?? (m.problem ? "errored" : "idle");
    setAttr(this.root, "data-state", state);
    setText(this.stateName, m.loaded ? STATE_WORDS[state] ?? state : "Connecting\u2026");
    const reason = s?.reason ?? (m.loaded && !m.problem ? "the loop has not started" : "");
    setText(this.reason, reason);
    setAttr(this.reason, "title", reason || null);

    setText(this.metricName, s?.metricName ?? "val_bpb");
    setText(this.bestValue, s?.best ? fmtMetric(s.best.metric) : "");
    this.bestValue.hidden = !s?.best;
    setText(this.bestNumber, s?.best ? `best #${s.best.number}` : "no best yet");
    const gain = gainPercent(s?.best?.metric, s?.baseline);
    const baseline = s?.baseline;
    setText(this.gain, baseline === null || baseline === undefined ? ""
      : gain === null || s?.best?.number === undefined || Math.abs(gain) < 5e-5
        ? `baseline ${fmtMetric(baseline)}`
        : `${gain > 0 ? "+" : "\u2212"}${Math.abs(gain).toFixed(2)}% vs baseline ${fmtMetric(baseline)}`);
    const better = gain !== null && gain !== 0 && ((gain < 0) === (s?.direction !== "higher"));
    setAttr(this.gain, "class", gain === null || Math.abs(gain) < 5e-5 ? "gain" : better ? "gain better" : "gain worse");

    this.died.hidden = !s?.died;
    this.died.replaceChildren(...(s?.died ? [el("strong", {}, "Loop died: "), s.reason || "the loop process ended without stopping",
      s.log ? el("div", { class: "log-path" }, `its log: ${s.log}`) : ""] : []));
    this.drawSettings(m);
    this.drawPicker(m);

    const facts: string[] = [];
    if (s) {
      facts.push(`${s.experimentsRun} experiment${s.experimentsRun === 1 ? "" : "s"}`);
      if (showsCost(s.agent)) facts.push(`${fmtCost(s.costUsd)} spent`);
      if (s.tag && s.tag !== "main") facts.push(`tag ${s.tag}`);
    } else if (m.experiments.length) {
      facts.push(`${m.experiments.length} experiments recorded`);
    }
    setText(this.facts, facts.filter(Boolean).join(" \u00b7 "));

    const enabled = enabledControls(s, m.trusted, m.loaded && !m.problem);
    for (const [action, b] of this.buttons) {
      b.disabled = !enabled[action];
      // the one control that matters now is the primary one
      setAttr(b, "class", enabled[action] && (action === "start" || action === "resume") ? "primary" : "secondary");
    }
    this.applyBest.disabled = !canApplyBest(m);
    setAttr(this.applyBest, "title", s?.best ? `Merge #${s.best.number}'s change (and the kept ones it builds on) into your files`
      : "No best yet: nothing to apply");
  }

  /** budget · policy · agent · model · sandbox, each with where it comes from. */
  private drawSettings(m: PanelModel): void {
    const v = settingsView(m.state, m.overrides);
    this.settings.hidden = !v || v.items.length === 0;
    if (!v) return;
    setAttr(this.settings, "data-live", v.live ? "true" : "false");
    const lead = el("span", { class: "settings-lead" }, v.live ? "Running with" : "Start uses");
    this.settings.replaceChildren(lead, ...v.items.map((it) => el("span", { class: `setting src-${it.source}`, "data-key": it.key,
      "data-source": it.source, title: `${it.key}: ${it.value} (${SOURCE_WORDS[it.source]})` },
      el("span", { class: "setting-key" }, it.key), " ", el("span", { class: "setting-value" }, it.value),
      it.source === "loop" ? "" : el("span", { class: "setting-source" }, it.source === "settings" ? "settings" : "toml"))));
  }

  private drawPicker(m: PanelModel): void {
    this.pickerLine.hidden = m.roots.length < 2;
    const have = Array.from(this.picker.options).map((o) => `${o.value}\n${o.textContent}`).join("|");
    const want = m.roots.map((r) => `${r.root}\n${r.label}${r.state ? ` (${r.state})` : ""}`).join("|");
    if (have !== want) {
      this.picker.replaceChildren(...m.roots.map((r) => el("option", { value: r.root, title: r.root },
        `${r.label}${r.state ? ` (${r.state})` : ""}`)));
    }
    if (m.root && this.picker.value !== m.root) this.picker.value = m.root;
  }
}
