"""How a finished run ended, in words: why it counts as a crash, how its process exited, and the last
lines of its output for the record.

Pure functions on the run's exit status, the tail of its log and its parsed summary; no files, no
processes. Used by runner.py.
Must not import: git, torch, subprocess machinery, or any nightlab.server module but `summary`.
"""

from __future__ import annotations

import math
import signal

from nightlab.server.run.summary import has_fail


def crash_reason(
    returncode: int | None, text: str, metrics: dict, fail: dict, metric_name: str, judged: bool = False
) -> str:
    """Why an exited run counts as a crash, or "" when it does not.

    A complete result (the metric, finite, and no FAIL) followed by an abnormal exit (a signal such as
    SIGABRT at interpreter shutdown, or a non-zero code after the block) is still a crash, but says so:
    nothing tells a result the process finished from one printed before it went wrong (a block printed
    early, a corrupted state the abort comes from), and an exit status is the only word a run gives
    that it ended as it meant to. Its metric stays in the result's metrics, for a person to read.
    `judged`: the run's metric comes from the judge, so a clean exit needs none in the summary."""
    if returncode:
        value = metrics.get(metric_name)
        failed = has_fail(text) or fail
        if value is not None and math.isfinite(value) and not failed:
            return f"complete result ({metric_name} {value:.6f}), then {_exit_words(returncode)}"
        why = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        if returncode < 0:
            why += f" ({_signal_name(-returncode)})"
        if failed:
            why += f" (FAIL{': ' + str(fail['reason']) if fail.get('reason') else ''})"
        return why
    if has_fail(text) or fail:
        return "FAIL printed" + (f": {fail['reason']}" if fail.get("reason") else "")
    if judged:  # the metric is the judge's to give (run/judge.py), whatever training printed
        return ""
    value = metrics.get(metric_name)
    if value is None:
        return f"no {metric_name} in the summary"
    if not math.isfinite(value):
        return f"{metric_name} is {value}"
    return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _exit_words(returncode: int) -> str:
    """How a process ended, in words: "exited with SIGABRT", "exited with code 134 (128 + SIGABRT, the
    way a shell or the sandbox reports a signal)", "exited with code 3"."""
    if returncode < 0:
        return f"exited with {_signal_name(-returncode)}"
    if 128 < returncode < 128 + 65:
        name = _signal_name(returncode - 128)
        return f"exited with code {returncode} (128 + {name}, the way a shell or the sandbox reports a signal)"
    return f"exited with code {returncode}"


def last_lines(text: str, count: int) -> str:
    # Split on "\n" only and keep what follows the last "\r" of each line (what a terminal shows), so
    # hundreds of rewritten step lines do not push the traceback out of the tail.
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    # A cap per line, so one runaway line (a printed tensor) cannot make the ledger's record huge.
    return "\n".join(line if len(line) <= 500 else line[:500] + " ..." for line in lines[-count:])
