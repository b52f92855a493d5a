"""Per-utterance WER pieces and the paired bootstrap intervals of drop-one ΔWER (dld_core.metrics, dld_core.layers)."""
import math

import numpy as np
import pytest
import torch

from dld_core.checkpoint import load_checkpoint, save_checkpoint
from dld_core.config import ModelConfig
from dld_core.layers import greedy_drop_path, importance_report, layer_importance
from dld_core.metrics import bootstrap_delta_rate, error_counts, error_rate, utterance_errors
from dld_core.model import DynamicCTCModel


def test_utterance_errors_sum_to_the_corpus_rate():
    refs = ["the cat sat", "hello world", "one two three four"]
    hyps = ["the cat", "hello there big world", "one two three four"]
    errors, units = utterance_errors(refs, hyps)
    assert errors.tolist() == [1, 2, 0] and units.tolist() == [3, 2, 4]
    assert errors.sum() / units.sum() == pytest.approx(error_rate(error_counts(refs, hyps)))


def test_bootstrap_constant_delta_has_a_point_interval():
    """Every utterance gets exactly one more error in 4 words: ΔWER is 0.25 in every resample."""
    base = np.array([0, 1, 2, 0, 3])
    units = np.full(5, 4)
    (lo, hi), = bootstrap_delta_rate(base, base + 1, units, resamples=200, seed=3)
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
    (lo, hi), = bootstrap_delta_rate(base, base, units, resamples=200)
    assert lo == hi == 0.0                                   # no change: a zero interval


def test_bootstrap_interval_matches_the_normal_approximation():
    """Half of 400 one-word utterances lose their word: ΔWER 0.5, standard error sqrt(0.25 / 400) = 0.025,
    so the 95% interval is 0.5 ± 1.96 · 0.025 = [0.451, 0.549]."""
    u = 400
    base, units = np.zeros(u), np.ones(u)
    variant = (np.arange(u) % 2).astype(float)
    (lo, hi), = bootstrap_delta_rate(base, variant, units, resamples=4000, seed=0)
    assert lo == pytest.approx(0.5 - 1.96 * 0.025, abs=0.008)
    assert hi == pytest.approx(0.5 + 1.96 * 0.025, abs=0.008)
    # seeded: the same draws every time; several variants share them
    both = bootstrap_delta_rate(base, np.stack([variant, variant]), units, resamples=4000, seed=0)
    assert both == [(lo, hi), (lo, hi)]
    assert bootstrap_delta_rate(base, variant, units, resamples=4000, seed=1) != [(lo, hi)]


def test_bootstrap_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        bootstrap_delta_rate([0, 1], [[0, 1, 2]], [1, 1])
    with pytest.raises(ValueError):
        bootstrap_delta_rate([], [[]], [])


def tiny(seed, tmp_path):
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, n_layers=4, n_heads=4, ffn_dim=64, conv_kernel=7)
    model = DynamicCTCModel(cfg)
    with torch.no_grad():
        model.head.weight.mul_(8.0)                          # peaky posteriors: transcripts move with the mask
    return load_checkpoint(save_checkpoint(tmp_path / f"m{seed}", model, recipe="dld")).model


def test_layer_importance_intervals_contain_the_point_estimate(tmp_path):
    student, teacher = tiny(0, tmp_path), tiny(1, tmp_path)
    rng = np.random.default_rng(1)
    clips = [((rng.standard_normal(12000) * 0.1).astype(np.float32), text)
             for text in ("a cat", "hello there", "seven two nine", "one")]
    imp = layer_importance(student, teacher, clips, base_active=[0, 1, 3], resamples=500, seed=0)
    assert imp["delta_wer_ci"][2] is None                    # already dropped
    for i in (0, 1, 3):
        lo, hi = imp["delta_wer_ci"][i]
        assert lo <= imp["delta_wer"][i] + 1e-9 and imp["delta_wer"][i] <= hi + 1e-9
    assert imp["resamples"] == 500 and imp["ci_level"] == 0.95
    assert "delta_wer_ci" not in layer_importance(student, teacher, clips)      # off by default

    # the report: the same drop-one numbers and the same greedy path as the separate functions
    report = importance_report(student, teacher, clips, base_active=[0, 1, 3], criterion="kl", resamples=500)
    assert report["importance"]["delta_wer_ci"] == imp["delta_wer_ci"]
    for key in ("delta_wer", "delta_kl"):
        assert all((a is None and b is None) or math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)
                   for a, b in zip(report["importance"][key], imp[key]))
    path = greedy_drop_path(student, teacher, clips, start_active=[0, 1, 3], criterion="kl")
    assert [s["active"] for s in report["path"]] == [s["active"] for s in path]
    assert report["path"][0]["kept"] == 3
    with pytest.raises(ValueError):
        importance_report(student, teacher, clips, base_active=[False] * 4)
