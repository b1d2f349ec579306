"""The launcher the settings ask for, built for one workspace: sandboxed where bubblewrap runs (the
settings' [run] sandbox), with the user's repository hidden and the interpreter and data cache visible
(run/sandbox.py); else the plain runner, said once.
Must not import: pygls, rich, typer, an agent module, the ledger.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from nightlab.server.core.settings import Settings
from nightlab.server.run.launcher import Launcher
from nightlab.server.run.sandbox import SandboxSpec, default_caches, interpreter_dirs, make_launcher


def sandbox_spec(settings: Settings, toplevel: Path, command: str) -> SandboxSpec:
    """What a sandboxed run of this workspace hides, shows and may write."""
    s = settings
    nightlab = Path(s.workspace) / ".nightlab"
    return SandboxSpec(
        hide=tuple(dict.fromkeys([toplevel, Path(s.workspace).resolve()])),
        writable=default_caches(s.run.command),
        readable=(Path(sys.prefix), Path(sys.base_prefix), *interpreter_dirs(command)),
        network=s.run.network,
        compile_cache=nightlab / "cache" / "compile",
    )


def settings_launcher(settings: Settings, toplevel: Path, command: str, warn: Callable[[str], None]) -> Launcher:
    """The settings' launcher; raises `SandboxUnavailable` when the sandbox is required and cannot run."""
    return make_launcher(
        settings.run.sandbox,
        sandbox_spec(settings, toplevel, command),
        warn,
        log_max_bytes=int(settings.run.log_max_mb * (1 << 20)),
    )
