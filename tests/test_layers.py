import math

import numpy as np
import pytest
import torch

from dld_core.checkpoint import load_checkpoint, save_checkpoint
from dld_core.config import ModelConfig
from dld_core.inference import featurize, transcribe
from dld_core.layers import (best_mask_for_budget, depth_kl, drop_one_kl, greedy_drop_path, kl_per_frame,
                             layer_importance)
from dld_core.metrics import wer
from dld_core.model import DynamicCTCModel


def tiny(family, seed, tmp_path):
    torch.manual_seed(seed)
    cfg = ModelConfig(family=family, d_model=32, n_layers=4, n_heads=4, ffn_dim=64, conv_kernel=7)
    return load_checkpoint(save_checkpoint(tmp_path / f"{family}{seed}", DynamicCTCModel(cfg), recipe="dld")).model


@pytest.fixture(scope="module", params=["conformer", "wavlm"])
def models(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    student, teacher = tiny(request.param, 0, root), tiny(request.param, 1, root)
    wav = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    return student, teacher, featurize(student, [wav])


def direct_kl(student, teacher, feats, lengths, mask):
    with torch.inference_mode():
        t, s = teacher(feats, lengths), student(feats, lengths, active=mask)
        n = int(s.lengths[0])
        return kl_per_frame(t.log_probs[0, :n], s.log_probs[0, :n])


def test_kl_per_frame():
    p = torch.randn(5, 7).log_softmax(-1)
    q = torch.randn(5, 7).log_softmax(-1)
    assert torch.allclose(kl_per_frame(p, p), torch.zeros(5))
    expected = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1)
    assert torch.allclose(kl_per_frame(p, q), expected, atol=1e-6)
    assert (kl_per_frame(p, q) > 0).all()


def test_drop_one_rows_equal_direct_forward(models):
    student, teacher, (feats, lengths) = models
    base = [True, False, True, True]
    matrix = drop_one_kl(student, teacher, feats, lengths, base)
    assert matrix.shape[0] == 4
    for i in range(4):
        mask = list(base)
        mask[i] = False                                   # module 1 is already dropped: its row is the base KL
        assert torch.allclose(matrix[i], direct_kl(student, teacher, feats, lengths, mask), atol=1e-5)
    assert torch.isnan(drop_one_kl(student, teacher, feats, lengths, base, dropped="nan")[1]).all()
    # teacher given as log-probs instead of a model
    with torch.inference_mode():
        t_lp = teacher(feats, lengths).log_probs
    assert torch.allclose(drop_one_kl(student, t_lp, feats, lengths, base), matrix, atol=1e-6)


def test_kl_zero_when_student_is_teacher(models):
    student, _, (feats, lengths) = models
    assert depth_kl(student, student, feats, lengths)[-1].abs().max() < 1e-5
    assert drop_one_kl(student, student, feats, lengths).min() >= -1e-6
    base = [True, True, False, True]
    with torch.inference_mode():
        own = student(feats, lengths, active=base).log_probs           # teacher = the student at this mask
    matrix = drop_one_kl(student, own, feats, lengths, base)
    assert matrix[2].abs().max() < 1e-5                  # dropped row = KL of the base mask = 0
    assert matrix[0].mean() > 0


def test_depth_kl_logit_lens(models):
    student, teacher, (feats, lengths) = models
    depth = depth_kl(student, teacher, feats, lengths)
    assert depth.shape[0] == 4
    assert torch.allclose(depth[-1], direct_kl(student, teacher, feats, lengths, None), atol=1e-5)
    mask = [True, False, True, False]
    depth = depth_kl(student, teacher, feats, lengths, mask)
    assert torch.allclose(depth[1], depth[0]) and torch.allclose(depth[3], depth[2])   # dropped = pass-through
    assert torch.allclose(depth[-1], direct_kl(student, teacher, feats, lengths, mask), atol=1e-5)


def test_depth_kl_reuses_a_passed_output(models):
    student, teacher, (feats, lengths) = models
    mask = [True, False, True, True]
    with torch.inference_mode():
        out = student(feats, lengths, active=mask, return_hidden=True)
        t_lp = teacher(feats, lengths).log_probs
    for ref in (teacher, t_lp):
        reused = depth_kl(student, ref, feats, lengths, output=out)
        assert torch.equal(reused, depth_kl(student, ref, feats, lengths, mask))
    with pytest.raises(ValueError, match="return_hidden"):
        depth_kl(student, teacher, feats, lengths, output=out._replace(hidden=None))


def test_importance_path_and_budget(tmp_path):
    student, teacher = tiny("conformer", 0, tmp_path), tiny("conformer", 1, tmp_path)
    rng = np.random.default_rng(1)
    clips = [((rng.standard_normal(12000) * 0.1).astype(np.float32), text) for text in ("a cat", "hello")]
    imp = layer_importance(student, student, clips)
    assert imp["base_active"] == [0, 1, 2, 3] and imp["base_kl"] == pytest.approx(0.0, abs=1e-6)
    assert all(d > 0 for d in imp["delta_kl"]) and len(imp["delta_wer"]) == 4
    imp = layer_importance(student, teacher, clips, base_active=[0, 1, 3])
    assert imp["base_active"] == [0, 1, 3]
    assert imp["delta_kl"][2] is None and imp["wer"][2] is None and imp["delta_wer"][0] is not None

    path = greedy_drop_path(student, teacher, clips, criterion="kl")
    assert [s["kept"] for s in path] == [4, 3, 2, 1]
    dropped = [s["dropped"] for s in path[1:]]
    assert len(set(dropped)) == 3 and path[0]["dropped"] is None
    # each step's KL is the frame-weighted KL of running that mask directly
    feats = [featurize(student, [w]) for w, _ in clips]
    for step in path:
        mask = [i in step["active"] for i in range(4)]
        kls = [direct_kl(student, teacher, f, n, mask) for f, n in feats]
        assert step["kl"] == pytest.approx(float(torch.cat(kls).mean()), rel=1e-4)
        hyps = transcribe(student, [w for w, _ in clips], active=mask)
        assert step["wer"] == pytest.approx(wer([t for _, t in clips], hyps))

    best = best_mask_for_budget(student, teacher, clips, kept=2, num_candidates=6, path=path)
    assert len(best["active"]) == 2
    assert best["kl"] == min(c["kl"] for c in best["candidates"])
    assert best["kl"] <= path[2]["kl"] + 1e-9
    assert math.isfinite(best["wer"])
