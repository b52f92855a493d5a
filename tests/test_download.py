"""The app's "Download this model" (dld_core/download.py) and the README's "Run the exported model without DLD
Studio": the zip holds deploy's folder and a README; its ONNX runs with onnxruntime alone (its own front end,
features.onnx) and equals the gated model; the README's snippets (transcribe.onnx in three lines; step by step),
run exactly as written, transcribe as DLD Studio does; zips are cached by (checkpoint, mask, format); a failed export leaves nothing behind."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch

from dld_core import masks as M
from dld_core.checkpoint import load_checkpoint
from dld_core.download import RUN_SNIPPET, STEP_SNIPPET, cached_zip, prepare_zip, step_snippet
from dld_core.inference import featurize, transcribe
from dld_core.safe_io import CheckpointError
from tests.helpers import REPO, SMALL_CONFORMER, corrupted_copy

WHISPER = REPO / "checkpoints" / "dld"                 # the shipped Whisper student (A1 M1 .. A4 M4)
CONFORMER = SMALL_CONFORMER
KEEP = "A1,M1,M2,A3"
CLIPS = [REPO / "data_samples" / name for name in
         ("synth_00_flite_kal16.wav", "synth_01_festival_cmu_us_slt_arctic_hts.wav", "fsdd_3_jackson_0.wav")]


def mask_of(folder, keep: str) -> tuple[bool, ...]:
    names = load_checkpoint(folder).model.module_names
    return tuple(M.as_bools(M.parse_modules(keep, names), len(names)))


@pytest.fixture(scope="module")
def whisper():
    return load_checkpoint(WHISPER)


@pytest.fixture(scope="module")
def whisper_zip(tmp_path_factory):
    cache = tmp_path_factory.mktemp("downloads")
    active = mask_of(WHISPER, KEEP)
    return cache, active, prepare_zip(cache, WHISPER, active)


def unzip(path, to):
    with zipfile.ZipFile(path) as z:
        z.extractall(to)
    return to


def readme_snippets() -> list[str]:
    """The python blocks of the project README's "Run the exported model without DLD Studio" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Run the exported model without DLD Studio"):]
    section = section[:section.index("\n## ")]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def test_the_zip_holds_the_exported_folder_and_a_readme(whisper_zip):
    cache, active, path = whisper_zip
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert set(z.namelist()) == {"README.md", "model/config.json", "model/model.onnx", "model/features.onnx",
                                     "model/transcribe.onnx"}
        readme = z.read("README.md").decode()
        info = json.loads(z.read("model/config.json"))
    assert info["deployed"]["kept"] == KEEP.split(",") and info["deployed"]["source_checkpoint"] == str(WHISPER)
    assert info["deployed"]["verified"]["onnxruntime_only_max_abs_diff"] <= 1e-4
    assert info["deployed"]["verified"]["transcribe"]["same_as_model_file_greedy"]
    assert "A1 M1 M2 A3 (4 of 8 modules)" in readme and "onnxruntime" in readme
    assert f"```python\n{RUN_SNIPPET}```" in readme               # the project README's snippets, word for word
    assert f"```python\n{STEP_SNIPPET}```" in readme


def test_the_zipped_onnx_runs_with_onnxruntime_alone_and_equals_the_gated_model(whisper_zip, whisper, tmp_path):
    _, active, path = whisper_zip
    folder = unzip(path, tmp_path) / "model"
    waves = [sf.read(p, dtype="float32")[0] for p in CLIPS]
    audio = np.zeros((len(waves), max(map(len, waves))), np.float32)     # a padded batch, as a user makes one
    for i, w in enumerate(waves):
        audio[i, :len(w)] = w
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    feats = ort.InferenceSession(str(folder / "features.onnx")).run(None, {"audio": audio, "audio_lengths": lengths})
    log_probs, out_lengths = ort.InferenceSession(str(folder / "model.onnx")).run(
        None, {"features": feats[0], "lengths": feats[1]})
    with torch.no_grad():
        gated = whisper.model(*featurize(whisper.model, waves), active=list(active))
    assert out_lengths.tolist() == gated.lengths.tolist()
    for i, n in enumerate(out_lengths.tolist()):
        assert float(np.abs(log_probs[i, :n] - gated.log_probs[i, :n].numpy()).max()) <= 1e-4


def test_the_readme_snippets_run_as_written(whisper_zip, whisper, tmp_path):
    snippets = readme_snippets()
    assert snippets == [RUN_SNIPPET, STEP_SNIPPET] and len(RUN_SNIPPET.splitlines()) == 3
    _, active, path = whisper_zip
    unzip(path, tmp_path)
    shutil.copy(CLIPS[0], tmp_path / "clip.wav")
    want = transcribe(whisper.model, [sf.read(CLIPS[0], dtype="float32")[0]], active=list(active))[0]
    printed = []
    for snippet in snippets:
        done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        printed.append(done.stdout)
    assert want and " ".join(printed[1].split()) == want
    assert printed[0] == want + "\n"              # transcribe.onnx: DLD Studio's greedy transcript, spaces and all


def test_zips_are_cached_by_checkpoint_mask_and_format(whisper_zip):
    cache, active, path = whisper_zip
    built = path.read_bytes()
    assert cached_zip(cache, WHISPER, active) == path
    assert prepare_zip(cache, WHISPER, active) == path and path.read_bytes() == built      # not exported again
    other = (not active[0],) + active[1:]
    assert cached_zip(cache, WHISPER, other) is None
    assert all(cached_zip(cache, WHISPER, active, fmt) is None for fmt in ("onnx-int8", "safetensors"))
    assert [p.name for p in cache.iterdir()] == [path.name]                         # no temp folders left
    with pytest.raises(ValueError, match="unknown download format"):
        cached_zip(cache, WHISPER, active, "tflite")


def test_int8_and_safetensors_zips_and_the_cache_keeps_the_newest(tmp_path):
    cache = tmp_path / "downloads"
    active = mask_of(CONFORMER, "L1,L2,L4,L7,L12")
    int8 = prepare_zip(cache, CONFORMER, active, "onnx-int8")
    with zipfile.ZipFile(int8) as z:
        assert set(z.namelist()) == {"README.md", "model/config.json", "model/model.int8.onnx", "model/features.onnx",
                                     "model/transcribe.onnx"}
        readme = z.read("README.md").decode()
    assert step_snippet("model.int8.onnx") in readme and RUN_SNIPPET in readme and "model/model.int8.onnx" in readme and "Int8:" in readme
    plain = prepare_zip(cache, CONFORMER, active, "safetensors", keep=1)
    with zipfile.ZipFile(plain) as z:
        assert set(z.namelist()) == {"README.md", "model/config.json", "model/model.safetensors"}
        readme = z.read("README.md").decode()
    assert "load_checkpoint" in readme and "import onnxruntime" not in readme
    assert not int8.exists() and sorted(p.name for p in cache.iterdir()) == [plain.name]     # keep=1: the newest


def test_a_failed_export_is_one_line_and_leaves_nothing(tmp_path):
    bad = corrupted_copy(CONFORMER, tmp_path / "bad")
    cache = tmp_path / "downloads"
    with pytest.raises(CheckpointError, match="checksum") as err:
        prepare_zip(cache, bad, (True,) * 12)
    assert "\n" not in str(err.value)
    assert not cache.exists() or not any(cache.iterdir())
