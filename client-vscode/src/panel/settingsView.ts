/**
 * The header's settings line: the budget, policy, agent, model and sandbox a loop runs with, and where
 * each comes from. While a loop process runs they are its own (the state's); when none runs they are
 * what Start would use: the extension's settings (nightlab.*) over the folder's nightlab.toml, whose
 * values the state carries.
 * Must not import: vscode, the DOM.
 */
import type { LoopStartOverrides, LoopStatePayload } from "../../../protocol/nightlab-protocol";
import { fmtBudget } from "./format";

export type SettingSource = "loop" | "settings" | "toml";

export interface SettingItem {
  key: "budget" | "policy" | "agent" | "model" | "sandbox";
  value: string;
  source: SettingSource;
}

export interface SettingsView {
  /** true: a loop process runs (or is paused) with these; false: what Start would use */
  live: boolean;
  items: SettingItem[];
}

const RUNS: ReadonlySet<string> = new Set(["proposing", "running", "deciding", "paused"]);

/** Whether a loop process runs for the folder: it has a pid, or the state says it works. */
export function loopRuns(state: LoopStatePayload | null): boolean {
  return !!state && ((state.pid !== null && state.pid !== undefined && !state.died) || RUNS.has(state.state));
}

export function settingsView(state: LoopStatePayload | null, overrides: LoopStartOverrides): SettingsView | null {
  if (!state) return null;
  const live = loopRuns(state);
  const items: SettingItem[] = [];
  const add = (key: SettingItem["key"], own: string | null | undefined, over: string | null | undefined) => {
    if (!live && over) items.push({ key, value: over, source: "settings" });
    else if (own) items.push({ key, value: own, source: live ? "loop" : "toml" });
  };
  const overBudget = overrides.budgetTokens != null ? fmtBudget("tokens", overrides.budgetTokens)
    : overrides.budgetSeconds != null ? fmtBudget("time", overrides.budgetSeconds) : "";
  add("budget", state.budget, overBudget);
  add("policy", state.policy, overrides.policy);
  const agent = !live && overrides.agent ? overrides.agent : state.agent;
  add("agent", state.agent, overrides.agent);
  if (agent === "anthropic" || agent === "claude") add("model", state.model, overrides.model);
  add("sandbox", state.sandbox, null);
  return { live, items };
}

export const SOURCE_WORDS: Record<SettingSource, string> = {
  loop: "in effect",
  settings: "from settings",
  toml: "from nightlab.toml",
};
