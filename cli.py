#!/usr/bin/env python
"""`python cli.py …` from the repo root does exactly what `genloom …` does, installed or not."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# platform/ is a source root, never a package: put it on the path instead of importing it.
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from genloom.cli.main import run  # noqa: E402

if __name__ == "__main__":
    run()
