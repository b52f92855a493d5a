"""End to end through the command line: tiny corpus -> teacher -> dld -> evaluate -> transcribe."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import REPO

pytestmark = pytest.mark.slow           # training runs in subprocesses; see pyproject.toml

TINY = ["--layers", "4", "--d-model", "32", "--heads", "2", "--ffn", "64", "--kernel", "7",
        "--batch-seconds", "8", "--warmup", "3", "--threads", "1", "--quiet"]


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "dld_core", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_cli_end_to_end(tmp_path, tiny_corpus):
    teacher, dld = tmp_path / "teacher", tmp_path / "dld"
    cli("train", "--recipe", "teacher", "--train", tiny_corpus["train"], "--valid", tiny_corpus["valid"],
        "--out", teacher, "--epochs", "2", *TINY)
    cli("train", "--recipe", "dld", "--train", tiny_corpus["train"], "--valid", tiny_corpus["valid"],
        "--out", dld, "--teacher", teacher, "--init-from-teacher", "--epochs", "1", *TINY)
    for folder in (teacher, dld):
        assert {"config.json", "model.safetensors", "metrics.json", "train_log.jsonl"} <= {p.name for p in folder.iterdir()}
    out_json = tmp_path / "eval.json"
    cli("evaluate", "--checkpoint", dld, "--manifest", tiny_corpus["test"], "--keep", "4,2,1", "--masks", "2",
        "--json", out_json)
    result = json.loads(out_json.read_text())
    assert result["num_layers"] == 4 and [lv["kept"] for lv in result["levels"]] == [4, 2, 1]
    for lv in result["levels"]:
        assert 0 <= lv["cer"] and 0 <= lv["wer"] and lv["gflops"] > 0
        assert all(len(m) == lv["kept"] for m in lv["masks"])
    g = [lv["gflops"] for lv in result["levels"]]
    assert g[0] > g[1] > g[2]

    imp_json = tmp_path / "importance.json"
    out = cli("importance", "--checkpoint", dld, "--teacher", teacher, "--manifest", tiny_corpus["test"],
              "--drop", "L2", "--resamples", "50", "--limit", "3", "--json", imp_json).stdout
    imp = json.loads(imp_json.read_text())
    assert imp["utterances"] == 3 and imp["module_names"] == ["L1", "L2", "L3", "L4"]
    assert imp["importance"]["base_active"] == [0, 2, 3] and imp["importance"]["delta_wer"][1] is None
    for i in (0, 2, 3):                         # each kept module: a ΔWER inside its interval, and a ΔKL
        lo, hi = imp["importance"]["delta_wer_ci"][i]
        assert lo - 1e-9 <= imp["importance"]["delta_wer"][i] <= hi + 1e-9
        assert imp["importance"]["delta_kl"][i] is not None
    assert [s["kept"] for s in imp["path"]] == [3, 2, 1] and "greedy path:" in out

    wav = tmp_path / "ok.wav"
    sf.write(wav, (0.2 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    proc = cli("transcribe", "--checkpoint", dld, "--drop", "1,3", wav, bad, check=False)
    assert proc.returncode != 0
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{wav}\t")
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "Traceback" not in proc.stderr
    ok = cli("transcribe", "--checkpoint", dld, "--keep", "2", wav)
    assert ok.stdout.startswith(f"{wav}\t")


def test_cli_user_errors_are_one_line(tmp_path):
    proc = cli("transcribe", "--checkpoint", tmp_path / "missing", "x.wav", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = cli("train", "--recipe", "dld", "--train", tmp_path / "none.jsonl", "--valid", tmp_path / "none.jsonl",
               "--out", tmp_path / "o", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("recipe,variables,family", [("teacher", "$TEACHER_ARGS", "whisper"),
                                                     ("dld", "$WHISPER_STUDENT_ARGS $DLD_ARGS", "whisper"),
                                                     ("ld", "$WHISPER_STUDENT_ARGS", "whisper")])
def test_the_shipped_recipe_script_and_the_apps_settings_agree(recipe, variables, family):
    """scripts/recipe.sh (how the shipped models were trained) and config.SHIPPED_SETTINGS (what the Train
    page starts from) name the same training settings."""
    from dld_core.cli import build_parser, given_options
    from dld_core.config import TrainConfig, shipped_settings
    words = subprocess.run(["bash", "-c", f"source scripts/recipe.sh && echo {variables}"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    args = build_parser().parse_args(["train", "--recipe", recipe, "--train", "t", "--valid", "v", "--out", "o", *words])
    script = given_options(args, TrainConfig)
    assert shipped_settings(recipe, family).items() <= script.items()
