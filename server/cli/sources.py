"""Where `nightlab plot`, `status` and `results` read experiments from: the workspace's Nightlab
ledger (.nightlab/<tag>/), or an autoresearch-format results.tsv (a file, or a folder holding one).

A folder is read as a Nightlab workspace when its ledger has experiments (or `--tag` names one), and as
autoresearch's results.tsv otherwise, when it holds one. The rows are parsed by `monitor.parse_row`,
the one reader of that format. Reading never writes anything.
Must not import: the engine's parts (it only reads the ledger and files).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from nightlab.server.cli.monitor import parse_row
from nightlab.server.core.types import Experiment, ExperimentKind, ExperimentStatus

RESULTS_NAME = "results.tsv"
STATUSES = ("keep", "discard", "crash", "interrupted", "running")  # what `results --status` may name
# Not experiments' ledgers: what else lives under .nightlab/
_NOT_TAGS = {"worktrees", "runs"}


class SourceError(Exception):
    """No experiments can be read from what the user named; the message says why and what would do."""


@dataclass
class Source:
    experiments: list[Experiment]
    label: str  # "tag main" or the results.tsv's path, for headings
    metric_name: str = "val_bpb"
    direction: str = "lower"
    folder: Path | None = None  # where progress.png goes by default
    ledger_dir: Path | None = None  # a Nightlab ledger's folder (for "is a loop running"); None for a tsv
    tag: str = ""
    heading: str | None = None  # the chart's title before its counts; None: the plot's default


def results_file(path: Path) -> Path | None:
    """`path` when it is a file, `path/results.tsv` when it is a folder holding one, else None."""
    if path.is_file():
        return path
    candidate = path / RESULTS_NAME
    return candidate if candidate.is_file() else None


def read_results_tsv(path: Path) -> list[Experiment]:
    """autoresearch's results.tsv as experiments: row N is experiment #N, the first the baseline; a crash
    (or a val_bpb that is not a positive number) has no metric; a status other than keep, discard or
    crash (in any case) counts as a discard."""
    text = path.read_text(encoding="utf-8", errors="replace")
    experiments: list[Experiment] = []
    best: float | None = None
    for line in text.splitlines():
        row = parse_row(line, len(experiments) + 1)
        if row is None:
            continue
        status = row.status.strip().lower()
        if status not in (ExperimentStatus.KEEP, ExperimentStatus.DISCARD, ExperimentStatus.CRASH):
            status = ExperimentStatus.DISCARD
        value = row.val_bpb
        if status == ExperimentStatus.CRASH or value is None or not math.isfinite(value) or value <= 0:
            value = None
        exp = Experiment(
            number=row.number,
            tag=path.parent.name,
            description=row.description,
            commit=row.commit,
            status=ExperimentStatus(status),
            metric=value,
            memory_gb=row.memory_gb or 0.0,
            kind=ExperimentKind.BASELINE if not experiments else ExperimentKind.CHANGE,
            delta=None if value is None or best is None else value - best,
        )
        if value is not None and status == ExperimentStatus.KEEP and (best is None or value < best):
            best = value
        experiments.append(exp)
    return experiments


def ledger_tags(workspace: Path) -> list[str]:
    """The tags with a ledger in `workspace`'s .nightlab/."""
    root = workspace / ".nightlab"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in _NOT_TAGS)


def open_source(path: Path, tag: str | None, load_settings) -> Source:
    """The experiments at `path` (a workspace, a folder holding results.tsv, or a results.tsv file).
    `load_settings(folder, overrides)` reads the workspace's settings (it raises SettingsError)."""
    from nightlab.server.core.settings import SETTINGS_FILE, SettingsError
    from nightlab.server.record.ledger import Ledger

    if path.is_file():
        if tag is not None:
            raise SourceError(f"--tag names a Nightlab loop; {path} is a results file")
        return _tsv_source(path)
    if not path.is_dir():
        raise SourceError(f"{path}: no such file or folder")
    try:
        settings = load_settings(path, {"tag": tag})
    except SettingsError as exc:
        tsv = results_file(path)
        if (path / SETTINGS_FILE).is_file() or tag is not None:
            raise SourceError(str(exc)) from None
        if tsv is None:
            raise SourceError(f"{exc}; nor is there a {RESULTS_NAME} to read") from None
        return _tsv_source(tsv)
    ledger = Ledger(Path(settings.workspace) / ".nightlab" / settings.tag, settings.metric.name)
    if tag is not None and not ledger.jsonl.is_file():
        tags = ledger_tags(Path(settings.workspace))
        known = f"tags here: {', '.join(tags)}" if tags else "no loop has run here yet"
        raise SourceError(f"no loop with tag {tag!r} in {settings.workspace} ({known})")
    experiments = ledger.experiments()
    tsv = results_file(path)
    if not experiments and tag is None and tsv is not None:
        return _tsv_source(tsv)
    return Source(
        experiments,
        f"tag {settings.tag}",
        settings.metric.name,
        settings.metric.direction,
        folder=ledger.dir,
        ledger_dir=ledger.dir,
        tag=settings.tag,
    )


def _tsv_source(path: Path) -> Source:
    try:
        experiments = read_results_tsv(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read it: {exc}") from None
    return Source(experiments, str(path), folder=path.parent, heading=f"{path.resolve().parent.name}/{path.name}")


def best_kept(experiments: list[Experiment], direction: str = "lower") -> Experiment | None:
    """The best kept experiment with a finite metric of the latest lineage (the ledger's rule, for any list)."""
    lineage = max((e.lineage for e in experiments), default=1)
    kept = [
        e
        for e in experiments
        if e.status == ExperimentStatus.KEEP
        and e.metric is not None
        and math.isfinite(e.metric)
        and e.lineage == lineage
    ]
    if not kept:
        return None
    pick = min if direction == "lower" else max
    return pick(kept, key=lambda e: e.metric)


def status_lines(src: Source, owner: int | None) -> list[str]:
    """What `nightlab status` prints: the counts, whether a loop runs (`owner`: its pid; a ledger only),
    the best against the baseline, the agent's cost, the last experiment."""
    experiments = src.experiments
    counts = {s: sum(e.status == s for e in experiments) for s in STATUSES[:4]}
    lines = [f"{src.label}: {len(experiments)} experiments  " + "  ".join(f"{k} {v}" for k, v in counts.items())]
    if src.ledger_dir is not None:
        lines.append(f"loop: {f'running (pid {owner})' if owner else 'not running'}")
    best = best_kept(experiments, src.direction)
    baseline = next(
        (e for e in experiments if e.is_baseline and e.metric is not None and best and e.lineage == best.lineage), None
    )
    if best is not None and best.metric is not None:
        gain = ""
        if baseline is not None and baseline.metric is not None and baseline.number != best.number:
            gain = f" ({best.metric - baseline.metric:+.6f} vs baseline #{baseline.number})"
        lines.append(f"best {src.metric_name}: {best.metric:.6f} (#{best.number} {best.description}){gain}")
    cost = sum(float(e.usage.get("cost_usd") or 0) for e in experiments)
    if cost:
        lines.append(f"agent cost so far: ${cost:.2f}")
    if experiments:
        last = experiments[-1]
        lines.append(f"last: #{last.number} {last.status} {last.description}")
    return lines
