"""dld_core.masks: the one definition of every mask policy, and every caller agrees with it."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from dld_core import masks as M
from dld_core.config import ModelConfig
from dld_core.train import validation_masks
from tests.helpers import REPO

NAMES12 = [f"L{i + 1}" for i in range(12)]
WHISPER_NAMES = ["A1", "M1", "A2", "M2", "A3", "M3", "A4", "M4"]


def test_every_other_is_one_definition_everywhere():
    n = 12
    expected = [1, 3, 5, 7, 9, 11]                                   # the 2nd, 4th, ... module
    assert M.every_other(n) == expected
    assert M.kept(M.preset("every_other", n, 3), n) == expected      # the app's "Every 2nd" button
    assert M.level_masks(n, n // 2, "every_other") == [expected]      # evaluate --policy every_other
    conformer = ModelConfig(family="conformer", n_layers=n)
    assert M.kept(validation_masks("dld", conformer)[1], n) == expected  # training validation
    assert validation_masks("teacher", conformer) == [None]
    readme = (REPO / "README.md").read_text()                          # the README says the same
    stated = re.search(r"every_other\(12\)\s*->\s*\[([\d, ]+)\]", readme)
    assert stated and [int(x) for x in stated.group(1).split(",")] == expected


def test_every_second_block_keeps_the_modules_a_student_never_dropped():
    """A Whisper student trained with A1 protected never saw A1 dropped: its "Every 2nd block" preset is the phase
    that keeps A1 (A1 M1 A3 M3); without protected modules it stays A2 M2 A4 M4; one-module blocks likewise."""
    blocks = [0, 0, 1, 1, 2, 2, 3, 3]
    names = ["A1", "M1", "A2", "M2", "A3", "M3", "A4", "M4"]
    assert M.kept(M.preset("every_other", 8, 4, blocks=blocks), 8) == [2, 3, 6, 7]
    protected = M.Mask.parse("A1", names)
    assert M.kept(M.preset("every_other", 8, 4, blocks=blocks, protected=protected), 8) == [0, 1, 4, 5]
    assert M.kept(M.preset("every_other", 8, 4, blocks=blocks, protected=[0]), 8) == [0, 1, 4, 5]
    assert M.kept(M.preset("every_other", 6, 3, protected=[0]), 6) == [0, 2, 4]
    assert M.kept(M.preset("every_other", 6, 3, protected=[0, 1]), 6) == [0, 1, 3, 5]    # neither phase: + them


def test_every_other_spreads_k_modules_and_keeps_the_last():
    assert M.every_other(12, 3) == [3, 7, 11]
    assert M.every_other(12, 12) == list(range(12))
    assert M.every_other(12, 9) == [0, 1, 3, 4, 5, 7, 8, 9, 11]
    assert M.every_other(12, 0) == []
    with pytest.raises(ValueError):
        M.every_other(4, 5)


def test_as_bools_accepts_every_form_and_validates():
    assert M.as_bools(None, 3) == [True, True, True]
    assert M.as_bools([True, False, True], 3) == [True, False, True]
    assert M.as_bools([0, 2], 3) == [True, False, True]
    assert M.as_bools(np.array([True, False, True]), 3) == [True, False, True]
    assert M.as_bools(torch.tensor([2]), 3) == [False, False, True]
    assert M.as_bools([], 3) == [False, False, False]
    for bad in ([True, False], [3], [0, 0], [-1]):
        with pytest.raises(ValueError):
            M.as_bools(bad, 3)


def test_policies():
    assert M.first_k(12, 4) == [0, 1, 2, 3]
    assert M.only_k(12, 5) == [4]
    assert M.preset("all", 4, 1) == [True] * 4
    assert M.preset("first_k", 4, 2) == [True, True, False, False]
    assert M.preset("only_k", 4, 9) == [False, False, False, True]         # k is clamped to the depth
    with pytest.raises(ValueError):
        M.preset("nonsense", 4, 1)
    masks = M.random_masks(12, 6, 4, seed=0)
    assert masks == M.random_masks(12, 6, 4, seed=0) != M.random_masks(12, 6, 4, seed=1)
    assert len({tuple(m) for m in masks}) == 4 and all(len(m) == 6 for m in masks)
    assert M.random_masks(4, 3, 10) == [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]
    assert M.levels(4) == [4, 3, 2, 1] and M.levels(4, [2, 4]) == [2, 4]
    assert M.levels(4, policy="custom", custom=[[0, 1], [True, False, True, True]]) == [3, 2]
    with pytest.raises(ValueError):
        M.levels(4, [5])


def test_parse_names_and_indices():
    assert M.parse_modules("1,5,9", NAMES12) == [1, 5, 9]
    assert M.parse_modules("L2 l10", NAMES12) == [1, 9]
    assert M.parse_modules("A4,m4", WHISPER_NAMES) == [6, 7]
    for bad in ("12", "X3", "-1"):
        with pytest.raises(ValueError, match="module"):
            M.parse_modules(bad, NAMES12)
    assert M.from_keep_drop(WHISPER_NAMES, drop="A4,M4") == [True] * 6 + [False, False]
    assert M.from_keep_drop(NAMES12, keep=6) == M.preset("every_other", 12, 6)
    assert M.from_keep_drop(NAMES12) == [True] * 12


def test_describe_uses_the_family_names():
    assert M.describe(None, NAMES12) == "all 12 modules"
    assert M.describe([0, 2], WHISPER_NAMES) == "A1 A2 (2 of 8)"
    assert M.describe([], WHISPER_NAMES) == "no modules (0 of 8)"
    assert ModelConfig(family="whisper", d_model=64, n_layers=4, n_heads=2, ffn_dim=128).module_names == WHISPER_NAMES
    assert ModelConfig(family="whisper", d_model=64, n_layers=2, n_heads=2, gate_unit="block").module_names == ["B1", "B2"]


def test_readme_module_map_lists_every_module():
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("this map lists every module"):readme.index("### The model API")]
    missing = [str(p.relative_to(REPO)) for top in ("dld_core", "app") for p in sorted((REPO / top).rglob("*.py"))
               if p.name not in ("__init__.py", "__main__.py") and p.name not in block]
    assert not missing, f"README's module map does not mention: {missing}"


def test_random_masks_keep_the_protected_modules():
    """A student trained never to drop some modules is evaluated on masks that keep them: the other
    modules are drawn; levels stop at the number protected; without protection the draws are unchanged."""
    masks = M.random_masks(8, 4, 4, seed=0, protected=[0])
    assert len({tuple(m) for m in masks}) == 4 and all(len(m) == 4 and m[0] == 0 for m in masks)
    assert M.random_masks(8, 4, 4, seed=0, protected=()) == M.random_masks(8, 4, 4, seed=0)
    assert M.random_masks(4, 2, 10, protected=[1]) == [[0, 1], [1, 2], [1, 3]]
    assert M.random_masks(4, 1, 4, protected=[1]) == [[1]]
    with pytest.raises(ValueError, match="protected"):
        M.random_masks(4, 1, 4, protected=[0, 1])
    assert M.levels(4, protected=[0, 1]) == [4, 3, 2] and M.levels(4, policy="first_k", protected=[0, 1])[-1] == 1
    assert M.level_masks(4, 2, "first_k", protected=[3]) == [[0, 1]]     # fixed policies are what they say


def test_a_protected_student_is_evaluated_on_masks_that_keep_its_protected_modules(tmp_path):
    from dld_core.checkpoint import load_checkpoint, save_checkpoint
    from dld_core.evaluate import evaluate
    from dld_core.model import DynamicCTCModel
    from tests.app_fixtures import make_samples
    cfg = ModelConfig(family="whisper", d_model=32, n_layers=2, n_heads=2, ffn_dim=64)
    folder = save_checkpoint(tmp_path / "s", DynamicCTCModel(cfg), recipe="dld", metadata={"train": {"protected": "A1"}})
    assert load_checkpoint(folder).protected == M.Mask.parse("A1", ["A1", "M1", "A2", "M2"])
    result = evaluate(folder, make_samples(tmp_path / "clips", count=1), num_masks=2, progress=False)
    assert result["protected"] == ["A1"] and [lv["kept"] for lv in result["levels"]] == [4, 3, 2, 1]
    assert all(0 in mask for lv in result["levels"] for mask in lv["masks"])


def test_keep_probabilities_from_drop_one_costs(tmp_path, capsys):
    """Cheapest module to drop -> low, costliest -> high, linear between; protected modules left out; the
    CLI prints them in the form `train --keep-probs` reads."""
    costs = [0.17, 0.07, 0.05, None, 0.06]
    probs = M.keep_probabilities_from_costs(costs, protected=[0], low=0.6, high=0.9)
    assert probs == pytest.approx({1: 0.9, 2: 0.6, 4: 0.75})
    assert M.keep_probabilities_from_costs([0.1, 0.1], low=0.6, high=0.9) == pytest.approx({0: 0.75, 1: 0.75})
    report = tmp_path / "importance.json"
    report.write_text(json.dumps({"module_names": ["A1", "M1", "A2", "M2", "A3"], "importance": {"delta_wer": costs}}))
    from dld_core.cli import main
    assert main(["keep-probs", "--importance", str(report), "--protected", "A1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == "M1=0.90,A2=0.60,A3=0.75"
    assert M.keep_probabilities(["A1", "M1", "A2", "M2", "A3"], 0.75, line) == pytest.approx([0.75, 0.9, 0.6, 0.75, 0.75])


# ------------------------------------------------------------------ one mask value type (issue 21)
def test_a_mask_is_one_hashable_value_of_bools_and_names():
    mask = M.Mask.parse("m1, a2", WHISPER_NAMES)
    assert mask.bools == (False, True, True, False, False, False, False, False) and mask.names == tuple(WHISPER_NAMES)
    assert mask.kept == (1, 2) and mask.kept_names == ("M1", "A2") and mask.format() == "M1,A2"
    assert M.Mask.parse(mask.format(), WHISPER_NAMES) == mask == M.Mask.of([1, 2], WHISPER_NAMES)
    assert M.Mask.parse(["A2", "M1"], WHISPER_NAMES) == M.Mask.parse("1 2", WHISPER_NAMES) == mask
    assert {mask: 1}[M.Mask.of([False, True, True] + [False] * 5, WHISPER_NAMES)] == 1       # a cache key
    assert M.as_bools(mask, 8) == list(mask.bools) and M.kept(mask, 8) == [1, 2] and sum(mask) == 2
    assert mask.describe() == M.describe([1, 2], WHISPER_NAMES) == "M1 A2 (2 of 8)"
    full = M.Mask.full(NAMES12)
    assert full.format() == ",".join(NAMES12) and M.Mask.of(None, NAMES12) == full and tuple(full) == (True,) * 12
    none = M.Mask.parse("", NAMES12)
    assert not none and none.format() == "" and M.Mask.parse(None, NAMES12) == none and len(none) == 12
    with pytest.raises(ValueError, match="module"):
        M.Mask.parse("A9", WHISPER_NAMES)
    with pytest.raises(ValueError):
        M.Mask.of(mask, NAMES12[:8])                                  # another model's modules
    with pytest.raises(ValueError):
        M.Mask((True,), ("A1", "M1"))


def test_protected_modules_keep_one_form_from_the_options_to_the_gates_and_the_evaluation():
    """TrainConfig.protected (text) -> Mask.parse -> training gates, Checkpoint.protected and random
    evaluation masks; a Mask and the equivalent indices draw the same masks and gates."""
    protected = M.Mask.parse("A1", WHISPER_NAMES)
    assert M.random_masks(8, 3, 4, seed=2, protected=protected) == M.random_masks(8, 3, 4, seed=2, protected=[0])
    assert M.levels(8, protected=protected) == M.levels(8, protected=[0]) == list(range(8, 0, -1))
    probs = [0.5] * 8
    assert all(M.training_gates(probs, 0, s, protected) == M.training_gates(probs, 0, s, [0]) for s in range(50))
    assert all(M.training_gates(probs, 0, s, M.Mask.parse("", WHISPER_NAMES)) == M.training_gates(probs, 0, s)
               for s in range(50))
    assert M.keep_probabilities_from_costs([0.1, 0.2, 0.3], M.Mask.parse("L1", ["L1", "L2", "L3"])) == \
        M.keep_probabilities_from_costs([0.1, 0.2, 0.3], [0])


def test_best_k_is_a_registered_policy():
    """"Best k" is a policy of dld_core.masks like the others (label, help, preset button) and its pick is
    masks.best_k (the layer strip used to carry its own help text)."""
    assert "best_k" in M.POLICIES and "training" in M.POLICIES
    assert M.PRESETS["best_k"] is M.POLICIES["best_k"] and M.POLICIES["best_k"].uses_k
    assert list(M.PRESETS) == ["all", "every_other", "first_k", "only_k", "best_k"]
    assert M.POLICY_LABELS["best_k"] == "Best k" and "best_mask_for_budget" in M.POLICIES["best_k"].help
    assert set(M.LEVEL_POLICIES) <= set(M.POLICIES)
    layer_strip = (REPO / "app" / "views" / "layer_strip.py").read_text()
    assert "lowest KL" not in layer_strip                                # its help lives in masks.POLICIES
    scored = [{"active": [0], "wer": 0.5, "kl": 2.0}, {"active": [1], "wer": 0.4, "kl": None},
              {"active": [2], "wer": 0.6, "kl": 1.0}, {"active": [3], "wer": 0.4, "kl": 3.0}]
    assert M.best_k(scored)["active"] == [2] and M.best_k(scored, "wer")["active"] == [3]
    assert M.candidate_masks(4, 2, num_random=0, first=[[0, 3], [1, 3]]) == [[0, 3], [1, 3], [0, 1]]


def test_the_students_validation_half_keeps_whole_blocks_and_the_protected_modules():
    """The half-depth validation mask of a Whisper student: every second whole block (never the MLPs alone, which
    no model reads), in the phase that holds its protected modules."""
    whisper = ModelConfig(family="whisper", n_layers=4)
    blocks = whisper.module_blocks
    assert whisper.module_names == WHISPER_NAMES
    names = lambda idx: [WHISPER_NAMES[i] for i in idx]                                # noqa: E731
    assert names(M.half_mask(blocks)) == ["A2", "M2", "A4", "M4"]
    assert names(M.half_mask(blocks, M.Mask.parse("A1", WHISPER_NAMES))) == ["A1", "M1", "A3", "M3"]
    assert names(M.half_mask(blocks, [1, 2])) == ["M1", "A2", "M2", "A4", "M4"]       # neither phase: added
    ld = validation_masks("ld", whisper, M.Mask.parse("A1", WHISPER_NAMES))
    assert ld[0] is None and names(ld[1]) == ["A1", "M1", "A3", "M3"]
