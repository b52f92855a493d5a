"""Character tokenizer for CTC: index 0 is the blank. Pluggable: anything with encode/decode/vocab."""
from __future__ import annotations

from typing import Protocol, Sequence

from .text import normalize_text


class Tokenizer(Protocol):
    vocab: list[str]

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


class CharTokenizer:
    blank = 0

    def __init__(self, vocab: Sequence[str]):
        self.vocab = list(vocab)
        self._index = {tok: i for i, tok in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        """Normalise, then map characters; characters outside the vocabulary are dropped."""
        return [self._index[c] for c in normalize_text(text) if c in self._index and c != "<blank>"]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in ids if i != self.blank).strip()
