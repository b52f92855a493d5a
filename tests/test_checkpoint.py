import json

import pytest
import torch

from dld_core.checkpoint import config_digest, list_checkpoints, load_checkpoint, save_checkpoint
from dld_core.safe_io import CheckpointError


def test_round_trip_fp16(tmp_path, tiny_model):
    folder = save_checkpoint(tmp_path / "ck", tiny_model, recipe="teacher", metadata={"note": "x"})
    loaded = load_checkpoint(folder)
    assert loaded.config == tiny_model.config and loaded.recipe == "teacher" and loaded.info["note"] == "x"
    for k, v in tiny_model.state_dict().items():
        w = loaded.model.state_dict()[k]
        assert w.shape == v.shape
        if v.is_floating_point():
            assert torch.allclose(w, v.half().float())
    x, l = torch.randn(1, 100, 80), torch.tensor([100])
    with torch.no_grad():
        assert torch.allclose(loaded.model(x, l).log_probs, tiny_model(x, l).log_probs, atol=2e-2)
    assert list_checkpoints(tmp_path) == [folder]


def test_checksum_mismatch_is_refused(tmp_path, tiny_model):
    folder = save_checkpoint(tmp_path / "ck", tiny_model, recipe="ld")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(folder)


def test_wrong_shapes_are_refused(tmp_path, tiny_model):
    folder = save_checkpoint(tmp_path / "ck", tiny_model, recipe="ld")
    info = json.loads((folder / "config.json").read_text())
    info["model"]["d_model"] = 64
    info["model"]["ffn_dim"] = 128
    info["model_sha256"] = config_digest(info["model"])      # a consistent config that does not fit the weights
    (folder / "config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(folder)


@pytest.mark.parametrize("edit", [
    lambda m: m["vocab"].insert(3, m["vocab"].pop(4)),        # same size: the shapes fit, the text would be garbage
    lambda m: m.update(dropout=0.3),
    lambda m: m.pop("gate_unit"),
])
def test_an_edited_model_config_is_refused(tmp_path, tiny_model, edit):
    folder = save_checkpoint(tmp_path / "ck", tiny_model, recipe="ld")
    info = json.loads((folder / "config.json").read_text())
    edit(info["model"])
    (folder / "config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_checkpoint(folder)


@pytest.mark.parametrize("content,match", [
    ("not json", "not valid JSON"),
    ('{"format": "something-else"}', "not a DLD Studio"),
    ('{"format": "dld-studio-checkpoint", "version": 1, "model": {"family": "rnn"}}', "invalid model config"),
    ('{"format": "dld-studio-checkpoint", "version": 1, "model": {"evil": 1}}', "unknown"),
])
def test_bad_configs_are_refused(tmp_path, content, match):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path / "nope")
