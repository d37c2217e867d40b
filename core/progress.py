"""rich progress bars on stderr for long work; silent when stderr is not a terminal
or logs are JSON (batch jobs read logs, not bars)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from gpuforge.core.context import get_context


def _check_signals() -> None:
    # long loops report progress: the place to stop on a Ctrl-C/SIGTERM a C callback swallowed
    run = sys.modules.get("gpuforge.core.run")
    if run is not None:
        run.check_signals()


def progress_enabled() -> bool:
    ctx = get_context()
    return sys.stderr.isatty() and ctx.log_format != "json" and ctx.verbosity >= 0


class _Bar:
    def __init__(self, progress, task_id):
        self._progress, self._task = progress, task_id

    def advance(self, n: float = 1) -> None:
        _check_signals()
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, **kwargs) -> None:
        _check_signals()
        if self._progress is not None:
            self._progress.update(self._task, **kwargs)


@contextmanager
def progress(description: str, total: float | None = None) -> Iterator[_Bar]:
    """``with progress("training", total=steps) as bar: bar.advance()``."""
    if not progress_enabled():
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as prog:
        yield _Bar(prog, prog.add_task(description, total=total))
