import pytest
import torch

from dld_core.config import ModelConfig
from dld_core.families.conformer import analytic_layer_flops as analytic_conformer_layer_flops, encoder_frames
from dld_core.flops import (_parts, count_flops, flops, gflops,
                            gflops_for_seconds)
from dld_core.model import DynamicCTCModel
from tests.helpers import wavlm_config

CONFORMER = ModelConfig(family="conformer", d_model=32, n_layers=4, n_heads=4, ffn_dim=64, conv_kernel=7)
WAVLM = ModelConfig(family="wavlm", d_model=32, n_layers=3, n_heads=4, ffn_dim=64)


@pytest.mark.parametrize("seconds", [1.0, 2.5])
def test_conformer_layer_matches_analytic(seconds):
    per_layer = flops(CONFORMER, seconds, [0]) - flops(CONFORMER, seconds, [])
    c = CONFORMER
    analytic = analytic_conformer_layer_flops(c.d_model, c.ffn_dim, c.n_heads, c.conv_kernel,
                                              encoder_frames(c, int(seconds * 16000)))
    assert per_layer == pytest.approx(analytic, rel=0.01)


def test_flops_fall_linearly_with_kept_modules():
    totals = [flops(CONFORMER, 1.0, list(range(k))) for k in range(CONFORMER.n_layers + 1)]
    steps = {b - a for a, b in zip(totals, totals[1:])}
    assert len(steps) == 1 and steps.pop() > 0
    assert flops(CONFORMER, 1.0, [1, 3]) == totals[2]                 # which modules does not matter
    assert flops(CONFORMER, 1.0, [True, False, True, False]) == totals[2]
    # zero modules = front end + CTC head, counted directly
    model = DynamicCTCModel(CONFORMER).eval()
    feats, lengths = torch.zeros(1, 101, 80), torch.tensor([101])
    front_and_head = count_flops(lambda: model.head(model.encoder.subsampling(feats, lengths)[0]))
    assert totals[0] == front_and_head


@pytest.mark.parametrize("cfg", [CONFORMER, wavlm_config()], ids=["conformer", "wavlm"])
def test_module_sum_equals_full_forward(cfg):
    """front end + head + sum of kept modules (counted once, separately) == FlopCounterMode on the whole
    forward of a real CPU model with that mask."""
    model = DynamicCTCModel(cfg).eval()
    samples = 16000
    feats = torch.zeros(1, samples // 160 + 1, cfg.n_mels) if cfg.family == "conformer" else torch.zeros(1, samples)
    lengths = torch.tensor([feats.shape[1]])
    per_module = [flops(cfg, samples, [i]) - flops(cfg, samples, []) for i in range(cfg.n_layers)]
    assert len(set(per_module)) == 1 and per_module[0] > 0          # identical modules
    for mask in ([True] * 4, [False] * 4, [True, False, False, False], [False, True, False, True],
                 [True, True, False, True]):
        assert flops(cfg, samples, mask) == count_flops(model, feats, lengths, mask)
        assert flops(cfg, samples, mask) == flops(cfg, samples, []) + sum(p for p, on in zip(per_module, mask) if on)


def test_new_masks_do_not_count_again():
    flops(CONFORMER, 3.0)
    misses = _parts.cache_info().misses
    for bits in range(2 ** CONFORMER.n_layers):
        flops(CONFORMER, 3.0, [bool(bits >> i & 1) for i in range(CONFORMER.n_layers)])
    assert _parts.cache_info().misses == misses


def test_wavlm_counts_attention():
    per_layer = flops(WAVLM, 1.0, [0]) - flops(WAVLM, 1.0, [])
    t, d, f = 49, WAVLM.d_model, WAVLM.ffn_dim                       # 20 ms frames
    without_attention = 8 * t * d * d + 4 * t * d * f + 16 * t * d   # projections, FFN, gated rel-pos
    assert per_layer - without_attention == 4 * t * t * d            # QK^T + AV are counted on CPU


def test_units_cache_and_helpers():
    model = DynamicCTCModel(CONFORMER)
    assert gflops(model, 16000) == gflops(CONFORMER, 1.0) == gflops_for_seconds(CONFORMER, 1.0)
    assert gflops_for_seconds(CONFORMER) == pytest.approx(flops(CONFORMER, 160000) / 1e9)
    with pytest.raises(ValueError, match="seconds"):
        gflops(CONFORMER, 10)                                         # an int is samples: 10 samples is nonsense
    with pytest.raises(ValueError):
        gflops(CONFORMER, 1.0, [0, 0])
    assert flops(CONFORMER, 2.0) > flops(CONFORMER, 1.0)
