"""From an experiment's runs to its verdict: the fields of its final ledger record, and the commit
message that carries the verdict. The policy decides keep or discard (with each run's seed, so that a
paired rule compares the best's run at the same seed: pairing.py); this module fills the record.
Must not import: pygls, rich, typer, an agent module, the store, the runner's processes.
"""

from __future__ import annotations

from statistics import fmean

from nightlab.server.core.policy import Policy
from nightlab.server.core.settings import Settings
from nightlab.server.core.types import Experiment, ExperimentStatus, RunStatus, Verdict, utc_now
from nightlab.server.loop import pairing
from nightlab.server.loop.autoresearch import explain
from nightlab.server.loop.plan import Runs
from nightlab.server.run.summary import crash_summary


def judge(
    exp: Experiment, runs: Runs, policy: Policy, best: list[float] | None, sigma: float | None, settings: Settings
) -> Experiment:
    """Fill `exp` (in place, and returned) from its runs, judged against the best's run values."""
    result = runs.last
    values = runs.values
    best_mean = fmean(best) if best else None
    metric = fmean(values) if values else None
    exp.run_status = result.status
    exp.metric = metric
    exp.metrics = dict(result.metrics)
    if metric is not None:
        exp.metrics[settings.metric.name] = metric
    exp.best_before = best_mean
    exp.delta = (metric - best_mean) if (metric is not None and best_mean is not None) else None
    exp.seeds = runs.seeds
    full = runs.results or [result]
    exp.timings = {
        "startup_s": result.startup_s,
        "training_s": result.training_s,
        "eval_s": result.eval_s,
        "total_s": sum(r.total_s for r in full),
    }
    exp.memory_gb = round(max(r.peak_memory_mb for r in full) / 1024, 1)
    exp.error = result.error
    exp.finished_at = utc_now()
    if runs.smoke is not None:
        exp.smoke = {"status": str(runs.smoke.status), "total_s": round(runs.smoke.total_s, 2)}
    if len(values) > 1:
        exp.runs = list(values)
    exp.status, exp.decision_reason = _verdict(exp, runs, policy, best, sigma, settings)
    return exp


def _verdict(
    exp: Experiment, runs: Runs, policy: Policy, best: list[float] | None, sigma: float | None, settings: Settings
) -> tuple[ExperimentStatus, str]:
    values = runs.values
    if runs.last.status == RunStatus.INTERRUPTED:
        if (runs.last.error or "").startswith("node lost"):  # run/ray_launcher.py's LOST: loop/launch.py re-runs it
            return ExperimentStatus.INTERRUPTED, "its node died during the run; it runs again now, on the nodes left"
        return ExperimentStatus.INTERRUPTED, "stopped during the run; it runs again on the next start"
    if exp.is_baseline and values:
        spread = f", runs {', '.join(f'{v:.6f}' for v in values)}" if len(values) > 1 else ""
        return ExperimentStatus.KEEP, f"baseline: {fmean(values):.6f}{spread}"
    if not values:
        error = runs.last.error
        if runs.last.status == RunStatus.TIMEOUT:
            return ExperimentStatus.CRASH, f"killed at the deadline ({settings.deadline_seconds:.0f} s)"
        return ExperimentStatus.CRASH, explain(crash_summary(error), error, settings) if error else "crashed"
    decision = pairing.decide(policy, values, runs.seeds, best, sigma, settings.metric.direction)
    exp.decision = {
        "verdict": str(decision.verdict),
        "z": decision.z,  # paired: t, the mean difference over its standard error
        "sigma": decision.sigma,  # paired: the sd of one difference
        "repeats": decision.repeats,
    }
    if decision.paired is not None:  # the seeds, differences, mean, sd, t, df and n behind the verdict
        exp.decision["paired"] = decision.paired
        exp.delta = decision.delta  # the mean paired difference: the seed effects cancel in it
    if decision.verdict == Verdict.CONFIRM:  # the policy wanted more runs than it allows: not proven
        return ExperimentStatus.DISCARD, decision.reason
    return ExperimentStatus(str(decision.verdict)), decision.reason


def commit_message(exp: Experiment, verdict: str, metric_name: str) -> str:
    """The experiment's commit message: its description, hypothesis and (once decided) verdict."""
    lines = [f"nightlab #{exp.number}: {exp.description}", ""]
    if exp.hypothesis:
        lines += [exp.hypothesis, ""]
    metric = f"{exp.metric:.6f}" if exp.metric is not None else "none"
    delta = f"{exp.delta:+.6f}" if exp.delta is not None else "n/a"
    lines += [f"experiment: {exp.number}", f"{metric_name}: {metric}", f"delta: {delta}", f"verdict: {verdict}"]
    if exp.decision_reason:
        lines.append(f"reason: {exp.decision_reason}")
    return "\n".join(lines) + "\n"
