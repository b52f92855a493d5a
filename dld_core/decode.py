"""CTC decoding: greedy (always available) and lexicon-constrained beam search with a word LM.

* :func:`greedy_decode` — best path: argmax per frame, collapse repeats, drop blanks.
* :func:`make_decoder` — the one factory the inference path calls: ``make_decoder("greedy" | "beam", vocab)``
  returns ``decode(log_probs [B, T, V], lengths [B] | None) -> list[str]``.
* ``"beam"`` is torchaudio's flashlight ``ctc_decoder`` over a lexicon of words spelled in the model's
  CTC tokens (``" "`` is the word delimiter, written ``|``), with a word LM and an ``<unk>`` path (a
  word outside the lexicon still comes out, spelled from the acoustic tokens). The lexicon and LM are
  built by ``dld_core.lm_build`` into a ``dld_core.decoder_files`` folder (``python -m dld_core
  build-lm``); the LM weight, word insertion score, ``<unk>`` score and beam size come from
  ``dld_core/decoder_params.json`` (``dld_core.decoder_params``; tuned on a validation set).
  A beam decoder is built once per (vocabulary, files, parameters) and shared; decoding is guarded by a
  lock, so one decoder can serve every browser session.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional

import torch

from .decoder_files import BOS, EOS, UNK, WORD_DELIMITER, load_decoder_files, read_build_info
from .decoder_params import PARAMS_PATH, default_decoder_dir, read_params
from .tokenizer import CharTokenizer, Tokenizer

DECODERS = ("greedy", "beam")
Decoder = Callable[..., list]


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
    return log_probs, [max(0, min(int(n), log_probs.shape[1])) for n in lengths]


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


def _require_flashlight() -> None:
    if not beam_available():
        raise RuntimeError("beam search needs the flashlight-text package (pip install flashlight-text); "
                           "use greedy decoding instead")


def _flashlight_tokens(vocab: list[str]) -> list[str]:
    if not vocab or vocab[0] != "<blank>" or " " not in vocab:
        raise ValueError("beam search needs a vocabulary with '<blank>' first and a ' ' word delimiter")
    if WORD_DELIMITER in vocab:
        raise ValueError(f"beam search needs a vocabulary without {WORD_DELIMITER!r} (it stands for ' ')")
    return [WORD_DELIMITER if t == " " else t for t in vocab]


def _lm_classes():
    from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState

    class UnigramLM(CTCDecoderLM):
        """p(w) only: one state, so hypotheses that differ only in their LM history merge."""

        def __init__(self, scores: list[float], end: float):
            CTCDecoderLM.__init__(self)
            self._scores, self._end = scores, end
            self._state = CTCDecoderLMState()

        def start(self, start_with_nothing: bool):
            return self._state

        def score(self, state, usr_token_idx: int):
            return self._state, self._scores[usr_token_idx]

        def finish(self, state):
            return self._state, self._end

    class BigramLM(CTCDecoderLM):
        """p(w | previous word) with ARPA back-off; one state per previous word."""

        def __init__(self, unigram: list[float], backoff: list[float], bigrams: dict, first: dict,
                     first_backoff: float, last: dict, end: float):
            CTCDecoderLM.__init__(self)
            self._uni, self._bow, self._big, self._n = unigram, backoff, bigrams, len(unigram)
            self._first, self._first_bow, self._last, self._end = first, first_backoff, last, end
            self._root = CTCDecoderLMState()
            self._states: dict[int, object] = {}
            self._history: dict[object, int] = {}

        def start(self, start_with_nothing: bool):
            return self._root

        def _state(self, idx: int):
            state = self._states.get(idx)
            if state is None:
                state = self._root.child(idx)
                self._states[idx] = state
                self._history[state] = idx
            return state

        def score(self, state, usr_token_idx: int):
            h = self._history.get(state)
            if h is None:
                p = self._first.get(usr_token_idx)
                if p is None:
                    p = self._first_bow + self._uni[usr_token_idx]
            else:
                p = self._big.get(h * self._n + usr_token_idx)
                if p is None:
                    p = self._bow[h] + self._uni[usr_token_idx]
            return self._state(usr_token_idx), p

        def finish(self, state):
            h = self._history.get(state)
            if h is None:
                return state, self._end
            p = self._last.get(h)
            return state, (self._bow[h] + self._end) if p is None else p

    return UnigramLM, BigramLM


def _make_lm(files):
    UnigramLM, BigramLM = _lm_classes()
    words = files.words + [UNK]
    uni = [files.unigrams[w] for w in words]
    if files.order == 1:
        return UnigramLM(uni, files.unigrams[EOS])
    index = {w: i for i, w in enumerate(words)}
    big, first, last = {}, {}, {}
    for (h, w), p in files.bigrams.items():
        if h == BOS:
            if w in index:
                first[index[w]] = p
        elif w == EOS:
            if h in index:
                last[index[h]] = p
        elif h in index and w in index:
            big[index[h] * len(words) + index[w]] = p          # one int key per (history, word)
    bow = [files.backoff.get(w, 0.0) for w in words]
    return BigramLM(uni, bow, big, first, files.backoff.get(BOS, 0.0), last, files.unigrams[EOS])


# ------------------------------------------------------------------------------------------------
# lexicon + LM beam decoder
class LexiconBeamDecoder:
    """Lexicon-constrained CTC beam search with a word LM and an <unk> path (see the module docstring).

    Use :func:`make_decoder` (cached); building one costs ~1-3 s (the lexicon trie)."""

    def __init__(self, files, vocab: list[str], lm_weight: float, word_score: float, unk_score: float,
                 beam_size: int, beam_size_token: int = 12, beam_threshold: float = 20.0, sil_score: float = 0.0):
        _require_flashlight()
        from torchaudio.models.decoder import ctc_decoder

        self.vocab = list(vocab)
        self.tokens = _flashlight_tokens(self.vocab)
        self.folder, self.order = files.folder, files.order        # (the parsed files are not kept)
        self.params = {"lm_weight": float(lm_weight), "word_score": float(word_score), "unk_score": float(unk_score),
                       "beam_size": int(beam_size), "beam_size_token": int(beam_size_token),
                       "beam_threshold": float(beam_threshold), "sil_score": float(sil_score)}
        if self.params["beam_size"] < 1 or self.params["beam_size_token"] < 1:
            raise ValueError("beam_size and beam_size_token must be at least 1")
        have = set(self.tokens)
        missing = sorted(files.tokens_used - have)
        if missing:
            raise ValueError(f"the lexicon spells words with tokens the model lacks ({', '.join(missing[:5])}); "
                             "beam decoding needs the character vocabulary it was built for")
        self._lm = _make_lm(files)
        self.decoder = ctc_decoder(
            lexicon=str(files.lexicon_path), tokens=self.tokens, lm=self._lm, lm_dict=str(files.words_path),
            nbest=1, beam_size=self.params["beam_size"],
            beam_size_token=min(self.params["beam_size_token"], len(self.tokens)),
            beam_threshold=self.params["beam_threshold"], lm_weight=self.params["lm_weight"],
            word_score=self.params["word_score"], unk_score=self.params["unk_score"],
            sil_score=self.params["sil_score"], blank_token="<blank>", sil_token=WORD_DELIMITER, unk_word="<unk>")
        self._blank = self.tokens.index("<blank>")
        self._sil = self.tokens.index(WORD_DELIMITER)
        self._unk = self.decoder.word_dict.get_index("<unk>")
        self._lock = threading.Lock()

    def __call__(self, log_probs: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> list[str]:
        log_probs, lengths = _as_batch(log_probs, lengths)
        if log_probs.shape[-1] != len(self.tokens):
            raise ValueError(f"log_probs have {log_probs.shape[-1]} classes but the vocabulary has {len(self.tokens)}")
        emissions = log_probs.detach().float().cpu()
        texts = []
        for b, n in enumerate(lengths):
            if n == 0:
                texts.append("")
                continue
            # one extra frame that is surely the word delimiter: every hypothesis can close its last word
            em = torch.full((n + 1, emissions.shape[-1]), -1e4, dtype=torch.float32)
            em[:n] = emissions[b, :n]
            em[n, self._sil] = 0.0
            em = torch.nan_to_num(em, nan=-1e4, neginf=-1e4, posinf=0.0).contiguous()
            with self._lock:
                results = self.decoder.decoder.decode(em.data_ptr(), n + 1, em.shape[-1])
                best = (list(results[0].tokens), list(results[0].words)) if results else None
            texts.append(self._text(*best) if best else "")
        return texts

    def _text(self, tokens: list[int], words: list[int]) -> str:
        """Words of a hypothesis: lexicon words as spelled; <unk> pieces spelled from their tokens and
        glued to their neighbours when no delimiter separates them."""
        segments: list[list] = []            # [text, is_unk, delimiter_before]
        chars: list[str] = []
        delimited, prev = True, None
        for tok, word in zip(tokens[1:], words[1:]):        # index 0 is the start state
            if tok != prev and tok not in (self._blank, self._sil):
                chars.append(self.tokens[tok])
            if tok == self._sil and prev != self._sil and not chars:
                delimited = True
            if word >= 0:
                is_unk = word == self._unk
                text = "".join(chars) if is_unk else self.decoder.word_dict.get_entry(word)
                if text:
                    segments.append([text, is_unk, delimited])
                chars, delimited = [], not is_unk       # a lexicon word ends with its own delimiter
            prev = tok
        if chars:                                            # an unfinished word (no clean ending)
            segments.append(["".join(chars), True, delimited])
        out: list[list] = []
        for text, is_unk, delimited in segments:
            if out and not delimited and (is_unk or out[-1][1]):
                out[-1][0] += text
                out[-1][1] = is_unk
            else:
                out.append([text, is_unk])
        return _clean(" ".join(t for t, _ in out))


MAX_CACHED = 2
_CACHE: dict[tuple, LexiconBeamDecoder] = {}
_FILES: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


def beam_decoder_from_files(folder, vocab, **params) -> LexiconBeamDecoder:
    """A new, uncached lexicon beam decoder over the decoder files in `folder` (for parameter sweeps:
    the parsed files of the last folder are kept, so only the trie is rebuilt); `params` override
    decoder_params.json (lm_weight, word_score, unk_score, beam_size, beam_size_token, beam_threshold)."""
    folder = Path(folder)
    with _CACHE_LOCK:
        info = read_build_info(folder)
        key = (str(folder.resolve()), tuple(sorted((k, v["sha256"]) for k, v in info["files"].items())))
        files = _FILES.get(key)
        if files is None:
            files = load_decoder_files(folder)
            _FILES.clear()                       # hold one parsed LM at a time (tens of MB)
            _FILES[key] = files
    return LexiconBeamDecoder(files, list(vocab), **{**read_params()["params"], **params})


PARAM_NAMES = ("lm_weight", "word_score", "unk_score", "beam_size", "beam_size_token", "beam_threshold", "sil_score")


def make_decoder(kind: str, vocab, **overrides) -> Decoder:
    """The decoder the inference path calls: ``decode(log_probs [B, T, V], lengths [B] | None) -> list[str]``.

    ``kind`` is one of DECODERS. "greedy" is :func:`greedy_decode`. "beam" is the lexicon + word LM beam
    search over the files of ``dld_core/decoder_params.json`` (or ``files=FOLDER``, or $DLD_DECODER_DIR),
    with that file's parameters unless overridden (``lm_weight``, ``word_score``, ``unk_score``,
    ``beam_size``, ``beam_size_token``, ``beam_threshold``, ``sil_score``; ``params=PATH`` reads another
    parameter file). Built once per (vocab, files, parameters) and shared; thread-safe.
    Raises DecoderFilesError (a ValueError) when the files are missing or corrupt, RuntimeError when
    flashlight-text is missing, ValueError for an unknown kind or a vocabulary beam search cannot use."""
    vocab = list(vocab)
    if kind == "greedy":
        if overrides:
            raise TypeError(f"greedy decoding takes no options (got {', '.join(sorted(overrides))})")
        tokenizer = CharTokenizer(vocab)

        def greedy(log_probs, lengths=None):
            return greedy_decode(log_probs, lengths, tokenizer)
        return greedy
    if kind != "beam":
        raise ValueError(f"unknown decoder {kind!r} (expected one of {', '.join(DECODERS)})")
    params_path = Path(overrides.pop("params", PARAMS_PATH))
    folder = overrides.pop("files", None)
    bad = sorted(set(overrides) - set(PARAM_NAMES))
    if bad:
        raise TypeError(f"unknown beam decoder option {bad[0]!r} (expected some of {', '.join(PARAM_NAMES)})")
    _require_flashlight()
    _flashlight_tokens(vocab)
    params = {**read_params(params_path)["params"], **overrides}
    folder = Path(folder) if folder is not None else default_decoder_dir(params_path)
    with _CACHE_LOCK:
        info = read_build_info(folder)
        key = (tuple(vocab), str(folder.resolve()), tuple(sorted((k, v["sha256"]) for k, v in info["files"].items())),
               tuple(sorted((k, float(params[k])) for k in PARAM_NAMES)))
        decoder = _CACHE.get(key)
        if decoder is None:
            decoder = LexiconBeamDecoder(load_decoder_files(folder), vocab, **{k: params[k] for k in PARAM_NAMES})
            while len(_CACHE) >= MAX_CACHED:              # ~150 MB each (the lexicon trie): keep few
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = decoder
    return decoder


def beam_status(vocab=None) -> tuple[bool, str]:
    """(True, "") when make_decoder("beam", vocab) works (it is then built and cached); otherwise
    (False, one line saying why), so the caller can fall back to greedy with a visible note."""
    from .config import CHAR_VOCAB
    try:
        make_decoder("beam", list(vocab) if vocab is not None else list(CHAR_VOCAB))
    except (ValueError, RuntimeError, OSError, TypeError) as exc:
        return False, " ".join(str(exc).split()) or type(exc).__name__
    return True, ""
