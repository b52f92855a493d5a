"""The AppTest world the app tests share: tiny random checkpoints, sample clips and evaluation results made once per
test module (`world`), the app pointed at them (`env`), and helpers to run a page and read it. Import the fixtures
into a test module: `from tests.app_fixtures.apptest import env, world` (seq2seq_env, seq2seq_world: the same
world with an encoder-decoder student's checkpoints)."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests import app_fixtures as fx

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app" / "streamlit_app.py")
TIMEOUT = 120


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio")
    ckpts = fx.make_checkpoints(root / "checkpoints")
    manifest = fx.make_samples(root / "samples")
    fx.make_eval_results(ckpts, manifest)
    fx.make_budget_reports(ckpts, manifest)
    return {"root": root, "ckpts": ckpts, "manifest": manifest}


@pytest.fixture
def env(world, tmp_path, monkeypatch):
    """Point the app at the test world (jobs and results in a fresh folder per test)."""
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(world["root"] / "checkpoints"))
    monkeypatch.setenv("DLD_SAMPLES_DIR", str(world["root"] / "samples"))
    monkeypatch.setenv("DLD_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("DLD_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("DLD_DOWNLOADS_DIR", str(tmp_path / "downloads"))    # "Download this model" zips
    monkeypatch.setenv("DLD_CORPUS_DIR", str(tmp_path / "corpus"))      # no built-in test sets unless a test adds them
    return world


@pytest.fixture(scope="module")
def seq2seq_world(tmp_path_factory):
    """A checkpoints folder with an encoder-decoder student (dld) and a Whisper CTC teacher
    (app_fixtures.make_seq2seq_checkpoints)."""
    root = tmp_path_factory.mktemp("studio_seq2seq")
    return {"root": root, "ckpts": fx.make_seq2seq_checkpoints(root / "checkpoints")}


@pytest.fixture
def seq2seq_env(env, seq2seq_world, monkeypatch):
    """The test world (sample clips, fresh jobs and results), its checkpoints those of seq2seq_world."""
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(seq2seq_world["root"] / "checkpoints"))
    return {**env, "ckpts": seq2seq_world["ckpts"]}


def run_app(page: str = "inspect") -> AppTest:
    """The app on a page (the root "/" opens How DLD works; these tests start on Inspect unless told)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    return at


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)
