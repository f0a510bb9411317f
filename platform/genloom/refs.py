"""`NAME[@VERSION]` references, as users type them for datasets and models."""

from __future__ import annotations

from genloom.errors import BadInput


def parse_ref(text: str) -> tuple[str, int | None]:
    """'digits' → ('digits', None); 'digits@3' → ('digits', 3)."""
    name, sep, version = text.strip().partition("@")
    if not name:
        raise BadInput(f"empty name in reference {text!r}: expected NAME or NAME@VERSION")
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise BadInput(f"bad version in {text!r}: expected NAME@N with N a positive whole number")
    return name, int(version)


def format_ref(name: str, version: int) -> str:
    return f"{name}@{version}"
