"""KEY=VALUE options (`--meta`, `--where` in search, `--set`): the one parser they share."""

from __future__ import annotations

from collections.abc import Iterable

from genloom.errors import BadInput


def parse_pairs(values: Iterable[str] | None, option: str) -> dict[str, str]:
    """['k=v', …] → {k: v} (keys stripped, values as given); a malformed pair is a one-line error naming the option."""
    pairs: dict[str, str] = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{option} expects key=value (got {value!r})")
        pairs[key.strip()] = val
    return pairs
