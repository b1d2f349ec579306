"""The loop's first check, made before anything exists (the lock, the branch, the worktree, .nightlab/),
so that a start that cannot work leaves nothing behind: every file [files] names (editable and
protected) is in the workspace, and in the commit the loop starts from (its branch when it resumes,
else the user's HEAD).
Must not import: the engine or its other parts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from nightlab.server.core.settings import Settings
from nightlab.server.loop.autoresearch import Loop, preflight
from nightlab.server.record.store import Store, StoreError


def start_problem(loop: Loop) -> str | None:
    """Every check made before anything exists: the files, then an autoresearch checkout's pre-flight."""
    return start_files_problem(loop.settings, loop.store) or preflight(loop)


def start_files_problem(settings: Settings, store: Store) -> str | None:
    """What stops the loop from starting with these files, in words a person can act on; None if nothing."""
    files = [*settings.files.editable, *settings.files.protected]
    workspace = Path(settings.workspace)
    absent = [p for p in files if not (workspace / p).is_file()]
    if absent:
        one = len(absent) == 1
        return (
            f"{', '.join(absent)} {'is' if one else 'are'} missing: there is no such file in {workspace} "
            f"(the loop needs every file [files] names); add {'it' if one else 'them'}, commit, then run again"
        )
    try:
        rev, where = store.head(), f"branch {store.branch}"  # a loop that resumes starts from its branch
    except StoreError:
        if not _has_commits(store.toplevel):
            return None  # the store says so, with what to do, when it opens
        rev, where = "HEAD", "your last commit"
    uncommitted = [p for p in files if not _in_commit(store, p, rev)]
    if uncommitted:
        return (
            f"{', '.join(uncommitted)} not committed: the loop starts from {where} "
            f"(branch {store.branch} is made from it); commit the workspace files, then run again"
        )
    return None


def _in_commit(store: Store, path: str, rev: str) -> bool:
    try:
        store.read_file(path, rev)
    except StoreError:
        return False
    except UnicodeDecodeError:  # there, and not text
        return True
    return True


def _has_commits(toplevel: Path) -> bool:
    probe = ["git", "rev-parse", "--verify", "--quiet", "HEAD^{commit}"]
    return subprocess.run(probe, cwd=toplevel, capture_output=True, check=False).returncode == 0
