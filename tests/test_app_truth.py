"""AppTests of issue 22's smaller points: two students of one architecture are told apart, the KL colour bars
and tables say nats, and the Whisper presets keep whole blocks (the family's module roles, not name parsing)."""
from __future__ import annotations

import json
import shutil

from tests.app_fixtures.apptest import env, no_exceptions, run_app, world  # noqa: F401  (env, world: fixtures)


def student_caption(at) -> str:
    return next(c.value for c in at.sidebar.caption if c.value.startswith("Student:"))


def test_two_students_of_one_architecture_have_distinct_descriptions(env, tmp_path, monkeypatch):
    root = tmp_path / "ckpts"
    shutil.copytree(env["ckpts"]["teacher"], root / "teacher")
    for name in ("conformer_dld", "scratch/dld"):                 # the same architecture and recipe
        shutil.copytree(env["ckpts"]["dld"], root / name)
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(root))
    at = run_app()
    seen = {}
    for name in ("conformer_dld", "scratch/dld"):
        at.selectbox(key="student_ckpt").set_value(str(root / name)).run()
        no_exceptions(at)
        seen[name] = student_caption(at)
        assert seen[name].startswith(f"Student: {name} — DLD conformer, 4 modules"), seen[name]
    assert seen["conformer_dld"] != seen["scratch/dld"]
    labels = at.selectbox(key="student_ckpt").options
    assert len(set(labels)) == len(labels)


def test_kl_colour_bars_and_tables_say_nats(env):
    at = run_app()
    no_exceptions(at)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    bars = [t["colorbar"]["title"]["text"] for s in specs for t in s["data"]
            if t.get("type") == "heatmap" and t.get("colorbar", {}).get("title")]
    kl = [b for b in bars if "KL" in b]
    assert kl == ["KL (nats)", "KL (nats)"], bars                   # depth view and drop-one view

    at = run_app("importance")
    if any(b.key == "importance_go" for b in at.button):
        at.button(key="importance_go").click().run()
    no_exceptions(at)
    assert "KL (nats)" in at.dataframe[0].value.columns
    delta_kl = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert delta_kl["layout"]["yaxis"]["title"]["text"] == "ΔKL (nats)"


def test_whisper_presets_keep_whole_blocks_from_the_family_roles():
    """The presets read the family's module roles (ModelConfig.module_blocks), not the module names."""
    from dld_core import masks
    from dld_core.config import ModelConfig
    whisper = ModelConfig(family="whisper", d_model=32, n_layers=4, n_heads=2, ffn_dim=64)
    assert whisper.module_names == ["A1", "M1", "A2", "M2", "A3", "M3", "A4", "M4"]
    assert whisper.module_roles[:2] == [(0, "attention"), (0, "mlp")]
    every = masks.preset("every_other", 8, 4, blocks=whisper.module_blocks)
    assert masks.kept(every, 8) == [2, 3, 6, 7]                   # A2 M2 A4 M4, not M1 M2 M3 M4
    assert masks.preset_label("every_other", whisper.module_blocks) == "Every 2nd block"
    blocks = ModelConfig(family="whisper", d_model=32, n_layers=4, n_heads=2, ffn_dim=64, gate_unit="block")
    assert blocks.module_roles == [(b, "block") for b in range(4)]
    assert masks.kept(masks.preset("every_other", 4, 2, blocks=blocks.module_blocks), 4) == [1, 3]
    conformer = ModelConfig(d_model=32, n_layers=12, n_heads=2, ffn_dim=64)
    assert masks.kept(masks.preset("every_other", 12, 6, blocks=conformer.module_blocks), 12) == masks.every_other(12)
    assert masks.candidate_masks(8, 4, whisper.module_blocks, num_random=0) == [   # what "Best k" compares
        [1, 3, 5, 7], [0, 1, 2, 3], [0, 1, 4, 5], [0, 1, 6, 7], [2, 3, 4, 5], [2, 3, 6, 7], [4, 5, 6, 7]]
