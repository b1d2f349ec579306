"""What an LLM agent tells the model: the system prompt, the one tool, and the user turn.

The system prompt (program.md plus the loop's rules) and the `propose_experiment` tool form the
static prefix that a caller marks for prompt caching; the user turn carries the editable files at the
branch head, a digest of the history (each past experiment on one short line, with the verdict's reason
so the model learns from crashes and near-misses), the best result, the noise, what runs now, and the
engine's feedback when the last proposal's edits did not apply.

Plain functions of an `ExperimentContext` returning text or JSON-able dicts: no network, no disk.
Must not import: the anthropic SDK (or any other LLM SDK), git, torch, the store, runner, ledger or engine.
"""

from __future__ import annotations

from typing import Any

from nightlab.server.core.types import ExperimentContext, HistoryItem

TOOL_NAME = "propose_experiment"
TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "description": {
            "type": "string",
            "description": "One line: what this experiment changes (it labels the experiment).",
        },
        "hypothesis": {"type": "string", "description": "Why this change should improve the metric."},
        "edits": {
            "type": "array",
            "minItems": 1,
            "description": "SEARCH/REPLACE edits, applied in order to the files at the branch head.",
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "An editable file, relative to the workspace."},
                    "search": {
                        "type": "string",
                        "description": "Lines copied exactly from the file, enough to be unique.",
                    },
                    "replace": {"type": "string", "description": "The lines that replace them."},
                },
                "required": ["path", "search", "replace"],
            },
        },
    },
    "required": ["description", "hypothesis", "edits"],
}
REASON_CHARS = 120  # a verdict's reason in the history: enough for "exit code 1: ValueError: ..." or "0.5 sigma"


def tool_definition() -> dict[str, Any]:
    """The propose_experiment tool, in the Messages API's shape (without cache_control)."""
    return {
        "name": TOOL_NAME,
        "description": "Propose the next experiment: one focused change to the editable "
        "files, with a one-line description and a hypothesis.",
        "input_schema": TOOL_SCHEMA,
    }


def system_prompt(ctx: ExperimentContext) -> str:
    better = "lower" if ctx.direction == "lower" else "higher"
    files = ", ".join(ctx.editable)
    return f"""{ctx.program.strip()}

# Rules of this loop
- You may edit only these files: {files}. Every other file is fixed; an edit to one is rejected.
- The metric is {ctx.metric_name}; {better} is better. Each experiment trains for the same fixed budget, and \
the loop keeps a change only if it improves on the best {ctx.metric_name} by more than the noise.
- One experiment, one hypothesis: make one focused change that tests it. Do not bundle unrelated changes.
- Simplicity criterion: all else equal, simpler is better. A tiny gain that adds ugly complexity is not \
worth it; removing code for an equal result is a win.
- Do not propose an idea that was already tried (see the history); build on what was kept. Learn from the \
reasons given: a crash says what broke, a discard how close it came.
- Answer only by calling the {TOOL_NAME} tool, once. description: one line saying what changes. \
hypothesis: why it should help. edits: SEARCH/REPLACE pairs; each SEARCH must match the file at the \
branch head exactly (copy it, with its indentation) and be unique in it; edits apply in order.
"""


def _num(x: float | None, fmt: str = ".6f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _short(text: str, limit: int = REASON_CHARS) -> str:
    """One line of at most `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _reason(h: HistoryItem) -> str:
    """The verdict's reason, unless it only repeats the line (a baseline's reason is its metric)."""
    if not h.reason or h.status == "baseline":
        return ""
    return _short(h.reason)


def _line(h: HistoryItem) -> str:
    s = f"#{h.number} [{h.status}] {h.description}"
    if h.metric is not None:  # a crash has none: its reason says what happened
        s += f": {_num(h.metric)} (delta {_num(h.delta, '+.6f')})"
    s += f"; {h.diff_summary}" if h.diff_summary else ""
    why = _reason(h)
    return s + (f"; why: {why}" if why else "")


def history_digest(ctx: ExperimentContext, last_k: int) -> str:
    """The kept chain, the last `last_k` experiments in full, and the older ideas not kept, one line each."""
    hist = list(ctx.history)
    if not hist:
        return "No experiments yet."
    recent = hist[-last_k:] if last_k else []
    older = hist[: len(hist) - len(recent)]
    parts = []
    kept = [h for h in hist if h.status in ("keep", "baseline")]
    parts.append(
        "Kept (the branch head is the last of these):\n" + ("\n".join(_line(h) for h in kept) if kept else "none yet")
    )
    if recent:
        parts.append(f"The last {len(recent)} experiments:\n" + "\n".join(_line(h) for h in recent))
    tried: dict[str, str] = {}  # description -> the latest outcome of that idea
    for h in older:
        if h.status not in ("keep", "baseline"):
            tried.pop(h.description, None)
            why = _short(h.reason, 80) if h.reason else ""
            tried[h.description] = f"{h.status}: {why}" if why else h.status
    if tried:
        parts.append(
            "Ideas tried earlier and not kept (do not propose them again):\n"
            + "\n".join(f"- {d} ({outcome})" for d, outcome in tried.items())
        )
    return "\n\n".join(parts)


def user_prompt(ctx: ExperimentContext, last_k: int) -> str:
    parts = []
    if ctx.feedback:
        parts.append(
            f"IMPORTANT. Your previous proposal could not be applied: {ctx.feedback}\n"
            "Propose again, with every SEARCH copied exactly from the files below."
        )
    for path in ctx.editable:
        if path in ctx.files:
            text = ctx.files[path]
            parts.append(f'<file path="{path}">\n{text}{"" if text.endswith(chr(10)) else chr(10)}</file>')
    parts.append("<history>\n" + history_digest(ctx, last_k) + "\n</history>")
    status = [f"Best {ctx.metric_name} so far: {_num(ctx.best)} ({ctx.direction} is better)."]
    if ctx.noise_sigma is not None:
        status.append(
            f"Measured noise of {ctx.metric_name} (1 sigma): {ctx.noise_sigma:.6f}; "
            "a change smaller than about twice that is not an improvement."
        )
    if ctx.in_flight:
        status.append(
            "Running now (propose something different from these):\n" + "\n".join(f"- {d}" for d in ctx.in_flight)
        )
    if ctx.elsewhere:
        status.append(
            "Kept by the other lineages (other hardware, their own baseline; each is also tried here as a port):\n"
            + "\n".join(f"- {line}" for line in ctx.elsewhere)
        )
    if ctx.focus:
        status.append(f"This lineage's focus: {ctx.focus}.")
    parts.append("\n".join(status))
    parts.append(f"Propose the next experiment by calling {TOOL_NAME}.")
    return "\n\n".join(parts)
