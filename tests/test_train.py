import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dld_core.checkpoint import load_checkpoint
from dld_core.config import TrainConfig
from dld_core.losses import distillation_kl
from dld_core.masks import keep_probabilities, scheduled_keep_probabilities, training_gates
from dld_core.train import OutputLock, TrainingBusyError, train
from tests.helpers import ddp_train, tiny_config

FAST = dict(batch_seconds=8.0, warmup_steps=3, lr=3e-3)


def resume_weights(out: Path) -> dict:
    return {k: v for k, v in load_file(out / "resume" / "state.safetensors").items() if k.startswith("model.")}


def test_kl_is_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    logp = torch.randn(2, 7, 29).log_softmax(-1)
    lengths = torch.tensor([7, 4])
    assert distillation_kl(logp, logp.clone(), lengths).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 7, 29).log_softmax(-1)
    assert distillation_kl(logp, other, lengths).item() > 0.01
    # temperature: tau^2 scaling, still zero for equal inputs
    assert distillation_kl(logp, logp, lengths, tau=2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_gates_are_seeded_and_keep_at_least_one():
    masks = [training_gates([0.5] * 12, seed=3, step=s) for s in range(300)]
    assert masks == [training_gates([0.5] * 12, seed=3, step=s) for s in range(300)]
    assert all(any(m) for m in masks)
    rate = sum(map(sum, masks)) / (300 * 12)
    assert 0.42 < rate < 0.6
    assert all(any(m) for m in (training_gates([0.01] * 3, 0, s) for s in range(50)))


def test_equal_keep_probabilities_draw_what_one_shared_probability_drew():
    """The shipped students were trained with `torch.rand(n) < keep_prob` (one float): the per-module form
    must draw the same gates for them."""
    for step in range(200):
        gen = torch.Generator().manual_seed(3 * 1000003 + step)
        old = torch.rand(8, generator=gen) < 0.75
        if old.any():
            assert training_gates([0.75] * 8, seed=3, step=step) == old.tolist()


def test_per_module_keep_probabilities_and_schedule():
    names = ["A1", "M1", "A2", "M2"]
    probs = keep_probabilities(names, 0.75, "M1=0.5, a2=0.9")
    assert probs == [0.75, 0.5, 0.9, 0.75]
    gates = [training_gates(probs, seed=0, step=s, protected=[0]) for s in range(2000)]
    rates = [sum(g[i] for g in gates) / len(gates) for i in range(4)]
    assert rates[0] == 1.0 and 0.45 < rates[1] < 0.55 and 0.87 < rates[2] < 0.93
    for bad in ("M1", "M1=1.5", "M1=x", "Z9=0.5"):
        with pytest.raises(ValueError):
            keep_probabilities(names, 0.75, bad)
    assert scheduled_keep_probabilities(probs, 1.0, 0.0) == [1.0] * 4
    assert scheduled_keep_probabilities(probs, 1.0, 0.25) == pytest.approx([0.875, 0.75, 0.95, 0.875])
    assert scheduled_keep_probabilities(probs, 1.0, 0.8) == probs
    assert scheduled_keep_probabilities(probs, 0.0, 0.1) == probs


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, tiny_corpus):
    cfg = dict(recipe="ld", epochs=2, **FAST)
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny_corpus["train"], tiny_corpus["valid"], a, train_cfg=TrainConfig(**cfg), model_cfg=tiny_config(),
          stop_after_epochs=1, progress=False)
    first = json.loads((a / "metrics.json").read_text())
    assert first["epochs"] == 1 and not first["finished"]
    train(tiny_corpus["train"], tiny_corpus["valid"], a, train_cfg=TrainConfig(**cfg), model_cfg=tiny_config(),
          resume=True, progress=False)
    train(tiny_corpus["train"], tiny_corpus["valid"], b, train_cfg=TrainConfig(**cfg), model_cfg=tiny_config(),
          progress=False)
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    assert ma["steps"] == mb["steps"] and ma["finished"] and mb["finished"]
    wa, wb = resume_weights(a), resume_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    events = [json.loads(l)["event"] for l in (a / "train_log.jsonl").read_text().splitlines()]
    assert events.count("start") == 2 and events[-1] == "done"


def test_the_sandwich_rule_adds_the_full_depth_loss_of_the_same_batch(tmp_path, tiny_corpus, monkeypatch):
    """--sandwich: a step whose gates drop a module also runs the full-depth network on the same batch and adds its
    loss (logged as "full"); a step that keeps every module runs once."""
    from dld_core import train as T
    calls = []
    real = T.CTCObjective.losses

    def recording(self, net, batch, indices, feats, lengths, active):
        out = real(self, net, batch, indices, feats, lengths, active)
        calls.append((tuple(indices), None if active is None else tuple(active), out["loss"].item()))
        return out
    monkeypatch.setattr(T.CTCObjective, "losses", recording)
    out = tmp_path / "ld"
    train(tiny_corpus["train"], tiny_corpus["valid"], out, log_every=1, progress=False, model_cfg=tiny_config(),
          train_cfg=TrainConfig(recipe="ld", epochs=1, sandwich=True, keep_prob=0.5, **FAST))
    steps = [e for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if e["event"] == "step"]
    i = 0
    for step in steps:
        indices, gates, loss = calls[i]
        if all(gates):
            assert "full" not in step and step["loss"] == pytest.approx(loss)
            i += 1
        else:
            full = calls[i + 1]
            assert full[:2] == (indices, None) and step["full"] == pytest.approx(full[2])
            assert step["loss"] == pytest.approx(loss + full[2])
            i += 2
    assert i == len(calls) and any("full" in s for s in steps)


@pytest.mark.slow
def test_dld_distils_from_a_frozen_teacher(tmp_path, tiny_corpus):
    teacher_dir = tmp_path / "teacher"
    train(tiny_corpus["train"], tiny_corpus["valid"], teacher_dir, progress=False,
          train_cfg=TrainConfig(recipe="teacher", epochs=1, **FAST), model_cfg=tiny_config())
    before = {k: v.clone() for k, v in load_checkpoint(teacher_dir).model.state_dict().items()}
    out = tmp_path / "dld"
    metrics = train(tiny_corpus["train"], tiny_corpus["valid"], out, teacher=str(teacher_dir), progress=False,
                    train_cfg=TrainConfig(recipe="dld", epochs=1, init_from_teacher=True, **FAST),
                    model_cfg=tiny_config())
    steps = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    kls = [e["kl"] for e in steps if e["event"] == "step"]
    assert kls and all(k >= 0 for k in kls) and max(kls) > 0
    after = load_checkpoint(teacher_dir).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    ck = load_checkpoint(out)
    assert ck.recipe == "dld" and ck.info["teacher"] == str(teacher_dir) and metrics["finished"]


def test_second_training_into_same_folder_is_refused(tmp_path):
    lock = OutputLock(tmp_path)
    try:
        with pytest.raises(TrainingBusyError, match="already"):
            OutputLock(tmp_path)
    finally:
        lock.release()
    OutputLock(tmp_path).release()      # free again once released


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path, tiny_corpus):
    r0, r1 = ddp_train(tmp_path, f"""T.train({str(tiny_corpus['train'])!r}, {str(tiny_corpus['valid'])!r}, {str(tmp_path / 'out')!r},
            train_cfg=TrainConfig(recipe="ld", epochs=1, batch_seconds=4.0, warmup_steps=2),
            model_cfg=tiny_config(), progress=False)""",
                       imports="from dld_core.config import TrainConfig\nfrom tests.helpers import tiny_config")
    assert r0 == r1 and int(r0[1]) > 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == int(r0[1])


def test_a_student_may_gate_whole_blocks_of_a_sub_block_teacher(tmp_path, tiny_corpus):
    """gate_unit changes no weight: a block-gated student starts from a sub-block-gated Whisper teacher
    (the gate ablation's block_gates run); a different width is still refused."""
    from dld_core.checkpoint import save_checkpoint
    from dld_core.safe_io import CheckpointError
    from dld_core.model import DynamicCTCModel
    cfg = tiny_config(family="whisper", d_model=32, n_layers=2, n_heads=2, ffn_dim=64, max_frames=400)
    save_checkpoint(tmp_path / "teacher", DynamicCTCModel(cfg), recipe="teacher")
    run = dict(teacher=str(tmp_path / "teacher"), progress=False,
               train_cfg=TrainConfig(recipe="dld", epochs=1, init_from_teacher=True, max_steps=2, protected="B1", **FAST))
    train(tiny_corpus["train"], tiny_corpus["valid"], tmp_path / "block", model_overrides={"gate_unit": "block"}, **run)
    student = load_checkpoint(tmp_path / "block")
    assert student.config.gate_unit == "block" and student.config.module_names == ["B1", "B2"]
    with pytest.raises(CheckpointError, match="same architecture"):
        train(tiny_corpus["train"], tiny_corpus["valid"], tmp_path / "wide", model_overrides={"d_model": 64}, **run)
