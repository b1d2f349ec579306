/**
 * What the status bar item says, as a pure function of the loop's state and the latest progress.
 * Must not import: vscode (unit-tested under plain Node).
 */
import type { LoopStatePayload, ProgressPayload } from "../../protocol/nightlab-protocol";

export interface StatusText {
  text: string;
  tooltip: string;
}

/** "1:05" for 65 s, "1:02:03" past an hour. */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** Budgeted time left in the run, from a sample that knows its fraction of the budget. */
export function timeLeft(p: ProgressPayload | undefined): number | null {
  if (!p || p.fraction == null || p.fraction <= 0 || p.fraction > 1 || p.elapsedS <= 0) return null;
  return (p.elapsedS * (1 - p.fraction)) / p.fraction;
}

export function statusText(
  state: LoopStatePayload | null,
  progress: ProgressPayload | undefined,
  server: { running: boolean; problem: string | null },
): StatusText {
  if (!server.running) {
    return { text: "$(beaker) Nightlab: off", tooltip: server.problem ?? "The Nightlab language server is not running." };
  }
  if (!state) return { text: "$(beaker) Nightlab", tooltip: "Nightlab: no loop state yet" };
  const best = state.best ? `best ${state.best.metric.toFixed(4)} (#${state.best.number})` : "no best yet";
  const tip = [`Nightlab: ${state.state}${state.reason ? ` (${state.reason})` : ""}`,
    `${state.metricName} ${best}${state.baseline != null ? `, baseline ${state.baseline.toFixed(4)}` : ""}`,
    `${state.experimentsRun} experiments, agent ${state.agent}, budget ${state.budget}`,
    "Click to open the experiments panel"].join("\n");
  if (state.running.length > 0) {
    const number = progress && state.running.includes(progress.number) ? progress.number : state.running[state.running.length - 1];
    const left = progress?.number === number ? timeLeft(progress) : null;
    const more = state.running.length > 1 ? ` +${state.running.length - 1}` : "";
    const pct = progress?.number === number && progress.fraction != null ? ` ${Math.round(progress.fraction * 100)}%` : "";
    const leftText = left != null ? ` · ${clock(left)} left` : pct;
    return { text: `$(sync~spin) Nightlab #${number}${more}${leftText} · ${best}`, tooltip: tip };
  }
  // the loop process ended without stopping (kill -9, a crash): not "stopped", and the reason says why
  if (state.died) return { text: `$(error) Nightlab: loop died · ${best}`, tooltip: tip };
  const icon = state.state === "errored" ? "$(error)" : state.state === "paused" ? "$(debug-pause)" : "$(beaker)";
  return { text: `${icon} Nightlab: ${state.state} · ${best}`, tooltip: tip };
}
