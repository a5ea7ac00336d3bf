"""What `benchbridge run` shows while frameworks run: one progress line per framework on a terminal, plain
log lines otherwise (a CI log, a pipe).

Bridges report progress as messages starting with `[<framework>]`; the runner's own are `[<framework>]
starting` and `[<framework>] <status> in <seconds>s, <n> records`. On a terminal each framework gets a
rich progress row (spinner, its latest message, elapsed time) that stops when the framework ends; the
messages are also logged above the rows, so nothing is lost when the rows are redrawn.
"""

from __future__ import annotations

import re
import threading
from types import TracebackType

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

_UNIT = re.compile(r"^\[(?P<unit>[A-Za-z0-9_.-]+)\] (?P<text>.*)$", re.DOTALL)
_ENDED = re.compile(r"^(ok|failed) in [0-9.]+s, \d+ records$")


class RunProgress:
    """A progress callback (`__call__(message)`) and, as a context manager, the live rows on a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.lock = threading.Lock()  # messages arrive from every unit's thread

    def __enter__(self) -> RunProgress:
        if self.live:
            self.progress = Progress(
                SpinnerColumn(finished_text="-"),
                TextColumn("{task.description}", markup=False),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, message: str) -> None:
        with self.lock:
            # Messages hold "[framework]" and paths, not markup.
            self.console.log(message, markup=False, _stack_offset=2)  # the location shown: who reported it
            match = _UNIT.match(message)
            if self.progress is None or match is None:
                return
            unit, text = match["unit"], match["text"]
            if unit not in self.tasks:
                self.tasks[unit] = self.progress.add_task(f"{unit}: {text}", total=1)
            task = self.tasks[unit]
            self.progress.update(task, description=f"{unit}: {text.splitlines()[0][:100]}")
            if _ENDED.match(text):
                self.progress.update(task, completed=1)
                self.progress.stop_task(task)
