"""The loop's git store: a branch `nightlab/<tag>` checked out in its own worktree, commits, refs, diffs.

Layout: the worktree is `<repo_root>/.nightlab/worktrees/<tag>`; every experiment's commit is kept
reachable as `refs/nightlab/<tag>/<number>`, so its diff can be shown after it was discarded.
`.nightlab/` is hidden from the user's `git status` through `.git/info/exclude`, never `.gitignore`.

**Invariant:** the user's working tree, index, current branch and git config are never changed. Every
command that writes runs inside the loop's worktree (its own index and HEAD), with Nightlab's identity
passed on the command line and in the environment, hooks and signing switched off for that command only.

File paths given to and returned by the store are relative to the workspace (`repo_root`), which may be
a sub-folder of the git repository.

Knows nothing of training, agents or the ledger. Must not import: torch, the runner, agents, engine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import git

AUTHOR_NAME = "Nightlab"
AUTHOR_EMAIL = "nightlab@localhost"
_IDENTITY_ENV = {
    "GIT_AUTHOR_NAME": AUTHOR_NAME,
    "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
    "GIT_COMMITTER_NAME": AUTHOR_NAME,
    "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
}
# Per-command config: the user's hooks (pre-commit linters, post-checkout LFS ...) and commit signing
# would make the loop slow, interactive or fail at 3 a.m.; -c changes nothing on disk.
_SAFE_CONFIG = [
    "-c",
    f"core.hooksPath={os.devnull}",
    "-c",
    "commit.gpgsign=false",
    "-c",
    f"user.name={AUTHOR_NAME}",
    "-c",
    f"user.email={AUTHOR_EMAIL}",
    "-c",
    "advice.detachedHead=false",
]
EXCLUDE_LINE = ".nightlab/"


class StoreError(Exception):
    """A git problem a person can act on (not a repository, no commits, branch in use ...)."""


class Store:
    def __init__(self, repo_root: Path, tag: str, branch: str = ""):
        self.root = Path(repo_root).resolve()
        self.tag = tag
        self.branch = branch or f"nightlab/{tag}"  # [run] branch_prefix = "autoresearch": autoresearch/<tag>
        self.worktree = self.root / ".nightlab" / "worktrees" / tag
        try:
            repo = git.Repo(self.root, search_parent_directories=True)
        except git.NoSuchPathError:
            raise StoreError(f"{self.root}: no such folder") from None
        except git.InvalidGitRepositoryError:
            raise StoreError(
                f"{self.root} is not in a git repository; run `git init` and commit your files first"
            ) from None
        if repo.working_tree_dir is None:
            raise StoreError(f"{self.root}: a bare git repository has no working tree to run in")
        self.toplevel = Path(repo.working_tree_dir).resolve()
        self._repo = repo
        # The workspace may sit below the repository's top level; git speaks top-level paths.
        self.prefix = PurePosixPath(self.root.relative_to(self.toplevel).as_posix())

    # ---------------------------------------------------------------------------------------------
    # git plumbing

    def _git(
        self,
        *args: str,
        cwd: Path | None = None,
        strip: bool = True,
        binary: bool = False,
        env: dict[str, str] | None = None,
    ) -> str | bytes:
        cmd = ["git", *_SAFE_CONFIG, *args]
        try:
            out = git.Git(str(cwd or self.worktree)).execute(
                cmd,
                env={"GIT_TERMINAL_PROMPT": "0", **(env or {})},
                strip_newline_in_stdout=strip,
                stdout_as_string=not binary,
            )
            return out if isinstance(out, (str, bytes)) else ""
        except git.GitCommandError as e:
            err = (e.stderr or "").strip().removeprefix("stderr:").strip().strip("'").strip()
            raise StoreError(f"git {' '.join(args)} failed: {err or e}") from None

    def _ok(self, *args: str, cwd: Path | None = None) -> str | None:
        """Run a query that may fail (a missing ref): its output, or None."""
        try:
            return str(self._git(*args, cwd=cwd or self.toplevel))
        except StoreError:
            return None

    def _resolve(self, rev: str) -> str:
        sha = self._ok("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        if not sha:
            raise StoreError(f"{rev!r} is not a commit in {self.toplevel}")
        return sha

    def _path(self, path: str) -> str:
        """Workspace-relative path -> top-level-relative posix path, refusing anything outside."""
        p = PurePosixPath(str(path).replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or str(p) in ("", "."):
            raise StoreError(f"{path!r} is not a path inside the workspace")
        return str(self.prefix / p) if str(self.prefix) != "." else str(p)

    @property
    def workdir(self) -> Path:
        """The workspace inside the loop's worktree: where the runner runs the command."""
        return self.worktree / self.prefix if str(self.prefix) != "." else self.worktree

    def _ref(self, number: int) -> str:
        return f"refs/nightlab/{self.tag}/{int(number)}"

    # ---------------------------------------------------------------------------------------------
    # set-up

    def open_or_create(self, start_point: str = "HEAD") -> bool:
        """Make sure branch nightlab/<tag> and its worktree exist. True when the branch was created now
        (at start_point, the user's HEAD by default); False when an existing loop is resumed."""
        if not self._ok("rev-parse", "--verify", "--quiet", "HEAD^{commit}"):
            raise StoreError(
                f"the git repository at {self.toplevel} has no commits yet; commit your files first "
                "(git add -A && git commit -m baseline)"
            )
        self._exclude()
        created = False
        if not self._ok("rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch}"):
            self._git("branch", self.branch, self._resolve(start_point), cwd=self.toplevel)
            created = True
        self._ensure_worktree()
        return created

    def _exclude(self) -> None:
        common = Path(str(self._git("rev-parse", "--git-common-dir", cwd=self.toplevel)))
        if not common.is_absolute():
            common = (self.toplevel / common).resolve()
        exclude = common / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        if any(line.strip() in (EXCLUDE_LINE, "/" + EXCLUDE_LINE, ".nightlab") for line in text.splitlines()):
            return
        with open(exclude, "a", encoding="utf-8") as f:
            f.write(("" if not text or text.endswith("\n") else "\n") + EXCLUDE_LINE + "\n")

    def _worktrees(self) -> list[dict[str, str]]:
        out = str(self._git("worktree", "list", "--porcelain", cwd=self.toplevel))
        entries: list[dict[str, str]] = []
        cur: dict[str, str] = {}
        for line in out.splitlines() + [""]:
            if not line:
                if cur:
                    entries.append(cur)
                cur = {}
                continue
            key, _, value = line.partition(" ")
            cur[key] = value
        return entries

    def _ensure_worktree(self) -> None:
        want = f"refs/heads/{self.branch}"
        here = None
        for e in self._worktrees():
            path = Path(e.get("worktree", "")).resolve()
            if path == self.worktree:
                here = e
            elif e.get("branch") == want:
                raise StoreError(
                    f"branch {self.branch} is checked out at {path}; switch that checkout to another "
                    "branch (Nightlab runs the loop in its own worktree)"
                )
        if here is not None:
            if self.worktree.is_dir() and "prunable" not in here:
                if here.get("branch") != want:
                    raise StoreError(
                        f"{self.worktree} has {here.get('branch', 'a detached HEAD')} checked "
                        f"out, not {self.branch}; remove it with `git worktree remove`"
                    )
                return
            self._git("worktree", "prune", cwd=self.toplevel)
        if self.worktree.exists():
            # Ours (under .nightlab/) but no longer a registered worktree: a half-made one from a crash.
            shutil.rmtree(self.worktree)
        self.worktree.parent.mkdir(parents=True, exist_ok=True)
        self._git("worktree", "add", "--quiet", str(self.worktree), self.branch, cwd=self.toplevel)

    # ---------------------------------------------------------------------------------------------
    # reading

    def head(self) -> str:
        """The sha the loop's branch points at."""
        return self._resolve(f"refs/heads/{self.branch}")

    def read_file(self, path: str, commit: str | None = None) -> str:
        """A file's text at a commit (default: the branch head)."""
        rev = commit or f"refs/heads/{self.branch}"
        data = self._ok_bytes("show", f"{rev}:{self._path(path)}")
        if data is None:
            raise StoreError(f"{path} does not exist at {rev}")
        return data.decode("utf-8")

    def _ok_bytes(self, *args: str) -> bytes | None:
        try:
            out = self._git(*args, cwd=self.toplevel, strip=False, binary=True)
            return out if isinstance(out, bytes) else out.encode()
        except StoreError:
            return None

    def user_head(self) -> str:
        """The sha of the user's HEAD (their current branch), which the loop's branch starts from."""
        return self._resolve("HEAD")

    def same_workspace(self, a: str, b: str) -> bool:
        """Whether commits `a` and `b` hold the same workspace files (the same tree under the prefix)."""
        where = "" if str(self.prefix) == "." else str(self.prefix)
        trees = [self._ok("rev-parse", "--verify", "--quiet", f"{rev}:{where}") for rev in (a, b)]
        return trees[0] is not None and trees[0] == trees[1]

    def file_bytes(self, path: str, rev: str = "HEAD") -> bytes | None:
        """A file's bytes at `rev` (default: the user's HEAD), or None when it is not there."""
        return self._ok_bytes("show", f"{rev}:{self._path(path)}")

    def lineage_ref(self, lineage: int) -> str:
        """Where the kept chain of an earlier lineage of the tag stays once the branch moved on."""
        return f"refs/nightlab/{self.tag}/lineage-{int(lineage)}"

    def has_ref(self, ref: str) -> bool:
        return self._ok("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") is not None

    def keep_chain(self, ref: str, sha: str) -> None:
        """Point `ref` (a lineage_ref) at `sha`, so the chain ending there stays reachable and viewable."""
        self._git("update-ref", ref, self._resolve(sha), cwd=self.toplevel)

    def restart_at(self, sha: str) -> None:
        """Move the loop's branch (and its worktree's files) to `sha`: a new lineage starts there.
        Earlier commits stay reachable through their refs (keep_chain first)."""
        self._git("reset", "--quiet", "--hard", self._resolve(sha))

    def ref_for(self, number: int) -> str | None:
        """The commit of experiment `number`, or None when it has none."""
        return self._ok("rev-parse", "--verify", "--quiet", f"{self._ref(number)}^{{commit}}")

    def diff(self, parent: str, sha: str) -> str:
        """Unified diff parent..sha, workspace-relative paths, whatever the user's diff config says."""
        args = ["diff", "--no-color", "--no-ext-diff", "--src-prefix=a/", "--dst-prefix=b/"]
        if str(self.prefix) != ".":
            args.append(f"--relative={self.prefix}")
        return str(self._git(*args, parent, sha, cwd=self.toplevel, strip=False))

    # ---------------------------------------------------------------------------------------------
    # writing (always inside the loop's worktree)

    def commit_experiment(self, files: dict[str, str], message: str, number: int | None = None) -> str:
        """Write `files` (workspace path -> text) in the worktree and commit them on the loop's branch.
        Returns the new sha. With `number`, also points refs/nightlab/<tag>/<number> at it. An unchanged
        file set still makes a commit (the baseline has no edits but needs its own commit and ref)."""
        if not self.worktree.is_dir():
            raise StoreError(f"{self.worktree} is missing; call open_or_create() first")
        sha = self._commit_in(self.worktree, files, message)
        if number is not None:
            self.set_ref(number, sha)
        return sha

    def _commit_in(self, worktree: Path, files: dict[str, str], message: str) -> str:
        """Write `files` (workspace path -> text) into `worktree` and commit them there; the new sha."""
        paths = []
        for path, text in files.items():
            rel = self._path(path)
            target = worktree / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode("utf-8"))  # bytes: keep the text's own newlines
            paths.append(rel)
        if paths:
            self._git("add", "--", *paths, cwd=worktree)
        self._commit(worktree, message)
        return str(self._git("rev-parse", "HEAD", cwd=worktree))

    def _commit(self, worktree: Path, message: str, *flags: str) -> None:
        """`git commit` in `worktree`, the message read from a file: a message of any size (a 200 KB
        hypothesis) would not fit in one command-line argument (E2BIG)."""
        fd, path = tempfile.mkstemp(prefix="nightlab-commit-", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(message)
            self._git(
                "commit", "--quiet", "--no-verify", "--allow-empty", *flags, "-F", path, cwd=worktree, env=_IDENTITY_ENV
            )
        finally:
            os.unlink(path)

    def set_ref(self, number: int, sha: str) -> None:
        self._git("update-ref", self._ref(number), self._resolve(sha), cwd=self.toplevel)

    def discard(self, number: int, sha: str, reset_to: str) -> None:
        """The experiment is discarded: keep its commit reachable through its ref, then move the branch
        (and the worktree's files) back to `reset_to`, the last kept commit."""
        self.set_ref(number, sha)
        self._git("reset", "--quiet", "--hard", self._resolve(reset_to))

    def reset_worktree(self) -> None:
        """Back to the branch head: drop edits and untracked files a crashed experiment left behind.
        Ignored files (data caches, virtualenvs) stay, so a resume does not rebuild them."""
        self._git("reset", "--quiet", "--hard", "HEAD")
        self._git("clean", "-fdq")

    # ---------------------------------------------------------------------------------------------
    # slots: where experiments run

    def slot(self, index: int) -> Slot:
        """The detached worktree where slot `index` runs its experiments (made on first use)."""
        return Slot(self, index)

    def advance(self, sha: str, parent: str) -> bool:
        """Move the branch forward to a kept experiment. Only a fast-forward from the commit the
        experiment was based on: if another keep moved the branch meanwhile, nothing moves (False)."""
        if self.head() != self._resolve(parent):
            return False
        self._git("merge", "--quiet", "--ff-only", self._resolve(sha))
        return True


class Slot:
    """A detached worktree at `.nightlab/slots/<tag>/<index>`: one experiment at a time is written,
    committed (off-branch, kept reachable by its ref) and run here. The branch itself only moves by
    fast-forward when an experiment is kept, so slots never disturb each other or the branch."""

    def __init__(self, store: Store, index: int):
        self.store = store
        self.index = index
        self.worktree = store.root / ".nightlab" / "slots" / store.tag / str(index)

    @property
    def workdir(self) -> Path:
        prefix = self.store.prefix
        return self.worktree / prefix if str(prefix) != "." else self.worktree

    def _git(self, *args: str, env: dict[str, str] | None = None) -> str:
        return str(self.store._git(*args, cwd=self.worktree, env=env))

    def checkout(self, sha: str) -> None:
        """A clean checkout of `sha` (detached): no leftovers of the slot's last experiment."""
        sha = self.store._resolve(sha)
        registered = {Path(e.get("worktree", "")).resolve(): e for e in self.store._worktrees()}
        entry = registered.get(self.worktree.resolve())
        if entry is None or not self.worktree.is_dir() or "prunable" in entry:
            if entry is not None:
                self.store._git("worktree", "prune", cwd=self.store.toplevel)
            if self.worktree.exists():
                shutil.rmtree(self.worktree)
            self.worktree.parent.mkdir(parents=True, exist_ok=True)
            self.store._git("worktree", "add", "--quiet", "--detach", str(self.worktree), sha, cwd=self.store.toplevel)
            return
        self._git("checkout", "--quiet", "--force", "--detach", sha)
        self._git("reset", "--quiet", "--hard", sha)
        self._git("clean", "-fdq")

    def commit(self, files: dict[str, str], message: str, number: int) -> str:
        sha = self.store._commit_in(self.worktree, files, message)
        self.store.set_ref(number, sha)
        return sha

    def amend(self, message: str, number: int) -> str:
        self.store._commit(self.worktree, message, "--amend")
        sha = self._git("rev-parse", "HEAD")
        self.store.set_ref(number, sha)
        return sha

    def changed_since(self, paths: Iterable[str], sha: str) -> list[str]:
        changed = []
        for p in paths:
            committed = self.store._ok_bytes("show", f"{sha}:{self.store._path(p)}")
            f = self.workdir / p
            if committed != (f.read_bytes() if f.is_file() else None):
                changed.append(p)
        return changed
