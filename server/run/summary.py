"""The text a training script prints: autoresearch's summary block, its `FAIL` line and its step lines.

This is the one place that knows those formats (docs/ARCHITECTURE.md, "Contracts between the runner
and a workspace"). Pure functions on strings; no files, no processes.
Must not import: git, torch, subprocess machinery, or any nightlab.server module but `types`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nightlab.server.core.types import Progress

# Keys of the block in the order autoresearch prints them, with their formats. Integers are "d".
SUMMARY_FORMATS: dict[str, str] = {
    "val_bpb": ".6f",
    "training_seconds": ".1f",
    "total_seconds": ".1f",
    "peak_vram_mb": ".1f",
    "mfu_percent": ".2f",
    "total_tokens_M": ".1f",
    "num_steps": "d",
    "num_params_M": ".1f",
    "depth": "d",
}
SUMMARY_KEYS: tuple[str, ...] = tuple(SUMMARY_FORMATS)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_KEY_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(\S+)$")
_STEP_HEAD = re.compile(r"^step\s+(\d+)(?:\s*\(\s*([0-9.]+)\s*%\s*\))?")
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _lines(text: str) -> list[str]:
    # Step lines are rewritten in place with "\r", so a "\r" ends a line just as "\n" does.
    return _LINE_BREAK.split(text)


def parse_summary(text: str) -> dict[str, float]:
    """The last `---` block of `text` as {key: value}; {} when there is none.

    Every `key: number` line after the last `---` line counts, extra keys included; other lines
    (a stray warning printed on stderr after the block) are skipped rather than ending the block.
    """
    lines = _lines(text)
    start = None
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip() == "---":
            start = i
            break
    if start is None:
        return {}
    values: dict[str, float] = {}
    for line in lines[start + 1 :]:
        match = _KEY_VALUE.match(line.strip())
        if not match:
            continue
        try:
            values[match.group(1)] = float(match.group(2))  # float() also reads nan and inf
        except ValueError:
            continue
    return values


def format_summary(values: Mapping[str, Any]) -> str:
    """The block exactly as autoresearch prints it, without a trailing newline.

    Known keys come in autoresearch's order with its formats; missing ones are left out; extra keys
    follow in the order given, printed with str().
    """
    lines = ["---"]
    for key, fmt in SUMMARY_FORMATS.items():
        if key in values:
            value = values[key]
            # "d" needs an int; a parsed block gives floats (953.0), so convert first.
            text = format(int(value), fmt) if fmt == "d" else format(float(value), fmt)
            lines.append(f"{key + ':':<18}{text}")
    for key, value in values.items():
        if key not in SUMMARY_FORMATS:
            lines.append(f"{key + ':':<18}{value}")
    return "\n".join(lines)


def has_fail(text: str) -> bool:
    """True when a line of `text` is `FAIL` (autoresearch's NaN / divergence marker)."""
    return any(line.strip() == "FAIL" for line in _lines(text))


def _number(text: str) -> float | None:
    match = _NUMBER.search(text)
    if not match:
        return None
    try:
        return float(match.group(0).replace(",", ""))  # tok/sec is printed with thousands commas
    except ValueError:
        return None


def parse_step_line(line: str) -> Progress | None:
    """A `step 00142 (97.9%) | loss: ... | ...` line as Progress; None for any other line.

    Forks print different fields; known ones are read wherever they appear (`tok/sec` or `tok/s`,
    `lr`, `mfu`, `elapsed`), unknown ones ignored. `lrm` is a multiplier, not a learning rate, so it
    does not fill `lr`. Elapsed time is not in autoresearch's line: 0.0 unless printed.
    """
    parts = [part.strip() for part in line.strip().split("|")]
    head = _STEP_HEAD.match(parts[0])
    if not head:
        return None
    progress = Progress(step=int(head.group(1)), elapsed_s=0.0)
    if head.group(2) is not None:
        try:
            progress.fraction = min(max(float(head.group(2)) / 100.0, 0.0), 1.0)
        except ValueError:
            pass
    for part in parts[1:]:
        key, sep, value = part.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        number = _number(value)
        if number is None:
            continue
        if key == "loss":
            progress.loss = number
        elif key in ("tok/sec", "tok/s", "tokens/s"):
            progress.tok_per_s = number
        elif key == "mfu":
            progress.mfu = number
        elif key == "lr":
            progress.lr = number
        elif key in ("elapsed", "elapsed_s", "time"):
            progress.elapsed_s = number
    return progress


def crash_summary(error: str) -> str:
    """One line for a crash: the runner's reason plus the exception line of a traceback, if any, else a
    tool's own `error: ...` line and its `Caused by:` lines (uv's, when `uv run` itself failed)."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return "crashed"
    exc = next(
        (line for line in reversed(lines) if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", line)), ""
    )
    tool = next((i for i, line in enumerate(lines) if i and re.match(r"^(error|fatal): ", line, re.I)), 0)
    if not exc and tool:
        causes = [line for line in lines[tool + 1 :] if line.lower().startswith("caused by:")]
        exc = "; ".join([lines[tool], *causes])
    head = lines[0]
    return (f"{head}: {exc}" if exc and exc != head else head)[:300]
