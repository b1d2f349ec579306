"""The conditions an experiment is measured under: the budget (its mode and amount), the device class
of its slot and a hash of the protected files at its commit (the seeds are recorded already). Each
record carries them (`Experiment.budget_mode`, `budget_amount`, `device`, `protected_hash`); a start
whose conditions differ from those of the current lineage's experiments starts a new lineage
(loop/lineage.py), so the best, the baseline and the noise floor (`Ledger.current()`) only ever count
experiments measured like the candidate. Must not import: the engine, agents, the runner.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from collections.abc import Sequence

from nightlab.server.core.settings import Settings
from nightlab.server.core.types import Experiment
from nightlab.server.record.ledger import Ledger
from nightlab.server.record.store import Store
from nightlab.server.run.slots import SlotSpec


def budget(settings: Settings) -> tuple[str, float]:
    """The budget's mode and amount: ("time", seconds) or ("tokens", tokens)."""
    b = settings.budget
    return (b.mode, float(b.tokens)) if b.mode == "tokens" else (b.mode, float(b.seconds))


def say_budget(mode: str, amount: float | None) -> str:
    if not mode or amount is None:
        return "an unrecorded budget"
    if mode == "tokens":
        return f"{int(amount):,} tokens"
    return f"{amount:g} s of training time"


@functools.lru_cache(maxsize=16)
def _gpu_name(device: str) -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", device],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.splitlines()[0].strip() if out else ""


def device_class(spec: SlotSpec) -> str:
    """ "cpu" for a CPU slot; "cuda:<name>" for a GPU slot whose name nvidia-smi says, else its kind ("gpu")."""
    if spec.cuda_visible_devices == "" or spec.name.startswith("cpu"):
        return "cpu"
    first = (spec.cuda_visible_devices or "0").split(",")[0].strip()
    name = _gpu_name(first)
    return f"cuda:{name}" if name else "gpu"


def protected_hash(settings: Settings, store: Store, rev: str) -> str:
    """A hash of the [files] protected at `rev` (a missing file counts as missing)."""
    h = hashlib.sha256()
    for path in sorted(settings.files.protected):
        data = store.file_bytes(path, rev)
        h.update(path.encode("utf-8") + b"\0" + (b"-" if data is None else b"+" + data) + b"\0")
    return h.hexdigest()[:16]


def stamp(exp: Experiment, settings: Settings, store: Store, spec: SlotSpec) -> Experiment:
    """Record the conditions `exp` runs under (its commit made); returns it."""
    exp.budget_mode, exp.budget_amount = budget(settings)
    exp.device = device_class(spec)
    exp.protected_hash = protected_hash(settings, store, exp.commit)
    return exp


def changed(settings: Settings, store: Store, ledger: Ledger, slots: Sequence[SlotSpec]) -> str:
    """Why the current lineage's experiments were measured under other conditions than a start with
    `settings` on `slots` would measure: "" when they match (or it has none)."""
    recorded = ledger.current()
    if not recorded:
        return ""
    last = recorded[-1]
    mode, amount = budget(settings)
    if not last.budget_mode or last.budget_amount is None:
        return f"its experiments do not record their budget (an older Nightlab), now {say_budget(mode, amount)}"
    if (last.budget_mode, float(last.budget_amount)) != (mode, amount):
        return f"the budget changed ({say_budget(last.budget_mode, last.budget_amount)} -> {say_budget(mode, amount)})"
    before, devices = {e.device for e in recorded if e.device}, {device_class(s) for s in slots}
    if devices and not before <= devices:
        return f"the device changed ({', '.join(sorted(before))} -> {', '.join(sorted(devices))})"
    now = protected_hash(settings, store, store.head())
    if last.protected_hash and last.protected_hash != now:
        return f"the protected files ({', '.join(settings.files.protected)}) changed"
    return ""
