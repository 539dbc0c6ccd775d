"""Progress of counted work for the CLI: a rich bar on a terminal, a clean line per step otherwise.

:class:`StepProgress` is the display; :class:`EnrichProgress` drives one for a bounded enrich run
from the live metrics (offsets done of planned, :mod:`newsflow.telemetry.instruments`), so the bar
and ``/metrics`` show the same numbers.

Piped (a log file, CI), each step is one line, ``predicting topics: 512/2,000 articles (25.6%)``,
at most one every ``min_interval_s`` seconds plus the last one; notes print as they come.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from newsflow.telemetry import instruments


class StepProgress:
    """Show ``completed`` of ``total`` (``None``: not known yet) for one job; a context manager."""

    def __init__(
        self,
        console: Console,
        description: str,
        total: float | None,
        unit: str = "items",
        min_interval_s: float = 0.0,
    ) -> None:
        self.console = console
        self.description = description
        self.total = total
        self.unit = unit
        self.min_interval_s = min_interval_s
        self.completed = 0.0
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._printed: tuple[float, float | None] | None = None
        self._last_line = float("-inf")  # the first step always prints

    def __enter__(self) -> StepProgress:
        if self.console.is_terminal:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def update(self, completed: float, total: float | None = None) -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=completed, total=self.total)
            return
        now = time.monotonic()
        finished = self.total is not None and completed >= self.total
        if (completed, self.total) == self._printed or (
            not finished and now - self._last_line < self.min_interval_s
        ):
            return
        self._printed, self._last_line = (completed, self.total), now
        self.console.print(self.line(), highlight=False, soft_wrap=True)

    def advance(self, steps: float = 1) -> None:
        self.update(self.completed + steps)

    def note(self, message: str) -> None:
        """A message (printed above the bar on a terminal)."""
        self.console.print(message, highlight=False, soft_wrap=True)

    def line(self) -> str:
        done = f"{self.completed:,.0f}"
        if self.total is None:
            return f"{self.description}: {done} {self.unit}"
        share = f" ({self.completed / self.total:.1%})" if self.total else ""
        return f"{self.description}: {done}/{self.total:,.0f} {self.unit}{share}"

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class EnrichProgress:
    """While a bounded enrich run lasts: raw offsets finished (enriched or dead-lettered) of planned.

    The plan comes from ``newsflow_enrich_planned_offsets`` (set once the run planned its
    partitions); progress from the pipeline's counters in this process, so with workers in other
    processes (see :mod:`newsflow.telemetry.runners`) it only shows the plan until the run ends.
    """

    def __init__(self, console: Console, in_process: bool = True, poll_s: float = 0.5) -> None:
        self.in_process = in_process
        self.poll_s = poll_s
        self.display = StepProgress(console, "enriching", None, "offsets", min_interval_s=5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="newsflow-progress", daemon=True)
        self._start = 0.0

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._refresh()

    def _refresh(self) -> None:
        planned = instruments.value("newsflow_enrich_planned_offsets")
        if planned <= 0:
            return  # still planning (or nothing to do)
        done = instruments.processed() - self._start if self.in_process else 0.0
        self.display.update(min(done, planned), planned)

    def __enter__(self) -> EnrichProgress:
        instruments.enrich_planned(0)
        self._start = instruments.processed()
        self.display.__enter__()
        if not self.in_process:
            self.display.note("(the runner's workers run in other processes: no progress until the run ends)")
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self._refresh()
        self.display.__exit__(exc_type, exc, tb)
        instruments.enrich_planned(0)
