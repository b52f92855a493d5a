"""Transcribing with Whisper's text decoder on the gated whisper encoder: input modes, greedy and beam search,
and a guard against runaway output.

``WhisperSeq2Seq(encoder, decoder, tokenizer)`` joins the whisper family's gated ``Encoder`` (the same object
a whisper ``DynamicCTCModel`` holds as ``model.encoder``, so its CTC head and layer views are untouched) and
a ``TextDecoder`` (whisper_decoder.py). ``transcribe(waveforms, active=mask, mode=...)`` runs the encoder
with the layer mask exactly as ``DynamicCTCModel.forward`` does (embed -> kept modules -> finish) and then
decodes. Input modes (what the decoder attends to):

* ``"padded"``: every clip padded to 30 s, as Whisper was trained: the encoder runs on 3000 mel frames and
  the decoder attends to all 1500 output frames. The slowest (a 30 s encoder pass whatever the clip).
* ``"clip"``: the encoder runs on the clip alone; the decoder attends to the clip's frames followed by the
  encoder output (same mask) of an all-padding 30 s input from the clip's last frame on: the 1500 frames
  Whisper's decoder expects (cut shorter, it stops less often: 500 frames of tail gave 9.4% real-dev WER
  vs 6.2% for all of them, 150 frames 56%). The tail is cached per mask.
* ``"clip_bare"``: the clip's frames only. Whisper's decoder was never trained on this and mostly does not
  stop (it repeats the sentence); kept for experiments (a student trained on it).

The padding after the clip is, by default, zero log-mel frames (``padding="zero"``, faster-whisper's
pad_or_trim: the tail then depends on the mask alone), or ``padding="silence"``: the log-mel of zero
samples, which Whisper's front end clamps at the clip's peak - 8 (openai/whisper's log_mel_spectrogram with
padding; the tail then also depends on that level, rounded to 1/16).

Search follows openai/whisper's decoding.py with the prompt <|startoftranscript|><|notimestamps|>: every
special and timestamp token is suppressed, and config.json's suppress lists (non-speech symbols; a blank or
<|endoftext|> as the first token). Beam search keeps `beam_size` live hypotheses, collects `beam_size`
finished ones and ranks them by log-probability / length (``length_penalty=None``) or / ((5 + n) / 6) **
alpha. The guard: at most ``tokens_per_second * seconds + extra_tokens`` tokens per clip, and a hypothesis
whose end repeats one n-gram (n <= 4) more than ``max_repeats`` times in a row stops, without the extra copy.

Joint CTC/attention rescoring (``DecodeOptions.ctc_weight`` > 0, beam search, a ``WhisperSeq2Seq`` made from a
``DynamicCTCModel``, whose CTC head gives :class:`CTCEvidence`): the finished hypotheses are ranked by ((1 - w) x their decoder
log-probability + w x the CTC head's log-likelihood of their text, in this project's spelling), over the same
length normalisation. A hypothesis the audio does not support (a language-model loop, an invented sentence at low
depth) has a CTC log-likelihood far below one it does: the second opinion costs one CTC forward per hypothesis.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..audio import SAMPLE_RATE
from ..features import pad_waveforms
from ..masks import as_bools
from ..model import encode
from ..tokenizer import CharTokenizer
from ..synth.text import digits_to_words, expand_numbers, ordinal_to_words
from . import whisper as W
from .whisper_decoder import TextDecoder, WhisperTokenizer, load_text_decoder, load_tokenizer

CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE             # Whisper's 30 s window: 3000 mel frames, 1500 encoder frames
INPUT_MODES = ("padded", "clip", "clip_bare")
REPEAT_NGRAM = 4                                    # the repetition stop looks at n-grams of 1..4 tokens
TAIL_CACHE = 16                                     # padding tails kept per WhisperSeq2Seq (mask, padding level)


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 1                         # 1: greedy
    length_penalty: Optional[float] = None     # None: rank by log-prob / length; else / ((5 + length) / 6) ** it
    tokens_per_second: float = 8.0             # length guard: at most tokens_per_second * seconds + extra_tokens
    extra_tokens: int = 12                     # (no reference of corpus/whisper, real_dev, data_samples needs more;
                                               # the fastest of their 8,800 utterances is 7.0 tokens/s)
    max_repeats: Optional[int] = 4             # stop when an n-gram repeats more than this in a row (None: never)
    suppress: tuple = ()                       # more token ids never to generate
    half_logits: bool = True                   # float16 output projection for < 5 rows (TextDecoder.forward):
                                               # greedy decoding 1.4x faster on CPU, the same WER on data_samples
                                               # and real_dev (scripts/whisper_decoder_eval.py --fp32-logits)
    ctc_weight: float = 0.0                    # beam search: joint CTC/attention rescoring of the finished
                                               # hypotheses (0: the decoder's log-probability alone)

    def __post_init__(self):
        if not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise ValueError(f"beam_size must be a positive integer, got {self.beam_size!r}")
        if self.tokens_per_second <= 0 or self.extra_tokens < 0:
            raise ValueError("the length guard needs tokens_per_second > 0 and extra_tokens >= 0")
        if self.max_repeats is not None and self.max_repeats < 1:
            raise ValueError(f"max_repeats must be None or >= 1, got {self.max_repeats!r}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight!r}")

    def max_tokens(self, seconds: float, cap: int) -> int:
        """The most text tokens a clip of `seconds` may get (at least 1, at most `cap`)."""
        return max(1, min(cap, math.floor(self.tokens_per_second * seconds + self.extra_tokens)))


@dataclass
class Hypothesis:
    tokens: list[int]            # text tokens, without the prompt and <|endoftext|>
    text: str
    sum_logprob: float           # of every generated token (<|endoftext|> and any cut by the repetition stop too)
    stop: str                    # "eot", "length" (the guard's token limit) or "repeat" (the repetition stop)

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / max(1, len(self.tokens) + (self.stop == "eot"))


@dataclass
class CTCEvidence:
    """The encoder's CTC head on a batch of clips: a second opinion on the text decoder's hypotheses (joint
    CTC/attention rescoring)."""
    log_probs: torch.Tensor              # [B, T, V]
    lengths: torch.Tensor                # [B] valid frames
    tokenizer: CharTokenizer             # the head's vocabulary (blank 0)

    def row(self, i: int) -> "CTCEvidence":
        return CTCEvidence(self.log_probs[i: i + 1], self.lengths[i: i + 1], self.tokenizer)

    @torch.no_grad()
    def log_likelihood(self, texts: Sequence[str]) -> list[float]:
        """log P_ctc(text | the first clip) of each of `texts` (Whisper's text, spelled as the references are:
        spoken_text, then the tokenizer's normalisation); -inf for a text the clip is too short to hold."""
        targets = [self.tokenizer.encode(spoken_text(t)) for t in texts]
        n, frames = len(targets), int(self.lengths[0])
        nll = torch.nn.functional.ctc_loss(
            self.log_probs[0, :frames].float()[:, None].expand(-1, n, -1),
            torch.tensor([i for t in targets for i in t], dtype=torch.long),
            torch.full((n,), frames, dtype=torch.long), torch.tensor([len(t) for t in targets], dtype=torch.long),
            blank=0, reduction="none", zero_infinity=False)
        return [-x for x in nll.tolist()]


@dataclass
class AudioMemory:
    """What the decoder attends to for a batch of clips."""
    states: torch.Tensor                 # [B, S, D] encoder output (after ln_post)
    mask: Optional[torch.Tensor]         # [B, S] bool, True at valid frames; None: every frame valid
    seconds: list[float]                 # each clip's duration (the length guard)
    ctc: Optional[CTCEvidence] = None    # the CTC head's output on the clips (None: no head, or not asked for)

    def row(self, i: int) -> "AudioMemory":
        mask = None if self.mask is None else self.mask[i: i + 1]
        return AudioMemory(self.states[i: i + 1], mask, [self.seconds[i]], self.ctc and self.ctc.row(i))


def run_encoder(encoder: W.Encoder, features: torch.Tensor, lengths: torch.Tensor, active=None):
    """The gated encoder with layer mask `active` (None: every module), as DynamicCTCModel.forward runs it:
    returns (finish(x) [B, T', D], out_lengths [B])."""
    return encode(encoder, features, lengths, as_bools(active, len(encoder.modules_at)))


# The encoder side of the input modes, with or without autograd (inference here, training in dld_core/seq2seq.py)

def padded_states(encoder: W.Encoder, features: torch.Tensor, active=None) -> torch.Tensor:
    """The "padded" mode: log-mel features [B, T, n_mels] followed by zero frames up to 30 s (a batch's padded
    frames are zeros already), every frame valid -> encoder output [B, 1500, D]."""
    features = torch.nn.functional.pad(features, (0, 0, 0, 2 * encoder.max_frames - features.shape[1]))
    frames = torch.full((features.shape[0],), features.shape[1], device=features.device)
    return run_encoder(encoder, features, frames, active)[0]


def level_tail(encoder: W.Encoder, active=None, level: float = 0.0) -> torch.Tensor:
    """[1, 1500, D] the encoder output of 30 s of log-mel frames at `level` (0: zero padding)."""
    n = 2 * encoder.max_frames
    features = torch.full((1, n, encoder.conv1.in_channels), level, device=encoder.conv1.weight.device)
    return run_encoder(encoder, features, torch.tensor([n], device=features.device), active)[0]


def with_tail(states: torch.Tensor, lengths: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
    """The "clip" mode: each row's valid frames of `states` [B, T', D] (lengths [B]), then its tail (`tails`
    [B or 1, S, D]) from the clip's last frame on -> [B, S, D]."""
    frames = tails.shape[1]
    states = torch.nn.functional.pad(states, (0, 0, 0, frames - states.shape[1]))
    valid = torch.arange(frames, device=states.device)[None, :] < lengths[:, None]
    return torch.where(valid[:, :, None], states, tails.to(states.dtype))


def repeat_cut(tokens: Sequence[int], max_repeats: Optional[int], max_ngram: int = REPEAT_NGRAM) -> int:
    """n if `tokens` ends with more than max_repeats consecutive copies of one n-gram (n <= max_ngram, the
    smallest such n), else 0."""
    if max_repeats is None:
        return 0
    tokens = list(tokens)
    for n in range(1, max_ngram + 1):
        if len(tokens) >= n * (max_repeats + 1):
            end = len(tokens)
            if all(tokens[end - (k + 1) * n: end - k * n] == tokens[end - n:] for k in range(1, max_repeats + 1)):
                return n
    return 0


_TITLES = {"Mr": "mister", "Mrs": "missus", "Ms": "miz", "Dr": "doctor"}


def spoken_text(text: str) -> str:
    """A Whisper transcript in this project's reference style before normalize_text: digits as words
    ("555-1234" -> digit by digit, "21st" -> "twenty first", 1984 -> "nineteen eighty four"), "%" -> percent,
    "Mr." -> mister."""
    text = re.sub(r"\b(Mrs|Mr|Ms|Dr)\.", lambda m: _TITLES[m.group(1)], text)
    text = re.sub(r"\d+(?:-\d+)+", lambda m: digits_to_words(m.group(0)), text)           # phone numbers
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", lambda m: ordinal_to_words(int(m.group(1))), text)
    text = re.sub(r"(\d),(\d{3})\b", r"\1\2", text).replace("%", " percent")
    return expand_numbers(text)


# -------------------------------------------------------------------------------------------- search

def _suppress_masks(tokenizer: WhisperTokenizer, n_vocab: int, options: DecodeOptions, device):
    always = torch.zeros(n_vocab, dtype=torch.bool, device=device)
    always[list(tokenizer.suppress) + [t for t in options.suppress if 0 <= t < n_vocab]] = True
    first = always.clone()
    first[list(tokenizer.suppress_begin)] = True
    return always, first


def _logprobs(logits: torch.Tensor, suppress: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(suppress, float("-inf")).log_softmax(dim=-1)


@torch.no_grad()
def greedy_decode(decoder: TextDecoder, tokenizer: WhisperTokenizer, memory: AudioMemory,
                  options: DecodeOptions = DecodeOptions(), cache: bool = True) -> list[Hypothesis]:
    """Greedy decoding of a batch. cache=False reruns the whole sequence every step (a reference for the
    KV cache; same tokens, slower)."""
    device = memory.states.device
    batch = memory.states.shape[0]
    prompt = list(tokenizer.sot_sequence)
    n_vocab = decoder.token_embedding.num_embeddings
    limits = [options.max_tokens(s, decoder.n_ctx - len(prompt)) for s in memory.seconds]
    always, first = _suppress_masks(tokenizer, n_vocab, options, device)
    state = decoder.start(memory.states, memory.mask)
    seqs: list[list[int]] = [[] for _ in range(batch)]
    sums, stops = [0.0] * batch, [None] * batch
    tokens = torch.tensor([prompt] * batch, device=device)
    step_input = tokens
    for step in range(max(limits)):
        logits = decoder(step_input if cache else tokens, state, cache=cache, last_only=True,
                         half_logits=options.half_logits)[:, -1]
        logprobs = _logprobs(logits, first if step == 0 else always)
        best_lp, best = logprobs.max(dim=-1)
        for i, (token, lp) in enumerate(zip(best.tolist(), best_lp.tolist())):
            if stops[i] is not None:
                continue
            sums[i] += lp
            if token == tokenizer.eot:
                stops[i] = "eot"
                continue
            seqs[i].append(token)
            cut = repeat_cut(seqs[i], options.max_repeats)
            if cut:
                del seqs[i][-cut:]
                stops[i] = "repeat"
            elif len(seqs[i]) >= limits[i]:
                stops[i] = "length"
        if all(s is not None for s in stops):
            break
        step_input = best[:, None]
        tokens = torch.cat([tokens, step_input], dim=1)
    return [Hypothesis(s, tokenizer.decode(s), lp, stop) for s, lp, stop in zip(seqs, sums, stops)]


@torch.no_grad()
def beam_search(decoder: TextDecoder, tokenizer: WhisperTokenizer, memory: AudioMemory,
                options: DecodeOptions = DecodeOptions()) -> list[Hypothesis]:
    """Beam search, one clip at a time (openai/whisper's BeamSearchDecoder with patience 1 and its
    MaximumLikelihoodRanker). beam_size 1 gives greedy_decode's tokens."""
    out = []
    for i in range(memory.states.shape[0]):
        row = memory.row(i)
        finished = finished_hypotheses(decoder, tokenizer, row, options)
        joint = options.ctc_weight > 0 and row.ctc is not None
        out.append(best_hypothesis(finished, options, row.ctc.log_likelihood([h.text for h in finished])
                                   if joint else None))
    return out


def finished_hypotheses(decoder: TextDecoder, tokenizer: WhisperTokenizer, memory: AudioMemory,
                        options: DecodeOptions) -> list[Hypothesis]:
    """One clip's beam search: its beam_size finished hypotheses (eot, repeat, or the live ones at the length
    limit), each with its decoder log-probability, in the order they finished."""
    device, beam = memory.states.device, options.beam_size
    prompt = list(tokenizer.sot_sequence)
    limit = options.max_tokens(memory.seconds[0], decoder.n_ctx - len(prompt))
    always, first = _suppress_masks(tokenizer, decoder.token_embedding.num_embeddings, options, device)
    state = decoder.start(memory.states, memory.mask)
    live: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[list[int], float, str]] = []
    step_input = torch.tensor([prompt], device=device)
    for step in range(limit):
        logits = decoder(step_input, state, last_only=True, half_logits=options.half_logits)[:, -1]
        logprobs = _logprobs(logits, first if step == 0 else always)
        top_lp, top_tok = logprobs.topk(beam + 1, dim=-1)
        candidates = [(live[r][1] + lp, r, tok) for r in range(len(live))
                      for lp, tok in zip(top_lp[r].tolist(), top_tok[r].tolist())]
        candidates.sort(key=lambda c: -c[0])                  # stable: ties keep row, then top-k order
        new_live, sources, newly = [], [], []
        for score, r, token in candidates:
            if token == tokenizer.eot:
                newly.append((live[r][0], score, "eot"))
                continue
            seq = live[r][0] + [token]
            cut = repeat_cut(seq, options.max_repeats)
            if cut:
                newly.append((seq[:-cut], score, "repeat"))
                continue
            new_live.append((seq, score))
            sources.append(r)
            if len(new_live) == beam:
                break
        finished.extend(newly[: max(0, beam - len(finished))])
        if len(finished) >= beam or not new_live:
            live = []
            break
        live = new_live
        state.reorder(torch.tensor(sources, device=device))
        step_input = torch.tensor([[seq[-1]] for seq, _ in live], device=device)
    finished.extend((seq, score, "length") for seq, score in live[: max(0, beam - len(finished))])
    return [Hypothesis(seq, tokenizer.decode(seq), score, stop) for seq, score, stop in finished]


def best_hypothesis(finished: Sequence[Hypothesis], options: DecodeOptions,
                    ctc_scores: Optional[Sequence[float]] = None) -> Hypothesis:
    """The best of one clip's finished hypotheses: by decoder log-probability / length (length_penalty), or, with
    options.ctc_weight w > 0 and `ctc_scores` (the CTC log-likelihood of each one's text, CTCEvidence), by
    ((1 - w) x it + w x that) / length."""
    joint = [h.sum_logprob for h in finished]
    if options.ctc_weight > 0 and ctc_scores is not None:
        joint = [(1 - options.ctc_weight) * a + options.ctc_weight * c for a, c in zip(joint, ctc_scores)]

    def rank(i: int) -> float:
        n = max(1, len(finished[i].tokens))
        return joint[i] / (n if options.length_penalty is None else ((5 + n) / 6) ** options.length_penalty)

    return finished[max(range(len(finished)), key=rank)]


# ------------------------------------------------------------------------------------ encoder-decoder

class WhisperSeq2Seq(nn.Module):
    """The gated whisper encoder, Whisper's text decoder and its tokenizer (see the module docstring)."""

    def __init__(self, encoder: nn.Module, decoder: TextDecoder, tokenizer: WhisperTokenizer):
        super().__init__()
        model = encoder
        encoder = getattr(encoder, "encoder", encoder)          # a whisper DynamicCTCModel or its Encoder
        # a DynamicCTCModel's CTC head (log_probs, its vocabulary) gives encode()'s CTC evidence; kept out of the
        # module tree (a plain tuple), the model's own parameters being registered once, through the encoder
        self._ctc_head = ((model.log_probs, CharTokenizer(model.config.vocab)) if hasattr(model, "log_probs")
                          else None)
        if not isinstance(encoder, W.Encoder):
            raise TypeError("WhisperSeq2Seq needs a whisper-family encoder")
        if encoder.conv1.out_channels != decoder.ln.normalized_shape[0]:
            raise ValueError(f"encoder width {encoder.conv1.out_channels} does not match the decoder's "
                             f"{decoder.ln.normalized_shape[0]}")
        self.encoder, self.decoder, self.tokenizer = encoder, decoder, tokenizer
        self.features = W.Features(SimpleNamespace(n_mels=encoder.conv1.in_channels))
        self._tails: OrderedDict = OrderedDict()

    @classmethod
    def from_pretrained(cls, path=None) -> "WhisperSeq2Seq":
        """Whisper unchanged (encoder, decoder, tokenizer) from a CTranslate2 folder (None: pinned tiny.en)."""
        cfg = W.config_from_pretrained(path, dropout=0.0)
        encoder = W.Encoder(cfg)
        W.load_pretrained(encoder, path)
        decoder = load_text_decoder(path)
        return cls(encoder, decoder, load_tokenizer(path, decoder.token_embedding.num_embeddings)).eval()

    @property
    def num_modules(self) -> int:
        return len(self.encoder.modules_at)

    # --------------------------------------------------------------------------------- the encoder side
    @torch.no_grad()
    def encode(self, waveforms: Sequence, active=None, mode: str = "padded", padding: str = "zero") -> AudioMemory:
        """16 kHz waveforms -> what the decoder attends to (see INPUT_MODES), with encoder layer mask `active`.
        padding: the log-mel frames after the clip, "zero" (faster-whisper: the clip's log-mel followed by
        zero frames; the "clip" mode's tail then depends on the mask alone) or "silence" (openai/whisper: the
        clip's samples followed by zeros, whose log-mel is clamped at the clip's peak - 8)."""
        if mode not in INPUT_MODES:
            raise ValueError(f"input mode must be one of {', '.join(INPUT_MODES)}, got {mode!r}")
        if padding not in ("silence", "zero"):
            raise ValueError(f"padding must be 'silence' or 'zero', got {padding!r}")
        device = self.decoder.ln.weight.device
        wavs = [torch.as_tensor(np.asarray(w, dtype=np.float32)).reshape(-1) for w in waveforms]
        seconds = [w.shape[0] / SAMPLE_RATE for w in wavs]
        if mode == "padded" and any(w.shape[0] > N_SAMPLES for w in wavs):
            raise ValueError(f"a clip is longer than {CHUNK_SECONDS} s, Whisper's window")
        if mode == "padded" and padding == "silence":
            batch = torch.zeros(len(wavs), N_SAMPLES)
            for i, w in enumerate(wavs):
                batch[i, : w.shape[0]] = w
            lengths = torch.full((len(wavs),), N_SAMPLES)
        else:
            batch, lengths = pad_waveforms(wavs)
        feats, frames = self.features(batch.to(device), lengths.to(device))
        if mode == "padded":                 # (silence: 30 s of samples already; zero: padded here)
            states = padded_states(self.encoder, feats, active)
            clip_frames = W.Features.frame_lengths(torch.tensor([w.shape[0] for w in wavs], device=device))
            out_lengths = self.encoder.output_lengths(clip_frames)
            return AudioMemory(states, None, seconds, self._ctc_evidence(states, out_lengths))
        states, out_lengths = run_encoder(self.encoder, feats, frames, active)
        ctc = self._ctc_evidence(states, out_lengths)
        if mode == "clip_bare":
            valid = torch.arange(states.shape[1], device=device)[None, :] < out_lengths[:, None]
            return AudioMemory(states, None if bool(valid.all()) else valid, seconds, ctc)
        levels = self._silence_levels(feats, frames) if padding == "silence" else [0.0] * len(wavs)
        tails = torch.stack([self.padding_tail(active, level) for level in levels])
        return AudioMemory(with_tail(states, out_lengths, tails), None, seconds, ctc)

    def _ctc_evidence(self, states: torch.Tensor, out_lengths: torch.Tensor) -> Optional[CTCEvidence]:
        """The CTC head on the clips' frames (None without a head): the log-probs the trainer's CTC loss sees."""
        if self._ctc_head is None:
            return None
        head, vocab = self._ctc_head
        frames = int(out_lengths.max())
        return CTCEvidence(head(states[:, :frames]).cpu(), out_lengths.cpu(), vocab)

    @staticmethod
    def _silence_levels(feats: torch.Tensor, frames: torch.Tensor) -> list[float]:
        """Each clip's log-mel value of digital silence: Whisper clamps at the peak - 8 (log10), floors at
        log10(1e-10), then maps x -> (x + 4) / 4; the clip's largest feature is (peak + 4) / 4."""
        valid = torch.arange(feats.shape[1], device=feats.device)[None, :] < frames[:, None]
        top = feats.masked_fill(~valid[:, :, None], float("-inf")).amax(dim=(1, 2))
        return [max(t - 2.0, -1.5) for t in top.tolist()]

    @torch.no_grad()
    def padding_tail(self, active, level: float) -> torch.Tensor:
        """[1500, D] the encoder output (layer mask `active`) of 30 s of log-mel frames at `level` (rounded to
        1/16). Cached; the cache key includes the encoder parameters' storage and version counters, so any
        change of the weights (an optimizer step, load_state_dict, .to()) makes a new tail."""
        level = round(level * 16) / 16
        mask = tuple(as_bools(active, self.num_modules))
        weights = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.encoder.parameters())
        key = (mask, level, weights)
        if key not in self._tails:
            self._tails[key] = level_tail(self.encoder, mask, level)[0]
            while len(self._tails) > TAIL_CACHE:
                self._tails.popitem(last=False)
        self._tails.move_to_end(key)
        return self._tails[key]

    # --------------------------------------------------------------------------------- the decoder side
    def decode(self, memory: AudioMemory, options: DecodeOptions = DecodeOptions()) -> list[Hypothesis]:
        if options.beam_size == 1:
            return greedy_decode(self.decoder, self.tokenizer, memory, options)
        return beam_search(self.decoder, self.tokenizer, memory, options)

    def transcribe(self, waveforms: Sequence, active=None, mode: str = "padded",
                   options: DecodeOptions = DecodeOptions(), padding: str = "zero") -> list[Hypothesis]:
        """16 kHz waveforms -> one Hypothesis each (its .text is Whisper's cased, punctuated text; compare
        with references through spoken_text and dld_core.text.normalize_text)."""
        return self.decode(self.encode(waveforms, active, mode, padding), options)
