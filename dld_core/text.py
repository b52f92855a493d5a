"""The one text normaliser used by the tokenizer, the metrics and the corpus builder."""
from __future__ import annotations

import re
import unicodedata

_NOT_ALLOWED = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lowercase, fold accents, strip punctuation (keeping apostrophes inside words), collapse spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("’", "'").replace("-", " ")
    text = _NOT_ALLOWED.sub(" ", text)
    text = " ".join(w.strip("'") for w in text.split())
    return _SPACES.sub(" ", text).strip()
