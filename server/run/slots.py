"""Slots: where experiments run at the same time (one per GPU, or CPU slots sharing the cores).

Must not import: git, torch, the engine.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class SlotSpec:
    name: str  # "gpu0", "cpu1", ...
    cuda_visible_devices: str | None  # None: inherit; "": hide every GPU
    threads: int | None  # CPU threads for a CPU slot that shares the cores with others


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def resolve_slots(setting, gpus: list[str] | None = None, cores: int | None = None) -> list[SlotSpec]:
    """[run] slots -> the slots: "auto" is one per visible GPU (one CPU slot without a GPU); N is N
    GPUs when there are that many, else N CPU slots; a list names each ("0", "1" or "cpu")."""
    gpus = _gpu_ids() if gpus is None else gpus
    cores = cores or os.cpu_count() or 1
    if setting == "auto":
        names = gpus or ["cpu"]
    elif isinstance(setting, int):
        names = gpus[:setting] if len(gpus) >= setting else ["cpu"] * setting
    else:
        names = list(setting)
    n_cpu = sum(1 for n in names if n == "cpu")
    specs = []
    for i, name in enumerate(names):
        if name == "cpu":
            threads = max(1, cores // n_cpu) if n_cpu > 1 else None
            specs.append(SlotSpec(f"cpu{i}", "" if gpus else None, threads))
        else:
            specs.append(SlotSpec(f"gpu{name}", name, None))
    return specs
