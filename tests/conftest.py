"""Shared fixtures (the helpers they use live in tests/helpers.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
