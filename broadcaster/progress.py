"""Progress of long fan-outs (a mailing list), for whoever is watching.

The CLI sets `reporter` to draw a bar on a terminal; the Python API and the hooks leave it
unset, and nothing is drawn. It is a context variable so that two callers in one process
(tests, a server) do not draw on each other's bars.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TextIO

from broadcaster import defaults

#: Called as (channel, done, total) as recipients are finished.
Progress = Callable[[str, int, int], None]

reporter: ContextVar[Progress | None] = ContextVar("broadcaster_progress", default=None)


def terminal_bar(minimum: int = defaults.PROGRESS_MINIMUM, stream: TextIO | None = None) -> Progress:
    """A progress bar per channel on stderr, for fan-outs of at least `minimum` recipients."""
    import sys
    import threading

    import typer

    stream = stream or sys.stderr

    bars: dict[str, tuple[object, int]] = {}
    lock = threading.Lock()

    def show(channel: str, done: int, total: int) -> None:
        if total < minimum:
            return
        with lock:
            if channel not in bars:
                bar = typer.progressbar(length=total, label=channel, file=stream, show_pos=True)
                bar.__enter__()
                bars[channel] = (bar, 0)
            bar, shown = bars[channel]
            bar.update(done - shown)  # type: ignore[attr-defined]
            bars[channel] = (bar, done)
            if done >= total:
                bar.__exit__(None, None, None)  # type: ignore[attr-defined]
                del bars[channel]

    return show
