"""The `nightlab` command line (typer + rich): init, run, status, results, plot, monitor.

Thin: parses flags, builds the engine from the workspace settings, renders its events.
Must not import: pygls, lsprotocol.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Nightlab: autoresearch's overnight loop.")
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Nightlab: autoresearch's overnight loop, headless."""


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@app.command()
def init(
    directory: Path = typer.Argument(Path("."), help="Folder for the new workspace (created if missing)."),
    profile: str = typer.Option("auto", help="auto | cpu | gpu: the knobs and budget the template starts from."),
    force: bool = typer.Option(False, help="Overwrite template files that already exist."),
    prepare_data: bool = typer.Option(False, "--prepare", help="Also build the data cache now."),
) -> None:
    """Make a workspace from the default experiment (git init where there is no repository)."""
    from nightlab.trainer.workspace import InitError, init_workspace

    try:
        for line in init_workspace(directory, profile=profile, force=force):
            console.print(line)
    except InitError as exc:
        fail(str(exc))
    if prepare_data:
        import subprocess
        import sys

        subprocess.run([sys.executable, "prepare.py"], cwd=directory, check=False)
    console.print(f"next: cd {directory} && nightlab run   (or: python train.py for one run)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
