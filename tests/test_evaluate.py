import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from dld_core.bench import bench
from dld_core.checkpoint import load_checkpoint, save_checkpoint
from dld_core.config import ModelConfig
from dld_core.evaluate import evaluate, length_batches
from dld_core.inference import emissions, recognize, timed, transcribe, utterance
from dld_core.masks import level_masks as make_masks
from dld_core.inference import featurize
from dld_core.metrics import cer, wer
from dld_core.model import DynamicCTCModel

TEXTS = ["hello world", "the cat sat", "a b"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    cfg = ModelConfig(family="conformer", d_model=32, n_layers=4, n_heads=4, ffn_dim=64, conv_kernel=7)
    ckpt = save_checkpoint(root / "ckpt", DynamicCTCModel(cfg), recipe="dld")
    rng = np.random.default_rng(0)
    rows = []
    for i, (text, dur) in enumerate(zip(TEXTS, [0.6, 1.0, 0.8])):
        path = root / f"utt{i}.wav"
        sf.write(path, (rng.standard_normal(int(dur * 16000)) * 0.1).astype(np.float32), 16000)
        rows.append({"audio_filepath": path.name, "text": text, "duration": dur})
    manifest = root / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ckpt, manifest, root


def test_random_masks_seeded_distinct_and_sized():
    masks = make_masks(12, 6, "random", num_masks=4, seed=0)
    assert masks == make_masks(12, 6, "random", num_masks=4, seed=0)
    assert masks != make_masks(12, 6, "random", num_masks=4, seed=1)
    assert len(masks) == 4 and len({tuple(m) for m in masks}) == 4
    assert all(len(m) == 6 and m == sorted(m) and 0 <= m[0] and m[-1] < 12 for m in masks)
    assert make_masks(4, 3, "random", num_masks=10) == [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]   # all C(4,3)
    assert make_masks(12, 12, "random") == [list(range(12))]
    assert make_masks(12, 0, "random") == [[]]


def test_deterministic_policies():
    assert make_masks(12, 6, "every_other") == [[1, 3, 5, 7, 9, 11]]
    assert make_masks(12, 3, "every_other") == [[3, 7, 11]]
    assert make_masks(12, 12, "every_other") == [list(range(12))]
    assert make_masks(12, 9, "every_other") == [[0, 1, 3, 4, 5, 7, 8, 9, 11]]
    assert make_masks(12, 4, "first_k") == [[0, 1, 2, 3]]
    custom = [[0, 2], [True, True, False, False], [1, 3, 0]]
    assert make_masks(4, 2, "custom", custom=custom) == [[0, 2], [0, 1]]
    assert make_masks(4, 3, "custom", custom=custom) == [[0, 1, 3]]
    assert make_masks(4, 2, "custom", custom=[3, 1]) == [[1, 3]]                  # one flat mask (CLI --custom)
    with pytest.raises(ValueError):
        make_masks(4, 1, "custom", custom=custom)
    with pytest.raises(ValueError):
        make_masks(4, 2, "nonsense")
    with pytest.raises(ValueError):
        make_masks(4, 5, "first_k")


def test_length_batches():
    durations = [3.0, 1.0, 2.0, 10.0]
    assert length_batches(durations, batch_seconds=9.0) == [[1, 2, 0], [3]]     # padded: 3 x 3 s
    assert length_batches(durations, batch_seconds=6.0) == [[1, 2], [0], [3]]


def test_recognize_reuses_features(setup):
    ckpt, _, root = setup
    model = load_checkpoint(ckpt).model
    wavs = [sf.read(root / f"utt{i}.wav", dtype="float32")[0] for i in range(3)]
    feats = featurize(model, wavs)
    for active in (None, [0, 2], [True, False, True, True]):
        assert transcribe(model, wavs, active) == recognize(model, features=feats, active=active).texts


def test_emissions_is_the_forward_of_recognize(setup):
    """inference.emissions: the batch's forward alone (log-probs, lengths), as recognize runs it."""
    ckpt, _, root = setup
    model = load_checkpoint(ckpt).model
    wavs = [sf.read(root / f"utt{i}.wav", dtype="float32")[0] for i in range(3)]
    for active in (None, [0, 2]):
        rec, out = recognize(model, wavs, active=active), emissions(model, wavs, active=active)
        assert torch.equal(out.log_probs, rec.output.log_probs) and torch.equal(out.lengths, rec.output.lengths)
        assert out.hidden is None
        for i, wav in enumerate(wavs):
            assert torch.equal(utterance(out, i), rec.log_probs(i))
            assert utterance(emissions(model, [wav], active=active)).shape == utterance(out, i).shape
    hidden = emissions(model, features=featurize(model, wavs[:1]), return_hidden=True).hidden
    assert len(hidden) == model.num_modules


def test_timed_warms_up_then_times_every_run():
    calls = []
    result, runs = timed(lambda: calls.append(1) or len(calls), repeats=3, warmup=2)
    assert len(calls) == 5 and result == 5 and len(runs) == 3 and all(r >= 0 for r in runs)
    assert len(timed(lambda: None, repeats=0)[1]) == 1                  # at least one timed run


def test_evaluate_manifest(setup):
    ckpt, manifest, root = setup
    result = evaluate(ckpt, manifest, keep=[4, 2], num_masks=2, seed=0, batch_seconds=0.1, progress=False)
    assert set(result) == {"checkpoint", "num_layers", "module_names", "manifest", "policy", "decoder", "utterances",
                           "skipped", "levels", "protected"}
    assert result["num_layers"] == 4 and result["policy"] == "random" and result["decoder"] == "greedy"
    assert result["protected"] == []                                     # trained to drop any module
    assert result["module_names"] == ["L1", "L2", "L3", "L4"]
    assert [lv["kept"] for lv in result["levels"]] == [4, 2]
    for lv in result["levels"]:
        assert set(lv) == {"kept", "wer", "cer", "gflops", "masks", "latency_ms"}
        assert all(len(m) == lv["kept"] for m in lv["masks"])
        assert lv["masks"] == make_masks(4, lv["kept"], "random", 2, 0)
        assert lv["latency_ms"] > 0 and math.isfinite(lv["wer"]) and math.isfinite(lv["cer"])
    assert result["levels"][0]["gflops"] > result["levels"][1]["gflops"] > 0
    # one utterance per batch (batch_seconds tiny): equals transcribing each clip alone, mask by mask
    model = load_checkpoint(ckpt).model
    wavs = [sf.read(root / f"utt{i}.wav", dtype="float32")[0] for i in range(3)]
    for lv in result["levels"]:
        w, c = [], []
        for mask in lv["masks"]:
            hyps = [transcribe(model, [x], mask)[0] for x in wavs]
            w.append(wer(TEXTS, hyps))
            c.append(cer(TEXTS, hyps))
        assert lv["wer"] == pytest.approx(np.mean(w)) and lv["cer"] == pytest.approx(np.mean(c))


def test_evaluate_defaults_every_level(setup):
    ckpt, manifest, _ = setup
    result = evaluate(load_checkpoint(ckpt), manifest, policy="first_k", progress=False)
    assert [lv["kept"] for lv in result["levels"]] == [4, 3, 2, 1]
    assert [lv["masks"] for lv in result["levels"]] == [[[0, 1, 2, 3]], [[0, 1, 2]], [[0, 1]], [[0]]]


def test_bench(setup):
    ckpt, _, _ = setup
    result = bench(ckpt, seconds=1.0, repeats=1, warmup=0, policy="every_other")
    assert result["seconds"] == 1.0 and [lv["kept"] for lv in result["levels"]] == [4, 3, 2, 1]
    full, *rest = result["levels"]
    assert full["latency_ratio"] == 1.0 and full["flops_ratio"] == 1.0
    assert all(lv["latency_ms"] > 0 for lv in result["levels"])
    ratios = [lv["flops_ratio"] for lv in result["levels"]]
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] > 0
    assert rest[-1]["mask"] == [3]


@pytest.mark.parametrize("row,problem", [
    ({"audio_filepath": "a.wav", "text": None}, "'text' must be a string"),
    ({"audio_filepath": "a.wav", "text": 123}, "'text' must be a string"),
    ({"audio_filepath": 5, "text": "x"}, "'audio_filepath' must be a non-empty string"),
    ({"audio_filepath": "a.wav", "text": "x", "duration": "abc"}, "'duration' must be a non-negative number"),
    ({"audio_filepath": "a.wav", "text": "x", "duration": -1}, "'duration' must be a non-negative number"),
    ([1, 2], "must be a JSON object"),
])
def test_malformed_manifest_rows_name_the_manifest_and_line(tmp_path, row, problem):
    from dld_core.audio import load_manifest
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "ok.wav", "text": "fine"}) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError) as info:
        load_manifest(manifest)
    message = str(info.value)
    assert message.startswith(f"{manifest}:3: ") and problem in message and "\n" not in message


def test_evaluate_skips_unreadable_clips_and_says_so(setup, tmp_path):
    import subprocess
    import sys
    from tests.helpers import REPO
    ckpt, manifest, root = setup
    bad = tmp_path / "bad.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in rows:
        r["audio_filepath"] = str(root / r["audio_filepath"])
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    rows.insert(1, {"audio_filepath": str(tmp_path / "broken.wav"), "text": "lost"})
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "dld_core", "evaluate", "--checkpoint", str(ckpt), "--manifest",
                           str(bad), "--keep", "4", "--masks", "1", "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(str(bad)) or ln.startswith("error:")]
    assert lines[0].startswith(f"{bad}:2: skipped: broken.wav") and lines[-1].startswith("error: skipped 1 of 4 rows")
    result = json.loads(out.read_text())
    assert result["utterances"] == 3 and [s["line"] for s in result["skipped"]] == [2]
    clean = evaluate(ckpt, manifest, keep=[4], num_masks=1, progress=False)
    assert result["levels"][0]["wer"] == pytest.approx(clean["levels"][0]["wer"])   # the others count as before


def test_several_decoders_share_the_forward_passes(setup, tmp_path, monkeypatch):
    from dld_core.decoder_files import write_decoder_files
    from dld_core.decoder_params import DIR_ENV
    ckpt, manifest, _ = setup
    monkeypatch.setenv(DIR_ENV, str(write_decoder_files(tmp_path / "lm", {w: -1.0 for t in TEXTS for w in t.split()})))
    both = evaluate(ckpt, manifest, keep=[4, 2], num_masks=2, progress=False, decoder=["greedy", "beam"])
    greedy = evaluate(ckpt, manifest, keep=[4, 2], num_masks=2, progress=False)
    beam = evaluate(ckpt, manifest, keep=[4, 2], num_masks=2, progress=False, decoder="beam")
    assert set(both) == {"greedy", "beam"} and both["beam"]["decoder"] == "beam"
    for name, alone in (("greedy", greedy), ("beam", beam)):
        assert [(lv["wer"], lv["cer"], lv["masks"]) for lv in both[name]["levels"]] == \
               [(lv["wer"], lv["cer"], lv["masks"]) for lv in alone["levels"]]
