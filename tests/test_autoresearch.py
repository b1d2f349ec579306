"""`nightlab run` on a karpathy/autoresearch checkout (issue 12, item 4): its prepare.py (TIME_BUDGET,
MAX_SEQ_LEN), a CPU stand-in for its train.py (a fixed seed, autoresearch's summary block), program.md and
no nightlab.toml. TIME_BUDGET is read and runs are killed at 2x; missing data is named with the command
that makes it; the interpreter is said (uv, a virtualenv, Nightlab's own Python) and uv's own error text
shows; results.tsv lands at the root in autoresearch's format and stays out of `git status`.
The data cache is `$HOME/.cache/autoresearch`, as autoresearch's prepare.py has it: each test sets HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nightlab.server.core.settings import load_settings
from nightlab.server.record.ledger import tsv_header
from support.workspace import git

NIGHTLAB = [sys.executable, "-m", "nightlab.server.cli"]
PREPARE = """# autoresearch's fixed harness (the parts Nightlab reads)
import os
MAX_SEQ_LEN = 2048
TIME_BUDGET = {budget}  # training time budget in seconds
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "autoresearch")
"""
# A CPU stand-in for autoresearch's train.py: its hard-coded seed, its summary block.
TRAIN = """import time
{imports}
class torch:  # stands in for the real one: the seed is all that matters here
    @staticmethod
    def manual_seed(seed): pass
torch.manual_seed(42)
from prepare import MAX_SEQ_LEN, TIME_BUDGET
t0 = time.time()
print("---")
print(f"val_bpb:          {{0.997900:.6f}}")
print(f"training_seconds: {{0.1:.1f}}")
print(f"total_seconds:    {{time.time() - t0 + 0.2:.1f}}")
print(f"peak_vram_mb:     {{45060.2:.1f}}")
print(f"mfu_percent:      {{39.80:.2f}}")
print(f"total_tokens_M:   {{499.6:.1f}}")
print(f"num_steps:        {{953}}")
print(f"num_params_M:     {{50.3:.1f}}")
print(f"depth:            {{8}}")
"""


def checkout(tmp_path: Path, budget: str = "300", imports: str = "import math") -> Path:
    ws = tmp_path / "autoresearch"
    ws.mkdir()
    (ws / "prepare.py").write_text(PREPARE.format(budget=budget))
    (ws / "train.py").write_text(TRAIN.format(imports=imports))
    (ws / "program.md").write_text("# autoresearch\nLOOP FOREVER: lower val_bpb.\n")
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "init")
    return ws


def home(tmp_path: Path, prepared: bool = True) -> Path:
    """A HOME whose ~/.cache/autoresearch holds what `uv run prepare.py` makes (or nothing)."""
    h = tmp_path / "home"
    cache = h / ".cache" / "autoresearch"
    (cache / "tokenizer").mkdir(parents=True)
    (cache / "data").mkdir()
    if prepared:
        (cache / "tokenizer" / "tokenizer.pkl").write_bytes(b"ranks")
        (cache / "data" / "shard_00000.parquet").write_bytes(b"PAR1")
    return h


def env_for(tmp_path: Path, prepared: bool = True, path: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(HOME=str(home(tmp_path, prepared)), PATH=path or _path_without_uv(), **extra)
    return env


def _path_without_uv() -> str:
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if not (Path(d) / "uv").exists())


def run(ws: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*NIGHTLAB, "run", "--plain", "--max-experiments", "1", *args],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


@pytest.mark.parametrize("budget,seconds", [("300", 300), ("2 * 60", 120), ("900", 900)])
def test_time_budget_is_read_from_prepare_py_and_killed_at_twice_it(tmp_path, budget, seconds):
    ws = checkout(tmp_path, budget=budget)
    s = load_settings(ws)
    assert s.autoresearch
    assert s.budget.seconds == seconds
    assert s.deadline_seconds == 2 * seconds  # program.md: 10 minutes for its 5


def test_missing_data_is_named_with_the_command_that_makes_it(tmp_path):
    ws = checkout(tmp_path)
    done = run(ws, env_for(tmp_path, prepared=False))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "tokenizer/tokenizer.pkl" in out and "data/*.parquet" in out
    assert "`uv run prepare.py`" in out
    assert "nightlab/main" not in git(ws, "branch", "--list")  # stopped before anything existed


def test_no_uv_says_which_python_runs(tmp_path):
    ws = checkout(tmp_path, budget="2")
    done = run(ws, env_for(tmp_path))
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0, out
    python = f"train.py runs with Nightlab's own Python, {sys.executable}"
    assert f"uv was not found and no virtualenv is active: {python}" in out
    assert "budget 2 s (TIME_BUDGET = 2 in prepare.py); a run is killed after 4 s" in out
    assert "fixes its seed (manual_seed(42))" in out and "timing noise only" in out and "--budget-tokens" in out


def test_an_active_virtualenv_is_used_without_uv(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    ws = checkout(tmp_path, budget="2")
    s_env = env_for(tmp_path, VIRTUAL_ENV=str(venv))
    done = run(ws, s_env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0, out
    assert f"train.py runs with the active virtualenv's Python, {venv / 'bin' / 'python'}" in out


def test_without_uv_and_autoresearchs_dependencies_it_says_what_is_needed(tmp_path):
    ws = checkout(tmp_path, imports="from kernels import get_kernel")
    done = run(ws, env_for(tmp_path))
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, out
    assert "uv was not found" in out and "cannot import kernels" in out
    assert "autoresearch needs uv" in out and "an environment with its dependencies" in out
    assert "needs CUDA" in out
    assert "nightlab/main" not in git(ws, "branch", "--list")


def test_uvs_own_error_text_shows_when_uv_run_fails(tmp_path):
    ws = checkout(tmp_path)
    # The sandbox shows uv's cache folder (UV_CACHE_DIR) and hides the rest of /tmp: the stand-in uv lives there.
    bin_dir = tmp_path / "uvcache"
    bin_dir.mkdir()
    uv = bin_dir / "uv"
    uv.write_text(
        "#!/bin/sh\necho 'error: Failed to spawn: `train.py`' >&2\n"
        "echo '  Caused by: No such file or directory (os error 2)' >&2\nexit 2\n"
    )
    uv.chmod(0o755)
    env = env_for(tmp_path, path=f"{bin_dir}{os.pathsep}{_path_without_uv()}", UV_CACHE_DIR=str(bin_dir))
    done = run(ws, env)
    out = " ".join((done.stdout + done.stderr).split())
    assert f"train.py runs with `uv run train.py` (uv: {uv})" in out
    assert "#1 crash: - baseline (exit code 2: error: Failed to spawn: `train.py`; Caused by: No such file" in out


def test_results_tsv_at_the_root_in_autoresearchs_format_and_untracked(tmp_path):
    ws = checkout(tmp_path, budget="2")
    done = run(ws, env_for(tmp_path))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    text = (ws / "results.tsv").read_text()
    header, *rows = text.splitlines()
    assert header + "\n" == tsv_header() == "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
    assert len(rows) == 1
    commit, value, memory, status, description = rows[0].split("\t")
    assert len(commit) == 7 and value == "0.997900" and memory == "44.0" and status == "keep"
    assert description == "baseline"
    assert text == (ws / ".nightlab" / "main" / "results.tsv").read_text()
    assert git(ws, "status", "--porcelain") == ""  # the user's tree: nothing new shows
    assert "/results.tsv" in (ws / ".git" / "info" / "exclude").read_text().splitlines()
    assert "added to .git/info/exclude" in out


def test_a_results_tsv_nightlab_did_not_write_is_left_alone(tmp_path):
    ws = checkout(tmp_path, budget="2")
    theirs = tsv_header() + "abcdef1\t0.997900\t44.0\tkeep\tbaseline\n"
    (ws / "results.tsv").write_text(theirs)
    done = run(ws, env_for(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ws / "results.tsv").read_text() == theirs
    assert "holds rows Nightlab did not write: left alone" in " ".join(done.stdout.split())


def test_autoresearchs_branch_naming_is_an_option(tmp_path):
    ws = checkout(tmp_path, budget="2")
    done = run(ws, env_for(tmp_path), "--branch-prefix", "autoresearch", "--tag", "mar8")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "autoresearch/mar8" in git(ws, "branch", "--list")
    assert load_settings(ws).branch == "nightlab/main"  # the default is unchanged


def test_a_cuda_crash_says_what_it_means(tmp_path):
    from nightlab.server.loop.autoresearch import explain

    ws = checkout(tmp_path)
    s = load_settings(ws)
    error = "exit code 1\nTraceback (most recent call last):\nModuleNotFoundError: No module named 'kernels'"
    text = explain("exit code 1: ModuleNotFoundError: No module named 'kernels'", error, s)
    assert "needs an NVIDIA GPU with CUDA and the FlashAttention-3 kernels" in text and "nightlab init" in text
    missing = "exit code 1\nFileNotFoundError: /root/.cache/autoresearch/tokenizer/tokenizer.pkl"
    assert "`uv run prepare.py`" in explain("exit code 1: FileNotFoundError", missing, s)
