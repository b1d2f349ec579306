"""The CLI's side of the loop process: `nightlab run` serves the control endpoint while it runs
(`serving`), `nightlab run --detach` starts the loop in a new session and returns once it answers
(`detach`), and `nightlab attach|stop|pause|resume` reach a running loop from any terminal (`register`
adds them to the app); `nightlab status` adds what the loop says (`status_lines`).

Must not import: pygls, lsprotocol; nor cli/commands.py (which registers these: no cycle).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from nightlab.protocol import events as ev
from nightlab.server.control import paths
from nightlab.server.control.client import Connection, ControlRefused, LinkLost, connect_loop, ended_how, wait_gone

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
STOP_WAIT_S = 30.0


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False)


# ---------------------------------------------------------------------------- the loop's side


@contextlib.asynccontextmanager
async def serving(engine: Any):
    """Serve the engine's control endpoint for the life of the block (a socket that cannot be made is
    said, and the loop runs without it)."""
    from nightlab.server.control.launch import ENV_LOG
    from nightlab.server.control.server import ControlServer

    server = ControlServer(engine, os.environ.pop(ENV_LOG, None) or None)
    try:
        await server.start()
    except OSError as exc:
        err_console.print(f"[yellow]no control socket ({escape(str(exc))}): nightlab attach/stop cannot reach it[/]")
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def watching_cluster(settings: Any, engines: list[Any]):
    """With the Ray executor, for the life of the block: every engine's clients are told the cluster's
    nodes and what its runs hold, on each change (a `cluster` event; run/ray_cluster.py)."""
    if settings.run.executor != "ray":
        yield
        return
    from nightlab.protocol import events as ev
    from nightlab.server.run.ray_cluster import watch

    def emit(view: Any) -> None:
        for engine in engines:
            engine.emit(ev.CLUSTER, cluster=view.to_wire())

    task = asyncio.create_task(watch(settings.run.ray_address, emit))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def detach(settings: Any, argv: list[str]) -> None:
    """`nightlab run --detach`: the same command in a new session (stdin /dev/null, output to loop.log);
    returns once it is up, or fails with the log's last lines when it ends first."""
    from nightlab.server.control.launch import LaunchFailed, launch

    try:
        up = launch(Path(settings.workspace) / ".nightlab" / settings.tag, [a for a in argv if a != "--detach"])
    except LaunchFailed as exc:
        _fail(str(exc) + ("" if "ended at once" in str(exc) else f": {_how(settings.tag)}"))
    if up.ended:
        return _say("the loop ended already; the last lines of its log:\n  " + "\n  ".join(up.tail))
    _say(f"the loop runs detached: pid {up.pid}, tag {settings.tag}, log {up.log}")
    _say(_how(settings.tag))


def _how(tag: str) -> str:
    opt = "" if tag == "main" else f" --tag {tag}"
    return f"watch it: nightlab attach{opt}   stop it: nightlab stop{opt}   (from this workspace)"


# ---------------------------------------------------------------------------- the clients


def _where(workspace: Path, tag: str | None) -> tuple[Path, str, Any]:
    """The ledger folder and tag that `-w` and `--tag` name, and the settings."""
    from nightlab.server.core.settings import SettingsError, load_settings

    try:
        settings = load_settings(workspace, {"tag": tag})
    except SettingsError as exc:
        _fail(str(exc))
    return Path(settings.workspace) / ".nightlab" / settings.tag, settings.tag, settings


def _run(coro: Any) -> Any:
    """Run a client coroutine; a loop that is not there (or died) is a plain error, exit 1."""
    try:
        return asyncio.run(coro)
    except paths.NoLoop as exc:
        _fail(str(exc))
    except (LinkLost, ControlRefused, OSError, asyncio.TimeoutError) as exc:
        _fail(f"the loop did not answer: {exc}" if str(exc) else "the loop did not answer")


def running_text(conn: Connection) -> list[str]:
    """The loop's state and each experiment in flight, one line each."""
    from nightlab.server.cli.view import run_label

    loop = conn.hello.loop
    lines = [f"loop state: {loop.state}" + (f" ({loop.reason})" if loop.reason else "")]
    repeats = loop.settings.baseline_repeats if loop.settings else 1
    for r in loop.running:
        exp = r.experiment
        stage = run_label(r.stage or "run", exp.get("kind") == "baseline", repeats) if r.stage else "starting"
        done = f", {100 * r.progress['fraction']:.0f}%" if r.progress and r.progress.get("fraction") else ""
        lines.append(f"running: #{r.number} {exp.get('description', '')} ({stage}{done})")
    return lines


def status_lines(ledger_dir: Path, tag_name: str) -> list[str]:
    """What `nightlab status` adds: the running loop's state and experiments, or that the loop died."""

    async def ask() -> list[str]:
        conn = await connect_loop(ledger_dir, tag_name)
        try:
            reply = await conn.command("status")
            if reply.loop is not None:
                conn.hello.loop = reply.loop
            return running_text(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except paths.NoLoop as exc:
        return [str(exc)] if exc.died else []
    except (LinkLost, ControlRefused, OSError, asyncio.TimeoutError) as exc:
        return [f"the loop did not answer: {exc}"]


async def _command(ledger_dir: Path, tag: str, name: str, wait_s: float | None = None) -> None:
    conn = await connect_loop(ledger_dir, tag)
    try:
        reply = await conn.command(name)
        _say(f"loop (pid {conn.pid}) on tag {tag}: {reply.message}")
        if wait_s is None:
            return
        started = time.monotonic()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_drain(conn), wait_s)
        if not await wait_gone(conn.pid, max(0.0, wait_s - (time.monotonic() - started))):
            _fail(f"the loop (pid {conn.pid}) has not exited after {wait_s:g} s; it is still ending (nightlab status)")
        _say(f"the loop (pid {conn.pid}) has exited" + (f": {conn.ending.message}" if conn.ending else ""))
    finally:
        await conn.close()


async def _drain(conn: Connection) -> None:
    async for _ in conn.events():
        pass


def attach_view(conn: Connection, ledger_dir: Path, on_event: Callable[[dict], None] | None = None):
    """A LiveView of the loop: the ledger's table, then the hello's running experiments, progress and state."""
    from nightlab.server.cli.view import LiveView
    from nightlab.server.record.ledger import Ledger

    s = conn.hello.loop.settings
    metric = s.metric_name if s else "val_bpb"
    view = LiveView(
        metric,
        s.budget_amount if s and s.budget_mode == "time" else None,
        Ledger(ledger_dir, metric_name=metric).experiments(),
        direction=s.direction if s else "lower",
        baseline_repeats=s.baseline_repeats if s else 1,
    )
    for r in conn.hello.loop.running:
        view.on_event({"type": ev.EXPERIMENT_STARTED, "experiment": r.experiment})
        if r.progress:
            view.on_event({"type": ev.PROGRESS, "number": r.number, "progress": r.progress, "stage": r.stage or "run"})
    view.on_event({"type": ev.STATE, "state": conn.hello.loop.state, "reason": conn.hello.loop.reason})
    return view


async def _attach(ledger_dir: Path, tag: str, live: bool, print_event: Callable, seen: dict) -> tuple[bool, str]:
    conn = await connect_loop(ledger_dir, tag)
    seen["pid"] = conn.pid
    try:
        view = attach_view(conn, ledger_dir)
        _say(f"attached to the loop (pid {conn.pid}) on tag {tag}; Ctrl-C detaches (the loop goes on)")
        if live:
            from rich.live import Live

            with Live(view, console=console, refresh_per_second=4):
                async for event in conn.events():
                    view.on_event(event)
        else:
            for line in running_text(conn):
                _say(line)
            async for event in conn.events():
                print_event(event)
                sys.stdout.flush()
        return await ended_how(conn, ledger_dir)
    finally:
        await conn.close()


def register(app: typer.Typer, print_event: Callable[[dict], None]) -> None:
    """Add attach, stop, pause and resume to the CLI (`print_event`: `run --plain`'s line per event)."""
    ws_opt = typer.Option(Path("."), "--workspace", "-w", help="The workspace (default: here).")
    tag_opt = typer.Option(None, help="The loop's tag (default: the settings').")

    @app.command()
    def attach(workspace: Path = ws_opt, tag: str | None = tag_opt) -> None:
        """Watch a running loop (the live view); Ctrl-C detaches and the loop goes on."""
        ledger_dir, name, _ = _where(workspace, tag)
        seen: dict = {}
        try:
            died, text = _run(_attach(ledger_dir, name, console.is_terminal, print_event, seen))
        except KeyboardInterrupt:
            _say(f"detached; the loop (pid {seen.get('pid', '?')}) goes on: {_how(name)}")
            return
        if died:
            _fail(text)
        _say(text)

    @app.command()
    def stop(
        workspace: Path = ws_opt,
        tag: str | None = tag_opt,
        timeout: float = typer.Option(STOP_WAIT_S, help="Seconds to wait for the loop process to exit."),
    ) -> None:
        """Stop a running loop (the run in progress is recorded as interrupted) and wait until it has exited."""
        ledger_dir, name, _ = _where(workspace, tag)
        _run(_command(ledger_dir, name, "stop", wait_s=timeout))

    @app.command()
    def pause(workspace: Path = ws_opt, tag: str | None = tag_opt) -> None:
        """Pause a running loop after the experiment in progress."""
        ledger_dir, name, _ = _where(workspace, tag)
        _run(_command(ledger_dir, name, "pause"))

    @app.command()
    def resume(workspace: Path = ws_opt, tag: str | None = tag_opt) -> None:
        """Resume a paused loop."""
        ledger_dir, name, _ = _where(workspace, tag)
        _run(_command(ledger_dir, name, "resume"))
