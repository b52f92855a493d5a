"""Every external program and system file the code uses comes from a Debian package that
scripts/setup.sh installs (the table scripts/system-packages.txt), so a fresh machine passes the tests.

The code is scanned, not trusted: programs named in shutil.which(...) calls and as the first element of
a command list, fixed system paths assigned to module-level names, and the festival voices the corpus
builder uses. Each must be provided by a package in the table (or by an Essential/required package that
every Debian machine has), and each table entry must really come from its package (`dpkg -S`).
"""
from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "scripts" / "system-packages.txt"
SCANNED = ("dld_core", "app", "tests", "scripts")
SYSTEM_PREFIXES = ("/usr/", "/etc/", "/opt/", "/var/lib/")
COMMAND_CALLS = {"run", "Popen", "call", "check_call", "check_output", "_run"}

pytestmark = pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs a Debian system (dpkg)")


def read_table() -> dict[str, str]:
    """provided item -> package"""
    provides = {}
    for line in TABLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, *items = line.split()
            assert items, f"{TABLE.name}: {package} says nothing about what the code uses from it"
            for item in items:
                provides[item] = package
    return provides


def _str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _in_dict_keys(tree, node) -> bool:
    return any(node in d.keys for d in ast.walk(tree) if isinstance(d, ast.Dict))


def _on_path_outside_venv(name: str) -> bool:
    path = shutil.which(name)
    return path is not None and not Path(path).resolve().is_relative_to(Path(sys.prefix).resolve())


def scan_uses(files) -> dict[str, set[str]]:
    """{"program": {...}, "path": {...}} found in the given Python files."""
    programs, paths = set(), set()
    for file in files:
        tree = ast.parse(Path(file).read_text(), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", None))
                if name == "which":       # which("x"), or which({...: "x"}[key]): the dict's values
                    values = [n.values if isinstance(n, ast.Dict) else [n] for n in node.args]
                    programs |= {s for vs in values for v in vs for n in ast.walk(v)
                                 if (s := _str(n)) and not _in_dict_keys(v, n)}
                elif name in COMMAND_CALLS and node.args and isinstance(node.args[0], (ast.List, ast.Tuple)):
                    first = node.args[0].elts[0] if node.args[0].elts else None
                    if _str(first):
                        programs.add(_str(first))
            elif isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) > 1 and _str(node.elts[0]) \
                    and all(_str(e) for e in node.elts[1:2]) and _str(node.elts[1]).startswith("-") \
                    and _on_path_outside_venv(_str(node.elts[0])):
                programs.add(_str(node.elts[0]))          # a command list such as ["festival", "--version"]
        for node in tree.body:                             # fixed system paths: module-level constants
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                for n in ast.walk(node.value):
                    if (s := _str(n)) and s.startswith(SYSTEM_PREFIXES) and s not in SYSTEM_PREFIXES:
                        paths.add(s)
    return {"program": programs, "path": paths}


def code_files() -> list[Path]:
    return sorted(p for top in SCANNED for p in (REPO / top).rglob("*.py"))


def festival_voices() -> set[str]:
    from dld_core.synth.engines import all_voices
    return {v.name for v in all_voices() if v.engine == "festival"}


def owner(path: str) -> str | None:
    """The Debian package that installed `path` (merged-/usr aware), or None."""
    candidates = [path, os.path.realpath(path)]
    for p in list(candidates):
        if p.startswith("/usr/bin/") or p.startswith("/usr/sbin/"):
            candidates.append(p[len("/usr"):])
    for p in candidates:
        out = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.split(":")[0].split(",")[0].strip()
    return None


def everywhere_package(package: str) -> bool:
    """Essential or required: on every Debian machine, no need to install it."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Essential} ${Priority}", package], capture_output=True, text=True)
    return out.returncode == 0 and ("yes" in out.stdout.split()[:1] or out.stdout.split()[-1:] == ["required"])


def locate(item: str) -> str | None:
    """The file behind a table entry (program, path or festival voice), or None when it is missing."""
    if item.startswith("festival-voice:"):
        hits = glob.glob(f"/usr/share/festival/voices/*/{item.split(':', 1)[1]}")
        return hits[0] if hits else None
    if item.startswith("/"):
        return item if os.path.exists(item) else None
    return shutil.which(item)


def test_scanner_finds_the_known_uses():
    """Guards the scanner itself: the uses this project is known to have must be found."""
    uses = scan_uses(code_files())
    assert {"bible", "espeak-ng", "flite", "festival"} <= uses["program"]
    assert {"/usr/lib/bible.data", "/usr/bin/chromium"} <= uses["path"]
    assert "kal_diphone" in festival_voices()


def test_scanner_catches_an_unlisted_program(tmp_path):
    """A program or a system path the table does not cover is reported."""
    src = tmp_path / "m.py"
    src.write_text('import shutil, subprocess\nDATA = "/usr/share/some-new-data"\n'
                   'subprocess.run(["some-new-tool", "-x"])\nshutil.which("other-tool")\n')
    uses = scan_uses([src])
    assert uses == {"program": {"some-new-tool", "other-tool"}, "path": {"/usr/share/some-new-data"}}
    table = read_table()
    assert not (uses["program"] | uses["path"]) & set(table)


def test_every_external_use_is_installed_by_setup():
    table = read_table()
    uses = scan_uses(code_files())
    uncovered = []
    for program in sorted(uses["program"]):
        if program in table:
            continue
        path = shutil.which(program)
        package = owner(path) if path else None
        if package is None or not everywhere_package(package):
            uncovered.append(f"program {program!r} (from {package or 'no installed package'})")
    for path in sorted(uses["path"]):
        if not any(path == item or path.startswith(item.rstrip("/") + "/") for item in table if item.startswith("/")):
            uncovered.append(f"path {path}")
    for voice in sorted(festival_voices()):
        if f"festival-voice:{voice}" not in table:
            uncovered.append(f"festival voice {voice}")
    assert not uncovered, f"used by the code but not in {TABLE.relative_to(REPO)}: " + "; ".join(uncovered)


def test_every_table_entry_comes_from_its_package():
    problems = []
    for item, package in sorted(read_table().items()):
        if item.startswith("library:"):
            continue
        path = locate(item)
        if path is None:
            problems.append(f"{item} is missing (run bash scripts/setup.sh; it installs {package})")
        elif (found := owner(path)) != package:
            problems.append(f"{item} ({path}) comes from {found or 'no package'}, not {package}")
    assert not problems, "; ".join(problems)


def test_setup_installs_from_the_table():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "scripts/system-packages.txt" in setup
    out = subprocess.run(["bash", "-c", "mapfile -t A < <(awk '!/^#/ && NF {print $1}' scripts/system-packages.txt);"
                          " printf '%s\\n' \"${A[@]}\""], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == sorted(set(read_table().values()), key=out.stdout.split().index)
