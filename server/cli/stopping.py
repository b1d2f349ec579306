"""Ctrl-C and SIGTERM for `nightlab run`. The first stops the loop cleanly through the engine's `stop()`:
the run in progress is recorded as interrupted (it runs again next time) and an agent call in progress
is cancelled (nothing is recorded for it). A second one ends the process at once with 128 + the signal's
number (130 for Ctrl-C), even while the loop is busy: that loses nothing, as with kill -9: the training
dies with the loop, the lock with the process, and the next start records a "running" experiment as
interrupted and runs it again.

Must not import: pygls, lsprotocol.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopper:
    def __init__(self, stop: Callable[[], None], say: Callable[[str], None], restore: Callable[[], None]):
        self._stop, self._say, self._restore = stop, say, restore  # restore: the terminal (cursor) as it was
        self.requested = False

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.stop, sig)

    def stop(self, sig: int) -> None:
        if self.requested:
            self.now(sig)
        self.requested = True
        self._say(
            "[yellow]stopping: ending the current run (it is recorded and runs again next time); "
            "Ctrl-C again quits at once[/]"
        )
        self.rearm()
        self._stop()

    def rearm(self) -> None:
        """Once a stop was asked, the next signal quits at once: from here on, and after the loop (whose
        handlers go with it) while the report prints."""
        if self.requested:
            for sig in SIGNALS:  # a plain handler: it runs even while the event loop is blocked
                signal.signal(sig, self._at_once)

    def _at_once(self, sig: int, frame: Any = None) -> None:
        self.now(sig)

    def now(self, sig: int) -> None:
        self._say("[red]stopped at once[/]: the next nightlab run records the run in progress as interrupted")
        try:
            self._restore()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(128 + sig)
