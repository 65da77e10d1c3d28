"""The dependency files agree: constraints/floors.txt pins every runtime dependency at pyproject's floor.

constraints/lock.txt pins every package the install commands bring in, each within pyproject's range.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def runtime_requirements() -> dict[str, Requirement]:
    requirements = [Requirement(line) for line in PROJECT["dependencies"]]
    return {canonicalize_name(r.name): r for r in requirements}


def pins(name: str) -> dict[str, Version]:
    """A constraints file's `name==version` lines, by canonical name."""
    pinned = {}
    for line in (REPO / "constraints" / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"constraints/{name}: {line!r} is not an exact pin"
            pinned[canonicalize_name(requirement.name)] = Version(spec.version)
    return pinned


def floor(requirement: Requirement) -> Version:
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert len(floors) == 1, f"pyproject.toml: {requirement} needs exactly one >= floor"
    return floors[0]


def test_every_runtime_dependency_is_pinned_at_its_floor():
    requirements, floors = runtime_requirements(), pins("floors.txt")
    assert set(floors) == set(requirements), "constraints/floors.txt and pyproject name different packages"
    disagree = {name: (str(floor(r)), str(floors[name]))
                for name, r in requirements.items() if floor(r) != floors[name]}
    assert disagree == {}, f"pyproject's >= and constraints/floors.txt's == differ (pyproject, floors): {disagree}"


def test_the_floors_are_inside_the_upper_bounds():
    requirements, floors = runtime_requirements(), pins("floors.txt")
    outside = [f"{name}=={floors[name]}" for name, r in requirements.items() if floors[name] not in r.specifier]
    assert outside == []


def test_the_lock_pins_every_dependency_inside_pyproject_s_ranges():
    locked = pins("lock.txt")
    declared = [Requirement(line) for line in PROJECT["dependencies"]]
    for extra in ("test", "lint"):
        declared += [Requirement(line) for line in PROJECT["optional-dependencies"][extra]]
    missing = [r.name for r in declared if canonicalize_name(r.name) not in locked]
    assert missing == [], f"constraints/lock.txt lacks {missing}: run constraints/refresh.sh"
    outside = [f"{r} (locked {locked[canonicalize_name(r.name)]})" for r in declared
               if locked[canonicalize_name(r.name)] not in r.specifier]
    assert outside == [], f"constraints/lock.txt is outside pyproject's ranges: {outside}; run constraints/refresh.sh"
    assert "aiosd" not in locked, "the lock pins aiosd itself"
