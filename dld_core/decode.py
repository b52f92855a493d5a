"""CTC decoding: greedy (always available) and lexicon-free beam search (needs flashlight-text)."""
from __future__ import annotations

from typing import Optional

import torch

from .tokenizer import Tokenizer

WORD_DELIMITER = "|"


def _as_batch(log_probs: torch.Tensor, lengths: Optional[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    log_probs = torch.as_tensor(log_probs)
    if log_probs.dim() == 2:
        log_probs = log_probs.unsqueeze(0)
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be [T, V] or [B, T, V], got shape {tuple(log_probs.shape)}")
    if lengths is None:
        return log_probs, [log_probs.shape[1]] * log_probs.shape[0]
    lengths = torch.as_tensor(lengths).reshape(-1).tolist()
    if len(lengths) != log_probs.shape[0]:
        raise ValueError(f"{len(lengths)} lengths for a batch of {log_probs.shape[0]}")
    return log_probs, [min(int(n), log_probs.shape[1]) for n in lengths]


def _clean(text: str) -> str:
    return " ".join(text.split())


def greedy_decode(log_probs: torch.Tensor, lengths: Optional[torch.Tensor], tokenizer: Tokenizer) -> list[str]:
    """Best path: argmax per frame, collapse repeats, drop blanks. Returns one string per utterance."""
    log_probs, lengths = _as_batch(log_probs, lengths)
    blank = getattr(tokenizer, "blank", 0)
    best = log_probs.argmax(dim=-1).cpu()
    texts = []
    for ids, n in zip(best, lengths):
        ids = torch.unique_consecutive(ids[:n])
        texts.append(_clean(tokenizer.decode([i for i in ids.tolist() if i != blank])))
    return texts


def beam_available() -> bool:
    """True when torchaudio's flashlight-based CTC decoder can be built (pip install flashlight-text)."""
    try:
        import flashlight.lib.text.decoder  # noqa: F401
        from torchaudio.models.decoder import ctc_decoder  # noqa: F401
    except (ImportError, RuntimeError, OSError):
        return False
    return True


class BeamDecoder:
    """Lexicon-free CTC beam search over the model's tokens; " " is the word delimiter.

    `lm` is an optional KenLM binary/arpa path (word-level LM needs a lexicon, so it is only useful
    with `lexicon`); without both it is a pure acoustic beam search.
    """

    def __init__(self, vocab: list[str], beam_size: int = 16, lexicon: Optional[str] = None,
                 lm: Optional[str] = None, lm_weight: float = 2.0, word_score: float = 0.0):
        if not beam_available():
            raise RuntimeError("beam search needs the flashlight-text package (pip install flashlight-text); "
                               "use greedy decoding instead")
        from torchaudio.models.decoder import ctc_decoder

        if vocab[0] != "<blank>" or " " not in vocab:
            raise ValueError("beam search needs a vocabulary with '<blank>' first and a ' ' word delimiter")
        self.vocab = list(vocab)
        self.tokens = [WORD_DELIMITER if t == " " else t for t in self.vocab]
        self.decoder = ctc_decoder(lexicon=lexicon, tokens=self.tokens, lm=lm, nbest=1, beam_size=beam_size,
                                   lm_weight=lm_weight, word_score=word_score, blank_token="<blank>",
                                   sil_token=WORD_DELIMITER)

    def __call__(self, log_probs: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> list[str]:
        log_probs, lengths = _as_batch(log_probs, lengths)
        emissions = log_probs.detach().float().cpu().contiguous()
        results = self.decoder(emissions, torch.tensor(lengths, dtype=torch.int32))
        texts = []
        for hyps in results:
            if not hyps:
                texts.append("")
                continue
            best = hyps[0]
            if best.words:
                texts.append(_clean(" ".join(best.words)))
            else:
                chars = (self.tokens[i] for i in best.tokens.tolist() if i != 0)
                texts.append(_clean("".join(chars).replace(WORD_DELIMITER, " ")))
        return texts
