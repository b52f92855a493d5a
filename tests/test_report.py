import json
import shutil

import pytest

from dld_core.report import ablation_table, default_student, half_compute_level, write_report
from tests.app_fixtures import make_checkpoints


def fake_eval(path, wers):
    levels = [{"kept": k, "wer": w, "cer": w / 2, "gflops": 0.1 * k, "masks": [[0]]} for k, w in wers.items()]
    path.write_text(json.dumps({"checkpoint": "x", "num_layers": 3, "levels": levels}))


def test_report_table_and_figure(tmp_path):
    fake_eval(tmp_path / "teacher.synthetic_test.json", {3: 0.2, 2: 0.9, 1: 1.0})            # no decoder: greedy
    fake_eval(tmp_path / "ld.synthetic_test.greedy.json", {3: 0.4, 2: 0.5, 1: 0.8})
    fake_eval(tmp_path / "dld.synthetic_test.greedy.json", {3: 0.3, 2: 0.45, 1: 0.7})
    fake_eval(tmp_path / "dld.synthetic_test.beam.json", {3: 0.25, 2: 0.4, 1: 0.6})
    fake_eval(tmp_path / "conformer_dld.real_dev.beam.json", {3: 0.5})
    fake_eval(tmp_path / "notes.json", {3: 0.5})                                              # not a result name
    out = write_report(tmp_path, tmp_path / "out")
    md = out["markdown"].read_text()
    greedy = md[md.index("Synthetic test (held-out sentences and voices), greedy"):md.index("Synthetic test (held-out sentences and voices), beam")]
    assert "| 3 | 20.0 (10.0) | 0.30 | 40.0 (20.0) | 0.30 | 30.0 (15.0) | 0.30 |" in greedy
    assert "| 1 | 100.0 (50.0) | 0.10 | 80.0 (40.0) | 0.10 | 70.0 (35.0) | 0.10 |" in greedy
    assert "| kept | DLD WER % (CER %) | GFLOPs |\n" in md and "conformer DLD WER %" in md
    assert md.index("Synthetic test") < md.index("Real read speech")
    png = out["figure"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_report_needs_results(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path, tmp_path / "out")


def test_ablation_table(tmp_path):
    fake_eval(tmp_path / "a.json", {2: 0.5, 1: 0.7})                       # 3 modules: 2/3 and 1/3 kept
    (tmp_path / "b.json").write_text(json.dumps({"num_layers": 6, "levels": [        # 6 modules: 6/6 and 4/6 kept
        {"kept": 6, "wer": 0.3, "cer": 0.1, "gflops": 0.6}, {"kept": 4, "wer": 0.4, "cer": 0.2, "gflops": 0.4}]}))
    table = ablation_table(tmp_path)
    lines = table.splitlines()
    assert lines[0].startswith("| run | 100% kept: WER / CER % · GFLOPs | 66.7% kept: WER / CER % · GFLOPs | 33.3% kept")
    assert "| a | - | 50.0 / 25.0 · 0.20 | 70.0 / 35.0 · 0.10 | 60.0 / 30.0 |" in lines
    assert "| b | 30.0 / 10.0 · 0.60 | 40.0 / 20.0 · 0.40 | - | 35.0 / 15.0 |" in lines
    from dld_core.report import ablation_figure
    png = ablation_figure(tmp_path, tmp_path / "fronts.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_report_importance_table(tmp_path):
    fake_eval(tmp_path / "dld.synthetic_test.beam.json", {3: 0.25, 2: 0.4, 1: 0.6})
    names = ["A1", "M1", "A2"]
    for model, delta in (("ld", 0.30), ("dld", 0.10)):
        (tmp_path / f"importance.{model}.json").write_text(json.dumps({
            "module_names": names, "decoder": "beam", "utterances": 5, "manifest": "t.jsonl",
            "importance": {"base_wer": 0.2, "delta_wer": [delta, 0.05, -0.01],
                           "delta_wer_ci": [[delta - 0.1, delta + 0.1], [0.0, 0.1], [-0.05, 0.03]],
                           "delta_kl": [1.5, 0.2, 0.01]},
            "path": [{"dropped": None, "wer": 0.2}, {"dropped": 2, "wer": 0.19}, {"dropped": 1, "wer": 0.5}]}))
    md = write_report(tmp_path, tmp_path / "out")["markdown"].read_text()
    table = md[md.index("### Layer importance"):]
    assert "| dropped | LD ΔWER pts [95% CI] · ΔKL | DLD ΔWER pts [95% CI] · ΔKL |" in table     # LD before DLD
    assert "| A1 | +30.0 [+20.0, +40.0] · +1.50 | +10.0 [+0.0, +20.0] · +1.50 |" in table
    assert "| A2 | -1.0 [-5.0, +3.0] · +0.01 |" in table
    assert "DLD greedy drop path (WER % after each drop): -A2 19.0, -M1 50.0" in table


def test_evaluation_sets_have_one_home():
    from dld_core.eval_sets import BY_KEY, EVAL_SETS, by_manifest_name
    from dld_core.report import SETS
    assert list(SETS) == [s.key for s in EVAL_SETS] == list(BY_KEY)
    assert by_manifest_name("fsdd_test.jsonl").key == "fsdd_test"
    assert by_manifest_name("real_dev.jsonl").path("corpus").as_posix() == "corpus/real_dev/real_dev.jsonl"
    assert by_manifest_name("train.jsonl") is None


def fake_metrics(folder, wers, seconds_per_step):
    folder.mkdir(parents=True)
    history = [{"epoch": i + 1, "step": 10 * (i + 1), "valid_wer": w, "valid_wer_masks": [w, 1.0],
                "train_seconds": 10 * (i + 1) * seconds_per_step} for i, w in enumerate(wers)]
    (folder / "metrics.json").write_text(json.dumps({"steps": 10 * len(wers), "train_seconds": history[-1]["train_seconds"],
                                                     "history": history}))


def test_training_time_to_reach_lds_best(tmp_path):
    from dld_core.report import time_to_quality, training_table
    fake_metrics(tmp_path / "ld", [0.9, 0.8, 0.7, 0.72], 2.0)          # LD's best: 0.7 at step 30, 60 s
    fake_metrics(tmp_path / "dld", [0.85, 0.69, 0.6, 0.6], 2.5)        # DLD gets there at step 20, 50 s
    t = time_to_quality(*(json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("ld", "dld")))
    assert t["target"] == 0.7 and t["ld"]["step"] == 30 and t["dld"]["step"] == 20
    row = training_table(tmp_path).splitlines()[2]
    assert row == "| LD / DLD | 40 / 40 | 80 / 100 | 70.0 | 30 steps, 60 s | 20 steps, 50 s (-33% steps, -17% time) |"
    fake_metrics(tmp_path / "conformer_ld", [0.5], 1.0)
    fake_metrics(tmp_path / "conformer_dld", [0.6], 1.0)               # never reaches LD's 0.5
    assert training_table(tmp_path).splitlines()[3].endswith("| not reached |")
    assert training_table(tmp_path / "nothing") == ""


def test_half_compute_level_is_closest_to_half_the_gflops(tmp_path):
    fake_eval(tmp_path / "a.json", {8: 0.3, 5: 0.5, 4: 0.6, 3: 0.7})         # 0.8 GFLOPs at full depth
    assert half_compute_level(json.loads((tmp_path / "a.json").read_text()))["kept"] == 4
    fake_eval(tmp_path / "b.json", {12: 0.3, 7: 0.5, 6: 0.6, 5: 0.7})        # 0.6 of 1.2 GFLOPs: kept 6
    assert half_compute_level(json.loads((tmp_path / "b.json").read_text()))["kept"] == 6


def test_default_student_is_the_dld_student_best_at_half_compute_on_real_speech(tmp_path):
    ckpts, results = tmp_path / "checkpoints", tmp_path / "results"
    results.mkdir()
    assert default_student(ckpts, results) == ckpts / "dld"                  # nothing at all: the usual name
    made = make_checkpoints(ckpts)
    assert default_student(ckpts, results) == ckpts / "dld"                  # no results: the fallback
    shutil.copytree(made["dld"], ckpts / "s2s_dld")
    levels = {4: 0.3, 2: 0.8, 1: 0.9}                                        # half compute: kept 2
    fake_eval(results / "dld.real_dev.beam.json", {**levels, 2: 0.6})
    fake_eval(results / "dld.real_dev.greedy.json", {**levels, 2: 0.7})
    fake_eval(results / "s2s_dld.real_dev.whisper.json", {**levels, 2: 0.65})
    assert default_student(ckpts, results) == ckpts / "dld"                  # its better decoder counts: 0.6
    fake_eval(results / "s2s_dld.real_dev.whisper-beam.json", {**levels, 2: 0.5})
    assert default_student(ckpts, results) == ckpts / "s2s_dld"
    fake_eval(results / "s2s_dld.synthetic_test.beam.json", {**levels, 2: 0.1})     # another test set: ignored
    fake_eval(results / "ld.real_dev.beam.json", {**levels, 2: 0.1})                # not a DLD student: ignored
    fake_eval(results / "gone_dld.real_dev.beam.json", {**levels, 2: 0.1})          # no checkpoint folder: ignored
    assert default_student(ckpts, results) == ckpts / "s2s_dld"
    (results / "seq2seq").mkdir()                                            # a folder below: only results that
    fake_eval(results / "seq2seq" / "dld.real_dev.whisper.json", {**levels, 2: 0.01})      # record the checkpoint
    assert default_student(ckpts, results) == ckpts / "s2s_dld"
    shipped = json.loads((results / "seq2seq" / "dld.real_dev.whisper.json").read_text())
    (results / "seq2seq" / "dld.real_dev.whisper.json").write_text(json.dumps({**shipped, "checkpoint": str(ckpts / "dld")}))
    assert default_student(ckpts, results) == ckpts / "dld"
    shutil.rmtree(ckpts / "dld")
    shutil.rmtree(ckpts / "s2s_dld")
    assert default_student(ckpts, results) == ckpts / "teacher"              # no DLD student left: the teacher
