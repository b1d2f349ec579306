"""Rich renderables for the CLI: the experiments table and the live view of a running loop.

Must not import: the engine's parts (it renders plain Experiment records and engine events).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Group, JustifyMethod
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from nightlab.protocol import events as ev
from nightlab.server.core.types import Experiment

STATUS_STYLE = {"keep": "bold green", "discard": "dim", "crash": "red", "interrupted": "yellow", "running": "cyan"}


# After a metric the run printed itself (no judge measured it: an autoresearch checkout); see the caption.
SELF_REPORTED = "*"


def _fmt(value: float | None, spec: str = ".6f") -> str:
    return "" if value is None else format(value, spec)


def experiments_table(
    experiments: list[Experiment], metric: str = "val_bpb", last: int | None = None, title: str | None = None
) -> Table:
    table = Table(title=title, expand=False, header_style="bold")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("#", "right"),
        ("status", "left"),
        (metric, "right"),
        ("delta", "right"),
        ("mem GB", "right"),
        ("time", "right"),
        ("description", "left"),
    )
    rows = experiments[-last:] if last else experiments
    nodes = any(e.node for e in rows)  # run on a Ray cluster: where each ran
    for name, justify in columns[:-1] + ((("node", "left"),) if nodes else ()) + columns[-1:]:
        table.add_column(name, justify=justify, no_wrap=name != "description")
    if any(e.self_reported and e.metric is not None for e in rows):
        table.caption = f"{SELF_REPORTED} self-reported: the run's own printed summary, not measured by a judge"
    for e in rows:
        total = e.timings.get("total_s") if e.timings else None
        table.add_row(
            str(e.number),
            Text(e.status, style=STATUS_STYLE.get(e.status, "")),
            _fmt(e.metric) + (SELF_REPORTED if e.self_reported and e.metric is not None else ""),
            _fmt(e.delta, "+.6f"),
            f"{e.memory_gb:.1f}" if e.status not in ("running", "interrupted") else "",
            _fmt(total, ".0f") + ("s" if total else ""),
            *((e.node,) if nodes else ()),
            Text(e.description),  # a port's says where it came from: "port gpu #12: ..."
        )  # Text: an agent's "[x]" is not markup
    return table


INFO_TTL_S = 30.0  # how long an info line stays in the live view
WARNING_TTL_S = 300.0  # a warning's or an error's
EVALUATING_AT = 0.999  # the budget's fraction from which a run that has not finished is evaluating
_NAMES_EXPERIMENT = re.compile(r"#(\d+)\b")


def run_label(stage: str, baseline: bool, repeats: int = 1) -> str:
    """Which of an experiment's runs a PROGRESS event's `stage` is: "baseline run 2 of 3", "smoke run",
    "full run", "confirmation run 1" (the first run after the full run that the policy asked for)."""
    k = int(stage[len("repeat-") :]) if stage.startswith("repeat-") and stage[len("repeat-") :].isdigit() else 0
    if baseline:
        return f"baseline run {k + 1} of {max(repeats, k + 1)}" if repeats > 1 or k else "baseline run"
    if stage == "smoke":
        return "smoke run"
    return f"confirmation run {k}" if k else "full run"


@dataclass
class _Message:
    at: float
    level: str
    text: str
    number: int | None  # the experiment it is about ("#3: promising ..."): dropped once that one finished


class LiveView:
    """Holds what the engine reported and renders it; fed from engine events. `baseline_repeats`: the
    policy's runs of a baseline (to say "baseline run 2 of 3"); `clock`: for tests."""

    def __init__(
        self,
        metric: str,
        budget_seconds: float | None,
        experiments: list[Experiment],
        direction: str = "lower",
        *,
        baseline_repeats: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.metric = metric
        self.direction = direction  # the metric's: "lower" or "higher" is better
        self.budget_seconds = budget_seconds
        self.baseline_repeats = baseline_repeats
        self.clock = clock
        self.experiments = {e.number: e for e in experiments}
        self.state = "idle"
        self.state_name, self.reason = "idle", ""
        self.running: dict[int, Experiment] = {}
        self.progress: dict[int, dict[str, Any]] = {}
        self.stage: dict[int, str] = {}
        self.run_started: dict[int, float] = {}  # when the current run (stage) of each began
        self.evaluating_since: dict[int, float] = {}  # when its progress reached the budget's end
        self.messages: list[_Message] = []
        self.cost_usd = sum(float(e.usage.get("cost_usd") or 0) for e in experiments)

    def on_event(self, event: dict[str, Any]) -> None:
        kind, now = event["type"], self.clock()
        if kind == ev.STATE:
            self.state_name, self.reason = event["state"], event.get("reason") or ""
            self.state = self.state_name + (f" ({self.reason})" if self.reason else "")
        elif kind == ev.EXPERIMENT_STARTED:
            exp = Experiment.from_json(event["experiment"])
            self.experiments[exp.number] = self.running[exp.number] = exp
            self.progress[exp.number], self.run_started[exp.number] = {}, now
            self.stage.pop(exp.number, None)
            self.evaluating_since.pop(exp.number, None)
        elif kind == ev.PROGRESS:
            self._on_progress(event["number"], event.get("stage") or "run", event["progress"], now)
        elif kind == ev.EXPERIMENT_FINISHED:
            exp = Experiment.from_json(event["experiment"])
            self.experiments[exp.number] = exp
            self.cost_usd += float(exp.usage.get("cost_usd") or 0)
            self.running.pop(exp.number, None)
            self.messages = [m for m in self.messages if m.number != exp.number]
        elif kind == ev.MESSAGE:
            named = _NAMES_EXPERIMENT.match(event["text"])
            message = _Message(now, event["level"], event["text"], int(named.group(1)) if named else None)
            self.messages = (self.messages + [message])[-3:]

    def _on_progress(self, number: int, stage: str, progress: dict[str, Any], now: float) -> None:
        if self.stage.get(number) != stage:  # the next run of the experiment: its own bar and clock
            self.stage[number], self.run_started[number] = stage, now
            self.evaluating_since.pop(number, None)
        self.progress[number] = progress
        if (progress.get("fraction") or 0.0) >= EVALUATING_AT:
            self.evaluating_since.setdefault(number, now)

    def current_messages(self) -> list[str]:
        """The messages still worth showing: info for INFO_TTL_S, warnings and errors for WARNING_TTL_S."""
        now = self.clock()
        self.messages = [m for m in self.messages if now - m.at < (INFO_TTL_S if m.level == "info" else WARNING_TTL_S)]
        return [f"[{m.level}] {m.text}" for m in self.messages]

    def ending(self) -> str | None:
        """Why the loop ended, in full, to print once the live view is gone; None while it runs."""
        if self.state_name not in ("stopped", "errored"):
            return None
        return f"loop {self.state_name}" + (f": {self.reason}" if self.reason else "")

    def best(self) -> Experiment | None:
        lineage = max((e.lineage for e in self.experiments.values()), default=1)  # the latest lineage's best
        kept = [
            e for e in self.experiments.values() if e.status == "keep" and e.metric is not None and e.lineage == lineage
        ]
        pick = max if self.direction == "higher" else min
        return pick(kept, key=lambda e: e.metric) if kept else None

    def __rich__(self) -> Group:
        parts: list[Any] = [
            experiments_table(sorted(self.experiments.values(), key=lambda e: e.number), self.metric, last=15),
            Text(f"state: {self.state}"),  # a line of its own: a long reason wraps
        ]
        best = self.best()
        head = Text(
            f"best {self.metric}: {best.metric:.6f} (#{best.number} {best.description})" if best else "best: none yet",
            style="bold green" if best else "",
        )
        if self.cost_usd:
            head.append(f"   agent cost ${self.cost_usd:.2f}")
        parts.append(head)
        parts.extend(self._panel(number, exp) for number, exp in sorted(self.running.items()))
        parts.extend(Text(m, style="yellow") for m in self.current_messages())
        return Group(*parts)

    def _panel(self, number: int, exp: Experiment) -> Panel:
        """One running experiment: which run, its progress bar, step, loss, speed; "evaluating" once the
        bar is full and the run has not finished (the metric is being computed)."""
        now = self.clock()
        p = self.progress.get(number, {})
        fraction = p.get("fraction") or 0.0
        line = Text(f"#{number} {exp.description}: ")
        line.append(f"{100 * fraction:5.1f}%  step {p.get('step', 0)}")
        if p.get("loss") is not None:
            line.append(f"  loss {p['loss']:.4f}")
        if number in self.evaluating_since:
            line.append(f"  evaluating {self.metric} ({now - self.evaluating_since[number]:.0f}s)", style="bold")
        elif p.get("tok_per_s"):
            line.append(f"  {p['tok_per_s']:,.0f} tok/s")
        line.append(f"  {now - self.run_started.get(number, now):.0f}s elapsed")
        title = [f"running{' on ' + exp.slot if exp.slot else ''}"]
        if number in self.stage:
            title.append(run_label(self.stage[number], exp.is_baseline, self.baseline_repeats))
        if number in self.evaluating_since:
            title.append("evaluating")
        return Panel(
            Group(line, ProgressBar(total=1.0, completed=fraction, width=60)), title=" · ".join(title), expand=False
        )
