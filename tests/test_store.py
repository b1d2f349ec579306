"""The git store on real repositories in tmp_path: the loop's branch and worktree, and a user's
checkout that never changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nightlab.server.record.store import Store, StoreError

USER = ["-c", "user.name=Tester", "-c", "user.email=t@example.com"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *USER, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in (files or {"train.py": "LR = 0.003\nDEPTH = 4\n", "prepare.py": "# fixed\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def user_state(repo: Path) -> tuple:
    """What the user sees: status, HEAD, current branch, index and config."""
    return (
        git(repo, "status", "--porcelain", "--untracked-files=all"),
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        (repo / ".git" / "index").read_bytes(),
        (repo / ".git" / "config").read_text(),
        (repo / "train.py").read_text(),
    )


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = make_repo(tmp_path / "ws")
    # The user has work in progress: a modified tracked file, a staged file and an untracked one.
    (repo / "train.py").write_text("LR = 0.003\nDEPTH = 4\n# my edit\n")
    (repo / "notes.txt").write_text("staged\n")
    git(repo, "add", "notes.txt")
    (repo / "scratch.txt").write_text("untracked\n")
    return repo


def test_not_a_repository(tmp_path):
    with pytest.raises(StoreError, match="not in a git repository"):
        Store(tmp_path, "main")


def test_no_commits(tmp_path):
    git(tmp_path, "init", "-q")
    with pytest.raises(StoreError, match="no commits yet"):
        Store(tmp_path, "main").open_or_create()


def test_create_then_resume(repo):
    user_head = git(repo, "rev-parse", "HEAD").strip()
    store = Store(repo, "t1")
    assert store.open_or_create() is True
    assert store.head() == user_head
    assert store.worktree == repo.resolve() / ".nightlab" / "worktrees" / "t1"
    assert (store.worktree / "train.py").read_text() == "LR = 0.003\nDEPTH = 4\n"  # committed, not the user's edit
    again = Store(repo, "t1")
    assert again.open_or_create() is False
    exclude = (repo / ".git" / "info" / "exclude").read_text()
    assert exclude.count(".nightlab/") == 1
    assert ".nightlab" not in git(repo, "status", "--porcelain", "--untracked-files=all")


def test_user_checkout_never_changes(repo):
    before = user_state(repo)
    store = Store(repo, "night")
    store.open_or_create()
    base = store.head()

    a = store.commit_experiment({"train.py": "LR = 0.006\nDEPTH = 4\n"}, "LR 0.003 -> 0.006", number=2)
    b = store.commit_experiment({"train.py": "LR = 0.006\nDEPTH = 5\n"}, "DEPTH 4 -> 5", number=3)
    store.discard(3, b, reset_to=a)
    c = store.commit_experiment({"train.py": "LR = 0.012\nDEPTH = 4\n", "extra/new.py": "X = 1\n"}, "c")
    store.discard(4, c, reset_to=a)
    store.reset_worktree()

    assert user_state(repo) == before
    assert store.head() == a
    assert store.read_file("train.py") == "LR = 0.006\nDEPTH = 4\n"
    assert store.read_file("train.py", base) == "LR = 0.003\nDEPTH = 4\n"
    assert store.read_file("train.py", b) == "LR = 0.006\nDEPTH = 5\n"
    assert (store.workdir / "train.py").read_text() == "LR = 0.006\nDEPTH = 4\n"
    assert not (store.workdir / "extra").exists()
    assert store.ref_for(2) == a and store.ref_for(3) == b and store.ref_for(4) == c
    assert store.ref_for(99) is None
    diff = store.diff(a, b)
    assert "-DEPTH = 4\n+DEPTH = 5\n" in diff and "a/train.py" in diff
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", b).strip() == (
        "Nightlab <nightlab@localhost>|Nightlab <nightlab@localhost>"
    )
    assert git(repo, "log", "-1", "--format=%s", b).strip() == "DEPTH 4 -> 5"


def test_user_hooks_and_signing_are_not_used(repo):
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    git(repo, "config", "commit.gpgsign", "true")  # would fail: no key
    store = Store(repo, "h")
    store.open_or_create()
    sha = store.commit_experiment({"train.py": "LR = 2.0\n"}, "hooked")
    assert store.head() == sha


def test_reset_worktree_after_a_crash(repo):
    store = Store(repo, "r")
    store.open_or_create()
    (store.workdir / "train.py").write_text("half written")
    (store.workdir / "run.log").write_text("log")
    git(store.worktree, "add", "run.log")
    store.reset_worktree()
    assert (store.workdir / "train.py").read_text() == "LR = 0.003\nDEPTH = 4\n"
    assert not (store.workdir / "run.log").exists()


def test_lost_worktree_is_recreated(repo):
    import shutil

    store = Store(repo, "lost")
    store.open_or_create()
    sha = store.commit_experiment({"train.py": "LR = 9.0\n"}, "kept")
    shutil.rmtree(store.worktree)
    assert Store(repo, "lost").open_or_create() is False
    assert (store.workdir / "train.py").read_text() == "LR = 9.0\n"
    assert store.head() == sha


def test_branch_checked_out_by_the_user(repo):
    git(repo, "branch", "nightlab/busy")
    git(repo, "stash", "-q", "--include-untracked")
    git(repo, "checkout", "-q", "nightlab/busy")
    with pytest.raises(StoreError, match="is checked out at"):
        Store(repo, "busy").open_or_create()


def test_workspace_in_a_subfolder(tmp_path):
    repo = make_repo(tmp_path / "mono", {"README": "x\n", "exp/train.py": "LR = 1.0\n"})
    store = Store(repo / "exp", "sub")
    store.open_or_create()
    assert store.workdir == repo.resolve() / "exp" / ".nightlab" / "worktrees" / "sub" / "exp"
    base = store.head()
    sha = store.commit_experiment({"train.py": "LR = 2.0\n"}, "sub edit", number=1)
    assert store.read_file("train.py") == "LR = 2.0\n"
    assert "+++ b/train.py" in store.diff(base, sha)
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


@pytest.mark.parametrize("path", ["../escape.py", "/etc/passwd"])
def test_paths_outside_the_workspace_are_refused(repo, path):
    store = Store(repo, "esc")
    store.open_or_create()
    with pytest.raises(StoreError, match="not a path inside the workspace"):
        store.commit_experiment({path: "x"}, "bad")
