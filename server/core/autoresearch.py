"""What Nightlab reads from a karpathy/autoresearch checkout (prepare.py, train.py, program.md and no
nightlab.toml), without running or importing any of it: `TIME_BUDGET` from prepare.py (parsed with
`ast`), the interpreter a user expects (uv when present, else the active virtualenv, else the current
Python), the imports train.py and prepare.py need, whether train.py fixes its own seed, and where its
data cache lives.

The cache root is what autoresearch's prepare.py computes: `~/.cache/autoresearch`, `~` being `$HOME`
(so a test points it elsewhere by setting HOME, and so does a user whose prepare.py reads it there).
Must not import: anything but the standard library.
"""

from __future__ import annotations

import ast
import operator
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

FILES = ("prepare.py", "train.py", "program.md")
DEFAULT_SECONDS = 300  # autoresearch's TIME_BUDGET, when prepare.py's cannot be read
KILL_FACTOR = 2.0  # program.md: a run over 10 minutes (2x the 5-minute budget) is killed, a failure
PREPARE_COMMAND = "uv run prepare.py"
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass(frozen=True)
class TimeBudget:
    seconds: float
    note: str  # where the number came from, or why the default is used


@dataclass(frozen=True)
class Interpreter:
    command: str  # the run command: `uv run train.py`, `<venv>/bin/python train.py` or `python train.py`
    kind: str  # uv | virtualenv | current
    says: str  # which one runs, in words


def _number(node: ast.AST) -> float | None:
    """A numeric constant expression (300, 5 * 60, 2.5e2) or None: nothing is evaluated beyond + - * /."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return -inner if inner is not None else None
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _number(node.left), _number(node.right)
        if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
            return None
        return float(_OPS[type(node.op)](left, right))
    return None


def _module(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


def time_budget(prepare: Path) -> TimeBudget:
    """prepare.py's top-level `TIME_BUDGET = <number>`, read with `ast` (prepare.py is never imported)."""
    tree = _module(prepare)
    if tree is None:
        return TimeBudget(DEFAULT_SECONDS, f"{prepare.name} could not be parsed: autoresearch's {DEFAULT_SECONDS} s")
    value: float | None = None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, expr = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, expr = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "TIME_BUDGET" for t in targets):
            value = _number(expr)
    if value is None or value <= 0:
        return TimeBudget(
            DEFAULT_SECONDS, f"no numeric TIME_BUDGET in {prepare.name}: autoresearch's {DEFAULT_SECONDS} s"
        )
    return TimeBudget(value, f"TIME_BUDGET = {value:g} in {prepare.name}")


def interpreter(env: dict[str, str] | None = None) -> Interpreter:
    """uv when it is on PATH; else the active virtualenv's Python ($VIRTUAL_ENV); else the Python
    Nightlab runs in (`python` in a run command means that one, see loop/proposals.resolve_command)."""
    env = dict(os.environ if env is None else env)
    uv = shutil.which("uv", path=env.get("PATH"))
    if uv:
        return Interpreter("uv run train.py", "uv", f"train.py runs with `uv run train.py` (uv: {uv})")
    venv = env.get("VIRTUAL_ENV", "")
    python = Path(venv) / ("Scripts/python.exe" if os.name == "nt" else "bin/python") if venv else None
    if python is not None and python.exists():
        return Interpreter(
            f"{shlex.quote(str(python))} train.py",
            "virtualenv",
            f"uv was not found: train.py runs with the active virtualenv's Python, {python}",
        )
    return Interpreter(
        "python train.py",
        "current",
        f"uv was not found and no virtualenv is active: train.py runs with Nightlab's own Python, {sys.executable}",
    )


def defaults(workspace: Path) -> tuple[dict, TimeBudget, Interpreter]:
    """The settings an autoresearch checkout runs with (in nightlab.toml's shape), what they came from."""
    budget, python = time_budget(workspace / "prepare.py"), interpreter()
    raw = {
        "run": {"command": python.command},
        # killed at 2x TIME_BUDGET of wall clock, no grace: autoresearch's 10 minutes for its 300 s
        "budget": {"seconds": budget.seconds, "kill_factor": KILL_FACTOR, "grace_seconds": 0},
    }
    return raw, budget, python


def top_imports(path: Path) -> list[str]:
    """The top-level module names a script imports unconditionally (module-level import statements)."""
    tree = _module(path)
    names: list[str] = []
    for node in tree.body if tree else []:
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module.split(".")[0])
    return list(dict.fromkeys(names))


def fixed_seed(train: Path) -> int | None:
    """The literal seed train.py passes to `torch.manual_seed(...)` (autoresearch's 42), when it reads
    no NIGHTLAB_SEED: Nightlab's seeds then never reach it."""
    tree = _module(train)
    if tree is None or "NIGHTLAB_SEED" in ast.unparse(tree):
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "manual_seed"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, int)
        ):
            return int(node.args[0].value)
    return None


def cache_root(env: dict[str, str] | None = None) -> Path:
    """`~/.cache/autoresearch`, as autoresearch's prepare.py computes it (`~` follows $HOME)."""
    env = dict(os.environ if env is None else env)
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".cache" / "autoresearch"


def missing_data(root: Path) -> list[Path]:
    """What `uv run prepare.py` makes and train.py reads, where it is missing: the tokenizer
    (tokenizer/tokenizer.pkl) and at least one data shard (data/*.parquet)."""
    missing = []
    if not (root / "tokenizer" / "tokenizer.pkl").is_file():
        missing.append(root / "tokenizer" / "tokenizer.pkl")
    data = root / "data"
    if not (data.is_dir() and any(data.glob("*.parquet"))):
        missing.append(data / "*.parquet")
    return missing
