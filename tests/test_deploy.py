"""Deploy a budget (dld_core/deploy.py, `python -m dld_core deploy`): the exported static model of a mask,
as safetensors (this project's loader) and ONNX (onnxruntime on CPU), equals the gated model with that
mask; int8 is labelled; bad input is one line and leaves nothing behind."""
from __future__ import annotations

import dataclasses
import functools
import json
import shutil

import pytest
import torch

from dld_core import cli
from dld_core.audio import load_audio
from dld_core.checkpoint import load_checkpoint
from dld_core.config import ModelConfig
from dld_core.deploy import (ONNX_FILE, ONNX_INT8_FILE, OnnxCTCModel, deploy, load_exported, read_info, run_onnx,
                             static_subnetwork)
from dld_core.recommend import validation_clips
from dld_core.onnx_features import FEATURES_FILE
from dld_core.onnx_transcribe import TRANSCRIBE_FILE, run_transcribe
from dld_core.recommend import CHOOSER, mask_gflops, recommend, validated_masks
from dld_core.flops import gflops
from dld_core.inference import decoder_for, featurize, recognize
from dld_core.masks import parse_modules
from dld_core.model import DynamicCTCModel, count_parameters
from tests.helpers import REPO, SMALL_CONFORMER, corrupted_copy

WHISPER = REPO / "checkpoints" / "dld"                 # the shipped Whisper student (sub-block gates A1 M1 ..)
CONFORMER = SMALL_CONFORMER
SAMPLES = REPO / "data_samples"
# A1 M1 M2 A3: a whole block, a lone MLP, a lone attention and an empty block (4)
CASES = {"whisper": (WHISPER, "A1,M1,M2,A3"), "conformer": (CONFORMER, "L1,L2,L4,L7,L12")}


@functools.lru_cache(maxsize=None)
def source(path):
    return load_checkpoint(path)


@pytest.fixture(scope="module")
def clips():
    return [load_audio(SAMPLES / name).samples for name in
            ("synth_00_flite_kal16.wav", "synth_01_festival_cmu_us_slt_arctic_hts.wav", "fsdd_3_jackson_0.wav")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(family, format, quantize) -> the exported folder, each written once for the module."""
    root = tmp_path_factory.mktemp("deployed")
    made = {}

    def get(family: str, fmt: str, quantize=None):
        key = (family, fmt, quantize)
        if key not in made:
            path, keep = CASES[family]
            made[key] = root / f"{family}-{fmt}-{quantize}"
            deploy(path, made[key], keep=keep, fmt=fmt, quantize=quantize)
        return made[key]
    return get


def max_diff(a, b) -> float:
    assert torch.equal(a.output.lengths, b.output.lengths)
    return max(float((a.log_probs(i) - b.log_probs(i)).abs().max()) for i in range(len(a.texts)))


@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
@pytest.mark.parametrize("family", ["whisper", "conformer"])
def test_the_exported_model_equals_the_gated_model(exported, clips, family, fmt):
    path, keep = CASES[family]
    ckpt = source(path)
    kept = parse_modules(keep, ckpt.config.module_names)
    folder = exported(family, fmt)
    model = load_exported(folder)
    gated = recognize(ckpt.model, features=featurize(ckpt.model, clips), active=kept)    # a padded batch of 3
    static = recognize(model, features=featurize(model, clips))
    assert max_diff(gated, static) <= 1e-4
    assert static.texts == gated.texts and any(static.texts)

    info = read_info(folder)
    d = info["deployed"]
    assert d["kept"] == keep.split(",") and d["kept_indices"] == kept and d["selection"] == {"by": "keep", "keep": keep}
    assert d["source_weights_sha256"] == ckpt.info["weights_sha256"] and d["source_checkpoint"] == str(path)
    assert d["gflops"] == pytest.approx(gflops(ckpt.config, 10.0, kept)) == pytest.approx(d["static_gflops"])
    assert d["full_gflops"] == pytest.approx(gflops(ckpt.config, 10.0)) and d["gflops_share"] < 1
    assert d["verified"]["max_abs_diff"] <= 1e-4
    assert d["parameters"] < d["source_parameters"] == count_parameters(ckpt.model)
    if fmt == "safetensors":                  # an ordinary checkpoint: this project's loader, every module kept
        assert isinstance(model, DynamicCTCModel) and count_parameters(model) == d["parameters"]
        assert load_checkpoint(folder).model.module_names == d["module_names"]
        assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors"}
    else:
        assert isinstance(model, OnnxCTCModel) and info["precision"] == "fp32" and info["quantization"] is None
        assert info["weights_storage"].startswith("float16 where exact")      # half the bytes, the same values
        assert {p.name for p in folder.iterdir()} == {"config.json", ONNX_FILE, FEATURES_FILE, TRANSCRIBE_FILE}
        assert info["front_end"]["file"] == FEATURES_FILE and d["verified"]["onnxruntime_only_max_abs_diff"] <= 1e-4
        alone, lengths = run_onnx(folder, clips)          # onnxruntime alone: features.onnx, then model.onnx
        assert lengths.tolist() == gated.output.lengths.tolist()
        assert max(float((torch.from_numpy(alone[i, :n]) - gated.log_probs(i)).abs().max())
                   for i, n in enumerate(lengths.tolist())) <= 1e-4


def test_whisper_sub_blocks_keep_their_names_and_only_their_weights(exported):
    folder = exported("whisper", "safetensors")
    model = load_checkpoint(folder).model
    assert model.config.sub_blocks == ["AM", "M", "A", ""]
    assert model.module_names == ["A1", "M1", "M2", "A3"]
    keys = set(model.state_dict())
    assert "encoder.blocks.0.attn.query.weight" in keys and "encoder.blocks.0.mlp.0.weight" in keys
    assert "encoder.blocks.1.mlp.0.weight" in keys and not any(k.startswith("encoder.blocks.1.attn") for k in keys)
    assert "encoder.blocks.2.attn_ln.weight" in keys and not any(k.startswith("encoder.blocks.2.mlp") for k in keys)
    assert not any(k.startswith("encoder.blocks.3.") for k in keys)


def test_conformer_layers_are_renumbered(exported):
    model = load_checkpoint(exported("conformer", "safetensors")).model
    assert model.config.n_layers == 5 and model.module_names == ["L1", "L2", "L3", "L4", "L5"]
    src = source(CONFORMER).model.state_dict()
    assert torch.equal(model.state_dict()["encoder.layers.4.ffn1.sequential.1.weight"],
                       src["encoder.layers.11.ffn1.sequential.1.weight"])


def test_sub_blocks_are_checked():
    base = dataclasses.asdict(source(WHISPER).config)
    for bad in (["AM"], ["AM", "MA", "A", "M"], ["", "", "", ""], "AM,AM,AM,AM"):
        with pytest.raises(ValueError, match="sub_blocks"):
            ModelConfig(**{**base, "sub_blocks": bad}).validate()
    with pytest.raises(ValueError, match="whisper-family"):
        ModelConfig(**{**dataclasses.asdict(source(CONFORMER).config), "sub_blocks": ["AM"] * 12}).validate()
    every = static_subnetwork(source(WHISPER).model, range(8))           # the whole mask: an unchanged config
    assert every.config == source(WHISPER).config


def test_the_onnx_model_decodes_with_beam_search(exported, clips):
    ckpt = source(WHISPER)
    try:
        decoder_for(ckpt.model, "beam")
    except (ValueError, RuntimeError, OSError) as exc:
        pytest.skip(f"no beam decoder here: {exc}")
    kept = parse_modules(CASES["whisper"][1], ckpt.config.module_names)
    model = load_exported(exported("whisper", "onnx"))
    gated = recognize(ckpt.model, clips, active=kept, decoder="beam")
    assert recognize(model, clips, decoder="beam").texts == gated.texts


def test_int8_runs_and_says_so(exported, clips):
    folder = exported("whisper", "onnx", "int8")
    info = read_info(folder)
    assert {p.name for p in folder.iterdir()} == {"config.json", ONNX_INT8_FILE, FEATURES_FILE, TRANSCRIBE_FILE}
    assert info["model_file"] == ONNX_INT8_FILE and info["precision"] == "int8 (dynamic)"
    assert info["quantization"]["type"] == "int8" and info["quantization"]["method"].endswith("quantize_dynamic")
    assert info["weights_storage"].startswith("int8 linear-layer weights")
    assert (folder / ONNX_INT8_FILE).stat().st_size < 0.75 * (exported("whisper", "onnx") / ONNX_FILE).stat().st_size
    model = load_exported(folder)
    out = recognize(model, clips)
    assert len(out.texts) == 3 and all(isinstance(t, str) for t in out.texts)
    assert bool(torch.isfinite(out.output.log_probs).all())
    assert info["deployed"]["verified"]["max_abs_diff"] > 0          # reported, not hidden


def test_the_greedy_graph_is_dld_studios_greedy_decoding():
    import numpy as np
    import onnxruntime as ort
    from dld_core.decode import greedy_decode
    from dld_core.onnx_transcribe import greedy_graph
    from dld_core.tokenizer import CharTokenizer
    vocab = source(CONFORMER).config.vocab
    session = ort.InferenceSession(greedy_graph(vocab, 17).SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for trial in range(200):                    # many blanks and spaces: repeats, leading/trailing/double spaces
        frames = int(rng.integers(1, 30))
        log_probs = rng.standard_normal((1, frames, len(vocab))).astype(np.float32)
        log_probs[..., :2] += rng.uniform(0, 4)
        n = int(rng.integers(0, frames + 1))
        text = "".join(session.run(None, {"log_probs": log_probs, "out_lengths": np.array([n])})[0])
        assert text == greedy_decode(torch.from_numpy(log_probs), torch.tensor([n]), CharTokenizer(vocab))[0]


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_transcribe_onnx_is_the_greedy_transcript_and_holds_no_second_copy_of_the_weights(exported, clips, quantize):
    import onnxruntime as ort
    folder = exported("whisper", "onnx", quantize)
    info = read_info(folder)
    model = load_exported(folder)
    for clip in clips:                                   # DLD Studio's greedy decoding of the exported model
        assert run_transcribe(folder / TRANSCRIBE_FILE, clip) == recognize(model, [clip]).texts[0]
    t = info["transcribe"]
    assert t["file"] == TRANSCRIBE_FILE and t["reads_weights_from"] == [info["model_file"], FEATURES_FILE]
    assert (folder / TRANSCRIBE_FILE).stat().st_size < 0.1 * (folder / info["model_file"]).stat().st_size
    check = info["deployed"]["verified"]["transcribe"]
    assert check["same_as_model_file_greedy"] and check["text"]
    assert check["same_as_gated_greedy"] or quantize
    session = ort.InferenceSession(str(folder / TRANSCRIBE_FILE), providers=["CPUExecutionProvider"])
    two = torch.zeros(2, 16000).numpy()
    with pytest.raises(Exception, match="(?i)dimension|shape"):           # one clip per call
        session.run(None, {"audio": two})


def test_a_static_model_refuses_a_mask(exported, clips):
    model = load_exported(exported("conformer", "onnx"))
    with pytest.raises(ValueError, match="static"):
        recognize(model, clips, active=[0])


@pytest.fixture(scope="module")
def budget_deployed(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget") / "deployed"
    return out, deploy(CONFORMER, out, budget=0.5, fmt="safetensors", valid=str(SAMPLES / "manifest.jsonl"), clips=2)


def test_budget_picks_the_best_mask_that_fits(budget_deployed):
    out, info = budget_deployed
    d = info["deployed"]
    sel = d["selection"]
    assert sel["by"] == "budget" and sel["clips"] == 2 and sel["chooser"] == CHOOSER
    assert d["gflops_share"] <= 0.5 and d["gflops"] <= sel["limit_gflops"] + 1e-9
    assert d["kept_indices"] in [depth["active"] for depth in sel["depths"]]
    assert all(gflops(source(CONFORMER).config, 10.0, depth["active"]) <= sel["limit_gflops"] + 1e-9
               for depth in sel["depths"])
    assert load_checkpoint(out).model.num_modules == len(d["kept"])


def test_budget_is_the_budgets_page_choice(budget_deployed):
    """deploy --budget and the Budgets card (dld_core.recommend on every scored mask) pick the same mask."""
    _, info = budget_deployed
    ckpt = source(CONFORMER)
    clips, _ = validation_clips(ckpt, str(SAMPLES / "manifest.jsonl"), 2)
    table = validated_masks(ckpt.model, clips)                   # what the Budgets page scores: every mask
    limit = 0.5 * mask_gflops(ckpt.config, range(ckpt.config.num_modules))
    assert info["deployed"]["selection"]["limit_gflops"] == pytest.approx(limit)
    assert info["deployed"]["kept_indices"] == recommend(table, limit)["active"]


def run_cli(capsys, *args):
    code = cli.main(["deploy", *map(str, args)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", WHISPER, "--keep", "A1,Z9"], "unknown module 'Z9'"),
    (["--checkpoint", WHISPER, "--keep", ","], "keeps no module"),
    (["--checkpoint", WHISPER, "--budget", "0.01"], "below the cheapest mask"),
    (["--checkpoint", WHISPER, "--keep", "A1", "--format", "safetensors", "--quantize", "int8"], "needs --format onnx"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code, err = run_cli(capsys, *args, "--out", out)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists() and not leftovers(tmp_path, "out")


def test_an_existing_output_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, err = run_cli(capsys, "--checkpoint", CONFORMER, "--keep", "L1", "--out", out)
    assert code == 2 and len(err) == 1 and "already exists" in err[0]
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and not leftovers(tmp_path, "out")


def test_a_checkpoint_failing_its_checksum_is_refused(tmp_path, capsys):
    bad = corrupted_copy(CONFORMER, tmp_path / "bad")
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--checkpoint", bad, "--keep", "L1", "--out", out)
    assert code == 2 and len(err) == 1 and "checksum" in err[0], err
    assert not out.exists() and not leftovers(tmp_path, "out")


def test_the_cli_prints_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "deployed"
    assert cli.main(["deploy", "--checkpoint", str(CONFORMER), "--keep", "L2 L4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kept L2 L4 (2 of 12)" in printed and "max |log-prob difference|" in printed
    info = json.loads((out / "config.json").read_text())
    assert info["format"] == "dld-studio-deployed" and info["deployed"]["kept"] == ["L2", "L4"]


def test_bench_exported(exported):
    from dld_core.bench import bench_exported
    result = bench_exported(exported("conformer", "onnx"), seconds=2.0, repeats=1, warmup=0)
    names = [r["model"] for r in result["rows"]]
    assert names == ["gated, full depth (PyTorch)", "gated, with the mask (PyTorch)", "static sub-network (PyTorch)",
                     "exported onnx fp32"]
    full, gated, static, onnx = result["rows"]
    assert onnx["parameters"] == static["parameters"] < full["parameters"] == gated["parameters"]
    assert onnx["gflops"] == gated["gflops"] < full["gflops"] and 0 < onnx["bytes"] < full["bytes"]
    assert all(r["latency_ms"] > 0 for r in result["rows"])
    assert result["max_abs_diff"] <= 1e-4 and result["same_greedy_text"]


def test_an_altered_onnx_file_is_refused(exported, tmp_path):
    from dld_core.safe_io import CheckpointError
    folder = tmp_path / "copy"
    shutil.copytree(exported("conformer", "onnx"), folder)
    data = bytearray((folder / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_exported(folder)


# ------------------------------------------------------------------------------------------ the deploy table

TABLE_BUDGETS = (1.0, 0.5)
TABLE_MANIFEST = SAMPLES / "manifest.jsonl"


@pytest.fixture(scope="module")
def table():
    """The deploy table of the small conformer: two budgets, two clips of one test set, a 2 s clip."""
    from dld_core.bench import deploy_table
    return deploy_table(CONFORMER, TABLE_BUDGETS, [TABLE_MANIFEST], limit=2, seconds=2.0, repeats=1, warmup=0,
                        valid=str(TABLE_MANIFEST), clips=2)


@pytest.mark.slow
def test_the_deploy_table_has_every_budget_and_form(table):
    from dld_core.bench import DEPLOY_FORMS, WER_FORMS, manifest_name
    ckpt = source(CONFORMER)
    assert [row["budget"] for row in table["budgets"]] == list(TABLE_BUDGETS)
    whole, half = table["budgets"]
    assert whole["kept"] == ckpt.config.module_names and whole["selection"] == {"by": "every module"}
    assert half["gflops_share"] <= 0.5 and half["selection"]["chooser"] == "dld_core.deploy.budget_mask"
    test_set = manifest_name(TABLE_MANIFEST)
    assert table["decoders"][0] == "greedy" and table["full"]["parameters"] == count_parameters(ckpt.model)
    for row in table["budgets"]:
        assert list(row["forms"]) == ["gated", *DEPLOY_FORMS]
        for form, r in row["forms"].items():
            assert r["latency_ms"] > 0 and r["bytes"] > 0 and r["parameters"] > 0
            assert ("wer" in r) == (form in WER_FORMS)
            if form in WER_FORMS:
                assert set(r["wer"]) == {test_set} and set(r["wer"][test_set]) == set(table["decoders"])
        assert row["max_abs_diff"]["onnx"] <= 1e-4 and row["max_abs_diff"]["safetensors"] <= 1e-4
        assert row["forms"]["onnx-int8"]["bytes"] < row["forms"]["onnx"]["bytes"]
    assert half["forms"]["onnx"]["parameters"] < whole["forms"]["onnx"]["parameters"] == table["full"]["parameters"]


@pytest.mark.slow
def test_the_deploy_table_ratios_are_its_numbers(table):
    full = table["full"]
    for row in table["budgets"]:
        for r in row["forms"].values():
            assert r["speedup"] == pytest.approx(full["latency_ms"] / r["latency_ms"])
            assert r["size_ratio"] == pytest.approx(r["bytes"] / full["bytes"])
            assert r["memory_ratio"] == pytest.approx(r["peak_mib"] / full["peak_mib"])
        onnx, int8 = row["forms"]["onnx"], row["forms"]["onnx-int8"]
        assert row["int8_speedup_over_onnx"] == pytest.approx(onnx["latency_ms"] / int8["latency_ms"])
        for test_set, change in row["int8_wer_change_points"].items():
            for d, points in change.items():
                assert points == pytest.approx(100 * (int8["wer"][test_set][d] - onnx["wer"][test_set][d]))


@pytest.mark.slow
def test_the_fp32_export_has_the_gated_models_wer(table):
    for row in table["budgets"]:
        assert row["forms"]["onnx"]["wer"] == row["forms"]["gated"]["wer"]


@pytest.mark.slow
def test_peak_memory_is_measured_per_form_in_a_fresh_process(table):
    full = table["full"]
    assert full["peak_mib"] >= full["import_mib"] > 0
    for row in table["budgets"]:
        for r in row["forms"].values():
            assert r["peak_mib"] >= r["import_mib"] > 0
        # the ONNX forms run with onnxruntime alone: no torch in that process
        assert row["forms"]["onnx"]["import_mib"] < full["import_mib"]


@pytest.mark.slow
def test_the_targets_are_checked_against_the_numbers(table):
    from dld_core.bench import TARGETS, deploy_table_markdown, target_report
    half = table["budgets"][1]
    targets = {t["limit"]: t for t in table["targets"]}
    assert len(table["targets"]) == 4 and set(targets) == set(TARGETS.values())
    speed = targets[TARGETS["onnx_speedup"]]
    assert speed["value"] == half["forms"]["onnx"]["speedup"] and speed["met"] == (speed["value"] >= 1.8)
    size = targets[TARGETS["onnx_size_ratio"]]
    assert size["value"] == half["forms"]["onnx"]["size_ratio"] and size["met"] == (size["value"] <= 0.55)
    wer = targets[TARGETS["int8_wer_change_points"]]
    assert wer["value"] == max(abs(v) for per in half["int8_wer_change_points"].values() for v in per.values())
    text = deploy_table_markdown(table)
    assert all(t["text"] in text for t in table["targets"]) and all(("met" in t["text"]) != ("MISSED" in t["text"])
                                                                   for t in table["targets"])
    assert "ONNX int8" in text and "static (PyTorch, safetensors)" in text
    assert "not checked" in target_report({**table, "budgets": table["budgets"][:1]})[0]["text"]


@pytest.mark.parametrize("args, message", [
    (["--manifest", "nowhere/test.jsonl"], "manifest nowhere/test.jsonl not found"),
    (["--budgets", ""], "at least one budget"),
    (["--budgets", "half"], "--budgets takes"),
    (["--budgets", "1.0,1.5"], "in (0, 1]"),
    (["--budgets", "0.01"], "below the cheapest mask"),
])
def test_a_bad_deploy_table_request_is_one_line(capsys, args, message):
    code = cli.main(["bench", "--deploy-table", "--checkpoint", str(CONFORMER), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
