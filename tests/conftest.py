"""Shared fixtures (the helpers they use live in tests/helpers.py).

Tests import the project and the shared test helpers as packages from the repository root (`from dld_core ...`,
`from app.state.results ...`, `from tests.helpers ...`, `from tests.app_fixtures.server ...`); the root is put on
sys.path here, once, so that holds however pytest is started."""
from __future__ import annotations

import os
import sys
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


@pytest.fixture
def tiny_model() -> DynamicCTCModel:
    torch.manual_seed(0)
    return DynamicCTCModel(tiny_config()).eval()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_corpus(tmp_path_factory.mktemp("tiny_corpus"))
