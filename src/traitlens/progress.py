"""Progress of a run's jobs: a live bar on a terminal, one line per finished job elsewhere.

Rich draws nothing until the end when its output is not a terminal, so a run under `nohup`, in
CI or piped to a log file would be silent for an hour; there each finished job prints a line.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class JobProgress:
    def __init__(self, console: Console, total: int, description: str = "all jobs"):
        self.console, self.total, self.finished = console, total, 0
        self.live = console.is_terminal
        self.started = time.perf_counter()
        columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   TextColumn("{task.fields[loss]} {task.fields[speed]}"))
        # Only a live bar: per-step training tasks would otherwise flood a log.
        self.bar = Progress(*columns, console=console, disable=not self.live)
        self.overall = self.bar.add_task(description, total=total, loss="", speed="")

    def __enter__(self) -> JobProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def describe(self, description: str) -> None:
        self.bar.update(self.overall, description=description)

    def set_total(self, total: int) -> None:
        self.total = total
        self.bar.update(self.overall, total=total)

    def done(self, label: str, seconds: float, error: str | None = None, count: int = 1) -> None:
        self.finished += count
        self.bar.advance(self.overall, count)
        if not self.live:
            outcome = f"[red]failed[/]: {error}" if error else f"done in {seconds:.0f} s"
            self.console.print(f"[{self.finished}/{self.total}] {label}: {outcome} "
                               f"({time.perf_counter() - self.started:.0f} s elapsed)")
