"""The `nightlab` command line (typer + rich): init, run, status, results, plot, monitor.

Thin: parses flags, builds the engine from the workspace settings, renders its events.
Must not import: pygls, lsprotocol.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from nightlab.protocol import events as ev
from nightlab.server.agents.base import agent_names
from nightlab.server.cli import control, swarm
from nightlab.server.core.types import LoopState

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Nightlab: autoresearch's overnight loop.")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"nightlab {version('nightlab')}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print Nightlab's version and exit."
    ),
) -> None:
    """Nightlab: autoresearch's overnight loop, headless."""


def fail(message: str, code: int = 1) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}")  # "[budget] seconds ..." is text, not markup
    raise typer.Exit(code)


@app.command()
def init(
    directory: Path = typer.Argument(Path("."), help="Folder for the new workspace (created if missing)."),
    profile: str = typer.Option("auto", help="auto | cpu | gpu: the knobs and budget the template starts from."),
    force: bool = typer.Option(False, help="Overwrite template files that already exist."),
    prepare_data: bool = typer.Option(False, "--prepare", help="Also build the data cache now."),
    budget_tokens: int | None = typer.Option(
        None,
        help="Train every experiment on this many tokens instead of a wall-clock budget (the CPU "
        "profile's default: 200000; the GPU profile's is autoresearch's 300 s).",
    ),
) -> None:
    """Make a workspace from the default experiment (git init where there is no repository)."""
    from nightlab.trainer.workspace import InitError, init_workspace

    try:
        for line in init_workspace(directory, profile=profile, force=force, budget_tokens=budget_tokens):
            console.print(line)
    except InitError as exc:
        fail(str(exc))
    if prepare_data:
        import subprocess
        import sys

        subprocess.run([sys.executable, "prepare.py"], cwd=directory, check=False)
    console.print(f"next: cd {directory} && nightlab run   (or: python train.py for one run)")
    if 'mode = "time"' in (directory / "nightlab.toml").read_text(encoding="utf-8"):  # the GPU profile
        console.print(
            "for less noise between runs, a fixed token budget instead of wall clock: "
            'nightlab init --budget-tokens N (or [budget] mode = "tokens")',
            markup=False,
        )


# `nightlab run`'s flag for each settings.OVERRIDES name it sets, where the two differ.
FLAGS = {"budget_seconds": "--budget", "continue_lineage": "--continue"}


def _load(workspace: Path, overrides: dict | None = None):
    from nightlab.server.core.settings import SettingsError, load_settings

    try:
        return load_settings(workspace, overrides)
    except SettingsError as exc:
        message = str(exc)
        if exc.option:  # "option budget_seconds: ..." names the flag the user typed instead
            flag = FLAGS.get(exc.option, "--" + exc.option.replace("_", "-"))
            message = message.replace(f"option {exc.option}:", f"{flag}:", 1)
        fail(message)


@app.command()
def run(
    workspace: Path = typer.Option(Path("."), "--workspace", "-w", help="The workspace (default: here)."),
    max_experiments: int | None = typer.Option(None, help="Stop after N experiments (this run)."),
    budget_seconds: float | None = typer.Option(
        None, "--budget", help="Training seconds per experiment (time budget)."
    ),
    budget_tokens: int | None = typer.Option(None, help="Training tokens per experiment (token budget)."),
    agent: str | None = typer.Option(
        None, help=f"The agent: {', '.join(agent_names())} (default offline; claude is anthropic's)."
    ),
    model: str | None = typer.Option(None, help="The Claude model, when the agent is anthropic."),
    tag: str | None = typer.Option(None, help="The loop's tag: branch nightlab/<tag>."),
    branch_prefix: str | None = typer.Option(
        None, help="The branch's prefix: autoresearch names it autoresearch/<tag> (default nightlab)."
    ),
    policy: str | None = typer.Option(None, help="noise (default) | strict (autoresearch's rule)."),
    slots: int | None = typer.Option(None, help="Experiments at once (one per GPU; CPU slots share the cores)."),
    executor: str | None = typer.Option(None, help="local (this machine) | ray (each run a task on a Ray cluster)."),
    ray_address: str | None = typer.Option(None, help="The Ray cluster's head, host:port (default auto)."),
    max_cost_usd: float | None = typer.Option(None, help="Stop once the agent has cost this much (USD)."),
    continue_lineage: bool | None = typer.Option(
        None, "--continue", help="Your HEAD moved on since the tag started: go on with its old lineage."
    ),
    plain: bool = typer.Option(False, help="Print a line per event instead of the live view."),
    detach: bool = typer.Option(False, help="Run in the background (output to .nightlab/<tag>/loop.log)."),
) -> None:
    """Run the loop: propose, train, keep or discard, record, repeat. Ctrl-C stops it cleanly."""
    # every flag but --workspace and --plain is an override of settings.OVERRIDES, under its name
    if budget_seconds is not None and budget_tokens is not None:
        fail("--budget (seconds) and --budget-tokens are two different budgets: give one of them")
    settings = _load(
        workspace,
        {
            "max_experiments": max_experiments,
            "budget_seconds": budget_seconds,
            "budget_tokens": budget_tokens,
            "agent": agent,
            "model": model,
            "tag": tag,
            "policy": policy,
            "slots": slots,
            "max_cost_usd": max_cost_usd,
            "continue_lineage": continue_lineage,
            "branch_prefix": branch_prefix,
            "executor": executor,
            "ray_address": ray_address,
        },
    )
    if settings.lineages:  # [[lineage]]: every lineage's loop in this process (cli/swarm.py)
        raise typer.Exit(0 if swarm.run(settings, detach) else 1)
    engine = _engine(settings, policy_flag=policy is not None)
    if detach:  # the same command in its own session; this one returns once it answers
        import sys

        return control.detach(settings, sys.argv[1:])
    console.print(_header(settings))
    _drive(settings, engine, live=console.is_terminal and not plain)
    _report(settings, engine)
    if engine.state == "errored":
        raise typer.Exit(1)


def _engine(settings, policy_flag: bool = False):
    """The loop's engine for `settings`; a setting it cannot work with fails the command."""
    from nightlab.server.core.policy import PolicyError, policy_names
    from nightlab.server.loop.engine import Engine

    try:
        return Engine(settings)
    except PolicyError as exc:  # say where the bad name or option came from: the flag, or the file
        if policy_flag and settings.policy.name not in policy_names():
            fail(f"--policy: {exc}")
        fail(f"{settings.source.name if settings.source else 'settings'}: [policy] {exc}")
    except Exception as exc:  # unknown agent, not a git repository ...
        fail(str(exc))


def _drive(settings, engine, live: bool) -> None:
    """Runs the loop to its end, shown in the live view (or a line per event when not `live`);
    SIGINT and SIGTERM stop it cleanly (a second one at once), a busy or broken record fails the command."""
    import asyncio

    from nightlab.server.cli.stopping import Stopper
    from nightlab.server.cli.view import LiveView
    from nightlab.server.record.lock import EngineBusy
    from nightlab.server.record.store import StoreError

    b = settings.budget
    view = LiveView(
        settings.metric.name,
        b.seconds if b.mode == "time" else None,
        engine.ledger.experiments(),
        direction=settings.metric.direction,
        baseline_repeats=engine.policy_repeats,
    )
    engine.subscribe(view.on_event)
    if not live:
        engine.subscribe(_print_event)

    stopper = Stopper(engine.stop, err_console.print, lambda: console.show_cursor(True))

    async def main() -> None:
        stopper.install(asyncio.get_running_loop())
        async with control.serving(engine), control.watching_cluster(settings, [engine]):  # attach, stop, the editor
            await engine.run()

    try:
        if live:
            from rich.live import Live

            try:
                with Live(view, console=console, refresh_per_second=4):
                    asyncio.run(main())
            finally:  # the view cuts a long reason at the terminal's width and is gone now: say it in full
                if view.ending():
                    console.print(view.ending(), markup=False, highlight=False)
        else:
            asyncio.run(main())
    except (EngineBusy, StoreError) as exc:
        fail(str(exc))
    stopper.rearm()  # the loop's handlers went with it: a second Ctrl-C during the report quits at once


def _header(settings) -> str:
    """The first line of `nightlab run`: workspace, tag, agent and budget."""
    b = settings.budget
    budget = f"budget {b.seconds:g}s" if b.mode == "time" else f"budget {b.tokens:,} tokens"
    return f"[bold]nightlab[/] {settings.workspace}  tag [bold]{settings.tag}[/]  agent {settings.agent.name}  {budget}"


def _report(settings, engine) -> None:
    """What `nightlab run` prints once the loop ended: the table, the best, where the files are."""
    from nightlab.server.cli.view import experiments_table

    experiments = engine.ledger.experiments()
    console.print(experiments_table(experiments, settings.metric.name, title="experiments"))
    best = engine.ledger.best(settings.metric.direction)
    if best is not None and best.metrics:
        from nightlab.server.run.summary import format_summary

        console.print(f"best: #{best.number} {best.description}")
        console.print(format_summary(best.metrics), highlight=False)
    png = _plot(settings, experiments)
    console.print(f"ledger: {engine.ledger.jsonl}\nresults: {engine.ledger.tsv}" + (f"\nplot: {png}" if png else ""))


def _print_event(event: dict) -> None:
    kind = event["type"]
    if kind == ev.EXPERIMENT_STARTED:
        e = event["experiment"]
        console.print(f"#{e['number']} started: {e['description']}", markup=False)
    elif kind == ev.EXPERIMENT_FINISHED:
        e = event["experiment"]
        metric = f"{e['metric']:.6f}" if e.get("metric") is not None else "-"
        console.print(
            f"#{e['number']} {e['status']}: {metric}  {e['description']}  ({e['decision_reason']})", markup=False
        )
    elif kind == ev.MESSAGE:
        console.print(f"[{event['level']}] {event['text']}", markup=False)
    elif kind == ev.STATE and event["state"] in (LoopState.ERRORED, LoopState.STOPPED):
        console.print(f"loop {event['state']}: {event.get('reason', '')}", markup=False)


def _plot(settings, experiments) -> Path | None:
    if not experiments:  # a loop that never started one: no empty chart left behind
        return None
    try:
        from nightlab.server.cli.plot import plot_progress
    except ImportError:
        return None
    out = Path(settings.workspace) / ".nightlab" / settings.tag / "progress.png"
    try:
        return plot_progress(experiments, out, metric_name=settings.metric.name, direction=settings.metric.direction)
    except Exception as exc:  # a plot is never worth failing the night's run for
        err_console.print(f"[yellow]could not write progress.png: {exc}[/]")
        return None


PATH_HELP = "A workspace (default: here), or an autoresearch results.tsv (or a folder holding one)."


def _source(path: Path | None, workspace: Path, tag: str | None):
    """The experiments `nightlab status/results/plot` show: the workspace's ledger or a results.tsv."""
    from nightlab.server.cli.sources import SourceError, open_source
    from nightlab.server.core.settings import load_settings

    try:
        return open_source(path or workspace, tag, load_settings)
    except SourceError as exc:
        fail(str(exc))


@app.command()
def status(
    path: Path | None = typer.Argument(None, help=PATH_HELP, show_default=False),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w"),
    tag: str | None = typer.Option(None),
) -> None:
    """Where the loop stands: experiments, kept, best, and whether a loop is running now."""
    from nightlab.server.cli.sources import status_lines
    from nightlab.server.record.lock import loop_owner

    src = _source(path, workspace, tag)
    owner = loop_owner(src.ledger_dir) if src.ledger_dir is not None else None
    for line in status_lines(src, owner):
        console.print(line, markup=False)
    for line in control.status_lines(src.ledger_dir, src.tag) if src.ledger_dir is not None else []:
        console.print(line, markup=False)  # what the running loop says (or that it died)
    for line in swarm.status_lines(workspace) if path is None and tag is None else []:  # the [[lineage]] loops
        console.print(line, markup=False)


@app.command()
def results(
    path: Path | None = typer.Argument(None, help=PATH_HELP, show_default=False),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w"),
    tag: str | None = typer.Option(None),
    status_filter: str | None = typer.Option(None, "--status", help="keep | discard | crash | interrupted"),
) -> None:
    """The experiments table."""
    from nightlab.server.cli.sources import STATUSES
    from nightlab.server.cli.view import experiments_table

    wanted = None if status_filter is None else status_filter.strip().lower()
    if wanted is not None and wanted not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}, not {status_filter!r}")
    src = _source(path, workspace, tag)
    experiments = [e for e in src.experiments if wanted in (None, e.status)]
    console.print(experiments_table(experiments, src.metric_name, title=f"experiments ({src.label})"))


@app.command()
def plot(
    path: Path | None = typer.Argument(None, help=PATH_HELP, show_default=False),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w"),
    tag: str | None = typer.Option(None),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Default: .nightlab/<tag>/progress.png, or progress.png beside the results.tsv"
    ),
) -> None:
    """Write progress.png: every experiment a dot, the kept frontier a step line."""
    from nightlab.server.cli.plot import plot_progress

    src = _source(path, workspace, tag)
    if not src.experiments:  # nothing is written (no .nightlab/ in a checkout that never ran the loop)
        fail(f"nothing to plot: no experiments in {src.label} yet")
    target = out or (src.folder or Path(".")) / "progress.png"
    png = plot_progress(
        src.experiments, target, metric_name=src.metric_name, direction=src.direction, title=src.heading
    )
    console.print(str(png), markup=False)


@app.command()
def monitor(
    directory: Path = typer.Argument(Path("."), help="An autoresearch checkout (results.tsv, run.log)."),
    timeout: float | None = typer.Option(None, help="Stop after this many seconds."),
    plain: bool = typer.Option(False, help="A line per update instead of the live view."),
    rows: int | None = typer.Option(None, min=1, help="Rows in the live view (default: as many as fit)."),
    all_rows: bool = typer.Option(
        False, "--all", help="Print every row above the live view (scroll back for them), the view below."
    ),
) -> None:
    """Watch an autoresearch run that another agent drives, live, from its results.tsv and run.log."""
    from nightlab.server.cli.monitor import Monitor, counts_line, follow_live, follow_plain

    mon = Monitor(directory)
    try:
        if console.is_terminal and not plain:
            follow_live(mon, console, timeout=timeout, rows=rows, every_row=all_rows)
        else:
            follow_plain(mon, console, timeout=timeout)
    except KeyboardInterrupt:
        pass
    snap = mon.snapshot()
    console.print(counts_line(snap), highlight=False)
    if snap.best is not None:
        console.print(f"best val_bpb: {snap.best:.6f}")


@app.command()
def lsp() -> None:
    """The language server over stdio, for editors (VS Code, Neovim, ...)."""
    from nightlab.server.lsp.app import main as serve

    serve()


control.register(app, _print_event)  # attach, stop, pause, resume


def main() -> None:
    app()


if __name__ == "__main__":
    main()
