"""Encoder-decoder students (dld_core/seq2seq.py, TrainConfig.objective "seq2seq"): the gated Whisper encoder with
Whisper's text decoder, trained through dld_core/train.py's one loop. Tiny models throughout (a 2-block encoder and a
1-block decoder written as a CTranslate2 folder next to the real tokenizer); one test loads the real tiny.en."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from dld_core import cli, pretrained
from dld_core import masks as M
from dld_core import seq2seq
from dld_core.checkpoint import load_checkpoint, save_checkpoint
from dld_core.config import ModelConfig, TrainConfig
from dld_core.families import whisper as W
from dld_core.families.whisper_decoder import TextDecoder
from dld_core.families.whisper_decoding import WhisperSeq2Seq, spoken_text
from dld_core.losses import distillation_kl, distillation_kl_top_k, state_distance
from dld_core.model import DynamicCTCModel
from dld_core.train import train
from tests.helpers import REPO, ddp_train, write_tiny_corpus
from tests.test_crash_resume import ENV, cli_in_process, resume_model_weights, start_parked
from tests.test_whisper_decoder import write_whisper_folder

# a 10 s "30 s window" (max_frames 500; evaluate counts GFLOPs for 10 s): the tiny corpus's clips are at most 1.4 s
TINY_ENCODER = dict(family="whisper", d_model=16, n_layers=2, n_heads=2, ffn_dim=32, max_frames=500, dropout=0.0)
TINY_DECODER = dict(n_vocab=51864, n_ctx=32, d_model=16, n_layers=1, n_heads=2, ffn_dim=32)
FAST = dict(objective="seq2seq", lr=3e-3, warmup_steps=1, batch_seconds=8.0, spec_augment=False)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    """A CTranslate2 Whisper folder holding a tiny random encoder and decoder (float16, as converted models are)
    and the bundled tiny.en's tokenizer.json and config.json."""
    torch.manual_seed(0)
    encoder = W.Encoder(ModelConfig(**TINY_ENCODER))
    decoder = TextDecoder(**TINY_DECODER)
    with torch.no_grad():
        decoder.token_embedding.weight.mul_(0.2)          # moderate logits: a learnable start
    return write_whisper_folder(tmp_path_factory.mktemp("tiny_whisper"), encoder, decoder)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return write_tiny_corpus(tmp_path_factory.mktemp("s2s_corpus"), n=12)


def student(folder: Path) -> DynamicCTCModel:
    """A fresh seq2seq student of the tiny folder: its encoder and decoder, a new CTC head."""
    cfg = seq2seq.with_decoder(W.config_from_pretrained(folder, dropout=0.0), str(folder))
    model = DynamicCTCModel(cfg)
    W.load_pretrained(model, folder)
    seq2seq.load_decoder(model, str(folder))
    return model


def step_log(out: Path) -> list[dict]:
    return [e for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if e["event"] == "step"]


# -------------------------------------------------------------------------------------------- targets, losses

def test_token_batch_is_prompt_text_and_endoftext():
    tok = seq2seq._tokenizer(51864)
    inputs, targets, lengths = seq2seq.token_batch(tok, ["and god said", "light"], n_ctx=448, device="cpu")
    said, light = tok.encode(" and god said"), tok.encode(" light")
    assert inputs.tolist() == [[50257, 50362, *said], [50257, 50362, *light] + [tok.eot] * (len(said) - len(light))]
    assert targets[0].tolist() == [*said, tok.eot] and targets[1, : len(light) + 1].tolist() == [*light, tok.eot]
    assert lengths.tolist() == [len(said) + 1, len(light) + 1]
    cut, _, cut_lengths = seq2seq.token_batch(tok, ["one two three four five six"], n_ctx=5, device="cpu")
    assert cut.shape == (1, 5) and cut_lengths.tolist() == [4]      # the prompt and 3 text tokens; then <|endoftext|>


def test_seq2seq_batches_hold_a_bounded_number_of_clips():
    """A clip costs the text decoder 1500 encoder frames however short it is: seq2seq batches hold at most
    batch_clips clips (default 32), validation and evaluation batches BATCH_CLIPS."""
    from dld_core.data import bucket_batches
    from dld_core.evaluate import length_batches
    cfg = TrainConfig(recipe="dld", objective="seq2seq")
    assert (cfg.batch_clips, cfg.pretrained) == (32, "default") and TrainConfig().batch_clips == 0
    durations = [0.3] * 100 + [5.0] * 10
    batches = bucket_batches(durations, 80.0, seed=0, epoch=0, max_items=32)
    assert sorted(i for b in batches for i in b) == list(range(110)) and max(len(b) for b in batches) == 32
    assert max(len(b) for b in bucket_batches(durations, 80.0, seed=0, epoch=0)) == 100        # unbounded: ctc
    assert max(len(b) for b in length_batches(durations, 120.0, seq2seq.BATCH_CLIPS)) == seq2seq.BATCH_CLIPS


def test_top_k_kl_is_the_whole_kl_with_every_token_and_zero_for_equal_inputs():
    torch.manual_seed(0)
    teacher, student_logits = torch.randn(2, 5, 40), torch.randn(2, 5, 40)
    lengths = torch.tensor([5, 3])
    tau = 2.0
    top = torch.log_softmax(teacher / tau, -1)
    whole = distillation_kl(teacher, student_logits, lengths, tau)
    ids = torch.arange(40).expand(2, 5, 40)
    assert distillation_kl_top_k(top, ids, student_logits, lengths, tau).item() == pytest.approx(whole.item(), rel=1e-5)
    values, k_ids = top.topk(8, -1)
    partial = distillation_kl_top_k(values, k_ids, student_logits, lengths, tau)
    assert 0 < partial.item() <= whole.item() + 1e-6                        # K + 1 outcomes: a lower bound
    assert distillation_kl_top_k(values, k_ids, teacher, lengths, tau).item() == pytest.approx(0.0, abs=1e-6)
    grad = student_logits.clone().requires_grad_(True)
    distillation_kl_top_k(top, ids, grad, lengths, tau).backward()          # K = V: no NaN from the empty rest
    assert torch.isfinite(grad.grad).all()


def test_the_kl_is_zero_when_the_student_is_the_teacher_at_full_depth(tiny_whisper, corpus):
    """The student initialised from the pretrained folder, padded input, no dropout, every module: its token
    posteriors are the teacher's, so KL = 0 (whole vocabulary) or ~0 (top-K, fp16 cache); the CE is the same."""
    from dld_core.data import SpeechDataset
    from dld_core.features import feature_extractor
    from dld_core.tokenizer import CharTokenizer

    model = student(tiny_whisper)
    data = SpeechDataset(str(corpus["train"]), CharTokenizer(model.config.vocab))
    indices = [0, 1, 2]
    batch = data.collate(indices)
    feats, lengths = feature_extractor(model.config)(batch.wavs, batch.wav_lengths)
    kl = {}
    for top_k in (0, 16):
        cfg = TrainConfig(recipe="dld", pretrained=str(tiny_whisper), kd_top_k=top_k, **FAST)
        objective = seq2seq.Seq2SeqObjective(cfg, model, "cpu")
        with torch.no_grad():
            losses = objective.losses(objective.network(model).eval(), batch, indices, feats, lengths, None)
            dropped = objective.losses(objective.network(model).eval(), batch, indices, feats, lengths, [0, 1])
        kl[top_k] = losses["kl"].item(), dropped["kl"].item()
        assert losses["ce"].item() > 1.0 and losses["ctc"].item() > 0
    assert abs(kl[0][0]) < 1e-5 and kl[0][1] > 1e-3                        # half the encoder: not the teacher
    assert abs(kl[16][0]) < 1e-4 and 10 * abs(kl[16][0]) < kl[16][1] <= kl[0][1] + 1e-6     # K + 1 outcomes: a bound


def test_a_fresh_student_fine_tunes_the_pretrained_whisper_without_dropout(tiny_whisper):
    """Whisper was trained without dropout; 0.1 on every residual branch broke tiny.en (full-depth cross-entropy
    1.8 -> 7.0 on a training batch), so a fresh seq2seq student has none unless --dropout asks for it."""
    from dld_core.train import student_config
    cfg = TrainConfig(recipe="ld", pretrained=str(tiny_whisper), **FAST)
    assert student_config(None, None, {}, cfg).dropout == 0.0
    assert student_config(None, None, {"dropout": 0.1}, cfg).dropout == 0.1


def test_state_distance_averages_the_clip_and_its_padding_apart():
    student, teacher = torch.zeros(2, 10, 4), torch.zeros(2, 10, 4)
    lengths = torch.tensor([2, 10])
    student[0, :2], student[1] = 1.0, 1.0                # every clip frame 1 away: its mean is 1
    assert state_distance(student, teacher, lengths).item() == pytest.approx(1.0)
    student[0, 2:] = 3.0                                 # the 8 padding frames of row 0: their own mean, 9
    assert state_distance(student, teacher, lengths).item() == pytest.approx(10.0)
    assert state_distance(student, teacher, torch.tensor([10, 10])).item() == pytest.approx((2 + 72 + 10) / 20)


@pytest.mark.parametrize("mode", ["clip", "padded"])
def test_encoder_state_distillation_is_zero_for_the_teacher_and_runs_no_decoder_alone(tiny_whisper, corpus,
                                                                                      monkeypatch, mode):
    """kd_states: the student initialised from the pretrained folder is at distance 0 from the teacher's encoder at
    full depth (in either input mode, on the un-augmented features), not with a module dropped; with ce_weight 0 and
    lambda 0 the text decoder is not run, and the loss still reaches the encoder."""
    from dld_core.data import SpeechDataset
    from dld_core.features import feature_extractor
    from dld_core.tokenizer import CharTokenizer

    model = student(tiny_whisper)
    data = SpeechDataset(str(corpus["train"]), CharTokenizer(model.config.vocab))
    batch = data.collate([0, 1, 2])
    feats, lengths = feature_extractor(model.config)(batch.wavs, batch.wav_lengths)
    cfg = TrainConfig(recipe="dld", pretrained=str(tiny_whisper), kd_states=2.0, ce_weight=0.0, kd_lambda=0.0,
                      ctc_weight=0.0, input_mode=mode, **FAST)
    objective = seq2seq.Seq2SeqObjective(cfg, model, "cpu")
    monkeypatch.setattr(type(model.decoder), "forward", lambda *a, **k: pytest.fail("the decoder ran"))
    net = objective.network(model).eval()
    with torch.no_grad():
        full = objective.losses(net, batch, [0, 1, 2], feats, lengths, None)
    assert full["states"].item() < 1e-8 and full["ce"].item() == full["kl"].item() == 0.0
    dropped = objective.losses(net, batch, [0, 1, 2], feats, lengths, [0, 2, 3])
    assert dropped["states"].item() > 1e-3 and dropped["loss"].item() == pytest.approx(2 * dropped["states"].item())
    dropped["loss"].backward()
    assert model.encoder.blocks[1].mlp[0].weight.grad.abs().sum() > 0 and model.encoder.blocks[0].mlp[0].weight.grad is None


def test_the_teacher_top_k_cache_survives_a_new_teacher_and_a_damaged_file(tmp_path, tiny_whisper, corpus):
    """kd_top_k with a cache folder: a second teacher (a resumed run) reads a batch's top-K from its file without
    running the model; a damaged file is recomputed and rewritten, not trusted."""
    from dld_core.data import SpeechDataset
    from dld_core.tokenizer import CharTokenizer

    data = SpeechDataset(str(corpus["train"]), CharTokenizer(student(tiny_whisper).config.vocab))
    batch = data.collate([3, 4])
    tokens, _, _ = seq2seq.token_batch(seq2seq._tokenizer(51864), batch.texts, 448, "cpu")
    first = seq2seq.PretrainedTeacher(str(tiny_whisper), "cpu", tau=2.0, top_k=8, cache_dir=tmp_path)
    want = first.top((3, 4), batch.wavs, batch.wav_lengths, tokens, 2)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1

    second = seq2seq.PretrainedTeacher(str(tiny_whisper), "cpu", tau=2.0, top_k=8, cache_dir=tmp_path)
    second.logits = None                                     # the model must not run: the file answers
    got = second.top((3, 4), batch.wavs, batch.wav_lengths, tokens, 2)
    assert all(torch.equal(a, b) for a, b in zip(want, got))

    files[0].write_bytes(b"not a safetensors file")
    third = seq2seq.PretrainedTeacher(str(tiny_whisper), "cpu", tau=2.0, top_k=8, cache_dir=tmp_path)
    got = third.top((3, 4), batch.wavs, batch.wav_lengths, tokens, 2)
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert files[0].read_bytes()[:8] != b"not a sa"                # rewritten


def test_a_clip_alone_teacher_reads_the_clip_then_the_padding_tail_and_caches_apart(tmp_path, tiny_whisper, corpus):
    """--teacher-input-mode clip: the teacher's logits are its decoder's on memory(clip) (the clip's frames, then
    the output of zero frames; the tail's keys once per batch), not the padded ones, and its cached top-K files are
    not a padded teacher's."""
    from dld_core.data import SpeechDataset
    from dld_core.tokenizer import CharTokenizer

    data = SpeechDataset(str(corpus["train"]), CharTokenizer(student(tiny_whisper).config.vocab))
    batch = data.collate([3, 4, 5])
    tokens, _, _ = seq2seq.token_batch(seq2seq._tokenizer(51864), batch.texts, 32, "cpu")
    clip = seq2seq.PretrainedTeacher(str(tiny_whisper), "cpu", tau=2.0, top_k=8, cache_dir=tmp_path, mode="clip")
    padded = seq2seq.PretrainedTeacher(str(tiny_whisper), "cpu", tau=2.0, top_k=8, cache_dir=tmp_path)
    decoder = clip.model.decoder
    with torch.no_grad():
        memory = clip.memory(batch.wavs, batch.wav_lengths, "clip")
        want = decoder(tokens, decoder.start(memory), cache=False)[:, 1:]
    got = clip.logits(batch.wavs, batch.wav_lengths, tokens, 2)
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, padded.logits(batch.wavs, batch.wav_lengths, tokens, 2), atol=1e-2)
    clip.top((3, 4, 5), batch.wavs, batch.wav_lengths, tokens, 2)
    padded.top((3, 4, 5), batch.wavs, batch.wav_lengths, tokens, 2)
    names = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(names) == 2 and sum("_clip_" in n for n in names) == 1
    with pytest.raises(ValueError, match="unknown input mode"):
        TrainConfig(recipe="dld", teacher_input_mode="chunked", **FAST).validate()


# ----------------------------------------------------------------------------------------------------- training

@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["ld", "dld"])
def test_ld_and_dld_students_learn_a_repeated_batch(tmp_path, tiny_whisper, corpus, recipe):
    """One batch, seen 8 times: the loss goes down; the checkpoint is an encoder-decoder student; validation
    decoded with the text decoder at full depth and at the half mask."""
    train_rows = corpus["train"].read_text().splitlines()[:3]
    manifest = corpus["train"].parent / "three.jsonl"
    manifest.write_text("\n".join(train_rows) + "\n")
    out = tmp_path / recipe
    metrics = train(str(manifest), str(corpus["valid"]), out, progress=False, log_every=1,
                    train_cfg=TrainConfig(recipe=recipe, pretrained=str(tiny_whisper), epochs=8, keep_prob=1.0,
                                          batch_seconds=60.0, **{k: v for k, v in FAST.items() if k != "batch_seconds"}))
    steps = step_log(out)
    assert metrics["finished"] and len(steps) == 8
    losses = [s["loss"] for s in steps]
    assert losses[-1] < 0.85 * losses[0] and min(losses[4:]) < min(losses[:4]), losses      # measured (ld): -21%
    assert all(s["ce"] > 0 and s["ctc"] > 0 for s in steps)
    if recipe == "dld":
        assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-4)          # the first step's student is the teacher
        assert max(s["kl"] for s in steps) > 1e-3
    else:
        assert all(s["kl"] == 0 for s in steps)
    assert all(len(h["valid_wer_masks"]) == 2 for h in metrics["history"])
    ckpt = load_checkpoint(out)
    assert ckpt.config.decoder == {k: TINY_DECODER[k] for k in W.DECODER_DIMS}
    assert ckpt.info["train"]["objective"] == "seq2seq" and "text decoder" in ckpt.info["pretrained"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_one_dld_student(tmp_path, tiny_whisper, corpus):
    """torchrun with two CPU processes (gloo): both ranks end with the same weights, after the same number of
    steps, with the teacher's top-K cache written by both (each rank's own batches)."""
    cfg = dict(recipe="dld", pretrained=str(tiny_whisper), epochs=2, keep_prob=0.5, kd_top_k=8, **FAST)
    r0, r1 = ddp_train(tmp_path, f"""T.train({str(corpus["train"])!r}, {str(corpus["valid"])!r}, {str(tmp_path / "out")!r},
            progress=False, train_cfg=TrainConfig(**{cfg!r}))""", imports="from dld_core.config import TrainConfig")
    assert r0 == r1 and int(r0[1]) > 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == int(r0[1]) and metrics["finished"]
    ranks, steps_per_epoch = 2, int(r0[1]) // cfg["epochs"]             # each rank caches its own batches, once
    assert len(list((tmp_path / "out" / seq2seq.TEACHER_CACHE).glob("*.safetensors"))) == ranks * steps_per_epoch


def test_gates_protected_modules_validation_masks_and_a_frozen_decoder(tmp_path, tiny_whisper, corpus, monkeypatch):
    seen = []
    forward = seq2seq.StudentNet.forward

    def recording(self, features, lengths, active, tokens=None):
        seen.append(list(active))
        return forward(self, features, lengths, active, tokens)
    monkeypatch.setattr(seq2seq.StudentNet, "forward", recording)
    validated = []
    real_validate = seq2seq.validate
    monkeypatch.setattr(seq2seq, "validate", lambda model, data, masks, mode: validated.append((masks, mode)) or
                        real_validate(model, data, masks, mode))
    before = student(tiny_whisper).decoder.state_dict()
    out = tmp_path / "ld"
    train(str(corpus["train"]), str(corpus["valid"]), out, progress=False,
          train_cfg=TrainConfig(recipe="ld", pretrained=str(tiny_whisper), epochs=2, protected="A1",
                                input_mode="clip", freeze_decoder=True, keep_prob=0.5, **FAST))
    assert len(seen) >= 4 and all(g[0] for g in seen) and any(not all(g) for g in seen)
    assert seen == [M.training_gates([0.5] * 4, 0, s, M.Mask.parse("A1", ["A1", "M1", "A2", "M2"]))
                    for s in range(len(seen))]
    half = M.half_mask([0, 0, 1, 1], [0])
    assert validated == [([None, half], "clip")] * 2 and half == [0, 1]
    ckpt = load_checkpoint(out)
    after = ckpt.model.decoder.state_dict()
    assert all(torch.equal(after[k], before[k].half().float()) for k in before)       # frozen (fp16 export)
    assert ckpt.info["train"]["input_mode"] == "clip"


@pytest.mark.slow
def test_resume_after_sigterm_equals_an_uninterrupted_run(tmp_path, tiny_whisper, corpus):
    """dld with the teacher's top-K cache and the clip input: SIGTERM mid-epoch 2 (exit 130, a resumable
    checkpoint), --resume, and the weights equal an uninterrupted run's, bit for bit."""
    argv = ["train", "--recipe", "dld", "--objective", "seq2seq", "--pretrained", str(tiny_whisper),
            "--train", str(corpus["train"]), "--valid", str(corpus["valid"]), "--epochs", "2", "--input-mode", "clip",
            "--kd-top-k", "8", "--lr", "3e-3", "--warmup", "1", "--batch-seconds", "8", "--protected", "A1",
            "--threads", "1", "--quiet"]
    reference = tmp_path / "reference"
    rc, _, err = cli_in_process([*argv, "--out", str(reference)])
    assert rc == 0, err
    steps = json.loads((reference / "metrics.json").read_text())["steps"]
    assert steps >= 4
    out = tmp_path / "run"
    proc, marker = start_parked(tmp_path, "step", steps // 2 + 1, [*argv, "--out", str(out)])
    try:
        os.kill(proc.pid, signal.SIGTERM)
        Path(str(marker) + ".release").write_text("")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-1500:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert json.loads((out / "resume" / "state.json").read_text())["train_state"]["step"] == steps // 2 + 2
    rc, _, err = cli_in_process([*argv, "--out", str(out), "--resume"])
    assert rc == 0, err
    a, b = resume_model_weights(out), resume_model_weights(reference)
    assert a.keys() == b.keys() and any(k.startswith("model.decoder.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "metrics.json").read_text())["steps"] == steps


# ------------------------------------------------------------------------------------- checkpoints, evaluation

def test_checkpoint_round_trip(tmp_path, tiny_whisper, corpus):
    model = student(tiny_whisper).eval()
    folder = save_checkpoint(tmp_path / "s2s", model, recipe="dld", metadata={"train": {"protected": "A1"}})
    info = json.loads((folder / "config.json").read_text())
    assert info["model"]["decoder"] == {k: TINY_DECODER[k] for k in W.DECODER_DIMS} and info["weights_dtype"] == "float16"
    assert any(k.startswith("decoder.") for k in load_file(folder / "model.safetensors"))
    ckpt = load_checkpoint(folder)
    for name, value in model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[name], value.half().float()), name
    wavs = [sf.read(corpus["test"].parent / json.loads(line)["audio_filepath"], dtype="float32")[0]
            for line in corpus["test"].read_text().splitlines()]
    from dld_core.inference import featurize
    feats, lengths = featurize(ckpt.model, wavs)
    out = ckpt.model(feats, lengths, active=[0, 1])                      # still a CTC model
    assert out.log_probs.shape[-1] == len(ckpt.config.vocab)
    text = seq2seq.text_model(ckpt.model)
    assert isinstance(text, WhisperSeq2Seq)
    for mode in ("padded", "clip"):
        greedy = text.transcribe(wavs, active=[0, 1], mode=mode)
        from dld_core.families.whisper_decoding import DecodeOptions
        beam = text.transcribe(wavs, active=[0, 1], mode=mode, options=DecodeOptions(beam_size=3))
        assert len(greedy) == len(beam) == len(wavs) and all(h.stop in ("eot", "length", "repeat") for h in greedy)
    # a CTC-only checkpoint has no text decoder
    ctc = DynamicCTCModel(ModelConfig(**TINY_ENCODER))
    assert ctc.decoder is None
    with pytest.raises(ValueError, match="no text decoder"):
        seq2seq.text_model(ctc)
    with pytest.raises(ValueError, match="whisper-family field"):
        ModelConfig(family="conformer", decoder=dict(model.config.decoder)).validate()
    with pytest.raises(ValueError, match="decoder"):
        ModelConfig(**{**TINY_ENCODER, "decoder": {"n_vocab": 5}}).validate()


def test_evaluate_cli_with_the_text_decoder(tmp_path, tiny_whisper, corpus):
    folder = save_checkpoint(tmp_path / "s2s", student(tiny_whisper), recipe="ld",
                             metadata={"train": {"protected": "A1", "input_mode": "clip"}})
    template = tmp_path / "eval.{decoder}.json"
    rc, stdout, err = cli_in_process(["evaluate", "--checkpoint", str(folder), "--manifest", str(corpus["test"]),
                                      "--decoder", "whisper,whisper-beam,whisper-joint", "--beam-size", "2",
                                      "--keep", "4,2", "--masks", "2", "--json", str(template)])
    assert rc == 0, err
    greedy, beam, joint = (json.loads(Path(str(template).replace("{decoder}", d)).read_text())
                           for d in ("whisper", "whisper-beam", "whisper-joint"))
    assert greedy["input_mode"] == "clip" and greedy["beam_size"] == 1 and beam["beam_size"] == joint["beam_size"] == 2
    assert beam["ctc_weight"] == 0 and joint["ctc_weight"] == seq2seq.JOINT_CTC_WEIGHT
    assert greedy["protected"] == ["A1"] and [lv["kept"] for lv in greedy["levels"]] == [4, 2]
    for level in greedy["levels"] + beam["levels"]:
        assert level["wer"] >= 0 and level["cer"] >= 0 and level["latency_ms"] > 0
        assert all(0 in m for m in level["masks"])
    assert len(greedy["levels"][1]["masks"]) == 2
    assert "WER=" in stdout and "CER=" in stdout


def test_bad_options_are_one_line_errors(tmp_path, tiny_whisper, corpus):
    base = ["train", "--train", str(corpus["train"]), "--valid", str(corpus["valid"]), "--out", str(tmp_path / "o"),
            "--objective", "seq2seq", "--pretrained", str(tiny_whisper), "--quiet"]
    cases = {
        "whisper family": [*base, "--recipe", "ld", "--family", "conformer"],
        "trains students": [*base, "--recipe", "teacher"],
        "not be negative": [*base, "--recipe", "ld", "--ctc-weight", "-1"],
    }
    torch.manual_seed(0)
    encoder, decoder = W.Encoder(ModelConfig(**TINY_ENCODER)), TextDecoder(**{**TINY_DECODER, "n_vocab": 51865})
    multilingual = write_whisper_folder(tmp_path / "multilingual", encoder, decoder)
    cases["English-only"] = [*base, "--recipe", "ld", "--pretrained", str(multilingual)]
    for expected, argv in cases.items():
        rc, stdout, err = cli_in_process(argv)
        assert rc == 2 and stdout == "" and len(err.strip().splitlines()) == 1 and expected in err, (expected, err)
    ctc = save_checkpoint(tmp_path / "ctc", DynamicCTCModel(ModelConfig(**TINY_ENCODER)), recipe="ld")
    rc, _, err = cli_in_process(["evaluate", "--checkpoint", str(ctc), "--manifest", str(corpus["test"]),
                                 "--decoder", "whisper", "--json", str(tmp_path / "e.json")])
    assert rc == 2 and err.strip().splitlines() == ["error: this model has no text decoder (train one with "
                                                    "--objective seq2seq)"]
    for argv in (["--decoder", "greedy,whisper"], ["--input-mode", "chunked"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.build_parser().parse_args(["evaluate", "--manifest", "m", "--json", "j", *argv])
        assert exit_info.value.code == 2


def test_transcribe_cli_with_the_text_decoder(tmp_path, tiny_whisper, corpus):
    model = student(tiny_whisper).eval()
    folder = save_checkpoint(tmp_path / "s2s", model, recipe="ld", metadata={"train": {"input_mode": "clip"}})
    rows = [json.loads(line) for line in corpus["test"].read_text().splitlines()]
    paths = [str(corpus["test"].parent / r["audio_filepath"]) for r in rows]
    wavs = [sf.read(p, dtype="float32")[0] for p in paths]
    text = seq2seq.text_model(load_checkpoint(folder).model)
    from dld_core.families.whisper_decoding import DecodeOptions
    cases = {("whisper", "clip"): ([], DecodeOptions()),            # the trained input mode by default
             ("whisper-beam", "padded"): (["--input-mode", "padded", "--beam-size", "2"], DecodeOptions(beam_size=2))}
    for (decoder, mode), (argv, options) in cases.items():
        rc, stdout, err = cli_in_process(["transcribe", "--checkpoint", str(folder), "--decoder", decoder,
                                          "--drop", "M2", *argv, *paths])
        assert rc == 0, err
        expected = [h.text for h in text.transcribe(wavs, active=[0, 1, 2], mode=mode, options=options)]
        assert stdout.splitlines() == [f"{p}\t{t}" for p, t in zip(paths, expected)], (decoder, mode)
    ctc = save_checkpoint(tmp_path / "ctc", DynamicCTCModel(ModelConfig(**TINY_ENCODER)), recipe="ld")
    rc, stdout, err = cli_in_process(["transcribe", "--checkpoint", str(ctc), "--decoder", "whisper", paths[0]])
    assert rc == 2 and stdout == "" and err.strip().splitlines() == [
        "error: this model has no text decoder (train one with --objective seq2seq)"]
    rc, _, err = cli_in_process(["transcribe", "--checkpoint", str(folder), "--decoder", "whisper-beam",
                                 "--beam-size", "0", paths[0]])
    assert rc == 2 and err.strip().splitlines() == ["error: --beam-size must be at least 1, got 0"]


def test_bench_reports_the_text_decoder_per_level_and_input_mode(tmp_path, tiny_whisper):
    from dld_core.bench import bench
    folder = save_checkpoint(tmp_path / "s2s", student(tiny_whisper), recipe="ld")
    out = tmp_path / "bench.json"
    rc, stdout, err = cli_in_process(["bench", "--checkpoint", str(folder), "--seconds", "2", "--json", str(out)])
    assert rc == 0, err
    result = json.loads(out.read_text())
    text = result["text_decoder"]
    assert list(text["modes"]) == ["padded", "clip"]
    for rows in text["modes"].values():
        assert [r["kept"] for r in rows] == [lv["kept"] for lv in result["levels"]] == [4, 3, 2, 1]
        assert [r["mask"] for r in rows] == [lv["mask"] for lv in result["levels"]]
        for r in rows:
            assert r["latency_ms"] == pytest.approx(r["encode_ms"] + r["decode_ms"]) and r["encode_ms"] > 0
            assert r["stop"] in ("eot", "length", "repeat") and r["tokens"] <= 8 * 2 + 12
    assert "text decoder, greedy, 2 s of speech, 1 thread(s)" in stdout
    assert sum(line.lstrip().startswith(("padded", "clip")) for line in stdout.splitlines()) == 8
    ctc = bench(DynamicCTCModel(ModelConfig(**TINY_ENCODER)), seconds=2, repeats=1, warmup=0, levels=[4])
    assert "text_decoder" not in ctc


def test_timed_transcript_is_the_transcriber_s_text_with_its_latency(tiny_whisper, corpus):
    """The app's Inspect page: one clip by the text decoder with a mask, greedy or beam, in an input mode, timed."""
    rows = [json.loads(line) for line in corpus["test"].read_text().splitlines()]
    wav = sf.read(corpus["test"].parent / rows[0]["audio_filepath"], dtype="float32")[0]
    model = student(tiny_whisper).eval()
    ctc = DynamicCTCModel(ModelConfig(**TINY_ENCODER))
    assert seq2seq.has_text_decoder(model) and not seq2seq.has_text_decoder(ctc)
    for decoder, mode in (("whisper", "clip"), ("whisper-beam", "padded")):
        out = seq2seq.timed_transcript(model, wav, [True, False, True, True], decoder, mode, beam_size=2, repeats=2)
        (expected,) = seq2seq.text_transcriber(model, decoder, mode, beam_size=2)([wav], [0, 2, 3])
        assert (out["text"], out["decoder"], out["mode"]) == (expected, decoder, mode)
        assert out["spoken"] == spoken_text(expected) and out["stop"] in ("eot", "length", "repeat")
        assert out["latency_ms"] == pytest.approx(out["encode_ms"] + out["decode_ms"]) and out["encode_ms"] > 0
    with pytest.raises(ValueError, match="no text decoder"):
        seq2seq.timed_transcript(ctc, wav)


def test_token_drop_one_kl(tmp_path, tiny_whisper, corpus):
    rows = [json.loads(line) for line in corpus["test"].read_text().splitlines()]
    wavs = [sf.read(corpus["test"].parent / r["audio_filepath"], dtype="float32")[0] for r in rows]
    model = student(tiny_whisper).eval()
    text = seq2seq.text_model(model)
    full = seq2seq.token_drop_one_kl(model, wavs)                          # every module, clip mode, hypotheses
    assert [m["name"] for m in full["modules"]] == ["A1", "M1", "A2", "M2"] and full["targets"] == "hypothesis"
    assert all(m["kl"] > 1e-6 and len(m["texts"]) == len(wavs) for m in full["modules"])   # a real drop
    hyps = text.transcribe(wavs, mode="clip")
    assert full["texts"] == [h.text for h in hyps] and full["tokens"] == sum(len(h.tokens) + 1 for h in hyps)
    dropped = text.transcribe(wavs, active=[1, 2, 3], mode="clip")
    assert full["modules"][0]["texts"] == [h.text for h in dropped]
    # one entry per kept module; against the references
    half = seq2seq.token_drop_one_kl(model, wavs, mask=[0, 1, 2], mode="padded", reference=[r["text"] for r in rows])
    assert half["kept_names"] == ["A1", "M1", "A2"] and [m["index"] for m in half["modules"]] == [0, 1, 2]
    tokenizer = seq2seq.tokenizer_for(model)
    assert half["targets"] == "reference" and half["tokens"] == sum(len(tokenizer.encode(" " + r["text"])) + 1
                                                                      for r in rows)
    assert seq2seq.token_drop_one_kl(model, wavs, mask=[])["modules"] == []
    # a module that adds nothing (its output projection zero): dropping it is the identical model, KL 0
    with torch.no_grad():
        model.encoder.blocks[1].mlp[2].weight.zero_()
        model.encoder.blocks[1].mlp[2].bias.zero_()
    same = seq2seq.token_drop_one_kl(model, wavs)
    assert same["modules"][3]["kl"] == 0.0 and same["modules"][3]["texts"] == same["texts"]
    assert all(m["kl"] > 1e-6 for m in same["modules"][:3])
    with pytest.raises(ValueError, match="1 reference texts for 2 clips"):
        seq2seq.token_drop_one_kl(model, wavs, reference=["a"])


def test_importance_cli_token_kl(tmp_path, tiny_whisper, corpus):
    folder = save_checkpoint(tmp_path / "s2s", student(tiny_whisper), recipe="ld",
                             metadata={"train": {"input_mode": "clip"}})
    out = tmp_path / "token_kl.json"
    for targets in ([], ["reference"]):
        rc, stdout, err = cli_in_process(["importance", "--checkpoint", str(folder), "--manifest", str(corpus["test"]),
                                          "--drop", "M2", "--token-kl", *targets, "--json", str(out)])
        assert rc == 0, err
        report = json.loads(out.read_text())
        assert report["mode"] == "clip" and report["targets"] == (targets or ["hypothesis"])[0]
        assert [m["name"] for m in report["modules"]] == ["A1", "M1", "A2"] and report["utterances"] == 2
        assert report["module_names"] == ["A1", "M1", "A2", "M2"] and all(m["kl"] > 0 for m in report["modules"])
        assert len([line for line in stdout.splitlines() if line.startswith("drop ")]) == 3
    ctc = save_checkpoint(tmp_path / "ctc", DynamicCTCModel(ModelConfig(**TINY_ENCODER)), recipe="ld")
    rc, _, err = cli_in_process(["importance", "--checkpoint", str(ctc), "--manifest", str(corpus["test"]),
                                 "--token-kl", "--json", str(out)])
    assert rc == 2 and err.strip().splitlines() == ["error: this model has no text decoder (train one with "
                                                    "--objective seq2seq)"]


# ---------------------------------------------------------------------------------------------- the real tiny.en

@pytest.mark.slow
def test_the_unchanged_tiny_en_student_is_its_teacher():
    """With the bundled tiny.en: a fresh student holds the dld teacher's encoder and decoder weights, transcribes
    as it does, and at full depth on padded input its token posteriors are the teacher's (KL ~ 0)."""
    rows = [json.loads(line) for line in (REPO / "data_samples" / "manifest.jsonl").read_text().splitlines()][:2]
    wavs = [sf.read(REPO / "data_samples" / r["audio_filepath"], dtype="float32")[0] for r in rows]
    model = student(pretrained.default_model_dir()).eval()
    assert model.config.decoder == dict(n_vocab=51864, n_ctx=448, n_layers=4, n_heads=6, ffn_dim=1536)
    teacher = seq2seq.PretrainedTeacher("default", "cpu", tau=1.0, top_k=0)
    for part in ("encoder", "decoder"):
        ours, theirs = getattr(model, part).state_dict(), getattr(teacher.model, part).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert ([h.tokens for h in seq2seq.text_model(model).transcribe(wavs[:1])]
            == [h.tokens for h in teacher.model.transcribe(wavs[:1])])
    tokens, _, lengths = seq2seq.token_batch(seq2seq._tokenizer(51864), [r["text"] for r in rows], 448, "cpu")
    from dld_core.features import pad_waveforms
    batch, wav_lengths = pad_waveforms([torch.from_numpy(np.asarray(w)) for w in wavs])
    with torch.no_grad():
        feats, frames = W.Features()(batch, wav_lengths)
        logits = seq2seq.StudentNet(model, "padded", False, 2)(feats, frames, None, tokens).logits
        kl = distillation_kl(teacher.logits(batch, wav_lengths, tokens, 2), logits, lengths)
    assert kl.item() < 1e-4


def test_a_student_s_text_model_carries_its_ctc_head_as_evidence(tiny_whisper, corpus):
    """text_model(student): encode() also gives the CTC head's log-probs on the clip's frames, those of the model's
    own forward with the same mask; whisper-joint ranks beams with them."""
    from dld_core.data import SpeechDataset
    from dld_core.features import feature_extractor
    from dld_core.tokenizer import CharTokenizer

    model = student(tiny_whisper).eval()
    data = SpeechDataset(str(corpus["test"]), CharTokenizer(model.config.vocab))
    batch = data.collate([0, 1])
    wavs = [batch.wavs[i, : batch.wav_lengths[i]].numpy() for i in range(2)]
    feats, lengths = feature_extractor(model.config)(batch.wavs, batch.wav_lengths)
    for mask in (None, [True, False, True, False]):
        with torch.no_grad():
            out = model(feats, lengths, active=mask)
        for mode in ("clip", "padded"):
            evidence = seq2seq.text_model(model).encode(wavs, active=mask, mode=mode).ctc
            assert evidence.lengths.tolist() == out.lengths.tolist()
            if mode == "clip":
                for i, n in enumerate(out.lengths.tolist()):
                    assert torch.allclose(evidence.log_probs[i, :n], out.log_probs[i, :n], atol=1e-4)
    options = seq2seq.decode_options("whisper-joint", beam_size=3)
    assert options.beam_size == 3 and options.ctc_weight == seq2seq.JOINT_CTC_WEIGHT > 0
    assert seq2seq.decode_options("whisper-beam").ctc_weight == 0.0
    texts = seq2seq.text_transcriber(model, "whisper-joint", "clip", beam_size=2)(wavs, [True, True, False, True])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_a_pinned_token_embedding_is_frozen_and_left_out_of_checkpoints(tmp_path, tiny_whisper, corpus):
    """--pinned-embedding: the decoder's token embedding (and tied output projection) is the pinned tiny.en's,
    trains not, is not stored (the checkpoint is 19.9 M weights smaller) and comes back on load; it needs the
    pinned decoder, and a text decoder at all."""
    from dld_core.families.whisper_decoder import pinned_token_embedding
    from dld_core.model import count_parameters
    package = pretrained.read_whisper_decoder(None).tensors["token_embedding.weight"].float()
    out = tmp_path / "ld"
    train(str(corpus["train"]), str(corpus["valid"]), out, progress=False,
          model_overrides=dict(pinned_embedding=True, dropout=0.0),
          train_cfg=TrainConfig(recipe="ld", pretrained="default", epochs=1, max_steps=2, input_mode="clip",
                                keep_prob=0.5, **{**FAST, "lr": 1e-2}))
    stored = load_file(out / "model.safetensors")
    assert not any("token_embedding" in k for k in stored) and "decoder.positional_embedding" in stored
    ckpt = load_checkpoint(out)
    assert ckpt.config.pinned_embedding and ckpt.model.decoder.embedding_pinned
    assert torch.equal(ckpt.model.decoder.token_embedding.weight, package)              # unchanged by training
    assert not any(p is ckpt.model.decoder.token_embedding.weight for p in ckpt.model.parameters())
    fresh = pretrained.read_whisper_decoder(None).tensors
    trained = ckpt.model.decoder.state_dict()
    assert any(not torch.equal(v, fresh[k].float()) for k, v in trained.items())       # the rest trained
    unpinned = DynamicCTCModel(dataclasses.replace(ckpt.config, pinned_embedding=False))
    assert count_parameters(unpinned) == count_parameters(ckpt.model)
    assert sum(v.numel() for v in unpinned.state_dict().values()) - sum(v.numel() for v in stored.values()) \
        == package.numel() == 51864 * 384
    assert pinned_token_embedding() is pinned_token_embedding()                         # one copy per process
    with pytest.raises(ValueError, match="needs --pretrained default"):
        seq2seq.with_decoder(dataclasses.replace(W.config_from_pretrained(tiny_whisper), pinned_embedding=True),
                             str(tiny_whisper))
    with pytest.raises(ValueError, match="needs --objective seq2seq"):
        train(str(corpus["train"]), str(corpus["valid"]), tmp_path / "ctc", progress=False,
              model_overrides=dict(family="whisper", pinned_embedding=True),
              train_cfg=TrainConfig(recipe="ld", pretrained="default"))
    with pytest.raises(ValueError, match="whisper-family field"):
        ModelConfig(pinned_embedding=True).validate()


def test_deploying_an_encoder_decoder_student(tmp_path, tiny_whisper):
    """safetensors keeps the text decoder; ONNX holds the encoder and CTC head and says so in config.json."""
    from dld_core.deploy import deploy
    from dld_core.model import count_parameters
    model = student(tiny_whisper)
    save_checkpoint(tmp_path / "s2s", model, recipe="dld")
    logged = []
    info = deploy(tmp_path / "s2s", tmp_path / "onnx", keep="A1,M2", log=logged.append)["deployed"]
    assert "text decoder is not exported" in " ".join(logged) and "not exported" in info["text_decoder"]
    assert info["parameters"] == count_parameters(model) - count_parameters(model.decoder) \
        - sum(p.numel() for n, p in model.encoder.named_parameters() if n.startswith(("blocks.0.mlp", "blocks.1.attn")))
    info = deploy(tmp_path / "s2s", tmp_path / "st", keep="A1,M2", fmt="safetensors")["deployed"]
    assert "text_decoder" not in info
    static = load_checkpoint(tmp_path / "st").model
    assert static.decoder is not None and torch.equal(static.decoder.ln.weight, model.decoder.ln.weight.half().float())
