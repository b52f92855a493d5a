"""Shared fixtures (the helpers they use live in tests/helpers.py).

Tests import the project and the shared test helpers as packages from the repository root (`from dld_core ...`,
`from app.state.results ...`, `from tests.helpers ...`, `from tests.app_fixtures.server ...`); the root is put on
sys.path here, once, so that holds however pytest is started.

Test files run longest first (their seconds in tests/durations.json, rewritten by
`bash scripts/test.sh --write-durations tests/durations.json`): the pytest-xdist workers of scripts/test.sh take
whole files in collection order, so a long file never starts last while the other worker has nothing left."""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

from dld_core.model import DynamicCTCModel  # noqa: E402
from tests.helpers import tiny_config, write_tiny_corpus  # noqa: E402

DURATIONS = Path(__file__).with_name("durations.json")      # {test file: seconds}, measured on an idle machine


def test_file(nodeid: str) -> str:
    return nodeid.split("::")[0]


def pytest_addoption(parser):
    parser.addoption("--write-durations", metavar="PATH", help="write each test file's seconds (setup, call and "
                     "teardown of its tests) to PATH as JSON, for the longest-first order")


def pytest_collection_modifyitems(config, items):
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(test_file(item.nodeid), len(first_seen))
    items.sort(key=lambda item: (-seconds.get(test_file(item.nodeid), 0.0), first_seen[test_file(item.nodeid)]))


_file_seconds: Counter = Counter()


def pytest_runtest_logreport(report):
    _file_seconds[test_file(report.nodeid)] += report.duration


def pytest_sessionfinish(session):
    path = session.config.getoption("--write-durations")
    if path and not hasattr(session.config, "workerinput"):        # the controller (or a run without xdist) writes
        Path(path).write_text(json.dumps({f: round(s, 1) for f, s in sorted(_file_seconds.items())}, indent=1) + "\n")


@pytest.fixture
def tiny_model() -> DynamicCTCModel:
    torch.manual_seed(0)
    return DynamicCTCModel(tiny_config()).eval()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_corpus(tmp_path_factory.mktemp("tiny_corpus"))
