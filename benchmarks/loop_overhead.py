"""The engine's own overhead per experiment: real git, real subprocesses, stand-ins that only sleep.

Builds a throw-away git workspace whose train.py is a trainer stand-in of fixed duration (it sleeps
`--train-seconds` while writing step events to NIGHTLAB_EVENTS, then prints autoresearch's summary block
with val_bpb = its knob X) and drives the Engine in-process with an agent stand-in of fixed latency
(`--agent-seconds`; each proposal moves X down or up in turn, so keeps and discards both happen and no
value repeats). Whatever wall time is neither training nor agent wait is the engine's: git worktree,
commits, refs, ledger, process start, event following, teardown. That overhead caps the duty cycle
(training time / wall time) of a night; with 5-minute runs it is small, with short runs it is not.

The engine's events (state, experimentStarted, progress, experimentFinished) and the stand-ins' own
timestamps split each experiment into phases; the phases add up to the wall time. The engine proposes
sequentially in that first measurement (ideal duty cycle train / (train + agent)); a second one runs
the same loop with propose-ahead on, where the agent drafts the next experiment while a run trains.

    .venv/bin/python benchmarks/loop_overhead.py                                  # 10 x (2 s + 0.5 s)
    .venv/bin/python benchmarks/loop_overhead.py --train-seconds 5 --agent-seconds 0 --json out.json

Light on CPU: both stand-ins sleep. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from nightlab.server.core.settings import load_settings
from nightlab.server.core.types import FileEdit, Proposal
from nightlab.server.loop.engine import Engine

STAND_IN = """import json, os, time
T0 = time.time()  # first thing after the interpreter and these imports: "process started"
X = 1.0           # a knob: this run's val_bpb is X + Y
Y = 0.0           # another knob
STEPS = 5
budget = float(os.environ.get("NIGHTLAB_BUDGET_SECONDS", "1"))
events = open(os.environ["NIGHTLAB_EVENTS"], "a")
def emit(**e):
    events.write(json.dumps(e) + "\\n"); events.flush()
emit(event="start", device="cpu", budget_mode="time", budget=budget, num_params_M=0.0, seed=0, t=T0)
t_train = time.time()
for step in range(1, STEPS + 1):
    time.sleep(max(0.0, t_train + budget * step / STEPS - time.time()))
    elapsed = time.time() - t_train
    emit(event="step", step=step, elapsed_s=elapsed, loss=X, tok_per_s=0.0, mfu=0.0, lr=0.0,
         progress=step / STEPS, t=time.time())
t_end = time.time()
summary = dict(val_bpb=X + Y, training_seconds=t_end - t_train, total_seconds=t_end - T0, peak_vram_mb=0.0,
               mfu_percent=0.0, total_tokens_M=0.0, num_steps=STEPS, num_params_M=0.0, depth=0)
emit(event="summary", **summary, startup_s=t_train - T0, training_s=t_end - t_train, eval_s=0.0,
     total_s=t_end - T0, peak_mem_mb=0.0, t=t_end)
print("---")
for key, fmt in (("val_bpb", "%.6f"), ("training_seconds", "%.1f"), ("total_seconds", "%.1f"),
                 ("peak_vram_mb", "%.1f"), ("mfu_percent", "%.2f"), ("total_tokens_M", "%.1f"),
                 ("num_steps", "%d"), ("num_params_M", "%.1f"), ("depth", "%d")):
    print(f"{key + ':':<18}{fmt % summary[key]}")
"""
TOML = (
    '[run]\ncommand = "python train.py"\npropose_ahead = {ahead}\n[budget]\nseconds = {s}\ntimeout_seconds = {t}\n'
    '[policy]\nname = "strict"\n'
)


class SleepyAgent:
    """Waits `latency` seconds, then moves X down 3 % (a keep) and Y up (a discard) in turn: two knobs
    on two lines, as an LLM's ideas usually touch different code, so a draft survives the last keep."""

    name = "sleepy"

    def __init__(self, latency: float):
        self.latency, self.calls, self.spans = latency, 0, []

    async def propose(self, ctx) -> Proposal:
        t0 = time.time()
        await asyncio.sleep(self.latency)
        self.calls += 1
        knob = "X" if self.calls % 2 else "Y"
        old = re.search(rf"^{knob} = (\S+)", ctx.files["train.py"], re.M).group(1)
        new = f"{float(old) * 0.97:.6f}" if knob == "X" else f"{float(old) + 0.03:.6f}"
        self.spans.append((t0, time.time()))
        return Proposal(
            description=f"{knob} {old} -> {new}",
            hypothesis="",
            agent=self.name,
            edits=[FileEdit("train.py", f"{knob} = {old}", f"{knob} = {new}")],
        )


def make_workspace(root: Path, train_s: float, ahead: bool = False) -> Path:
    ws = root / ("ws-ahead" if ahead else "ws")
    ws.mkdir()
    (ws / "train.py").write_text(STAND_IN)
    (ws / "prepare.py").write_text("# the fixed harness\n")
    (ws / "program.md").write_text("lower X\n")
    (ws / "nightlab.toml").write_text(TOML.format(s=train_s, t=train_s * 3 + 30, ahead=str(ahead).lower()))
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=ws, check=True, capture_output=True)
    return ws


PHASES = [  # (key, label): consecutive intervals, they add up to the wall time
    ("setup", "setup: worktree, recovery, baseline commit (once)"),
    ("context", "finished -> agent called (loop, context, git reads)"),
    ("agent", "agent wait"),
    ("commit", "edits + commit + ledger append"),
    ("compile", "compile check"),
    ("spawn", "process start -> first event"),
    ("train", "training (stand-in)"),
    ("teardown", "process end -> decide (exit, watcher, log, git check)"),
    ("decide", "decide + amend + keep/discard + ledger"),
    ("tail", "last finished -> run() returns"),
]


def measure(ws: Path, m: int, agent: SleepyAgent) -> dict:
    engine = Engine(load_settings(ws, {"max_experiments": m}), agent=agent)
    events: list[tuple[float, dict]] = []
    engine.subscribe(lambda e: events.append((time.time(), e)))
    t_start = time.time()
    asyncio.run(engine.run())
    t_end = time.time()
    exps = engine.ledger.experiments()
    marks: dict[int, dict[str, float]] = {}
    progress_at: dict[tuple[int, int], float] = {}
    current = 0
    for t, e in events:
        if e["type"] == "experimentStarted":
            current = e["experiment"]["number"]
            marks.setdefault(current, {})["started"] = t
        elif e["type"] == "experimentFinished":
            marks[e["experiment"]["number"]]["finished"] = t
        elif e["type"] == "state" and e["state"] in ("running", "deciding"):
            marks[current][e["state"]] = t
        elif e["type"] == "progress":
            progress_at.setdefault((e["number"], e["progress"]["step"]), t)
    spans = iter(agent.spans)
    phases = {k: 0.0 for k, _ in PHASES}
    rows, latencies, prev_finished = [], [], t_start
    for exp in exps:
        mk = marks[exp.number]
        run_events = [
            json.loads(line)
            for line in (ws / ".nightlab/runs/main" / str(exp.number) / "events.jsonl").read_text().splitlines()
        ]
        first, summary = run_events[0], run_events[-1]
        latencies += [
            progress_at[(exp.number, e["step"])] - e["t"]
            for e in run_events
            if e["event"] == "step" and (exp.number, e["step"]) in progress_at
        ]
        if exp.is_baseline:
            phases["setup"] += mk["started"] - prev_finished
        else:
            a0, a1 = next(spans)
            phases["context"] += a0 - prev_finished
            phases["agent"] += a1 - a0
            phases["commit"] += mk["started"] - a1
        train_s = summary["training_s"]
        phases["compile"] += mk["running"] - mk["started"]
        phases["spawn"] += first["t"] + summary["startup_s"] - mk["running"]  # to the stand-in's t_train
        phases["train"] += train_s
        phases["teardown"] += mk["deciding"] - summary["t"]
        phases["decide"] += mk["finished"] - mk["deciding"]
        rows.append(
            {
                "number": exp.number,
                "status": exp.status,
                "val_bpb": exp.metric,
                "training_s": train_s,
                "runner_total_s": exp.timings["total_s"],
                "wall_s": mk["finished"] - prev_finished,
            }
        )
        prev_finished = mk["finished"]
    phases["tail"] = t_end - prev_finished
    wall = t_end - t_start
    train, agent_s = phases["train"], phases["agent"]
    return {
        "experiments": len(exps),
        "wall_s": wall,
        "training_s": train,
        "agent_s": agent_s,
        "runner_total_s": sum(r["runner_total_s"] for r in rows),
        "duty_cycle": train / wall,
        "overhead_per_experiment_s": (wall - train - agent_s) / len(exps),
        "statuses": {s: sum(r["status"] == s for r in rows) for s in ("keep", "discard", "crash")},
        "event_latency_s": {
            "mean": sum(latencies) / max(len(latencies), 1),
            "max": max(latencies, default=0.0),
            "n": len(latencies),
        },
        "phases_s": phases,
        "runs": rows,
    }


def duty_cycle(ws: Path, m: int, agent: SleepyAgent) -> dict:
    """Wall time and training time only: with propose-ahead the agent's time overlaps training, so the
    sequential phase breakdown above does not apply."""
    engine = Engine(load_settings(ws, {"max_experiments": m}), agent=agent)
    messages: list[str] = []
    engine.subscribe(lambda e: messages.append(e.get("text", "")) if e["type"] == "message" else None)
    t0 = time.time()
    asyncio.run(engine.run())
    wall = time.time() - t0
    train = 0.0
    for exp in engine.ledger.experiments():
        lines = (ws / ".nightlab/runs/main" / str(exp.number) / "events.jsonl").read_text().splitlines()
        train += json.loads(lines[-1])["training_s"]
    return {
        "wall_s": wall,
        "training_s": train,
        "duty_cycle": train / wall,
        "agent_calls": agent.calls,
        "re_asked": sum("no longer applies" in t for t in messages),
        "experiments": len(engine.ledger.experiments()),
    }


def report(r: dict, train_arg: float, agent_arg: float) -> None:
    m = r["experiments"]
    ideal = train_arg / (train_arg + agent_arg)
    print(
        f"\nloop overhead: {m} experiments, stand-ins train {train_arg:g} s, agent {agent_arg:g} s "
        f"({r['statuses']['keep']} keep, {r['statuses']['discard']} discard, {r['statuses']['crash']} crash)"
    )
    lines = [
        ("wall time total", f"{r['wall_s']:8.2f} s"),
        ("time inside training (stand-in)", f"{r['training_s']:8.2f} s"),
        ("runner total_s (spawn -> result)", f"{r['runner_total_s']:8.2f} s"),
        ("agent latency total", f"{r['agent_s']:8.2f} s"),
        ("duty cycle (training / wall)", f"{100 * r['duty_cycle']:8.1f} %"),
        ("ideal duty cycle train/(train+agent)", f"{100 * ideal:8.1f} %"),
        ("fixed overhead per experiment", f"{r['overhead_per_experiment_s']:8.3f} s"),
    ]
    for label, value in lines:
        print(f"  {label:<46}{value}")
    print(f"\n  {'phase':<56}{'total s':>9}{'per exp s':>11}")
    for key, label in PHASES:
        t = r["phases_s"][key]
        print(f"  {label:<56}{t:9.3f}{t / m:11.3f}")
    print(f"  {'sum of phases (= wall)':<56}{sum(r['phases_s'].values()):9.3f}")
    lat = r["event_latency_s"]
    print(
        f"\n  step event written -> progress emitted: mean {1000 * lat['mean']:.0f} ms, "
        f"max {1000 * lat['max']:.0f} ms over {lat['n']} events"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--experiments", type=int, default=10, help="experiments to run, the baseline included (default 10)"
    )
    parser.add_argument("--train-seconds", type=float, default=2.0, help="the trainer stand-in's duration (default 2)")
    parser.add_argument("--agent-seconds", type=float, default=0.5, help="the agent stand-in's latency (default 0.5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.experiments < 1 or args.train_seconds <= 0 or args.agent_seconds < 0:
        parser.error("need --experiments >= 1, --train-seconds > 0, --agent-seconds >= 0")
    with tempfile.TemporaryDirectory(prefix="nightlab-overhead-") as tmp:
        ws = make_workspace(Path(tmp), args.train_seconds)
        result = measure(ws, args.experiments, SleepyAgent(args.agent_seconds))
        ahead = duty_cycle(
            make_workspace(Path(tmp), args.train_seconds, ahead=True), args.experiments, SleepyAgent(args.agent_seconds)
        )
    result["args"] = {
        "experiments": args.experiments,
        "train_seconds": args.train_seconds,
        "agent_seconds": args.agent_seconds,
    }
    result["propose_ahead"] = ahead
    report(result, args.train_seconds, args.agent_seconds)
    print(f"\n  duty cycle, proposals one after the other: {100 * result['duty_cycle']:6.1f} %")
    print(
        f"  duty cycle, propose-ahead on:              {100 * ahead['duty_cycle']:6.1f} %  "
        f"(wall {ahead['wall_s']:.1f} s, {ahead['agent_calls']} agent calls, {ahead['re_asked']} re-asked "
        f"after a keep, {ahead['experiments']} experiments)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
