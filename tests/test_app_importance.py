"""AppTest coverage of the Layer importance page for researchers: two students side by side, drop-one from a
chosen mask, the evaluation set (built-in sets, a typed manifest, a clip limit), bootstrap error bars, CSV /
JSON export, the negative-delta caption, labels that are not cut off, "Open this mask in Inspect", and an
encoder-decoder student's token-level drop-one KL (issue 20)."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from tests.app_fixtures.apptest import (APP, TIMEOUT, env, no_exceptions, seq2seq_env,  # noqa: F401 (env, world,
                                        seq2seq_world, world)                        # seq2seq_*: fixtures)

PAGE = "app_pages/importance.py"


def open_page(mask=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if mask is not None:
        at.session_state["mask"] = tuple(mask)          # what Inspect's layer strip leaves behind
    at.run()
    at.switch_page(PAGE).run()
    no_exceptions(at)
    return at


def compute(at: AppTest) -> AppTest:
    """Press Compute (absent when this process already computed the same thing: results are shared)."""
    if any(b.key == "importance_go" for b in at.button):
        at.button(key="importance_go").click().run()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    return at


def chart(at: AppTest, i: int) -> dict:
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def test_ld_and_dld_side_by_side_with_intervals_and_whole_labels(env):
    at = open_page()
    ckpts = env["ckpts"]
    assert at.multiselect(key="imp_students").value == [str(ckpts["ld"]), str(ckpts["dld"])]
    compute(at)
    wer = chart(at, 0)
    bars = [t for t in wer["data"] if t["type"] == "bar"]
    assert [t["name"] for t in bars] == ["LD · ld", "DLD · dld"]           # grouped, one axis
    assert wer["layout"]["barmode"] == "group"
    for t in bars:
        assert t["x"] == ["L1", "L2", "L3", "L4"]
        assert "array" in t["error_y"] and "arrayminus" in t["error_y"]      # bootstrap intervals
    axis = wer["layout"]["xaxis"]
    assert axis["automargin"] is True and axis["tickangle"] == 0 and axis["type"] == "category"
    kl = chart(at, 1)
    assert len([t for t in kl["data"] if t["type"] == "bar"]) == 2 and kl["layout"]["xaxis"]["automargin"] is True
    path = chart(at, 2)
    assert [t["name"] for t in path["data"]] == ["LD · ld", "DLD · dld"]   # both greedy paths
    assert len(at.dataframe) == 3                                           # two path tables + the export table
    assert any("below zero means dropping the module helped" in c.value for c in at.caption)
    assert any("95% bootstrap interval" in c.value and "1000 resamples" in c.value for c in at.caption)


def test_one_student_shows_one_series(env):
    at = open_page()
    at.multiselect(key="imp_students").set_value([str(env["ckpts"]["dld"])]).run()
    compute(at)
    bars = [t for t in chart(at, 0)["data"] if t["type"] == "bar"]
    assert len(bars) == 1 and bars[0]["showlegend"] is False


def test_drop_one_from_the_inspect_mask_and_presets(env):
    at = open_page(mask=(True, False, True, True))
    assert at.multiselect(key="imp_kept").value == ["L1", "L3", "L4"]       # the Inspect mask, reused
    compute(at)
    path = at.dataframe[0].value
    assert list(path["kept"]) == [3, 2, 1] and path["dropped"].iloc[0] == "start"
    bars = [t for t in chart(at, 0)["data"] if t["type"] == "bar"]
    assert all(t["y"][1] is None for t in bars)                             # L2 is already off: no bar
    assert all(t["y"][i] is not None for t in bars for i in (0, 2, 3))
    at.button(key="imp_mask_every_other").click().run()
    assert at.multiselect(key="imp_kept").value == ["L2", "L4"]
    at.button(key="imp_mask_all").click().run()
    assert at.multiselect(key="imp_kept").value == ["L1", "L2", "L3", "L4"]
    at.multiselect(key="imp_kept").set_value([]).run()
    assert [e.value for e in at.error] == ["Keep at least one module in the start mask."]


@pytest.fixture
def corpus(env, tmp_path, monkeypatch):
    """A built-in corpus folder with only a synthetic test set (25 clips: the page offers a clip limit)."""
    from dld_core.audio import load_manifest
    rows = load_manifest(env["manifest"])
    folder = tmp_path / "corpus" / "whisper"
    folder.mkdir(parents=True)
    lines = [json.dumps({"audio_filepath": rows[i % len(rows)]["audio_filepath"], "text": rows[i % len(rows)]["text"],
                         "duration": rows[i % len(rows)]["duration"]}) for i in range(25)]
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("DLD_CORPUS_DIR", str(tmp_path / "corpus"))
    return folder / "test.jsonl"


def test_evaluation_sets_and_clip_limit(corpus, tmp_path, monkeypatch):
    at = open_page()
    box = at.selectbox(key="imp_set")
    assert box.options == ["Sample clips", "Synthetic test (held-out sentences and voices)",   # every set of
                           "FSDD real speech (test speaker) — not built here",                     # eval_sets.py
                           "Real read speech (pocketsphinx-testdata) — not built here",
                           "Another manifest (path)…"]
    assert box.value == "samples"
    box.set_value("real_dev").run()                                         # missing here: how to build it
    no_exceptions(at)
    assert any("not on this server" in i.value and "python -m dld_core real-dev" in i.value for i in at.info)
    box = at.selectbox(key="imp_set")
    box.set_value("synthetic_test").run()
    limit = at.number_input(key="imp_limit_synthetic_test")
    assert limit.value == 25 and limit.max == 25
    limit.set_value(4).run()
    compute(at)
    assert any(c.value.startswith("Computed over 4 clips") and "Synthetic test" in c.value for c in at.caption)

    # a typed manifest: served to a network, refused outside the allowed data folders (the Train page's rule)
    from app.state import access
    monkeypatch.setattr(access, "served_to_network", lambda: True)
    at.selectbox(key="imp_set").set_value("custom").run()
    at.text_input(key="imp_manifest").set_value(str(corpus)).run()
    no_exceptions(at)
    assert [e.value for e in at.error] == ["This server accepts no manifest paths: use the built-in corpus."]
    monkeypatch.setenv("DLD_DATA_DIRS", str(tmp_path))
    at.run()
    assert not at.error
    assert at.number_input(key="imp_limit_custom").value == 25
    at.text_input(key="imp_manifest").set_value(str(tmp_path / "missing.jsonl")).run()
    assert [e.value for e in at.error] == ["The manifest is not a readable file."]


def test_csv_and_json_export(env, monkeypatch):
    saved = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        saved[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    at = compute(open_page())
    assert [b.proto.label for b in at.get("download_button")] == ["Download CSV", "Download JSON"]
    table = pd.read_csv(io.BytesIO(saved["dld_layer_importance.csv"]))
    assert list(table.columns) == ["model", "checkpoint", "module", "in_start_mask", "delta_wer_pts", "ci_low_pts",
                                   "ci_high_pts", "delta_kl"]
    assert sorted(table["model"].unique()) == ["DLD · dld", "LD · ld"] and len(table) == 8
    assert (table["ci_low_pts"] <= table["delta_wer_pts"] + 1e-9).all()
    assert (table["delta_wer_pts"] <= table["ci_high_pts"] + 1e-9).all()
    data = saved["dld_layer_importance.json"]
    doc = json.loads(data if isinstance(data, str) else data.decode())
    assert doc["bootstrap"] == {"level": 0.95, "resamples": 1000, "seed": 0} and doc["evaluation_set"] == "Sample clips"
    assert len(doc["rows"]) == 8 and doc["start_mask"] == ["L1", "L2", "L3", "L4"]


def test_open_a_mask_of_the_path_in_inspect(env):
    """Issue 22: each model's path table has its own "Open in Inspect", which opens that model (DLD's opens
    DLD, not the first model), with the mask of the row picked."""
    at = compute(open_page())
    path = at.dataframe[1].value                                   # DLD's greedy path (the second table)
    assert at.selectbox(key="imp_open_step_1").value == 1          # default: start mask minus the least important
    at.selectbox(key="imp_open_step_1").set_value(2).run()
    at.button(key="imp_open_1").click().run()
    no_exceptions(at)
    assert at.session_state["_student_ckpt_choice"] == str(env["ckpts"]["dld"])
    mask = at.session_state["mask"]
    assert sum(mask) == 2 and len(mask) == 4
    assert any(t.value == "Inspect" for t in at.title)             # switched to Inspect, which took the mask
    assert at.toggle(key=f"layer_{mask.index(False)}").value is False
    assert at.selectbox(key="student_ckpt").value == str(env["ckpts"]["dld"])
    assert len(path) == 4


def test_the_teacher_is_kept_for_a_student_whose_frames_line_up_with_it(env, tmp_path, monkeypatch):
    """The page accepts a teacher by dld_core.families.compatible_teacher, as dld_core does: a conformer
    student on Whisper's log-mel with 2x subsampling keeps its Whisper teacher's KL views (the page used to
    ask for the same family and n_mels), a conformer on its own log-mel (other frames) does not."""
    from dld_core.checkpoint import save_checkpoint
    from dld_core.config import ModelConfig
    from dld_core.model import DynamicCTCModel
    ckpts = tmp_path / "checkpoints"
    save_checkpoint(ckpts / "teacher", DynamicCTCModel(ModelConfig(family="whisper", d_model=32, n_layers=2, n_heads=2,
                                                                   ffn_dim=64, max_frames=400)), recipe="teacher")
    student = dict(family="conformer", n_layers=2, d_model=32, n_heads=2, ffn_dim=64)
    save_checkpoint(ckpts / "dld", DynamicCTCModel(ModelConfig(**student, subsampling=2, front_end="whisper")),
                    recipe="dld")
    save_checkpoint(ckpts / "ld", DynamicCTCModel(ModelConfig(**student)), recipe="ld")
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(ckpts))
    at = open_page()

    def kl_off() -> bool:
        return any("KL views are off" in w.value for w in at.warning)

    assert at.multiselect(key="imp_students").value == [str(ckpts / "ld"), str(ckpts / "dld")]
    assert kl_off()                                    # the conformer on its own log-mel: 25 frames/s, not 50
    at.multiselect(key="imp_students").set_value([str(ckpts / "dld")]).run()
    no_exceptions(at)
    assert not kl_off()


# ------------------------------------------------------------------------- an encoder-decoder student (issue 20)
def token_kl_charts(at: AppTest) -> list[dict]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return [s for s in specs if "Token-level" in str(s["layout"].get("title", {}).get("text", ""))]


def test_an_encoder_decoder_student_has_a_token_level_kl_view(seq2seq_env):
    """Beside the frame-level views: one bar per kept module, the text decoder's mean per-token KL
    (dld_core.seq2seq.token_drop_one_kl on the chosen clips, the checkpoint's own input mode), in the export too."""
    at = open_page()
    assert at.multiselect(key="imp_students").value == [str(seq2seq_env["ckpts"]["dld"])]
    compute(at)
    (chart_,) = token_kl_charts(at)
    (bars,) = [t for t in chart_["data"] if t["type"] == "bar"]
    assert bars["x"] == ["A1", "M1", "A2", "M2"] and all(v is not None and v >= 0 for v in bars["y"])
    assert chart_["layout"]["yaxis"]["title"]["text"] == "KL (nats per token)"
    assert len(at.get("plotly_chart")) == 4                                 # ΔWER, ΔKL (frames), token KL, path
    assert any("tokens in clip input" in c.value for c in at.caption)
    assert [m.label for m in at.metric] == ["DLD · dld — CTC head's WER at the start mask"]   # not the text decoder's
    export = at.dataframe[-1].value
    assert list(export["token_kl"]) == pytest.approx(bars["y"], abs=1e-5)

    at.multiselect(key="imp_kept").set_value(["A1", "A2", "M2"]).run()       # M1 off in the start mask
    compute(at)
    (bars,) = [t for t in token_kl_charts(at)[0]["data"] if t["type"] == "bar"]
    assert [v is not None for v in bars["y"]] == [True, False, True, True]  # one bar per kept module


def test_a_ctc_only_student_has_no_token_level_view(env):
    at = compute(open_page())
    assert token_kl_charts(at) == [] and len(at.get("plotly_chart")) == 3
    assert [m.label for m in at.metric] == ["LD · ld — WER at the start mask", "DLD · dld — WER at the start mask"]
    assert "token_kl" not in at.dataframe[-1].value.columns
