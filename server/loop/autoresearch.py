"""The loop on a karpathy/autoresearch checkout (settings.autoresearch): what it checks before anything
exists, what it says, what a crash of autoresearch's train.py means, and its results.tsv at the root.

- `preflight`: which interpreter runs train.py (uv, else the active virtualenv, else Nightlab's own
  Python), that it has what train.py and prepare.py import, that `uv run prepare.py` made the data and
  the tokenizer (~/.cache/autoresearch), the budget read from prepare.py's TIME_BUDGET and its 2x kill,
  and (once) that train.py's fixed seed makes repeats measure timing noise only.
- `explain`: a crash line plus what it means (no CUDA / FlashAttention kernels, data not prepared).
- `RootResults`: results.tsv at the checkout's root (where analysis.ipynb reads it) mirrors the
  ledger's, untracked through .git/info/exclude; a results.tsv of someone else's is left alone.
Must not import: the engine, pygls, rich, typer.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from nightlab.protocol import events as ev
from nightlab.server.core import autoresearch as ar
from nightlab.server.core.settings import Settings
from nightlab.server.loop.proposals import resolve_command
from nightlab.server.record.ledger import Ledger, tsv_header
from nightlab.server.record.store import Store

Say = Callable[..., None]
UV_URL = "https://docs.astral.sh/uv/"
TOKEN_ROUTE = "`nightlab init` in a new folder, then `nightlab run --budget-tokens N`"
# Run by the interpreter that will train: which of these top-level modules it cannot import.
_FIND = (
    "import importlib.util, sys\n"
    "print(' '.join(m for m in sys.argv[1:] if m not in getattr(sys, 'stdlib_module_names', ()) "
    "and importlib.util.find_spec(m) is None))"
)
_NO_CUDA = re.compile(
    r"No module named '(kernels|flash_attn)'|Torch not compiled with CUDA|No CUDA GPUs are available|"
    r"Found no NVIDIA driver|CUDA driver initialization failed|no kernel image is available|"
    r"CUDA (error|is not available)|nvidia-smi"
)


class Loop(Protocol):
    """What the checks need of the engine (passed in; the engine is not imported)."""

    settings: Settings
    store: Store
    ledger: Ledger

    def message(self, text: str, level: str = "info") -> None: ...

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]: ...


def preflight(loop: Loop) -> str | None:
    """What stops an autoresearch checkout from running, in words a person can act on (None: nothing),
    after saying which interpreter runs, the budget and its deadline, and the fixed seed's meaning.
    When it can run, results.tsv at its root follows the ledger from the first experiment on."""
    settings, say = loop.settings, loop.message
    if not settings.autoresearch:
        return None
    ws, command = Path(settings.workspace), settings.run.command
    chosen = ar.interpreter()
    say(chosen.says if command == chosen.command else f"train.py runs with `{command}` (the command given)")
    budget = ar.time_budget(ws / "prepare.py")
    b = settings.budget
    if b.mode == "time" and b.seconds == budget.seconds:
        say(f"budget {budget.seconds:g} s ({budget.note}); a run is killed after {settings.deadline_seconds:g} s")
    else:
        say(
            f"autoresearch's train.py trains for its own {budget.note}, whatever the budget given here; "
            f"a run is killed after {settings.deadline_seconds:g} s",
            "warning",
        )
    problem = _missing_modules(ws, command, chosen.kind) or _missing_data(ws, command)
    if problem:
        return problem
    seed = ar.fixed_seed(ws / "train.py")
    if seed is not None:
        say(
            f"autoresearch's train.py fixes its seed (manual_seed({seed})) and reads no NIGHTLAB_SEED: "
            "repeated runs of the same code differ by timing noise only (its wall-clock budget trains more "
            "or fewer steps as the machine's speed varies), never by seed. For repeats that measure seed "
            f"noise, on a budget machine load cannot change, use Nightlab's own trainer: {TOKEN_ROUTE}",
            "warning",
        )
    loop.subscribe(RootResults(settings, loop.ledger, say).on_event)
    return None


def _python(command: str) -> str | None:
    argv = shlex.split(resolve_command(command))
    return argv[0] if argv and argv[0] != "uv" and "python" in Path(argv[0]).name else None


def _missing_modules(ws: Path, command: str, kind: str) -> str | None:
    """Without uv (which makes its own environment), the Python that will run train.py must import
    what train.py and prepare.py import at their top level."""
    python = _python(command)
    if python is None:
        return None
    names = [*ar.top_imports(ws / "train.py"), *ar.top_imports(ws / "prepare.py")]
    names = [n for n in dict.fromkeys(names) if not (ws / f"{n}.py").exists() and not (ws / n).is_dir()]
    if not names:
        return None
    try:
        done = subprocess.run([python, "-c", _FIND, *names], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} cannot be started to run train.py: {exc}"
    missing = done.stdout.split() if done.returncode == 0 else []
    if not missing:
        return None
    which = {"uv": "", "virtualenv": "the active virtualenv's Python", "current": "Nightlab's own Python"}
    text = (
        f"uv was not found, and {which.get(kind) or 'the Python of the command'} ({python}) cannot import "
        f"{', '.join(missing)}, which train.py or prepare.py imports: autoresearch needs uv (install it from "
        f"{UV_URL}; `uv run` then makes its environment) or an environment with its dependencies "
        "(activate it, so that VIRTUAL_ENV names it, and run again)"
    )
    if "kernels" in missing:
        text += (
            "; `kernels` fetches FlashAttention-3 for NVIDIA GPUs: autoresearch's train.py needs CUDA "
            f"(on a CPU or another GPU, use Nightlab's own trainer: {TOKEN_ROUTE})"
        )
    return text


def _prepare_command(command: str) -> str:
    python = _python(command)
    if python is None:
        return f"`{ar.PREPARE_COMMAND}`"
    return f"`{ar.PREPARE_COMMAND}` (or, without uv, `{shlex.quote(python)} prepare.py`)"


def _missing_data(ws: Path, command: str) -> str | None:
    root = ar.cache_root()
    missing = ar.missing_data(root)
    if not missing:
        return None
    return (
        f"autoresearch's data and tokenizer are not prepared: {', '.join(map(str, missing))} "
        f"{'is' if len(missing) == 1 else 'are'} missing (train.py would stop with FileNotFoundError: "
        f".../tokenizer/tokenizer.pkl); run {_prepare_command(command)} in {ws} once (it downloads the data "
        "shards and trains the tokenizer into ~/.cache/autoresearch), then run again"
    )


def explain(summary: str, error: str, settings: Settings) -> str:
    """A crash's one-line summary, with what it means on an autoresearch checkout."""
    if not settings.autoresearch or not error:
        return summary
    if _NO_CUDA.search(error):
        return (
            f"{summary}; autoresearch's train.py needs an NVIDIA GPU with CUDA and the FlashAttention-3 "
            "kernels (the `kernels` package fetches them): it cannot run here. On a CPU or another GPU, "
            f"use Nightlab's own trainer: {TOKEN_ROUTE}"
        )
    if re.search(r"FileNotFoundError.*(tokenizer|\.parquet|autoresearch)", error):
        return f"{summary}; the data or tokenizer is missing: run {_prepare_command(settings.run.command)} first"
    return summary


class RootResults:
    """results.tsv at the checkout's root, a copy of the ledger's (every final experiment's row in
    autoresearch's format), untracked. Nightlab overwrites only a file it wrote itself (the hash of its
    last write is kept under .nightlab/), or a header-only one (autoresearch starts a session so)."""

    def __init__(self, settings: Settings, ledger: Ledger, say: Say):
        ws = Path(settings.workspace)
        self.path, self.ledger, self.say = ws / "results.tsv", ledger, say
        self.mark = ws / ".nightlab" / "results.tsv.sha256"
        self.header = tsv_header(settings.metric.name)
        self.enabled, self.started = True, False

    def start(self) -> None:
        """Take the root's results.tsv (when it is free), hide it from `git status`, write it."""
        if self._git("ls-files", "--error-unmatch", "--", self.path.name) is not None:
            self.enabled = False
            self.say(f"results.tsv is tracked in your repository: left alone (rows in {self.ledger.tsv})")
            return
        if self.path.exists() and not self._ours():
            self.enabled = False
            self.say(
                f"{self.path} holds rows Nightlab did not write: left alone (this loop's rows are in "
                f"{self.ledger.tsv}; move that file away to have them at the root)",
                "warning",
            )
            return
        excluded = self._exclude()
        self.sync()
        self.say(
            f"results.tsv: written at the checkout's root too ({self.path}, where analysis.ipynb reads it)"
            + (", untracked: added to .git/info/exclude" if excluded else ", untracked")
        )

    def on_event(self, event: dict[str, Any]) -> None:
        """Taken when the loop's first experiment starts (or recovery finishes one): the store and the
        ledger are open and repaired by then; then written again each time an experiment is final."""
        if event.get("type") not in (ev.EXPERIMENT_STARTED, ev.EXPERIMENT_FINISHED):
            return
        if not self.started:
            self.started = True
            self.start()
        elif event["type"] == ev.EXPERIMENT_FINISHED:
            self.sync()

    def sync(self) -> None:
        """Write the ledger's results.tsv at the root, atomically."""
        if not self.enabled:
            return
        text = self.ledger.tsv.read_text(encoding="utf-8") if self.ledger.tsv.exists() else self.header
        if self.path.exists() and self.path.read_bytes() == text.encode("utf-8"):
            return
        self.mark.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.mark.with_name("results.tsv.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)
        self.mark.write_text(_sha(text.encode("utf-8")), encoding="utf-8")

    def _ours(self) -> bool:
        data = self.path.read_bytes()
        if data.strip() in (b"", self.header.strip().encode("utf-8")):
            return True
        return self.mark.exists() and self.mark.read_text(encoding="utf-8").strip() == _sha(data)

    def _exclude(self) -> bool:
        """Add /results.tsv to .git/info/exclude unless git ignores it already; True when added."""
        if self._git("check-ignore", "-q", "--", self.path.name) is not None:
            return False
        common, prefix = self._git("rev-parse", "--git-common-dir"), self._git("rev-parse", "--show-prefix")
        if common is None or prefix is None:
            return False
        exclude = (self.path.parent / common.strip()).resolve() / "info" / "exclude"
        line = "/" + prefix.strip() + self.path.name
        exclude.parent.mkdir(parents=True, exist_ok=True)
        text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        with open(exclude, "a", encoding="utf-8") as f:
            f.write(("" if not text or text.endswith("\n") else "\n") + line + "\n")
        return True

    def _git(self, *args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=self.path.parent, capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
