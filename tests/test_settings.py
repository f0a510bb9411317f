"""Every setting genloom reads is in one list (genloom.config.SETTINGS), and the README shows that list."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def _readme_table() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("| variable | meaning | default |")
    end = readme.find("\n\n", start)
    return readme[start : end if end != -1 else None].strip()


def test_the_readme_configuration_table_is_the_settings_list():
    from genloom.config import readme_table

    assert _readme_table() == readme_table(), (
        "README.md's configuration table differs from genloom.config.SETTINGS: paste genloom.config.readme_table()"
    )


def test_every_genloom_variable_the_library_reads_is_listed():
    from genloom.config import SETTINGS

    listed = {s.name for s in SETTINGS}
    read = set()
    for root in ("platform/genloom", "ingest"):
        for path in (REPO_ROOT / root).rglob("*.py"):
            read |= set(re.findall(r"\b(GENLOOM_[A-Z][A-Z0-9_]*[A-Z0-9])\b", path.read_text(encoding="utf-8")))
    assert not read - listed, f"read but not in genloom.config.SETTINGS: {sorted(read - listed)}"
    # DATABASE_URL and DATABASE_READ_URL are read under their standard names, outside the GENLOOM_ scan.
    unscanned = {"DATABASE_URL", "DATABASE_READ_URL"}
    assert not (listed - unscanned) - read, f"listed but never read: {sorted((listed - unscanned) - read)}"
