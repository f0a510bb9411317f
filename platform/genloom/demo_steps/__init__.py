"""`genloom demo`: a one-command tour, one step per stage of the data flow.

Each step is a module here with `TITLE` and `run(ctx) -> dict`; the steps compute and
return plain data, and the CLI (cli/demo.py) draws it. Steps must be safe to re-run (idempotent).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from genloom.progress import ProgressFn

# In data-flow order: store → ingest/search → ask → datasets/train → sample → evaluate → analytics.
STEP_MODULES = [
    "store",
    "retrieval",
    "generation",
    "training",
    "diffusion_transformer",
    "evaluation",
    "analytics",
]


@dataclasses.dataclass
class DemoContext:
    out_dir: Path  # where the demo writes files a person looks at (sample grids, report)
    quick: bool = False  # smaller budgets (tests)
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    progress: ProgressFn | None = None  # long steps (training) report here; the CLI draws it
