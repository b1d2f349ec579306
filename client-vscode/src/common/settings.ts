/**
 * The extension's settings (`nightlab.*`): read once per use, never cached, so a change applies on the
 * next start of the loop (or, for what the server reads at start-up, the next restart of the server).
 */
import * as vscode from "vscode";

import type { LoopStartOverrides } from "../../../protocol/nightlab-protocol";

export interface NightlabSettings {
  python: string;
  agent: string;
  model: string;
  policy: string;
  budgetSeconds: number | null;
  budgetTokens: number | null;
  maxExperiments: number | null;
  maxCostUsd: number | null;
  notifyOnNewBest: boolean;
  inlayHints: boolean;
  stopLoopOnExit: boolean;
}

export function readSettings(scope?: vscode.ConfigurationScope): NightlabSettings {
  const c = vscode.workspace.getConfiguration("nightlab", scope);
  const num = (key: string) => {
    const v = c.get<number | null>(key, null);
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  };
  return {
    python: c.get<string>("python", "").trim(),
    agent: c.get<string>("agent", "").trim(),
    model: c.get<string>("model", "").trim(),
    policy: c.get<string>("policy", "").trim(),
    budgetSeconds: num("budgetSeconds"),
    budgetTokens: num("budgetTokens"),
    maxExperiments: num("maxExperiments"),
    maxCostUsd: num("maxCostUsd"),
    notifyOnNewBest: c.get<boolean>("notifyOnNewBest", false),
    inlayHints: c.get<boolean>("inlayHints", true),
    stopLoopOnExit: c.get<boolean>("stopLoopOnExit", false),
  };
}

/** The overrides `nightlab.loop.start` takes: only what the user set; nightlab.toml decides the rest. */
export function loopOverrides(s: NightlabSettings): LoopStartOverrides {
  const out: LoopStartOverrides = {};
  if (s.agent) out.agent = s.agent;
  if (s.model) out.model = s.model;
  if (s.policy) out.policy = s.policy;
  if (s.budgetTokens !== null) out.budgetTokens = Math.round(s.budgetTokens);
  else if (s.budgetSeconds !== null) out.budgetSeconds = s.budgetSeconds;
  if (s.maxExperiments !== null) out.maxExperiments = Math.round(s.maxExperiments);
  if (s.maxCostUsd !== null) out.maxCostUsd = s.maxCostUsd;
  return out;
}

/** What the server reads once, at `initialize`. */
export function initializationOptions(s: NightlabSettings): Record<string, unknown> {
  return { inlayHints: s.inlayHints, stopLoopOnExit: s.stopLoopOnExit };
}

/** Settings whose change needs a restart of the server. */
export const RESTART_SETTINGS = ["nightlab.python", "nightlab.inlayHints", "nightlab.stopLoopOnExit"];
