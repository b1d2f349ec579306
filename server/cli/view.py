"""Rich renderables for the CLI: the experiments table and the live view of a running loop.

Must not import: the engine's parts (it renders plain Experiment records and engine events).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, JustifyMethod
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from nightlab.protocol import events as ev
from nightlab.server.core.types import Experiment

STATUS_STYLE = {"keep": "bold green", "discard": "dim", "crash": "red", "interrupted": "yellow", "running": "cyan"}


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
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name != "description")
    rows = experiments[-last:] if last else experiments
    for e in rows:
        total = e.timings.get("total_s") if e.timings else None
        table.add_row(
            str(e.number),
            Text(e.status, style=STATUS_STYLE.get(e.status, "")),
            _fmt(e.metric),
            _fmt(e.delta, "+.6f"),
            f"{e.memory_gb:.1f}" if e.status not in ("running", "interrupted") else "",
            _fmt(total, ".0f") + ("s" if total else ""),
            Text(e.description),
        )  # Text: an agent's "[x]" is not markup
    return table


class LiveView:
    """Holds what the engine reported and renders it; fed from engine events."""

    def __init__(
        self, metric: str, budget_seconds: float | None, experiments: list[Experiment], direction: str = "lower"
    ):
        self.metric = metric
        self.direction = direction  # the metric's: "lower" or "higher" is better
        self.budget_seconds = budget_seconds
        self.experiments = {e.number: e for e in experiments}
        self.state = "idle"
        self.running: dict[int, Experiment] = {}
        self.progress: dict[int, dict[str, Any]] = {}
        self.run_started: dict[int, float] = {}
        self.messages: list[str] = []
        self.cost_usd = sum(float(e.usage.get("cost_usd") or 0) for e in experiments)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == ev.STATE:
            self.state = event["state"] + (f" ({event['reason']})" if event.get("reason") else "")
        elif kind == ev.EXPERIMENT_STARTED:
            exp = Experiment.from_json(event["experiment"])
            self.experiments[exp.number] = self.running[exp.number] = exp
            self.progress[exp.number], self.run_started[exp.number] = {}, time.monotonic()
        elif kind == ev.PROGRESS:
            self.progress[event["number"]] = event["progress"]
        elif kind == ev.EXPERIMENT_FINISHED:
            exp = Experiment.from_json(event["experiment"])
            self.experiments[exp.number] = exp
            self.cost_usd += float(exp.usage.get("cost_usd") or 0)
            self.running.pop(exp.number, None)
        elif kind == ev.MESSAGE:
            self.messages = (self.messages + [f"[{event['level']}] {event['text']}"])[-3:]

    def best(self) -> Experiment | None:
        kept = [e for e in self.experiments.values() if e.status == "keep" and e.metric is not None]
        pick = max if self.direction == "higher" else min
        return pick(kept, key=lambda e: e.metric) if kept else None

    def __rich__(self) -> Group:
        parts: list[Any] = [
            experiments_table(sorted(self.experiments.values(), key=lambda e: e.number), self.metric, last=15)
        ]
        best = self.best()
        head = Text(f"state: {self.state}   ")
        head.append(
            f"best {self.metric}: {best.metric:.6f} (#{best.number} {best.description})" if best else "best: none yet",
            style="bold green" if best else "",
        )
        if self.cost_usd:
            head.append(f"   agent cost ${self.cost_usd:.2f}")
        parts.append(head)
        for number, exp in sorted(self.running.items()):
            p = self.progress.get(number, {})
            fraction = p.get("fraction") or 0.0
            line = Text(f"#{number} {exp.description}: ")
            line.append(f"{100 * fraction:5.1f}%  step {p.get('step', 0)}")
            if p.get("loss") is not None:
                line.append(f"  loss {p['loss']:.4f}")
            if p.get("tok_per_s"):
                line.append(f"  {p['tok_per_s']:,.0f} tok/s")
            line.append(f"  {time.monotonic() - self.run_started.get(number, time.monotonic()):.0f}s elapsed")
            slot = exp.slot
            parts.append(
                Panel(
                    Group(line, ProgressBar(total=1.0, completed=fraction, width=60)),
                    title=f"running{' on ' + slot if slot else ''}",
                    expand=False,
                )
            )
        parts.extend(Text(m, style="yellow") for m in self.messages)
        return Group(*parts)
