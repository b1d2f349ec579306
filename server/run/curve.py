"""A run's step samples: its events file's lines as `Progress` (or its log's step lines when it wrote no
events), read while it trains (runner.py) and afterwards (`read_curve`, the editor's loss curves).
Nothing in these files is trusted: a torn line, JSON that is not an object or a number that is not a
number is skipped.
Must not import: git, torch, the ledger, the loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from nightlab.server.core.types import Progress
from nightlab.server.run.follow import FileTail
from nightlab.server.run.summary import parse_step_line

EVENT_LINE_MAX = 1 << 20  # a longer events line is dropped unread


def json_event(line: str) -> dict | None:
    """One line of an events file as an object, or None (a torn line, or JSON that is not an object)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def num(event: Mapping, key: str) -> float | None:
    value = event.get(key)  # JSON from a script we do not trust: a number, or nothing
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def progress_from_event(event: dict) -> Progress | None:
    step = num(event, "step")
    if step is None:
        return None
    return Progress(
        step=int(step),
        elapsed_s=num(event, "elapsed_s") or 0.0,
        loss=num(event, "loss"),
        tok_per_s=num(event, "tok_per_s"),
        mfu=num(event, "mfu"),
        lr=num(event, "lr"),
        fraction=num(event, "progress"),
    )


def _all_lines(tail: FileTail) -> Iterator[str]:
    while lines := tail.read_lines(max_bytes=4 << 20):  # in batches: a log may be large
        yield from lines
    yield tail.pending()  # the last line, when it has no line break (a crashed run's last step)


def read_curve(run_dir: Path, max_points: int = 2000) -> list[Progress]:
    """The step samples a finished (or running) run recorded: its events file, else its log's step
    lines; thinned evenly to at most `max_points`, the last sample always kept."""
    events, log_path = Path(run_dir) / "events.jsonl", Path(run_dir) / "run.log"
    samples: list[Progress | None] = []
    tail = FileTail(events) if events.exists() else FileTail(log_path, split_cr=True, max_line=EVENT_LINE_MAX)
    for line in _all_lines(tail):
        if tail.path == log_path:
            samples.append(parse_step_line(line))
        elif (event := json_event(line)) is not None and event.get("event") == "step":
            samples.append(progress_from_event(event))
    samples = [p for p in samples if p is not None and p.loss is not None]
    if len(samples) > max_points:
        stride = len(samples) / max_points
        samples = [samples[int(i * stride)] for i in range(max_points - 1)] + [samples[-1]]
    return samples
