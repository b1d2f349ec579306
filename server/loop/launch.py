"""The launcher the settings ask for, built for one workspace: sandboxed where bubblewrap runs (the
settings' [run] sandbox), with the user's repository hidden and the interpreter and data cache visible
(run/sandbox.py); else the plain runner, said once. With `[run] executor = "ray"`, each run is a task on
the Ray cluster at `[run] ray_address`, the same sandboxed launcher built on its node (run/ray_launcher.py).
`rerun_lost` runs again, at once, an experiment whose node died under it (the loop goes on with the
nodes it has).
Must not import: pygls, rich, typer, an agent module, the ledger.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nightlab.protocol import events as ev
from nightlab.server.core.settings import Settings
from nightlab.server.core.types import Experiment, ExperimentStatus
from nightlab.server.loop.recovery import rerun
from nightlab.server.run.launcher import Launcher
from nightlab.server.run.sandbox import SandboxSpec, default_caches, interpreter_dirs, make_launcher

if TYPE_CHECKING:
    from nightlab.server.loop.engine import Engine

LOST = "node lost"  # run/ray_launcher.py's LOST (not imported here: ray is an optional extra)
_following: weakref.WeakKeyDictionary[Engine, Callable[[], None]] = weakref.WeakKeyDictionary()


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
    log_max_bytes = int(settings.run.log_max_mb * (1 << 20))
    spec = sandbox_spec(settings, toplevel, command)
    if settings.run.executor == "ray":
        from nightlab.server.run.ray_launcher import RayLauncher  # ray is imported only when asked for

        if settings.run.slots == "auto":  # this machine's GPUs (or one slot) say nothing of the cluster's
            warn(
                "[run] slots = \"auto\" counts this machine's GPUs, not the cluster's: set slots to the number of "
                "runs the cluster should train at once (runs beyond its free nodes wait for one to join)"
            )
        return RayLauncher(
            address=settings.run.ray_address,
            sandbox=settings.run.sandbox,
            spec=spec,
            log_max_bytes=log_max_bytes,
            warn=warn,
        )
    return make_launcher(settings.run.sandbox, spec, warn, log_max_bytes=log_max_bytes)


def lost(exp: Experiment) -> bool:
    """An experiment interrupted because its node or worker died (not stopped, not cancelled)."""
    return exp.status == ExperimentStatus.INTERRUPTED and (exp.error or "").startswith(LOST)


def rerun_lost(engine: Engine) -> Callable[[], None]:
    """Queue, first, a re-run (a new number, `rerun_of` the lost one) of every experiment of this engine
    whose node died under it; idempotent. Returns the unsubscribe."""
    if engine in _following:
        return _following[engine]

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") != ev.EXPERIMENT_FINISHED:
            return
        exp = engine.ledger.get(int(event["experiment"]["number"]))
        if exp is None or not lost(exp) or not exp.commit:
            return
        files = {p: engine.store.read_file(p, exp.commit) for p in engine.settings.files.editable}
        engine.proposer.pending.insert(0, rerun(exp, files))
        engine.message(f"#{exp.number} lost its node ({exp.error}); it runs again on the nodes there are", "warning")

    unsubscribe = engine.subscribe(on_event)
    _following[engine] = unsubscribe
    return unsubscribe
