"""The `nightlab` command: typer commands, the rich live view, plots, the autoresearch monitor."""
