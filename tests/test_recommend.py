"""dld_core.recommend: the Budgets card's mask is the best on the validation set within the budget, and the
numbers reported for it are that mask's own (issue 22)."""
from __future__ import annotations

import pytest

from dld_core.recommend import budget_report, find_evaluation, front, recommend
from tests.helpers import tiny_config

TABLE = [{"kept": 3, "active": [0, 1, 2], "wer": 0.20, "kl": 0.1, "gflops": 3.0},
         {"kept": 2, "active": [0, 1], "wer": 0.30, "kl": 0.2, "gflops": 2.0},
         {"kept": 2, "active": [1, 2], "wer": 0.25, "kl": 0.3, "gflops": 2.1},
         {"kept": 1, "active": [2], "wer": 0.90, "kl": 0.9, "gflops": 1.0},
         {"kept": 1, "active": [0], "wer": 0.60, "kl": 0.8, "gflops": 1.1}]


def test_recommend_is_the_lowest_validation_wer_that_fits():
    assert recommend(TABLE, 3.0)["active"] == [0, 1, 2]
    assert recommend(TABLE, 2.05)["active"] == [0, 1]               # [1, 2] is better but costs 2.1
    assert recommend(TABLE, 2.1)["active"] == [1, 2]
    assert recommend(TABLE, 1.05)["active"] == [2]
    assert recommend(TABLE, 0.5) is None


def test_the_front_holds_every_mask_some_budget_recommends():
    picks = {tuple(recommend(TABLE, b)["active"]) for b in (1.0, 1.05, 1.1, 2.0, 2.05, 2.1, 3.0)}
    assert {tuple(e["active"]) for e in front(TABLE)} == picks


def test_find_evaluation_matches_mask_set_and_decoder():
    report = {"evaluations": [{"active": [0, 1], "decoder": "beam", "manifest": "corpus/whisper/test.jsonl", "wer": 0.4},
                              {"active": [0, 1], "decoder": "greedy", "manifest": "corpus/whisper/test.jsonl", "wer": 0.5}]}
    assert find_evaluation(report, [0, 1], "test.jsonl", "greedy")["wer"] == 0.5
    assert find_evaluation(report, [0, 1], "fsdd_test.jsonl", "greedy") is None
    assert find_evaluation(report, [1, 2], "test.jsonl", "greedy") is None


def test_budget_report_on_a_tiny_model(tiny_corpus, tmp_path):
    import torch

    from dld_core.checkpoint import save_checkpoint
    from dld_core.evaluate import evaluate
    from dld_core.flops import gflops_for_seconds
    from dld_core.model import DynamicCTCModel
    torch.manual_seed(0)
    folder = save_checkpoint(tmp_path / "m", DynamicCTCModel(tiny_config(dropout=0.0)).eval(), recipe="dld")
    saved = []
    report = budget_report(folder, str(tiny_corpus["valid"]), [str(tiny_corpus["test"])], ["greedy"], clips=3,
                           num_candidates=2, log=lambda _: None, on_update=lambda r: saved.append(len(r["evaluations"])))
    assert saved[0] == 0 and saved[-1] == len(report["evaluations"]) == len(front(report["masks"]))
    assert {e["kept"] for e in report["masks"]} == {1, 2, 3, 4}
    for e in report["masks"]:
        assert e["gflops"] == pytest.approx(gflops_for_seconds(tiny_config(), 10.0, e["active"]))
    costs = [e["gflops"] for e in report["masks"]]
    best = recommend(report["masks"], (min(costs) + max(costs)) / 2)
    ev = find_evaluation(report, best["active"], "test.jsonl", "greedy")
    direct = evaluate(folder, tiny_corpus["test"], policy="custom", custom=[best["active"]], progress=False)
    assert ev["wer"] == direct["levels"][0]["wer"] and ev["cer"] == direct["levels"][0]["cer"]   # that mask's own
