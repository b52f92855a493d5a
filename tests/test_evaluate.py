import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from dld_core.bench import bench
from dld_core.checkpoint import load_checkpoint, save_checkpoint
from dld_core.config import ModelConfig
from dld_core.evaluate import evaluate, length_batches, make_masks, transcribe_batch
from dld_core.inference import featurize
from dld_core.metrics import cer, wer
from dld_core.model import DynamicCTCModel

TEXTS = ["hello world", "the cat sat", "a b"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    cfg = ModelConfig(family="conformer", d_model=32, n_layers=4, n_heads=4, ffn_dim=64, conv_kernel=7)
    ckpt = save_checkpoint(root / "ckpt", DynamicCTCModel(cfg), recipe="dld")
    rng = np.random.default_rng(0)
    rows = []
    for i, (text, dur) in enumerate(zip(TEXTS, [0.6, 1.0, 0.8])):
        path = root / f"utt{i}.wav"
        sf.write(path, (rng.standard_normal(int(dur * 16000)) * 0.1).astype(np.float32), 16000)
        rows.append({"audio_filepath": path.name, "text": text, "duration": dur})
    manifest = root / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ckpt, manifest, root


def test_random_masks_seeded_distinct_and_sized():
    masks = make_masks(12, 6, "random", num_masks=4, seed=0)
    assert masks == make_masks(12, 6, "random", num_masks=4, seed=0)
    assert masks != make_masks(12, 6, "random", num_masks=4, seed=1)
    assert len(masks) == 4 and len({tuple(m) for m in masks}) == 4
    assert all(len(m) == 6 and m == sorted(m) and 0 <= m[0] and m[-1] < 12 for m in masks)
    assert make_masks(4, 3, "random", num_masks=10) == [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]   # all C(4,3)
    assert make_masks(12, 12, "random") == [list(range(12))]
    assert make_masks(12, 0, "random") == [[]]


def test_deterministic_policies():
    assert make_masks(12, 6, "every_other") == [[1, 3, 5, 7, 9, 11]]
    assert make_masks(12, 3, "every_other") == [[3, 7, 11]]
    assert make_masks(12, 12, "every_other") == [list(range(12))]
    assert make_masks(12, 9, "every_other") == [[0, 1, 3, 4, 5, 7, 8, 9, 11]]
    assert make_masks(12, 4, "first_k") == [[0, 1, 2, 3]]
    custom = [[0, 2], [True, True, False, False], [1, 3, 0]]
    assert make_masks(4, 2, "custom", custom=custom) == [[0, 2], [0, 1]]
    assert make_masks(4, 3, "custom", custom=custom) == [[0, 1, 3]]
    assert make_masks(4, 2, "custom", custom=[3, 1]) == [[1, 3]]                  # one flat mask (CLI --custom)
    with pytest.raises(ValueError):
        make_masks(4, 1, "custom", custom=custom)
    with pytest.raises(ValueError):
        make_masks(4, 2, "nonsense")
    with pytest.raises(ValueError):
        make_masks(4, 5, "first_k")


def test_length_batches():
    durations = [3.0, 1.0, 2.0, 10.0]
    assert length_batches(durations, batch_seconds=9.0) == [[1, 2, 0], [3]]     # padded: 3 x 3 s
    assert length_batches(durations, batch_seconds=6.0) == [[1, 2], [0], [3]]


def test_transcribe_batch_reuses_features(setup):
    ckpt, _, root = setup
    model = load_checkpoint(ckpt).model
    wavs = [sf.read(root / f"utt{i}.wav", dtype="float32")[0] for i in range(3)]
    feats = featurize(model, wavs)
    for active in (None, [0, 2], [True, False, True, True]):
        assert transcribe_batch(model, wavs, active) == transcribe_batch(model, wavs, active, features=feats)


def test_evaluate_manifest(setup):
    ckpt, manifest, root = setup
    result = evaluate(ckpt, manifest, keep=[4, 2], num_masks=2, seed=0, batch_seconds=0.1, progress=False)
    assert set(result) == {"checkpoint", "num_layers", "manifest", "policy", "levels"}
    assert result["num_layers"] == 4 and result["policy"] == "random"
    assert [lv["kept"] for lv in result["levels"]] == [4, 2]
    for lv in result["levels"]:
        assert set(lv) == {"kept", "wer", "cer", "gflops", "masks", "latency_ms"}
        assert all(len(m) == lv["kept"] for m in lv["masks"])
        assert lv["masks"] == make_masks(4, lv["kept"], "random", 2, 0)
        assert lv["latency_ms"] > 0 and math.isfinite(lv["wer"]) and math.isfinite(lv["cer"])
    assert result["levels"][0]["gflops"] > result["levels"][1]["gflops"] > 0
    # one utterance per batch (batch_seconds tiny): equals transcribing each clip alone, mask by mask
    model = load_checkpoint(ckpt).model
    wavs = [sf.read(root / f"utt{i}.wav", dtype="float32")[0] for i in range(3)]
    for lv in result["levels"]:
        w, c = [], []
        for mask in lv["masks"]:
            hyps = [transcribe_batch(model, [x], mask)[0] for x in wavs]
            w.append(wer(TEXTS, hyps))
            c.append(cer(TEXTS, hyps))
        assert lv["wer"] == pytest.approx(np.mean(w)) and lv["cer"] == pytest.approx(np.mean(c))


def test_evaluate_defaults_every_level(setup):
    ckpt, manifest, _ = setup
    result = evaluate(load_checkpoint(ckpt), manifest, policy="first_k", progress=False)
    assert [lv["kept"] for lv in result["levels"]] == [4, 3, 2, 1]
    assert [lv["masks"] for lv in result["levels"]] == [[[0, 1, 2, 3]], [[0, 1, 2]], [[0, 1]], [[0]]]


def test_bench(setup):
    ckpt, _, _ = setup
    result = bench(ckpt, seconds=1.0, repeats=1, warmup=0, policy="every_other")
    assert result["seconds"] == 1.0 and [lv["kept"] for lv in result["levels"]] == [4, 3, 2, 1]
    full, *rest = result["levels"]
    assert full["latency_ratio"] == 1.0 and full["flops_ratio"] == 1.0
    assert all(lv["latency_ms"] > 0 for lv in result["levels"])
    ratios = [lv["flops_ratio"] for lv in result["levels"]]
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] > 0
    assert rest[-1]["mask"] == [3]
