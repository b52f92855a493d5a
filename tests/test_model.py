import numpy as np
import pytest
import torch

from dld_core.config import ModelConfig
from dld_core.families.conformer import encoder_frames
from dld_core.families.wavlm import load_pretrained as load_wavlm
from dld_core.model import DynamicCTCModel
from tests.helpers import tiny_config, wavlm_config


def features(b=2, t=120, n_mels=80):
    torch.manual_seed(1)
    return torch.randn(b, t, n_mels), torch.tensor([t, t - 30])


def test_all_kept_equals_static_path(tiny_model):
    x, l = features()
    with torch.no_grad():
        a = tiny_model(x, l)
        b = tiny_model(x, l, active=[True] * 4)
    assert torch.equal(a.log_probs, b.log_probs)


def test_dropped_module_is_identity(tiny_model):
    x, l = features()
    with torch.no_grad():
        out = tiny_model(x, l, active=[True, False, True, True], return_hidden=True)
        # hidden after module 1 (dropped) equals hidden after module 0
        assert torch.equal(out.hidden[1], out.hidden[0])
        # and equals running the remaining layers by hand
        full = tiny_model(x, l, return_hidden=True)
        assert not torch.equal(full.hidden[1], full.hidden[0])


def test_dropped_module_is_not_executed(tiny_model):
    calls = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
             for k, layer in enumerate(tiny_model.encoder.layers)]
    x, l = features()
    with torch.no_grad():
        tiny_model(x, l, active=[False, True, False, True])
    for h in hooks:
        h.remove()
    assert calls == [1, 3]


def test_mask_is_not_model_state(tiny_model):
    x, l = features()
    with torch.no_grad():
        a = tiny_model(x, l, active=[True, False, False, False]).log_probs
        tiny_model(x, l, active=[False, False, False, True])
        b = tiny_model(x, l, active=[True, False, False, False]).log_probs
    assert torch.equal(a, b)


def test_wrong_mask_length_is_refused(tiny_model):
    x, l = features()
    with pytest.raises(ValueError, match="4 modules"):
        tiny_model(x, l, active=[True] * 3)


def test_output_lengths_and_log_probs(tiny_model):
    x, l = features()
    with torch.no_grad():
        out = tiny_model(x, l)
    assert out.log_probs.shape[0] == 2 and out.log_probs.shape[2] == 29
    assert out.lengths[0] == out.log_probs.shape[1] and out.lengths[1] < out.lengths[0]
    assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(()), atol=1e-4)


def test_wavlm_family_gates_and_first_module_dropped():
    torch.manual_seed(0)
    model = DynamicCTCModel(wavlm_config()).eval()
    wav = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 6000])
    with torch.no_grad():
        full = model(wav, lengths)
        same = model(wav, lengths, active=[True] * 4)
        no_first = model(wav, lengths, active=[False, True, True, True], return_hidden=True)
    assert torch.equal(full.log_probs, same.log_probs)
    assert torch.isfinite(no_first.log_probs).all()
    assert not torch.allclose(full.log_probs, no_first.log_probs)


def test_wavlm_loads_torchaudio_state_dict(tmp_path):
    from safetensors.torch import save_file
    from torchaudio.models import wavlm_model
    cfg = wavlm_config()
    ta = wavlm_model(extractor_mode="group_norm", extractor_conv_layer_config=[tuple(s) for s in cfg.extractor_layers],
                     extractor_conv_bias=False, encoder_embed_dim=32, encoder_projection_dropout=0.0,
                     encoder_pos_conv_kernel=8, encoder_pos_conv_groups=2, encoder_num_layers=4, encoder_num_heads=2,
                     encoder_num_buckets=16, encoder_max_distance=64, encoder_attention_dropout=0.0,
                     encoder_ff_interm_features=64, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
                     encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=29)
    path = tmp_path / "wavlm.safetensors"      # a local file, as a researcher would have it
    save_file({k: v.contiguous() for k, v in ta.state_dict().items()}, path)
    model = DynamicCTCModel(cfg).eval()
    assert str(path) in load_wavlm(model, path)
    ta.eval()
    wav = torch.randn(1, 8000)
    with torch.no_grad():
        ours = model(wav, torch.tensor([8000]), return_hidden=True).hidden[-1]
        theirs, _ = ta.extract_features(wav)   # torchaudio's WavLM asserts on lengths
    assert torch.allclose(ours, theirs[-1], atol=1e-4)
    with pytest.raises(ValueError):
        load_wavlm(DynamicCTCModel(tiny_config()), path)


def test_very_short_clips_are_padded_not_crashing(tiny_model):
    import numpy as np
    from dld_core.inference import transcribe
    texts = transcribe(tiny_model, [np.zeros(10, dtype=np.float32), np.zeros(1, dtype=np.float32)])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_sinusoidal_position_encoding_changes_output_and_keeps_gates():
    torch.manual_seed(0)
    model = DynamicCTCModel(tiny_config(pos_enc="sinusoidal")).eval()
    torch.manual_seed(0)
    plain = DynamicCTCModel(tiny_config()).eval()
    x, l = features()
    with torch.no_grad():
        a = model(x, l)
        b = plain(x, l)
        c = model(x, l, active=[True] * 4)
    assert a.log_probs.shape == b.log_probs.shape and not torch.allclose(a.log_probs, b.log_probs)
    assert torch.equal(a.log_probs, c.log_probs)
    with pytest.raises(ValueError, match="pos_enc"):
        tiny_config(pos_enc="learned").validate()


@pytest.mark.parametrize("factor", [2, 4])
def test_subsampling_factor_sets_the_frame_rate(factor):
    torch.manual_seed(0)
    model = DynamicCTCModel(tiny_config(subsampling=factor)).eval()
    for t in (9, 57, 1001):
        x = torch.randn(1, t, 80)
        with torch.no_grad():
            out = model(x, torch.tensor([t]))
        assert out.log_probs.shape[1] == int(out.lengths[0]) == encoder_frames(tiny_config(subsampling=factor), (t - 1) * 160)
    assert out.log_probs.shape[1] in range(1001 // factor - 3, 1001 // factor + 1)


def test_conformer_on_whisper_features_has_a_whisper_teachers_frames():
    """front_end "whisper" + 2x subsampling: exactly the Whisper encoder's frames for any clip length, so a
    conformer student can be distilled from a Whisper teacher frame by frame."""
    from dld_core.inference import recognize
    student = DynamicCTCModel(tiny_config(front_end="whisper", subsampling=2)).eval()
    teacher = DynamicCTCModel(tiny_config(family="whisper", d_model=32, n_heads=2, n_layers=1, ffn_dim=64)).eval()
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (1600, 16000, 16159, 16160, 16321, 40000)]
    s, t = recognize(student, wavs).output, recognize(teacher, wavs).output
    assert s.lengths.tolist() == t.lengths.tolist() and s.log_probs.shape[1] == t.log_probs.shape[1]
    for n in (16000, 16321):
        assert encoder_frames(student.config, n) == int(recognize(teacher, [np.zeros(n, np.float32)]).output.lengths[0])


# ------------------------------------------------------------------ the family interface (families.Family)
def test_every_family_module_satisfies_the_family_protocol():
    """Every hook of families.Family exists in every family module with the Protocol's one signature (e.g.
    load_pretrained(model, source=None) for all: wavlm's took a state dict, whisper's a path)."""
    import inspect

    from dld_core.families import FAMILIES, Family, get_family
    hooks = {name: inspect.signature(getattr(Family, name)) for name in dir(Family)
             if not name.startswith("_") and callable(getattr(Family, name)) and name not in ("Features", "Encoder")}
    assert {"load_pretrained", "compatible_teacher", "module_roles", "gate_choice", "encoder_frames"} <= set(hooks)
    for name in FAMILIES:
        family = get_family(name)
        assert isinstance(family, Family), name
        assert isinstance(family.INPUT, str) and inspect.isclass(family.Features) and inspect.isclass(family.Encoder)
        for hook, protocol in hooks.items():
            wanted = [(p.name, p.kind, p.default) for p in list(protocol.parameters.values())[1:]]    # without self
            got = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(family, hook)).parameters.values()]
            assert got == wanted, f"{name}.{hook}{inspect.signature(getattr(family, hook))}"


def test_encoder_frames_is_what_each_encoder_gives():
    from dld_core.families import get_family
    whisper = ModelConfig(family="whisper", d_model=32, n_layers=2, n_heads=2, ffn_dim=64)
    on_whisper = ModelConfig(family="conformer", n_layers=2, d_model=32, n_heads=2, subsampling=2, front_end="whisper")
    for cfg in (whisper, on_whisper, tiny_config(), wavlm_config()):
        family = get_family(cfg.family)
        model, front = DynamicCTCModel(cfg).eval(), family.Features(cfg)
        for n in (1600, 1601, 8159, 16000, 23457):
            with torch.no_grad():
                out = model(*front(torch.randn(1, n), torch.tensor([n])))
            assert int(out.lengths[0]) == out.log_probs.shape[1] == family.encoder_frames(cfg, n), (cfg.family, n)


def test_compatible_teacher_decides_by_frames_not_by_family():
    """A conformer student on Whisper's log-mel (2x subsampling) lines up with a Whisper teacher frame by frame;
    a conformer on its own log-mel (4x or 2x) does not, nor a teacher with other CTC tokens."""
    import dataclasses

    from dld_core.families import compatible_teacher
    whisper = ModelConfig(family="whisper", d_model=32, n_layers=2, n_heads=2, ffn_dim=64)
    student = ModelConfig(family="conformer", n_layers=2, d_model=32, n_heads=2, subsampling=2, front_end="whisper")
    assert compatible_teacher(student, whisper) and compatible_teacher(whisper, whisper)
    assert compatible_teacher(student, student)
    assert not compatible_teacher(tiny_config(), whisper)                                  # 4x: 25 frames/s
    assert not compatible_teacher(dataclasses.replace(student, front_end="logmel"), whisper)    # other frames
    assert not compatible_teacher(student, dataclasses.replace(whisper, vocab=list(whisper.vocab) + ["-"]))
    assert compatible_teacher(wavlm_config(), wavlm_config()) and not compatible_teacher(wavlm_config(), tiny_config())


def test_pretrained_weights_have_one_hook_for_every_family(tmp_path):
    """load_pretrained(model, source) everywhere: a family without bundled weights refuses in one line."""
    from dld_core.families import get_family
    from dld_core.safe_io import CheckpointError
    with pytest.raises(CheckpointError, match="no pretrained weights"):
        get_family("conformer").load_pretrained(DynamicCTCModel(tiny_config()), "default")
    with pytest.raises(CheckpointError, match="no bundled weights"):
        get_family("wavlm").load_pretrained(DynamicCTCModel(wavlm_config()), None)
    with pytest.raises(ValueError, match="--pretrained is not supported for the conformer family"):
        get_family("conformer").config_from_pretrained("default")


def test_the_gate_choice_is_the_familys():
    """The Train page offers sub-block or whole-block gates where the teacher's family has them (whisper)."""
    from dld_core.families import get_family
    whisper = ModelConfig(family="whisper", d_model=32, n_layers=2, n_heads=2, ffn_dim=64)
    choice = get_family("whisper").gate_choice(whisper)
    assert list(choice.labels) == ["sub_block", "block"] and "attention" in choice.help
    assert get_family("conformer").gate_choice(tiny_config()) is None
    assert get_family("wavlm").gate_choice(wavlm_config()) is None


def test_dld_refuses_a_teacher_whose_frames_do_not_line_up(tmp_path, tiny_corpus):
    """Training decides with the same hook as the Importance page: a conformer student on its own log-mel (25
    frames/s) cannot be distilled from a Whisper teacher (50), one on Whisper's log-mel with 2x subsampling can."""
    from dld_core.checkpoint import save_checkpoint
    from dld_core.config import TrainConfig
    from dld_core.safe_io import CheckpointError
    from dld_core.train import train
    teacher = tmp_path / "teacher"
    save_checkpoint(teacher, DynamicCTCModel(ModelConfig(family="whisper", d_model=32, n_layers=2, n_heads=2,
                                                         ffn_dim=64, max_frames=400)), recipe="teacher")
    student = {"family": "conformer", "n_layers": 2, "d_model": 32, "n_heads": 2, "ffn_dim": 64}
    run = dict(teacher=str(teacher), progress=False,
               train_cfg=TrainConfig(recipe="dld", epochs=1, max_steps=1, batch_seconds=4.0))
    with pytest.raises(CheckpointError, match="do not line up"):
        train(tiny_corpus["train"], tiny_corpus["valid"], tmp_path / "own", model_overrides=student, **run)
    train(tiny_corpus["train"], tiny_corpus["valid"], tmp_path / "lined_up", **run,
          model_overrides={**student, "subsampling": 2, "front_end": "whisper"})
    assert (tmp_path / "lined_up" / "config.json").is_file()


def test_one_gate_loop_serves_forward_and_its_step_sees_every_module(tiny_model):
    """model.encode (embed -> run_modules -> finish) is what forward runs; `step` sees every module, a
    skipped one with its input passed through unchanged."""
    from dld_core.model import encode
    x, l = features()
    seen = []

    def step(i, on, before, after):
        seen.append((i, on, torch.equal(before, after)))
        return after
    with torch.no_grad():
        hidden, out_lengths = encode(tiny_model.encoder, x, l, [True, False, True, False], step)
        out = tiny_model(x, l, active=[0, 2])
    assert torch.equal(tiny_model.log_probs(hidden), out.log_probs) and torch.equal(out_lengths, out.lengths)
    assert [(i, on) for i, on, _ in seen] == [(0, True), (1, False), (2, True), (3, False)]
    assert [same for _, on, same in seen if not on] == [True, True]
