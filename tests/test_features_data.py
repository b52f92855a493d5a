"""Direct tests of the input side: features.py (padding, extractors), data.py (dataset, batches) and the
distillation loss's temperature (losses.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dld_core.audio import SAMPLE_RATE
from dld_core.data import SpeechDataset, bucket_batches
from dld_core.features import MIN_SAMPLES, feature_extractor, pad_waveforms
from dld_core.frames import padding_mask
from dld_core.losses import distillation_kl, kl_per_frame
from dld_core.tokenizer import CharTokenizer
from tests.helpers import tiny_config, wavlm_config


def test_pad_waveforms_pads_short_clips_and_keeps_lengths():
    wavs, lengths = pad_waveforms([torch.ones(10), torch.ones(3000)])
    assert wavs.shape == (2, 3000) and lengths.tolist() == [MIN_SAMPLES, 3000]
    assert wavs[0, :10].eq(1).all() and wavs[0, 10:].eq(0).all()
    assert padding_mask(torch.tensor([1, 3]), 3).tolist() == [[False, True, True], [False, False, False]]


@pytest.mark.parametrize("cfg", [tiny_config(), wavlm_config()], ids=["log-mel", "waveform"])
def test_extractor_is_shared_and_batch_equals_single(cfg):
    extractor = feature_extractor(cfg)
    assert extractor is feature_extractor(cfg)                     # one instance per front end
    rng = np.random.default_rng(0)
    a, b = (torch.from_numpy(rng.standard_normal(n).astype(np.float32)) for n in (8000, 16000))
    batch, lengths = extractor(*pad_waveforms([a, b]))
    alone, alone_len = extractor(*pad_waveforms([a]))
    n = int(alone_len[0])
    assert int(lengths[0]) == n
    if cfg.family == "wavlm":
        assert torch.allclose(batch[0, :n], alone[0, :n], atol=1e-4)  # padding never leaks into valid samples
    else:   # the conformer's centred STFT: the last window of a clip overlaps the padding (a known, small effect)
        assert torch.allclose(batch[0, : n - 2], alone[0, : n - 2], atol=0.05)
    assert batch[0, n:].abs().max() == 0                           # padded frames are zero
    valid = batch[1, : int(lengths[1])]
    assert abs(float(valid.mean())) < 1e-3 and abs(float(valid.std()) - 1) < 1e-2   # normalised per utterance


def test_dataset_and_collate(tiny_corpus):
    tok = CharTokenizer(tiny_config().vocab)
    ds = SpeechDataset(str(tiny_corpus["train"]), tok)
    assert len(ds) == 16 and ds.hours == pytest.approx(sum(ds.durations) / 3600)
    assert all(abs(d - len(a) / SAMPLE_RATE) < 1e-9 for d, a in zip(ds.durations, ds.audio))
    batch = ds.collate([0, 1])
    assert batch.wavs.shape[0] == 2 and batch.wav_lengths.tolist() == [len(ds.audio[0]), len(ds.audio[1])]
    for i in range(2):
        assert tok.decode(batch.targets[i, : batch.target_lengths[i]].tolist()) == batch.texts[i]


def test_bucket_batches():
    durations = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    batches = bucket_batches(durations, 10.0, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(len(b) * max(durations[i] for i in b) <= 10.0 or len(b) == 1 for b in batches)
    assert batches == bucket_batches(durations, 10.0, seed=0, epoch=0)               # seeded
    orders = {tuple(map(tuple, bucket_batches(durations, 10.0, seed=0, epoch=e))) for e in range(6)}
    assert len(orders) > 1                                                            # reshuffled per epoch
    ranks = [bucket_batches(durations, 10.0, seed=0, epoch=0, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) and not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}


def test_distillation_temperature():
    torch.manual_seed(0)
    t = torch.randn(2, 5, 7).log_softmax(-1)
    s = torch.randn(2, 5, 7).log_softmax(-1)
    lengths = torch.tensor([5, 3])
    valid = torch.tensor([[1.0] * 5, [1.0] * 3 + [0.0] * 2])
    for tau in (1.0, 2.0, 4.0):
        pt, ps = (t / tau).log_softmax(-1), (s / tau).log_softmax(-1)
        manual = tau * tau * (kl_per_frame(pt, ps) * valid).sum() / valid.sum()
        assert distillation_kl(t, s, lengths, tau).item() == pytest.approx(manual.item(), rel=1e-5)
    assert distillation_kl(t, t, lengths, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    garbage = s.clone()
    garbage[1, 3:] = 0.0                                          # padded frames do not count
    assert distillation_kl(t, garbage, lengths, 2.0).item() == pytest.approx(distillation_kl(t, s, lengths, 2.0).item())
