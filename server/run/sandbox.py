"""Training under bubblewrap: the sandboxed launcher, the default on Linux.

A run sees the machine read-only, with its own pid, ipc, uts and (unless `[run] network = true`)
network namespaces, a private /proc (the loop's environment is not there to read) and /tmp. The
user's repository (the workspace's git top level: its working tree, `.git`, `.nightlab` with the
ledger, refs, other runs and locks) is hidden behind an empty folder; only the experiment's own
checkout (read-only) and its run directory (writable: log, events, weights) show through, with the
caches training writes (the data cache, the torch compile cache) and the interpreter when it lives
inside the hidden tree. bwrap's `--die-with-parent` and the pid namespace take every process of the
run along when it ends or the loop dies: a setsid daemon cannot outlive it. GPUs are passed through
(`/dev/nvidia*`, `/dev/dri`). A judged run (run/judge.py) sees the data cache read-only, built
before it, and its val split behind /dev/null; the judge gets a sandbox of its own: the committed
files, the weights and the cache read-only, nothing writable but its result file. Where bubblewrap
cannot run, `make_launcher` says so once and falls back to the plain runner (mode "auto"), or
refuses (mode "required").
Must not import: git, torch, the ledger, the loop.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nightlab.server.run.judge import JudgePaths, data_key
from nightlab.server.run.launcher import Launcher, RunRequest
from nightlab.server.run.runner import Runner

MODES = ("auto", "required", "off")
_GPU_DEVICES = ("nvidia*", "dri")


class SandboxUnavailable(Exception):
    """bubblewrap is required by the settings but cannot run here; the message says why."""


@dataclass(frozen=True)
class SandboxSpec:
    hide: tuple[Path, ...]  # folders training must not see: the user's repository
    writable: tuple[Path, ...] = ()  # caches training writes (made if missing)
    readable: tuple[Path, ...] = ()  # what stays visible inside a hidden folder (the interpreter)
    network: bool = False
    compile_cache: Path | None = None  # TORCHINDUCTOR_CACHE_DIR / TRITON_CACHE_DIR, writable
    extra: tuple[str, ...] = field(default=())  # more bwrap arguments (tests)


@functools.lru_cache(maxsize=4)
def probe(bwrap: str = "bwrap") -> str | None:
    """Why bubblewrap cannot sandbox a run here, or None when it can (checked once per process)."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap sandboxes runs on Linux only (this is {sys.platform})"
    path = shutil.which(bwrap)
    if path is None:
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    argv = [path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *_namespaces(False), "true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not start: {exc}"
    if done.returncode != 0:
        return f"bubblewrap cannot make namespaces here: {done.stderr.strip() or f'exit {done.returncode}'}"
    return None


def _namespaces(network: bool) -> list[str]:
    out = ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if not network:
        out.append("--unshare-net")
    if os.geteuid() != 0:
        out.append("--unshare-user")
    return [*out, "--die-with-parent", "--new-session"]


def _under(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def bwrap_argv(bwrap: str, argv: list[str], r: RunRequest, spec: SandboxSpec, data: Path | None = None) -> list[str]:
    """bubblewrap's command line for one run. `data`: a judged run's data cache (run/judge.py), built
    before it: read-only to training, its val split (val.npy) replaced by an empty file."""
    writable = [*spec.writable, *([spec.compile_cache] if spec.compile_cache else []), r.log_path.parent]
    if data is None:
        return mounts(bwrap, argv, r.workdir, spec, ro=[r.workdir], rw=writable)
    data = data.resolve()
    rw = [p for p in writable if not _under(data, [p.resolve()])]
    return mounts(bwrap, argv, r.workdir, spec, ro=[r.workdir, data], rw=rw, null=[data / "val.npy"])


def judge_argv(bwrap: str, argv: list[str], p: JudgePaths, spec: SandboxSpec, data: Path | None) -> list[str]:
    """The judge's: the committed files, the weights and the data cache (val split included) read-only;
    nothing writable but its result file."""
    ro = [p.src, p.weights, *([data] if data is not None else [])]
    return mounts(bwrap, argv, p.src, spec, ro=ro, rw=[p.out], make=False)


def mounts(
    bwrap: str,
    argv: list[str],
    chdir: Path,
    spec: SandboxSpec,
    *,
    ro: list[Path],
    rw: list[Path],
    null: Iterable[Path] = (),
    make: bool = True,
) -> list[str]:
    """bubblewrap's command line. Later mounts win: the hidden folders are emptied, then the run's own
    paths are put back inside them (`make`: the writable ones are folders, made when missing)."""
    hide = [p.resolve() for p in spec.hide]
    out = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for pattern in _GPU_DEVICES:
        for dev in sorted(Path("/dev").glob(pattern)):
            out += ["--dev-bind", str(dev), str(dev)]
    for folder in hide:
        out += ["--tmpfs", str(folder)]
    for p in spec.readable:  # the interpreter, when it lives in the hidden tree or in /tmp
        p = p.resolve()
        if p.exists() and (_under(p, hide) or _under(p, [Path("/tmp")])):
            out += ["--ro-bind", str(p), str(p)]
    for p in dict.fromkeys(p.resolve() for p in ro):
        out += ["--ro-bind", str(p), str(p)]
    for p in dict.fromkeys(p.resolve() for p in rw):
        if make:
            p.mkdir(parents=True, exist_ok=True)
        out += ["--bind", str(p), str(p)]
    for p in null:  # hidden behind an empty file: exists, reads as nothing
        if p.exists():
            out += ["--ro-bind", "/dev/null", str(p)]
    for folder in hide:  # read-only once the run's folders are in place: nothing written there at all
        out += ["--remount-ro", str(folder)]
    return [*out, *_namespaces(spec.network), *spec.extra, "--chdir", str(chdir.resolve()), "--", *argv]


class SandboxedRunner(Runner):
    """The local runner, each run under bubblewrap (see the module's docstring)."""

    def __init__(self, spec: SandboxSpec, *, bwrap: str = "bwrap", **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.bwrap = shutil.which(bwrap) or bwrap

    def argv(self, r: RunRequest) -> list[str]:
        data = self.data_folders.get(data_key(r)) if r.judge is not None else None
        return bwrap_argv(self.bwrap, super().argv(r), r, self.spec, data[0] if data else None)

    def judge_argv(self, r: RunRequest, argv: list[str], p: JudgePaths) -> list[str]:
        data = self.data_folders.get(data_key(r))
        return judge_argv(self.bwrap, argv, p, self.spec, data[0] if data else None)

    def env(self, r: RunRequest) -> dict[str, str]:
        env = super().env(r)
        env["TMPDIR"] = "/tmp"  # the sandbox's own, empty and writable
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the checkout is read-only
        if self.spec.compile_cache is not None:
            env["TORCHINDUCTOR_CACHE_DIR"] = str(self.spec.compile_cache / "inductor")
            env["TRITON_CACHE_DIR"] = str(self.spec.compile_cache / "triton")
        return env


def default_caches(command: str = "", env: dict[str, str] | None = None) -> tuple[Path, ...]:
    """The caches a training run writes: Nightlab's data cache (prepare.py builds it on first use), and
    uv's when the command is `uv run ...` (an autoresearch checkout)."""
    env = dict(os.environ if env is None else env)
    home_cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    caches = [Path(env.get("NIGHTLAB_CACHE") or os.path.join(home_cache, "nightlab"))]
    if command.split()[:1] == ["uv"]:
        caches.append(Path(env.get("UV_CACHE_DIR") or os.path.join(home_cache, "uv")))
    return tuple(caches)


def interpreter_dirs(command: str) -> tuple[Path, ...]:
    """The environment of a command's interpreter given as a path (`/x/.venv/bin/python train.py`: a
    virtualenv), to stay readable when it lives in the hidden repository."""
    argv = shlex.split(command)
    if argv and os.path.isabs(argv[0]) and Path(argv[0]).parent.name in ("bin", "Scripts"):
        return (Path(argv[0]).parent.parent,)
    return ()


def make_launcher(
    mode: str, spec: SandboxSpec, say: Callable[[str], None], bwrap: str = "bwrap", **runner_options
) -> Launcher:
    """The launcher the settings ask for: sandboxed where bubblewrap can run ("auto", "required"),
    else the plain runner ("off", or "auto" where it cannot, said once)."""
    if mode not in MODES:
        raise ValueError(f"sandbox must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return Runner(**runner_options)
    why = probe(bwrap)
    if why is None:
        return SandboxedRunner(spec, bwrap=bwrap, **runner_options)
    if mode == "required":
        raise SandboxUnavailable(f'[run] sandbox = "required", but {why}')
    say(
        f"runs are not sandboxed: {why}; training still dies with the loop, but it can read and write "
        f'what you can (set [run] sandbox = "off" to silence this)'
    )
    return Runner(**runner_options)
