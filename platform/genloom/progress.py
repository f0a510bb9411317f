"""How library jobs report progress: they call a function; whoever called them draws it.

The library never draws and never imports the CLI package (an import contract in
.importlinter checks this). A job takes `progress: ProgressFn | None` and calls it as
it goes; the CLI passes its `RichProgress` (cli/progress.py), tests and benchmarks
pass nothing. Every job reports through this one shape, ingest included: it reports
bytes done of bytes total (None while it discovers files), its counts in the status.
"""

from __future__ import annotations

from collections.abc import Callable

# (task, done, total or None while unknown, short status such as "loss 0.31")
ProgressFn = Callable[[str, int, "int | None", str], None]

# One human line about what a job decided (e.g. "training a feature network first").
NoteFn = Callable[[str], None]


def report(progress: ProgressFn | None, task: str, done: int, total: int | None = None, status: str = "") -> None:
    """Call `progress` if there is one: jobs write `report(progress, ...)` instead of an `if`."""
    if progress is not None:
        progress(task, done, total, status)


def note(notes: NoteFn | None, message: str) -> None:
    if notes is not None:
        notes(message)
