"""`nightlab init`: make a workspace from the template, for a device profile, under git.

Must not import: nightlab.server (the CLI calls this, not the other way round), torch at module level.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from . import TEMPLATE_DIR, TEMPLATE_FILES

# The template holds the CPU profile (a token budget, so that the machine's load cannot decide a
# verdict); a GPU workspace gets autoresearch-sized knobs and its 5-minute wall-clock budget.
PROFILES: dict[str, dict[str, dict[str, object]]] = {
    "cpu": {"train.py": {}, "nightlab.toml": {}},
    "gpu": {
        "train.py": {
            "DEPTH": 8,
            "WIDTH": 512,
            "HEAD_DIM": 128,
            "SEQ_LEN": 2048,
            "DEVICE_BATCH_SIZE": 64,
            "TOTAL_BATCH_SIZE": 524288,
            "MATRIX_LR": 0.04,
            "EMBED_LR": 0.05,
            "UNEMBED_LR": 0.004,
            "WARMDOWN_RATIO": 0.5,
            "COMPILE": True,
        },
        "nightlab.toml": {"mode": "time", "seconds": 300},  # autoresearch's 5 minutes of wall clock
    },
}

GITIGNORE = """# Nightlab: the loop's worktrees, runs and ledger live here (never committed)
.nightlab/
__pycache__/
run.log
"""


class InitError(Exception):
    pass


def detect_profile() -> str:
    try:
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def set_constants(text: str, values: dict[str, object]) -> str:
    """Rewrite top-level `NAME = literal  # comment` lines, keeping the comment where it was."""
    for name, value in values.items():
        literal = json.dumps(value) if isinstance(value, str) else repr(value)
        pattern = re.compile(rf"^({re.escape(name)}\s*=\s*)([^#\n]*?)(\s*#.*)?$", re.M)
        match = pattern.search(text)
        if match is None:
            raise InitError(f"the template has no constant {name}")
        old_value = match.group(2)
        comment = match.group(3) or ""
        pad = max(1, len(old_value) + len(comment) - len(comment.lstrip()) - len(str(literal)))
        new_line = f"{match.group(1)}{literal}" + (" " * pad + comment.lstrip() if comment else "")
        text = text[: match.start()] + new_line + text[match.end() :]
    return text


def render(profile: str) -> dict[str, str]:
    if profile not in PROFILES:
        raise InitError(f"unknown profile {profile!r}: choose cpu or gpu")
    files = {name: (TEMPLATE_DIR / name).read_text(encoding="utf-8") for name in TEMPLATE_FILES}
    for name, values in PROFILES[profile].items():
        files[name] = set_constants(files[name], values)
    return files


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True)


def init_workspace(
    folder: Path, profile: str = "auto", force: bool = False, budget_tokens: int | None = None
) -> list[str]:
    """Copy the template into `folder`. Returns what was done, line by line, for the CLI to print.
    `budget_tokens`: the low-noise setting, a fixed number of training tokens per experiment instead of
    a wall-clock budget (throughput jitter then no longer moves the metric)."""
    folder = Path(folder).expanduser().resolve()
    profile = detect_profile() if profile == "auto" else profile
    files = render(profile)
    if budget_tokens:
        files["nightlab.toml"] = set_constants(files["nightlab.toml"], {"mode": "tokens", "tokens": int(budget_tokens)})
    existing = [name for name in files if (folder / name).exists()]
    if existing and not force:
        raise InitError(f"{folder} already has {', '.join(existing)} (use --force to overwrite)")
    folder.mkdir(parents=True, exist_ok=True)
    done = []
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    done.append(f"wrote {', '.join(files)} ({profile} profile) to {folder}")
    in_repo = _git(folder, "rev-parse", "--show-toplevel").returncode == 0
    if in_repo and _git(folder, "check-ignore", "-q", ".").returncode == 0:
        in_repo = False  # a folder the enclosing repository ignores (e.g. ./demo in a clone) gets its own
    if not in_repo:
        (folder / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
        for args in (
            ["init", "-q"],
            ["add", "-A"],
            [
                "-c",
                "user.name=Nightlab",
                "-c",
                "user.email=nightlab@localhost",
                "commit",
                "-q",
                "-m",
                "nightlab init: the experiment template",
            ],
        ):
            proc = _git(folder, *args)
            if proc.returncode != 0:
                raise InitError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
        done.append("git init; initial commit")
    else:
        done.append(
            "inside an existing git repository: commit these files before `nightlab run` "
            "(the loop starts from your HEAD)"
        )
    return done


def copy_template(dest: Path) -> None:
    """Plain copy of the template files (tests use it)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATE_FILES:
        shutil.copy2(TEMPLATE_DIR / name, dest / name)
