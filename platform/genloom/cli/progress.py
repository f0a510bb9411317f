"""The CLI's one progress renderer: a Rich bar per task on stderr, fed by library callbacks.

Library jobs call a `genloom.progress.ProgressFn` (task, done, total, status); an
instance of `RichProgress` is one. Each task name gets its own bar the first time
it is reported. Bars are drawn only on a terminal, so piped stderr gets no
half-drawn bars and errors stay one line; a non-transient bar (training) prints
its final state once at the end when stderr is not a terminal.
"""

from __future__ import annotations

from typing import Any

from genloom.cli.output import err_console


class RichProgress:
    """`with RichProgress() as progress: job(..., progress=progress)`."""

    def __init__(self, *, enabled: bool = True, transient: bool = True, terminal_only: bool | None = None):
        only_tty = transient if terminal_only is None else terminal_only
        self.enabled = enabled and (err_console.is_terminal or not only_tty)
        self._bar: Any = None  # rich.progress.Progress, imported when a bar is drawn (CLI start-up stays lean)
        self._tasks: dict[str, Any] = {}
        self._transient = transient

    def __enter__(self) -> RichProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=self._transient,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, task: str, done: int, total: int | None = None, status: str = "") -> None:
        if self._bar is None:
            return
        if task not in self._tasks:
            self._tasks[task] = self._bar.add_task(task, total=total, completed=done, status=status)
        else:
            self._bar.update(self._tasks[task], completed=done, total=total, status=status)

    def note(self, message: str) -> None:
        """A `genloom.progress.NoteFn`: one plain line on stderr (above any bar)."""
        err_console.print(message, markup=False, highlight=False)
