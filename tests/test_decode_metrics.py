import pytest
import torch

from dld_core.config import CHAR_VOCAB
from dld_core.decode import greedy_decode
from dld_core.metrics import cer, error_counts, wer, word_diff
from dld_core.tokenizer import CharTokenizer

TOK = CharTokenizer(CHAR_VOCAB)


def peaked(path: str) -> torch.Tensor:
    """[T, V] log-probs whose argmax follows `path` ('_' = blank)."""
    ids = [0 if c == "_" else CHAR_VOCAB.index(c) for c in path]
    logits = torch.full((len(ids), len(CHAR_VOCAB)), -10.0)
    logits[torch.arange(len(ids)), ids] = 10.0
    return logits.log_softmax(-1)


def test_greedy_collapses_repeats_and_drops_blanks():
    assert greedy_decode(peaked("hhe_ll_l_oo  wwo_rld"), None, TOK) == ["hello world"]
    assert greedy_decode(peaked("__ a  __"), None, TOK) == ["a"]
    assert greedy_decode(peaked("____"), None, TOK) == [""]


def test_greedy_batch_respects_lengths():
    batch = torch.stack([peaked("ab_c"), peaked("xyzz")])
    assert greedy_decode(batch, torch.tensor([4, 2]), TOK) == ["abc", "xy"]
    assert greedy_decode(batch, None, TOK) == ["abc", "xyz"]
    with pytest.raises(ValueError):
        greedy_decode(batch, torch.tensor([4]), TOK)


def test_wer_cer_known_strings():
    assert wer("the cat sat", "the cat sat") == 0.0
    assert wer("the cat sat", "the bat sat") == pytest.approx(1 / 3)
    assert wer(["a b c d", "e f"], ["a b c", "e f g"]) == pytest.approx(2 / 6)     # 1 deletion + 1 insertion
    assert cer("abcd", "abed") == pytest.approx(0.25)
    assert wer("Hello, World!", "hello world") == 0.0                                 # same normaliser both sides
    assert cer("It's  GREAT", "its great") == pytest.approx(1 / 10)


def test_empty_references():
    assert wer("", "") == 0.0 and cer("", "") == 0.0
    assert wer("", "some words") == 1.0
    assert wer(["", "a b"], ["x", "a b"]) == pytest.approx(0.5)                      # insertion counts, n = 2
    assert error_counts(["", "a"], ["", ""])["deletions"] == 1
    with pytest.raises(ValueError):
        wer(["a"], ["a", "b"])


def test_word_diff():
    assert word_diff("the cat sat on", "The bat sat on the mat") == [
        ("equal", "the", "the"), ("substitute", "cat", "bat"), ("equal", "sat", "sat"),
        ("equal", "on", "on"), ("insert", None, "the"), ("insert", None, "mat")]
    assert word_diff("a b c", "a c") == [("equal", "a", "a"), ("delete", "b", None), ("equal", "c", "c")]
    assert word_diff("", "") == []
    assert word_diff("", "x") == [("insert", None, "x")]
    assert word_diff("x y", "") == [("delete", "x", None), ("delete", "y", None)]
