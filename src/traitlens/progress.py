"""Progress of a run: its jobs, and the steps or items inside the job that is running.

On a terminal, a live bar per job shows steps (or items) done, speed and time left. Rich draws
nothing when its output is not a terminal, so a run under `nohup`, in CI or piped to a log
would be silent for an hour; there each finished job prints a line, and a heartbeat thread
prints the running job's latest status whenever nothing was printed for HEARTBEAT_S seconds.
A thread rather than a check after each step: one bfloat16-emulated step can take minutes.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

# Off a terminal, the longest silence while a job runs (a line at least every 30 s is promised).
HEARTBEAT_S = 20.0


class JobProgress:
    def __init__(self, console: Console, total: int, description: str = "all jobs",
                 heartbeat_s: float = HEARTBEAT_S):
        self.console, self.total, self.finished = console, total, 0
        self.live = console.is_terminal
        self.started = self.last_line = time.perf_counter()
        self.status = ""  # the running job's latest status, for the heartbeat
        columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        # Only a live bar: per-step tasks would otherwise flood a log.
        self.bar = Progress(*columns, console=console, disable=not self.live)
        self.overall = self.bar.add_task(description, total=total, info="")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._heartbeat = None if self.live else threading.Thread(
            target=self._beat, args=(heartbeat_s,), name="traitlens-heartbeat", daemon=True)

    def __enter__(self) -> JobProgress:
        self.bar.__enter__()
        if self._heartbeat is not None:
            self._heartbeat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        self.bar.__exit__(*exc)

    def _beat(self, every: float) -> None:
        while not self._stop.wait(min(every, 5.0)):
            self.beat(time.perf_counter(), every)

    def beat(self, now: float, every: float = HEARTBEAT_S) -> bool:
        """Print the running job's status if nothing was printed for `every` seconds before
        `now`; whether it printed."""
        if now - self.last_line < every or not self.status:
            return False
        self.line(f"  {self.status} ({now - self.started:.0f} s elapsed)")
        return True

    def line(self, text: str) -> None:
        """Print one line of a log (off a terminal), noting when, for the heartbeat."""
        with self._lock:
            self.console.print(text, highlight=False)
            self.last_line = time.perf_counter()

    def describe(self, description: str) -> None:
        self.bar.update(self.overall, description=description)
        self.status = description

    def set_total(self, total: int) -> None:
        self.total = total
        self.bar.update(self.overall, total=total)

    def done(self, label: str, seconds: float, error: str | None = None, count: int = 1) -> None:
        self.finished += count
        self.bar.advance(self.overall, count)
        self.status = ""
        if not self.live:
            outcome = f"[red]failed[/]: {error}" if error else f"done in {seconds:.0f} s"
            self.line(f"[{self.finished}/{self.total}] {label}: {outcome} "
                      f"({time.perf_counter() - self.started:.0f} s elapsed)")


class StepMeter:
    """Steps (or items) inside one job: a bar of its own on a terminal, the heartbeat's status
    line elsewhere (`label: 12/24 steps, loss 0.53, 410 tok/s, 35 s left`). Does nothing
    without a JobProgress (a Ray worker, a direct API call)."""

    def __init__(self, progress: JobProgress | None, label: str, total: int, completed: int = 0,
                 unit: str = "items"):
        self.progress, self.label, self.total, self.unit = progress, label, total, unit
        self.done = self.start_done = completed
        self.started = time.perf_counter()
        self.task = None
        if progress is not None:
            self.task = progress.bar.add_task(label, total=total, completed=completed, info="")
            self._status("")

    def advance(self, count: int = 1, info: str = "") -> None:
        self.done += count
        if self.progress is None:
            return
        rate = (self.done - self.start_done) / max(time.perf_counter() - self.started, 1e-9)
        per = f"{rate:.1f} {self.unit}/s" if self.unit != "steps" else ""
        self.progress.bar.update(self.task, completed=self.done, info=", ".join(p for p in (info, per) if p))
        self._status(", ".join(p for p in (info, per, f"{(self.total - self.done) / max(rate, 1e-9):.0f} s left") if p))

    def _status(self, info: str) -> None:
        head = f"{self.label}: {self.done}/{self.total} {self.unit}"
        self.progress.status = f"{head}, {info}" if info else head

    def close(self) -> None:
        if self.task is not None:
            self.progress.bar.remove_task(self.task)
            self.task = None


@contextmanager
def working(console: Console, what: str):
    """A step that can take minutes (analyses load models, bootstrap, profile datasets): a live
    bar on a terminal; in a log, heartbeat lines and one when it is done."""
    started = time.perf_counter()
    with JobProgress(console, 1, what) as progress:
        progress.describe(what)
        yield
        progress.done(what, time.perf_counter() - started)
