"""Finding a test's processes by a marker in their command line (/proc), to check that none outlived
what should have ended them."""

from __future__ import annotations

from pathlib import Path


def processes_with(marker: str) -> list[int]:
    """The pids whose command line holds `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found
