"""Dependencies are bounded, and constraints.txt (what CI installs) satisfies pyproject.toml."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO_ROOT


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_dependency_has_an_upper_bound():
    unbounded = [str(r) for r in _requirements() if not any(s.operator in ("<", "<=", "~=", "==") for s in r.specifier)]
    assert unbounded == []


def test_constraints_pin_every_dependency_within_its_range():
    pins = _pins()
    assert "torch" not in pins and "genloom" not in pins  # torch: the CPU wheel first; genloom: this checkout
    outside = {}
    for r in _requirements():
        name = canonicalize_name(r.name)
        if name == "torch":
            continue
        if name not in pins or not r.specifier.contains(pins[name], prereleases=True):
            outside[r.name] = pins.get(name)
    assert outside == {}
