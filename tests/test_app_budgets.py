"""Budgets page (issue 15, for a budget owner): the test set is named and can be switched (with the decoder),
the best model at a budget across all models, measured latency and real-time factor next to GFLOPs, the
"at 50% compute" headline, the capped WER axis with its note, and Pareto flags as text."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from tests.app_fixtures.apptest import (env, metric, no_exceptions, run_app, seq2seq_world,  # noqa: F401 (fixtures,
                                        world)                                              # helpers)

# Made-up WERs per (recipe, kept) of the 4-module test models: DLD degrades gracefully, LD less so, the
# static teacher collapses (over 100%: insertions) as soon as a module is dropped. Beam is 2 points better.
WER = {"dld": {4: 0.10, 3: 0.15, 2: 0.20, 1: 0.30},
       "ld": {4: 0.12, 3: 0.25, 2: 0.35, 1: 0.50},
       "teacher": {4: 0.05, 3: 1.20, 2: 1.40, 1: 1.60}}
SYNTH = "corpus/whisper/test.jsonl"


def write_results(world, results: Path) -> dict:
    """Synthetic-test results (greedy + beam) for every model, FSDD results for the teacher only, and a
    bench.json for their architecture (latency 10 ms per kept module). Returns the sample-set results."""
    results.mkdir(parents=True, exist_ok=True)
    samples = {}
    for recipe, folder in world["ckpts"].items():
        base = json.loads((Path(folder) / "eval_samples.json").read_text())
        samples[recipe] = base
        for decoder, better in (("greedy", 0.0), ("beam", 0.02)):
            levels = [{**lv, "wer": WER[recipe][lv["kept"]] - better} for lv in base["levels"]]
            data = {**base, "manifest": SYNTH, "decoder": decoder, "levels": levels}
            (results / f"{recipe}.synthetic_test.{decoder}.json").write_text(json.dumps(data))
        if recipe == "teacher":
            data = {**base, "manifest": "corpus/whisper/fsdd_test.jsonl", "decoder": "greedy"}
            (results / "teacher.fsdd_test.greedy.json").write_text(json.dumps(data))
        report = json.loads((Path(folder) / "budget_masks.json").read_text())   # the card's data, same WERs
        report["evaluations"] += [{**e, "manifest": SYNTH, "decoder": decoder,
                                   "wer": WER[recipe][len(e["active"])] - better}
                                  for e in report["evaluations"]
                                  for decoder, better in (("greedy", 0.0), ("beam", 0.02))]
        (results / "budget_masks").mkdir(exist_ok=True)
        (results / "budget_masks" / f"{recipe}.json").write_text(json.dumps(report))
    write_bench(results, samples["dld"])
    return samples


def write_bench(results: Path, base: dict, scale: float = 1.0) -> None:
    """A `python -m dld_core bench` JSON for the models' architecture (scale != 1: another architecture)."""
    full = next(lv["gflops"] for lv in base["levels"] if lv["kept"] == base["num_layers"])
    levels = [{"kept": k, "mask": list(range(k)), "latency_ms": 10.0 * k,
               "gflops": full * scale * k / base["num_layers"]} for k in range(base["num_layers"], 0, -1)]
    (results / "bench.json").write_text(json.dumps({"seconds": 10.0, "threads": 1, "policy": "first_k",
                                                    "levels": levels}))


@pytest.fixture
def budgets(env, tmp_path):
    samples = write_results(env, tmp_path / "results")
    at = run_app("budgets")
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    return at, samples


def table(at):
    return at.dataframe[0].value


def wer_of(at, model: str, kept: int) -> float:
    t = table(at)
    return float(t[(t["model"] == model) & (t["modules kept"] == kept)]["WER %"].iloc[0])


def decoded(value):
    """A plotly typed array ({"dtype", "bdata", "shape"}) as a numpy array; anything else as it is."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", "")).split(",") if n.strip()]
        return array.reshape(shape) if shape else array
    return np.asarray(value)


def chart(at) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


# ---------------------------------------------------------------------------------------- 1. the test set
def test_the_test_set_is_named_and_can_be_switched(budgets):
    at, samples = budgets
    picker = at.selectbox(key="budget_set")
    assert picker.value == "test.jsonl"                                    # default: the synthetic test set
    assert set(picker.options) == {"Synthetic test (held-out sentences and voices)", "FSDD real speech (test speaker)",
                                   "Sample clips"}
    assert at.radio(key="budget_decoder").value == "beam"                  # default: beam when there is one
    assert any("Synthetic test (held-out sentences and voices)" in c.value and "corpus/whisper/test.jsonl" in c.value
               for c in at.caption)
    assert "Synthetic test (held-out sentences and voices)" in chart(at)["layout"]["title"]["text"]
    assert wer_of(at, "DLD (dld)", 4) == pytest.approx(8.0)               # beam: 0.10 - 0.02

    at.radio(key="budget_decoder").set_value("greedy").run()
    no_exceptions(at)
    assert wer_of(at, "DLD (dld)", 4) == pytest.approx(10.0)

    at.selectbox(key="budget_set").set_value("samples").run()              # the sample clips: greedy only
    no_exceptions(at)
    assert not any(r.key == "budget_decoder" for r in at.radio)
    assert "Sample clips" in chart(at)["layout"]["title"]["text"]
    want = next(lv["wer"] for lv in samples["dld"]["levels"] if lv["kept"] == 4)
    assert wer_of(at, "DLD (dld)", 4) == pytest.approx(round(100 * want, 2))

    at.selectbox(key="budget_set").set_value("fsdd_test.jsonl").run()      # only the teacher has FSDD results
    no_exceptions(at)
    assert set(table(at)["model"]) == {"Teacher (teacher)"}
    assert any("No FSDD real speech (test speaker) results" in c.value and "LD" in c.value for c in at.caption)


# ------------------------------------------------------------------------------- 2. best at this budget
def test_the_best_model_at_a_budget_across_all_models(budgets):
    at, _ = budgets
    at.selectbox(key="budget_target").set_value("LD (ld)").run()
    slider = at.slider(key="budget_gflops")
    slider.set_value(slider.max).run()                                     # everything fits: the teacher wins
    no_exceptions(at)
    assert metric(at, "Best at this budget (any model)") == "Teacher (teacher)"
    assert any(m.value == "**Recommended for LD (ld)**" for m in at.markdown)  # the recommendation stays LD's
    kept = int(metric(at, "Recommended depth").split("/")[0])
    assert metric(at, "Expected WER") == f"WER {100 * (WER['ld'][kept] - 0.02):.1f}%"
    t = table(at)
    best = t[t["at this budget"] == "★ best"]
    assert len(best) == 1 and best["model"].iloc[0] == "Teacher (teacher)" and best["modules kept"].iloc[0] == 4

    full = t[t["modules kept"] == 4]["GFLOPs"].max()
    at.slider(key="budget_gflops").set_value(round(0.8 * full, 3)).run()   # full depth no longer fits
    no_exceptions(at)
    assert metric(at, "Best at this budget (any model)") == "DLD (dld)"    # DLD: 0.13 vs LD 0.23, teacher 1.18


# --------------------------------------------------------------------------------- 3. latency and RTF
def test_latency_and_real_time_factor_next_to_gflops(budgets, tmp_path):
    at, samples = budgets
    t = table(at)
    assert {"GFLOPs", "latency (ms per 10 s)", "RTF"} <= set(t.columns)
    row = t[(t["model"] == "DLD (dld)") & (t["modules kept"] == 3)].iloc[0]
    assert row["latency (ms per 10 s)"] == "30" and row["RTF"] == "0.0030"   # 30 ms for 10 s of audio

    write_bench(tmp_path / "results", samples["dld"], scale=2.0)             # a bench of another architecture
    at = run_app("budgets")
    no_exceptions(at)
    t = table(at)
    assert set(t["latency (ms per 10 s)"]) == {"—"} and set(t["RTF"]) == {"—"}


# ------------------------------------------------------------------------------ 4. at 50% compute
def test_headline_at_half_compute(budgets):
    at, _ = budgets
    t = table(at)
    expected = []
    for model in ("DLD (dld)", "LD (ld)", "Teacher (teacher)"):
        part = t[t["model"] == model]
        row = part.loc[(part["GFLOPs"] - part["GFLOPs"].max() / 2).abs().idxmin()]
        expected.append(f"{model} **WER {row['WER %']:.1f}%**")                 # "WER" next to the number
    headline = next(m.value for m in at.markdown if "At 50% compute" in m.value)
    positions = [headline.index(e) for e in expected]                     # every model, DLD, LD, teacher
    assert positions == sorted(positions)


# ------------------------------------------------------------------------------- 5. the capped WER axis
def test_the_wer_axis_is_capped_with_a_note(budgets):
    at, _ = budgets                                                        # the teacher's dropped depths: >100%
    spec = chart(at)
    assert spec["layout"]["yaxis"]["range"][1] <= 110
    teacher = next(tr for tr in spec["data"] if tr.get("name") == "Teacher (teacher)")
    assert decoded(teacher["y"]).max() == pytest.approx(100.0)
    assert decoded(teacher["customdata"])[:, 1].max() == pytest.approx(158.0)  # the hover keeps the true value
    assert any("above 100%" in a.get("text", "") for a in spec["layout"].get("annotations", []))
    assert any("WER counts inserted words" in c.value for c in at.caption)

    at.selectbox(key="budget_target").set_value("DLD (dld)").run()
    at.multiselect(key="budget_models").unselect(
        next(p for p in at.multiselect(key="budget_models").value if p.endswith("teacher"))).run()
    no_exceptions(at)                                                      # no point above: no note
    assert not any("WER counts inserted words" in c.value for c in at.caption)
    assert not any("above 100%" in a.get("text", "") for a in chart(at)["layout"].get("annotations", []))


# ------------------------------------------------------------------------------- 6. Pareto flags as text
def test_pareto_flags_are_text(budgets):
    at, _ = budgets
    flags = table(at)["on Pareto front"]
    assert flags.dtype != bool and set(flags) == {"✓ Pareto", ""}          # not checkbox cells


def test_the_shipped_set_is_the_default_selection(env, tmp_path, monkeypatch):
    """checkpoints/{teacher,ld,dld} are preselected; other shipped folders (e.g. scratch/dld) are offered only."""
    import shutil
    root = tmp_path / "checkpoints"
    for recipe, folder in env["ckpts"].items():
        shutil.copytree(folder, root / recipe)
    shutil.copytree(env["ckpts"]["dld"], root / "scratch" / "dld")
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(root))
    at = run_app("budgets")
    no_exceptions(at)
    chosen = at.session_state["budget_models"]
    assert sorted(Path(p).relative_to(root).as_posix() for p in chosen) == ["dld", "ld", "teacher"]
    assert any("scratch/dld" in str(o) for o in at.multiselect(key="budget_models").options)


def test_every_metric_has_a_help_text(budgets):
    at, _ = budgets
    assert at.metric and all(m.help for m in at.metric), [m.label for m in at.metric if not m.help]
    assert "exceed 100%" in next(m.help for m in at.metric if m.label == "Expected WER")


# ------------------------------------------------------------- 7. the card's numbers are its mask's (issue 22)
def card_world(env, tmp_path, test_wer) -> dict:
    """Results as in `budgets`, and a newer DLD report (results/budget_masks/dld.json) with made-up validation
    WERs (the more modules the better) and test results test_wer(mask) for every mask, on the synthetic test
    set with both decoders (beam 2 points better). Returns the report."""
    from dld_core.config import ModelConfig, from_dict
    from dld_core.flops import gflops_for_seconds
    from dld_core.masks import candidate_masks
    write_results(env, tmp_path / "results")
    folder = Path(env["ckpts"]["dld"])
    report = json.loads((folder / "budget_masks.json").read_text())
    cfg = from_dict(ModelConfig, json.loads((folder / "config.json").read_text())["model"])
    masks_ = []
    for k in range(4, 0, -1):
        for j, m in enumerate(candidate_masks(4, k, None, num_random=2)):
            masks_.append({"kept": k, "active": m, "wer": 0.5 - 0.1 * k + 0.01 * j, "kl": 0.1,
                           "gflops": gflops_for_seconds(cfg, 10.0, m)})
    report["masks"] = masks_
    report["evaluations"] = [{"active": e["active"], "decoder": d, "manifest": SYNTH, "utterances": 335,
                              "wer": test_wer(e["active"]) - (0.02 if d == "beam" else 0.0),
                              "cer": test_wer(e["active"]) / 3, "gflops": e["gflops"]}
                             for e in masks_ for d in ("greedy", "beam")]
    import os
    import time
    out = tmp_path / "results" / "budget_masks" / "dld.json"
    out.write_text(json.dumps(report))
    os.utime(out, (time.time() + 5, time.time() + 5))                  # the newest report of this model
    return report


def test_every_number_on_the_card_is_the_recommended_masks_own(env, tmp_path):
    from dld_core.recommend import recommend
    report = card_world(env, tmp_path, lambda m: 0.40 + 0.05 * (4 - len(m)))
    at = run_app("budgets")
    no_exceptions(at)
    at.selectbox(key="budget_target").set_value("DLD (dld)").run()
    full = max(e["gflops"] for e in report["masks"])
    budget = round(0.6 * full, 3)
    at.slider(key="budget_gflops").set_value(budget).run()
    no_exceptions(at)
    budget = at.slider(key="budget_gflops").value
    best = recommend(report["masks"], budget)                     # the best on validation within the budget
    ev = next(e for e in report["evaluations"] if e["active"] == best["active"] and e["decoder"] == "beam")
    assert metric(at, "Recommended depth") == f"{len(best['active'])}/4 modules"
    assert metric(at, "Expected WER") == f"WER {100 * ev['wer']:.1f}%"           # that mask, on the test set
    assert metric(at, "Expected CER") == f"CER {100 * ev['cer']:.1f}%"
    assert metric(at, "GFLOPs") == f"{best['gflops']:.3f}"                       # dld_core.flops of that mask
    strip = next(m.value for m in at.markdown if m.value.startswith("Mask:"))
    on = [name for name in ("L1", "L2", "L3", "L4") if f"background:#4f46e5;color:white'>{name}<" in strip]
    assert on == [f"L{i + 1}" for i in best["active"]]
    assert any(c.value.startswith("Chosen on the validation set") and f"greedy WER {100 * best['wer']:.1f}%" in c.value
               for c in at.caption)
    headline = next(m.value for m in at.markdown if "At 50% compute" in m.value)
    assert headline.count("**WER ") == 3                                          # "WER" next to every number
    star = next(t for t in chart(at)["data"] if t.get("name") == "recommended")
    assert decoded(star["x"])[0] == pytest.approx(best["gflops"])
    assert decoded(star["y"])[0] == pytest.approx(100 * ev["wer"])
    at.button(key="use_mask").click().run()                       # Inspect opens this model with this mask
    no_exceptions(at)
    assert at.session_state["mask"] == tuple(i in best["active"] for i in range(4))


def test_no_usable_model_is_recommended(env, tmp_path):
    card_world(env, tmp_path, lambda m: 0.97)
    at = run_app("budgets")
    no_exceptions(at)
    at.selectbox(key="budget_target").set_value("DLD (dld)").run()
    at.slider(key="budget_gflops").set_value(at.slider(key="budget_gflops").min).run()
    no_exceptions(at)
    assert not any(m.label == "Recommended depth" for m in at.metric)
    assert any(w.value.startswith("No usable model of DLD (dld) fits") for w in at.warning)
    assert not any(t.get("name") == "recommended" for t in chart(at)["data"])


def test_the_card_offers_its_mask_as_a_download(budgets, tmp_path):
    """"Download this model" on the card: nothing is exported until "Prepare download"; then the zip of the
    card's own mask (dld_core.download, cached in DLD_DOWNLOADS_DIR) is offered with a download button."""
    import zipfile
    at, _ = budgets
    assert [e.label for e in at.expander if e.label == "Download this model"] == ["Download this model"]
    assert at.selectbox(key="budget_download_format").value == "onnx"                 # ONNX by default
    assert not (tmp_path / "downloads").exists() and not at.get("download_button")[1:]  # only the CSV one
    at.button(key="budget_download_prepare").click().run()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    (zip_path,) = (tmp_path / "downloads").glob("*.zip")
    with zipfile.ZipFile(zip_path) as z:
        assert {"README.md", "model/model.onnx", "model/features.onnx", "model/config.json"} <= set(z.namelist())
        kept = json.loads(z.read("model/config.json"))["deployed"]["kept"]
    strip = next(m.value for m in at.markdown if m.value.startswith("Mask:"))
    assert kept == [name for name in ("L1", "L2", "L3", "L4") if f"background:#4f46e5;color:white'>{name}<" in strip]
    assert len(at.get("download_button")) == 2                                       # the zip's, and the CSV's


# ------------------------------------------------------------------- 8. an encoder-decoder student's results
def test_text_decoder_results_are_named_and_show_no_ctc_latency(budgets, tmp_path):
    """Results of a text decoder (evaluate --decoder whisper ...) are named as such, and the bench's latency, a CTC
    forward's, is not shown for them (the text decoder's search costs far more)."""
    at, samples = budgets
    base = samples["dld"]
    levels = [{**lv, "wer": WER["dld"][lv["kept"]] - 0.05} for lv in base["levels"]]
    (tmp_path / "results" / "dld.synthetic_test.whisper-joint.json").write_text(json.dumps(
        {**base, "manifest": SYNTH, "decoder": "whisper-joint", "input_mode": "clip", "levels": levels}))
    at = run_app("budgets")
    no_exceptions(at)
    radio = at.radio(key="budget_decoder")
    assert radio.options == ["Beam search + word LM", "Greedy", "Text decoder, beam + CTC rescoring"]
    assert "text decoder" in radio.help
    assert table(at)[lambda t: t["model"] == "DLD (dld)"]["latency (ms per 10 s)"].iloc[0] != "—"  # beam: the CTC's
    radio.set_value("whisper-joint").run()
    no_exceptions(at)
    t = table(at)
    assert set(t["model"]) == {"DLD (dld)"} and wer_of(at, "DLD (dld)", 4) == pytest.approx(5.0)
    assert set(t["latency (ms per 10 s)"]) == {"—"} and set(t["RTF"]) == {"—"}
    assert any("decoder: Text decoder, beam + CTC rescoring" in c.value for c in at.caption)
    assert any("or for a text decoder" in c.value for c in at.caption)
    assert "text decoder, beam + ctc rescoring" in chart(at)["layout"]["title"]["text"]


def test_an_encoder_decoder_student_s_card_says_its_mask_is_chosen_by_its_ctc_head(env, seq2seq_world, tmp_path,
                                                                                    monkeypatch):
    """dld_core.recommend chooses masks by the CTC head's greedy WER on the validation set: the card of an
    encoder-decoder student says so, beside its text decoder's WER on the test set."""
    from dld_core.evaluate import evaluate
    from dld_core.recommend import budget_report
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(seq2seq_world["root"] / "checkpoints"))
    results = tmp_path / "results"
    (results / "budget_masks").mkdir(parents=True)
    manifest = str(env["manifest"])
    ckpts = seq2seq_world["ckpts"]
    (results / "teacher.samples.greedy.json").write_text(json.dumps(evaluate(ckpts["teacher"], manifest, num_masks=2,
                                                                             progress=False)))
    (results / "dld.samples.whisper.json").write_text(json.dumps(
        evaluate(ckpts["dld"], manifest, num_masks=2, progress=False, decoder=["whisper"])["whisper"]))
    report = budget_report(ckpts["dld"], manifest, [manifest], ["whisper"], clips=3, num_candidates=2,
                           log=lambda _: None)
    (results / "budget_masks" / "dld.json").write_text(json.dumps(report))
    at = run_app("budgets")
    no_exceptions(at)
    at.radio(key="budget_decoder").set_value("whisper").run()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="budget_target").value == "DLD (dld)"
    chosen = next(c.value for c in at.caption if c.value.startswith("Chosen on the validation set"))
    assert "its CTC head's greedy WER" in chosen and "text decoder, greedy" in next(
        m.help for m in at.metric if m.label == "Expected WER")


