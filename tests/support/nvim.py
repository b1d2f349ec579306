"""Headless Neovim for the editor tests: one run of a Lua client, and the summary it wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def headless(
    nvim: str, args: list[str], ws: Path, env: dict[str, str], out: Path, timeout: float
) -> tuple[subprocess.CompletedProcess, dict]:
    """`nvim --headless --clean *args` in `ws`; the process, and the summary.json its Lua client wrote to
    `out` ({} when it wrote none)."""
    proc = subprocess.run(
        [nvim, "--headless", "--clean", *args],
        cwd=ws,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    summary_file = out / "summary.json"
    return proc, json.loads(summary_file.read_text()) if summary_file.exists() else {}
