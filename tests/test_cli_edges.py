"""The CLI's small edges (issue 12, item 8): conflicting budgets, unknown statuses and tags, a workspace
without train.py, the agents in --agent's help, --version, where a bad policy option or flag value came
from, and the extension's wheel script on an interpreter that cannot build the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.workspace import git, make_workspace

NIGHTLAB = [sys.executable, "-m", "nightlab.server.cli"]
ROOT = Path(__file__).resolve().parents[1]


def cli(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NIGHTLAB, *args], cwd=ws, capture_output=True, text=True, timeout=120, env=os.environ)


def leftovers(ws: Path) -> dict[str, str]:
    """What a run leaves in the user's repository: the loop's branches, worktrees, untracked files."""
    return {
        "branches": git(ws, "branch", "--list", "nightlab/*"),
        "worktrees": str(len(git(ws, "worktree", "list").splitlines())),
        "status": git(ws, "status", "--porcelain", "--ignored"),
    }


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


def test_budget_and_budget_tokens_together_are_an_error(ws: Path) -> None:
    """Bug: both were accepted and the token budget won silently."""
    proc = cli(ws, "run", "--budget", "5", "--budget-tokens", "1000", "--max-experiments", "1", "--plain")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "--budget" in proc.stderr and "--budget-tokens" in proc.stderr and "give one" in proc.stderr
    assert not (ws / ".nightlab").exists()


def test_results_with_an_unknown_status_is_an_error(ws: Path) -> None:
    """Bug: `results --status bogus` printed an empty table and succeeded."""
    proc = cli(ws, "results", "--status", "bogus")
    assert proc.returncode == 1 and "--status must be one of keep, discard, crash" in proc.stderr, proc.stderr
    assert "'bogus'" in proc.stderr
    assert cli(ws, "results", "--status", "KEEP").returncode == 0  # the statuses, in any case


def test_status_with_an_unknown_tag_is_an_error(ws: Path) -> None:
    """Bug: `status --tag nope` printed "0 experiments" and succeeded."""
    proc = cli(ws, "status", "--tag", "nope")
    assert proc.returncode == 1 and "no loop with tag 'nope'" in proc.stderr, proc.stdout + proc.stderr
    assert "no loop has run here yet" in proc.stderr
    assert not (ws / ".nightlab").exists()
    plain = cli(ws, "status")  # no --tag: the workspace's own tag, which has not run yet
    assert plain.returncode == 0 and "tag main: 0 experiments" in plain.stdout, plain.stderr


def test_a_workspace_without_train_py_says_it_is_missing_and_leaves_nothing(ws: Path) -> None:
    """Bug: the message said "not committed", and the run left a branch, a worktree and an empty
    progress.png behind."""
    git(ws, "rm", "-q", "train.py")
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "no trainer")
    before = leftovers(ws)
    proc = cli(ws, "run", "--max-experiments", "1", "--plain")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "train.py is missing" in out and "not committed" not in out, out
    assert leftovers(ws) == before and not (ws / ".nightlab").exists()


def test_a_file_only_in_the_working_tree_is_not_committed_and_leaves_nothing(ws: Path) -> None:
    git(ws, "rm", "-q", "--cached", "train.py")
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "untrack the trainer")
    before = leftovers(ws)
    proc = cli(ws, "run", "--max-experiments", "1", "--plain")
    assert proc.returncode == 1 and "train.py not committed" in proc.stdout + proc.stderr
    assert leftovers(ws) == before and not (ws / ".nightlab").exists()


def test_agent_help_names_every_built_in_agent(ws: Path) -> None:
    """Bug: `--agent`'s help named only "offline"."""
    proc = cli(ws, "run", "--help")
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "offline" in text and "claude" in text, text


def test_version(ws: Path) -> None:
    from importlib.metadata import version

    proc = cli(ws, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"nightlab {version('nightlab')}", proc.stdout


def test_a_bad_policy_option_names_the_file_and_section(ws: Path) -> None:
    """Bug: the message ("unknown option 'bogus' for policy 'noise'") said neither file nor section."""
    (ws / "nightlab.toml").write_text((ws / "nightlab.toml").read_text() + "[policy]\nbogus = 1\n")
    proc = cli(ws, "run", "--max-experiments", "1", "--plain")
    assert proc.returncode == 1 and "nightlab.toml: [policy] unknown option 'bogus'" in proc.stderr, proc.stderr
    (ws / "nightlab.toml").write_text((ws / "nightlab.toml").read_text().replace("bogus = 1", "z = -1"))
    proc = cli(ws, "run", "--max-experiments", "1", "--plain")
    assert proc.returncode == 1 and "nightlab.toml: [policy] policy 'noise' option z" in proc.stderr, proc.stderr
    proc = cli(ws, "run", "--policy", "nope", "--plain")
    assert proc.returncode == 1 and "--policy: unknown policy 'nope'" in proc.stderr, proc.stderr
    assert not (ws / ".nightlab").exists()


def test_a_bad_flag_value_names_the_flag(ws: Path) -> None:
    """Bug: `--budget -5` said "option budget_seconds: ...", a name the user never typed."""
    proc = cli(ws, "run", "--budget", "-5", "--plain")
    assert proc.returncode == 1 and "--budget: [budget] seconds must be" in proc.stderr, proc.stderr
    assert "budget_seconds" not in proc.stderr
    proc = cli(ws, "run", "--max-cost-usd", "-1", "--plain")
    assert proc.returncode == 1 and "--max-cost-usd:" in proc.stderr and "max_cost_usd:" not in proc.stderr


# ---------------------------------------------------------------- client-vscode/scripts/wheel.mjs

FAKE_OLD = '#!/bin/sh\necho "setuptools 65.5.0 is too old" >&2\nexit 1\n'  # what the probe says on an old one
FAKE_OK = """#!/bin/sh
if [ "$1" = "-c" ]; then exit 0; fi
# -m pip wheel --no-deps --no-build-isolation -q -w OUT REPO
while [ "$1" != "-w" ]; do shift; done
touch "$2/nightlab-0.0.0-py3-none-any.whl"
"""


def _script_tree(tmp_path: Path) -> Path:
    """A repository-shaped copy of the script (client-vscode/scripts/wheel.mjs), with no .venv."""
    repo = tmp_path / "repo"
    (repo / "client-vscode" / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "client-vscode" / "scripts" / "wheel.mjs", repo / "client-vscode" / "scripts")
    return repo


def _fake(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _wheel(repo: Path, path: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "NIGHTLAB_PYTHON"}
    return subprocess.run(
        ["node", "scripts/wheel.mjs"],
        cwd=repo / "client-vscode",
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "PATH": path, **env},
    )


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_wheel_script_says_what_it_needs_on_an_old_setuptools(tmp_path: Path) -> None:
    """Bug: without the repository's .venv, `npm run package` built the wheel with the system python3,
    whose old setuptools rejects pyproject.toml, and failed with setuptools' traceback."""
    repo = _script_tree(tmp_path)
    bin_dir = tmp_path / "bin"
    _fake(bin_dir / "python3", FAKE_OLD)
    path = f"{bin_dir}:{Path(shutil.which('node') or 'node').parent}"
    proc = _wheel(repo, path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "setuptools>=77" in proc.stderr and "python3: setuptools 65.5.0 is too old" in proc.stderr
    assert "NIGHTLAB_PYTHON" in proc.stderr and "./dev.sh setup" in proc.stderr
    proc = _wheel(repo, path, NIGHTLAB_PYTHON=str(tmp_path / "nope"))
    assert proc.returncode == 1 and "nope: not found" in proc.stderr, proc.stderr
    # the repository's .venv, when it can, comes before python3
    _fake(repo / ".venv" / "bin" / "python", FAKE_OK)
    proc = _wheel(repo, path)
    assert proc.returncode == 0 and "wheel: dist/wheels/nightlab-0.0.0-py3-none-any.whl" in proc.stdout, proc.stderr
