"""End to end through the command line: tiny corpus -> teacher -> dld -> evaluate -> transcribe."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from dld_core.audio import load_audio, load_manifest
from dld_core.checkpoint import load_checkpoint
from dld_core.inference import transcribe
from dld_core.metrics import cer, wer
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
    rows = load_manifest(tiny_corpus["test"])
    refs, wavs = [r["text"] for r in rows], [load_audio(r["audio_filepath"]).samples for r in rows]
    student = load_checkpoint(dld).model
    for lv in result["levels"]:     # each level's rates are the mean over its masks of a plain transcription's
        hyps = [transcribe(student, wavs, active=[i in m for i in range(4)]) for m in lv["masks"]]
        assert lv["wer"] == pytest.approx(np.mean([wer(refs, h) for h in hyps]))
        assert lv["cer"] == pytest.approx(np.mean([cer(refs, h) for h in hyps])) and lv["gflops"] > 0
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
    """scripts/recipe.sh (how the shipped models were trained) and shipped_recipe.settings (what the Train
    page starts from) name the same training settings: both come from dld_core/shipped_recipe.py."""
    from dld_core.cli import build_parser, given_options
    from dld_core.config import TrainConfig
    from dld_core.shipped_recipe import settings
    words = subprocess.run(["bash", "-c", f"source scripts/recipe.sh && echo {variables}"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    args = build_parser().parse_args(["train", "--recipe", recipe, "--train", "t", "--valid", "v", "--out", "o", *words])
    script = given_options(args, TrainConfig)
    assert settings(recipe, family) == {k: v for k, v in script.items() if k != "recipe"}


def test_recipe_sh_reads_its_variables_from_one_home():
    """scripts/recipe.sh defines no setting of its own: its variables are dld_core/shipped_recipe.py's, with
    the caller's KEEP_PROB and PROTECTED, and the values are those the shipped models were trained with."""
    from dld_core import shipped_recipe
    script = (REPO / "scripts" / "recipe.sh").read_text()
    assert "--lr" not in script and "--lambda" not in script
    names = list(shipped_recipe.variables())
    show = "; ".join(f'printf "%s\\n" "${name}"' for name in names)
    for keep_prob, protected in (("", ""), ("0.75", "A1")):
        env = {**os.environ, "KEEP_PROB": keep_prob, "PROTECTED": protected}
        out = subprocess.run(["bash", "-c", f"set -euo pipefail; source scripts/recipe.sh; {show}"], cwd=REPO,
                             env=env, capture_output=True, text=True, check=True).stdout.splitlines()
        assert dict(zip(names, out)) == shipped_recipe.variables(keep_prob, protected)
    assert shipped_recipe.variables("0.75", "A1")["WHISPER_STUDENT_ARGS"] == (
        "--init-from-teacher --lr 5e-4 --encoder-lr 1e-4 --warmup 100 --keep-prob 0.75 --protected A1 --seed 0")
    assert shipped_recipe.variables()["TEACHER_ARGS"] == (
        "--family whisper --pretrained default --lr 1e-3 --encoder-lr 5e-5 --warmup 100 --dropout 0 --seed 0")
    assert shipped_recipe.variables()["CONFORMER_STUDENT_ARGS"] == (
        "--family conformer --layers 12 --d-model 96 --heads 4 --ffn 384 --kernel 15 --subsampling 2 "
        "--front-end whisper --dropout 0.1 --lr 2e-3 --warmup 100 --keep-prob 0.5 --seed 0")
    assert (shipped_recipe.variables()["DLD_ARGS"], shipped_recipe.variables()["BATCH_SECONDS"]) == ("--lambda 1 --tau 2", "80")
