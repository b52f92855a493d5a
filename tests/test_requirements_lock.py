"""requirements.lock (scripts/lock.sh) is the resolved form of requirements.txt that scripts/setup.sh installs
without resolving: it must come from the requirements.txt beside it and pin each of its packages the same way,
and the installed .venv must hold exactly its versions."""
from __future__ import annotations

import hashlib
import importlib.metadata
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = PIN.match(line)
            assert m, f"{path.name}: not an exact pin: {line!r}"
            out[canonical(m.group(1))] = m.group(2)
    return out


def test_the_lock_is_from_this_requirements_txt():
    sha = hashlib.sha256((REPO / "requirements.txt").read_bytes()).hexdigest()
    first = (REPO / "requirements.lock").read_text().splitlines()[0]
    assert first == f"# requirements.txt sha256 {sha}", "requirements.txt changed: run scripts/lock.sh"


def test_the_lock_pins_every_requirement_the_same_way():
    wanted, locked = pins(REPO / "requirements.txt"), pins(REPO / "requirements.lock")
    assert len(locked) > len(wanted)                                   # the dependencies are there too
    assert {name: locked.get(name) for name in wanted} == wanted


def test_the_installed_packages_are_the_locked_versions():
    installed = {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    locked = pins(REPO / "requirements.lock")
    assert {name: installed.get(name) for name in locked} == locked
