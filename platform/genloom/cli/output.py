"""Shared CLI rendering: data on stdout, progress and errors on stderr."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
WHERE_HELP = "Metadata filter (repeatable, all must hold): key=value, key!=value, 'key in a,b', key>=x (> < <=; numbers or ISO dates), 'key exists'."
WHERE_JSON_HELP = 'Metadata filter as JSON: {"year": {"$gte": 2020}, "$or": [{"lang": "en"}, {"lang": "fr"}]} ($and $or $not $in $nin $ne $gt $gte $lt $lte $exists).'


def _default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (uuid.UUID, Path)):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return f"<{len(value)} bytes>"
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_default, ensure_ascii=False)


def print_json(obj: Any) -> None:
    """Plain JSON on stdout (no Rich wrapping or colour, so pipes and jq get it intact)."""
    sys.stdout.write(json.dumps(obj, default=_default, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    """A human note on stderr, so it never mixes with data on stdout."""
    err_console.print(message)
