"""Encoder-decoder students: the gated Whisper encoder with Whisper's text decoder (TrainConfig.objective "seq2seq").

What differs from the CTC objective, for dld_core/train.py's one loop (``Trainer``) and dld_core/evaluate.py:

* the model: a whisper ``DynamicCTCModel`` whose config holds the text decoder's dims (``ModelConfig.decoder``,
  read from the pretrained folder by :func:`with_decoder`) holds the decoder as ``model.decoder``; its weights
  come from that folder (:func:`load_decoder`) and are saved with the encoder and CTC head, so a checkpoint is
  one safetensors file. :func:`text_model` makes it a ``WhisperSeq2Seq`` (greedy and beam search);
  ``model.forward(features, lengths, active=mask)`` still gives the CTC log-probs.
* the targets: the reference text as Whisper tokens (the bundled tiny.en tokenizer), after the prompt
  <|startoftranscript|><|notimestamps|>, ending with <|endoftext|> (:func:`token_batch`);
* the loss (:class:`Seq2SeqObjective`): teacher-forced cross-entropy of those tokens (no label smoothing) +
  ctc_weight x CTC of the encoder's head, + for dld kd_lambda x tau^2 x KL(teacher || student) on the token
  posteriors, the teacher being the unchanged pretrained Whisper on 30 s padded input (or clip-alone,
  --teacher-input-mode clip; :class:`PretrainedTeacher`:
  run every step for the whole-vocabulary KL, or its top-K tokens cached per batch in fp16, kd_top_k);
* the student's encoder input (TrainConfig.input_mode): "padded" (30 s: one more encoder pass of B x 30 s) or
  "clip" (the clip, then the encoder output of 30 s of zero frames, one pass per step shared by the batch), with
  gradients through both (:class:`StudentNet`, what DDP wraps);
* validation: greedy text-decoder WER with the length guard (:func:`validate`); evaluation: :class:`TextRunner`;
  transcribing (python -m dld_core transcribe --decoder whisper): :func:`text_transcriber`; the benchmark's text
  decoder latency: :func:`search_latency`; one timed transcript (the app's Inspect page): :func:`timed_transcript`;
  the token-level drop-one KL (importance --token-kl, the app's Layer importance page): :func:`token_drop_one_kl`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, TrainConfig
from .data import SpeechDataset, length_batches
from .families.whisper import DECODER_DIMS
from .families.whisper_decoder import WhisperTokenizer, load_tokenizer
from .families.whisper_decoding import (AudioMemory, DecodeOptions, WhisperSeq2Seq, level_tail, padded_states,
                                        run_encoder, spoken_text, with_tail)
from .inference import timed
from .losses import (ctc_loss, distillation_kl, distillation_kl_top_k, kl_per_frame, state_distance,
                     token_cross_entropy, valid_frames)
from .masks import as_bools
from .metrics import wer
from .model import DynamicCTCModel, ModelOutput
from .pretrained import is_default_source, read_whisper_decoder
from .safe_io import CheckpointError, atomic_save_tensors, parse_safetensors

TEXT_DECODERS = ("whisper", "whisper-beam", "whisper-joint")  # evaluate --decoder: the text decoder, greedy / beam
                                                # search / beam search rescored with the CTC head (JOINT_CTC_WEIGHT)
JOINT_CTC_WEIGHT = 0.2                          # whisper-joint: rank = (1 - w) x decoder + w x CTC log-likelihood (chosen
                                                # on valid: scripts/seq2seq_choices.py joint-weight, README)
# The decoder attends to 1500 encoder frames per clip, however short (and "padded" runs the encoder on 30 s): a
# clip's cost is nearly fixed, so validation and evaluation batches hold at most this many clips (training:
# TrainConfig.batch_clips).
BATCH_CLIPS = 16
TEACHER_CACHE = "teacher_cache"   # a run folder's cached teacher top-K batches (kd_top_k), kept for --resume


# ------------------------------------------------------------------------------------------------ the model

def student_overrides(teacher_cfg: Optional[ModelConfig], overrides: dict) -> dict:
    """The model options of a fresh seq2seq student: the whisper family (the text decoder is Whisper's); any other
    family is refused in one line."""
    family = overrides.get("family", teacher_cfg.family if teacher_cfg is not None else "whisper")
    if family != "whisper":
        raise ValueError(f"--objective seq2seq needs the whisper family (Whisper's text decoder), not {family}")
    return {**overrides, "family": "whisper"}


ENGLISH_VOCAB = 51864     # English-only Whisper models (*.en): the bundled tokenizer's 50363 tokens, 1501 timestamps


def with_decoder(model_cfg: ModelConfig, source: str) -> ModelConfig:
    """`model_cfg` (whisper family) with the text decoder dims of the pretrained CTranslate2 folder `source` (an
    English-only Whisper: its tokens are the bundled tokenizer's)."""
    if model_cfg.pinned_embedding and not is_default_source(source):
        raise ValueError("--pinned-embedding keeps the pinned tiny.en's token embedding: it needs --pretrained "
                         "default, not another text decoder")
    dims = read_whisper_decoder(source).dims
    if dims["n_vocab"] != ENGLISH_VOCAB:
        raise ValueError(f"the pretrained text decoder has {dims['n_vocab']} tokens, not the {ENGLISH_VOCAB} of an "
                         "English-only Whisper (*.en) whose tokenizer is bundled")
    if dims["d_model"] != model_cfg.d_model:
        raise ValueError(f"the pretrained text decoder is {dims['d_model']} wide, the encoder {model_cfg.d_model}")
    return dataclasses.replace(model_cfg, decoder={k: dims[k] for k in DECODER_DIMS})


def load_decoder(model: DynamicCTCModel, source: str) -> str:
    """The pretrained text decoder's weights into model.decoder; returns their one-line source."""
    weights = read_whisper_decoder(source)
    own = model.decoder.state_dict()              # a pinned token embedding is not in it (it is already the package's)
    with torch.no_grad():
        model.decoder.load_state_dict({k: v for k, v in weights.tensors.items() if k in own}, strict=True)
    return weights.source


def tokenizer_for(model: DynamicCTCModel) -> WhisperTokenizer:
    """The text decoder's tokenizer: the bundled tiny.en's (Whisper's English vocabulary), for training and decoding."""
    return _tokenizer(model.config.decoder["n_vocab"])


@functools.lru_cache(maxsize=2)
def _tokenizer(n_vocab: int) -> WhisperTokenizer:
    return load_tokenizer(None, n_vocab)


def text_model(model: DynamicCTCModel) -> WhisperSeq2Seq:
    """The encoder-decoder student as a WhisperSeq2Seq (transcribe with any layer mask, greedy or beam). It shares
    the model's modules; its padding tails follow the weights."""
    if getattr(model, "decoder", None) is None:
        raise ValueError("this model has no text decoder (train one with --objective seq2seq)")
    return WhisperSeq2Seq(model, model.decoder, tokenizer_for(model))


def input_mode_of(info: dict) -> str:
    """The input mode a checkpoint's student was trained with (config.json's train.input_mode; "padded", as
    Whisper was trained, when it records none): the text decoder's default in evaluate, transcribe, importance."""
    return (info.get("train") or {}).get("input_mode") or "padded"


def decode_options(decoder: str, beam_size: int = 5) -> DecodeOptions:
    """The search of a text decoder name (TEXT_DECODERS): "whisper" greedy, "whisper-beam" beam_size beams,
    "whisper-joint" those beams' finished hypotheses ranked with the CTC head (JOINT_CTC_WEIGHT); the length guard
    and repetition stop on (DecodeOptions' defaults)."""
    if decoder not in TEXT_DECODERS:
        raise ValueError(f"unknown text decoder {decoder!r} (expected {' or '.join(TEXT_DECODERS)})")
    return DecodeOptions(beam_size=1 if decoder == "whisper" else beam_size,
                         ctc_weight=JOINT_CTC_WEIGHT if decoder == "whisper-joint" else 0.0)


def text_transcriber(model: DynamicCTCModel, decoder: str = "whisper", mode: str = "padded", beam_size: int = 5):
    """A callable (waveforms, active) -> Whisper's texts (cased, punctuated) of the clips by the text decoder; its
    calls share one WhisperSeq2Seq (the "clip" mode's padding tail is computed once per mask). A model without a
    text decoder is refused (ValueError) here, before any audio."""
    seq2seq, options = text_model(model), decode_options(decoder, beam_size)
    model.eval()
    return lambda waveforms, active=None: [h.text for h in seq2seq.transcribe(waveforms, active, mode, options)]


def token_batch(tokenizer: WhisperTokenizer, texts: Sequence[str], n_ctx: int, device
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher forcing: (inputs [B, P + n]: the prompt and each text's tokens, right-padded with <|endoftext|>;
    targets [B, n + 1]: the text's tokens and <|endoftext|>, what the decoder's outputs from position P - 1 on must
    predict; their lengths [B]). A text is " " + the reference (Whisper's transcripts start with a space), cut to the
    decoder's n_ctx positions."""
    cap = n_ctx - len(tokenizer.sot_sequence)
    return forced_tokens(tokenizer, [tokenizer.encode(" " + t.strip())[:cap] for t in texts], device)


def forced_tokens(tokenizer: WhisperTokenizer, texts: Sequence[Sequence[int]], device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """token_batch's tensors for text tokens already cut to fit (e.g. a Hypothesis's .tokens)."""
    prompt = list(tokenizer.sot_sequence)
    texts = [list(t) for t in texts]
    width = max(len(t) for t in texts)
    inputs = [prompt + t + [tokenizer.eot] * (width - len(t)) for t in texts]
    targets = [t + [tokenizer.eot] * (width + 1 - len(t)) for t in texts]
    lengths = [len(t) + 1 for t in texts]
    return (torch.tensor(inputs, device=device), torch.tensor(targets, device=device),
            torch.tensor(lengths, device=device))


@dataclasses.dataclass
class StudentOutput:
    ctc: Optional[ModelOutput]         # the CTC head's log-probs (None: no CTC loss)
    memory: torch.Tensor               # [B, 1500, D] what the decoder attends to
    lengths: torch.Tensor              # [B] the clip's frames in memory (the rest is padding)
    logits: Optional[torch.Tensor]     # the decoder's teacher-forced logits (None: no tokens given)


class StudentNet(nn.Module):
    """The student's training forward (what DDP wraps): the gated encoder with mask `active` on the clips (the CTC
    head's log-probs, when ctc), the decoder's memory in the student's input mode, and (given `tokens`) the decoder's
    teacher-forced logits for them from the last prompt position on."""

    def __init__(self, model: DynamicCTCModel, mode: str, ctc: bool, prompt: int):
        super().__init__()
        self.model, self.mode, self.ctc, self.prompt = model, mode, ctc, prompt

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, active, tokens: Optional[torch.Tensor] = None
                ) -> StudentOutput:
        model, mask = self.model, as_bools(active, self.model.num_modules)
        if self.mode == "clip":
            states, out_lengths = run_encoder(model.encoder, features, lengths, mask)
            out = ModelOutput(model.log_probs(states), out_lengths, None) if self.ctc else None
            tail = level_tail(model.encoder, mask)
            memory = with_tail(states, out_lengths, tail)
            start = (lambda: model.decoder.start_with_tail(states, out_lengths, tail))   # the tail's keys once
        else:
            out = model(features, lengths, active=mask) if self.ctc else None
            memory = padded_states(model.encoder, features, mask)
            out_lengths = torch.full_like(lengths, memory.shape[1])
            start = (lambda: model.decoder.start(memory))
        logits = None if tokens is None else model.decoder(tokens, start(), cache=False)
        return StudentOutput(out, memory, out_lengths, None if logits is None else logits[:, self.prompt - 1:])


class PretrainedTeacher:
    """The unchanged pretrained Whisper (encoder and text decoder, the bundled tiny.en unless --pretrained says
    otherwise) on 30 s padded input (`mode` "clip": the clip, then the output of zero frames), frozen: its teacher-forced logits of a batch's tokens (top_k 0: computed every
    step, the KL then covers the whole vocabulary) or its top_k log-probabilities at temperature tau, cached per
    batch in fp16 (batches hold the same utterances every epoch): after the first epoch no teacher pass. With
    `cache_dir` (the run's TEACHER_CACHE folder) the cached batches are also files there, so a resumed run (the next
    session) does not pay the first epoch's teacher passes again."""

    def __init__(self, source: str, device, tau: float, top_k: int, cache_dir: Optional[Path] = None,
                 mode: str = "padded"):
        self.model = WhisperSeq2Seq.from_pretrained(source).to(device).requires_grad_(False)
        self.tau, self.top_k, self.cache_dir, self.mode = tau, top_k, cache_dir, mode
        self.tail: Optional[torch.Tensor] = None       # the encoder output of 30 s of zero frames (memory)
        self.cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def memory(self, wavs: torch.Tensor, wav_lengths: torch.Tensor, mode: str) -> torch.Tensor:
        """[B, 1500, D] the unchanged encoder's output on the clean clips in input `mode` (clip: the clip's frames,
        then the output of 30 s of zero frames; padded: 30 s): the target of encoder-state distillation."""
        features, lengths = self.model.features(wavs, wav_lengths)
        if mode != "clip":
            return padded_states(self.model.encoder, features)
        states, out_lengths = run_encoder(self.model.encoder, features, lengths)
        return with_tail(states, out_lengths, self._tail())

    @torch.no_grad()
    def logits(self, wavs: torch.Tensor, wav_lengths: torch.Tensor, tokens: torch.Tensor, prompt: int) -> torch.Tensor:
        decoder = self.model.decoder
        if self.mode == "clip":                   # the padding tail's keys/values once per batch (start_with_tail)
            features, lengths = self.model.features(wavs, wav_lengths)
            states, out_lengths = run_encoder(self.model.encoder, features, lengths)
            start = decoder.start_with_tail(states, out_lengths, self._tail())
        else:
            start = decoder.start(self.memory(wavs, wav_lengths, self.mode))
        return decoder(tokens, start, cache=False)[:, prompt - 1:]

    def _tail(self) -> torch.Tensor:
        if self.tail is None:
            self.tail = level_tail(self.model.encoder)
        return self.tail

    @torch.no_grad()
    def top(self, key: tuple, wavs: torch.Tensor, wav_lengths: torch.Tensor, tokens: torch.Tensor, prompt: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The teacher's K most likely tokens at tau: (their log-probabilities [B, L, K], ids [B, L, K], the log of
        the other tokens' mass [B, L]), kept in fp16 / int32 / fp32."""
        if key not in self.cache:
            self.cache[key] = self._stored(key) or self._store(key, self._top(wavs, wav_lengths, tokens, prompt))
        values, ids, rest = self.cache[key]
        device = wavs.device
        return values.to(device).float(), ids.to(device).long(), rest.to(device)

    def _top(self, wavs, wav_lengths, tokens, prompt: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_probs = F.log_softmax(self.logits(wavs, wav_lengths, tokens, prompt).float() / self.tau, dim=-1)
        values, ids = log_probs.topk(min(self.top_k, log_probs.shape[-1]), dim=-1)
        rest = log_probs.scatter(-1, ids, float("-inf")).logsumexp(-1)
        return values.half().cpu(), ids.int().cpu(), rest.cpu()

    def _file(self, key: tuple) -> Path:
        name = hashlib.sha1(",".join(map(str, key)).encode()).hexdigest()[:20]
        mode = "" if self.mode == "padded" else f"{self.mode}_"          # (padded: the names before the option)
        return self.cache_dir / f"k{self.top_k}_t{self.tau:g}_{mode}{name}.safetensors"

    def _stored(self, key: tuple):
        """A batch's cached top-K from its file (None: no cache folder, no file, or a file that does not read)."""
        if self.cache_dir is None or not self._file(key).is_file():
            return None
        try:
            t = parse_safetensors(self._file(key).read_bytes(), "a cached teacher batch")
            return t["values"], t["ids"], t["rest"]
        except (CheckpointError, KeyError):
            return None                      # recomputed (and rewritten) below

    def _store(self, key: tuple, top: tuple) -> tuple:
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_save_tensors(self._file(key), dict(zip(("values", "ids", "rest"), top)))
        return top


class Seq2SeqObjective:
    """The seq2seq objective of dld_core/train.py's loop (the interface of train.CTCObjective): network(model),
    losses(...) per step, validate(...) per epoch. Builds the dld teacher and freezes the decoder when asked."""

    def __init__(self, cfg: TrainConfig, model: DynamicCTCModel, device, cache_dir: Optional[Path] = None):
        self.cfg = cfg
        self.tokenizer = tokenizer_for(model)
        self.prompt = len(self.tokenizer.sot_sequence)
        self.n_ctx = model.config.decoder["n_ctx"]
        model.decoder.requires_grad_(not cfg.freeze_decoder)
        self.teacher = (PretrainedTeacher(cfg.pretrained, device, cfg.kd_tau, cfg.kd_top_k, cache_dir,
                                          cfg.teacher_input_mode)
                        if cfg.recipe == "dld" else None)

    def network(self, model: DynamicCTCModel) -> nn.Module:
        return StudentNet(model, self.cfg.input_mode, self.cfg.ctc_weight > 0, self.prompt)

    def losses(self, net: nn.Module, batch, indices: list[int], feats: torch.Tensor, lengths: torch.Tensor,
               active) -> dict[str, torch.Tensor]:
        cfg, teacher = self.cfg, self.teacher
        tokens, targets, target_lengths = token_batch(self.tokenizer, batch.texts, self.n_ctx, feats.device)
        token_kl = teacher is not None and cfg.kd_lambda > 0
        out = net(feats, lengths, active, tokens if cfg.ce_weight > 0 or token_kl else None)
        zero = torch.zeros((), device=feats.device)
        loss_ce = zero if out.logits is None else token_cross_entropy(out.logits, targets, target_lengths)
        loss_ctc = zero if out.ctc is None else ctc_loss(out.ctc.log_probs, out.ctc.lengths, batch.targets,
                                                         batch.target_lengths)
        loss_kl = loss_states = zero
        if token_kl and cfg.kd_top_k:
            top, ids, rest = teacher.top(tuple(indices), batch.wavs, batch.wav_lengths, tokens, self.prompt)
            loss_kl = distillation_kl_top_k(top, ids, out.logits, target_lengths, cfg.kd_tau, rest)
        elif token_kl:
            loss_kl = distillation_kl(teacher.logits(batch.wavs, batch.wav_lengths, tokens, self.prompt), out.logits,
                                      target_lengths, cfg.kd_tau)
        if teacher is not None and cfg.kd_states > 0:
            loss_states = state_distance(out.memory, teacher.memory(batch.wavs, batch.wav_lengths, cfg.input_mode),
                                         out.lengths)
        loss = (cfg.ce_weight * loss_ce + cfg.ctc_weight * loss_ctc + cfg.kd_lambda * loss_kl
                + cfg.kd_states * loss_states)
        return {"loss": loss, "ce": loss_ce, "ctc": loss_ctc, "kl": loss_kl, "states": loss_states}

    def validate(self, model: DynamicCTCModel, dataset: SpeechDataset, device, masks: list) -> list[float]:
        return validate(model, dataset, masks, self.cfg.input_mode)


# --------------------------------------------------------------------------------------- validation, evaluation

@torch.inference_mode()
def validate(model: DynamicCTCModel, dataset: SpeechDataset, masks: list, mode: str = "padded",
             batch_seconds: float = 200.0) -> list[float]:
    """Greedy text-decoder WER on the dataset for each mask (None = all modules), length guard and repetition stop
    on (DecodeOptions' defaults), Whisper's text compared after spoken_text and the project's normaliser."""
    model.eval()
    seq2seq = text_model(model)
    hyps: list[list[str]] = [[] for _ in masks]
    refs: list[str] = []
    for indices in length_batches(dataset.durations, batch_seconds, BATCH_CLIPS):
        wavs = [dataset.waveform(i) for i in indices]
        refs.extend(dataset.rows[i]["text"] for i in indices)
        for m, mask in enumerate(masks):
            hyps[m].extend(spoken_text(h.text) for h in seq2seq.transcribe(wavs, active=mask, mode=mode))
    model.train()
    return [wer(refs, h) for h in hyps]


class TextRunner:
    """dld_core/evaluate.py's per-batch step for the text decoder: per mask, one encoder pass in `mode`, decoded by
    each of `decoders` (TEXT_DECODERS: greedy, beam of beam_size); the seconds are the encoder pass plus that
    decoder's search."""
    max_clips = BATCH_CLIPS

    def __init__(self, model: DynamicCTCModel, decoders: Sequence[str], mode: str, beam_size: int = 5):
        self.seq2seq = text_model(model)
        self.mode = mode
        self.options = {d: decode_options(d, beam_size) for d in decoders}

    def prepare(self, waveforms: Sequence) -> Sequence:
        return waveforms

    def run(self, waveforms: Sequence, mask) -> tuple[dict[str, list[str]], dict[str, float]]:
        memory, (encode_ms,) = timed(lambda: self.seq2seq.encode(waveforms, active=mask, mode=self.mode))
        texts, seconds = {}, {}
        for name, options in self.options.items():
            texts[name], (decode_ms,) = timed(lambda: [spoken_text(h.text) for h in self.seq2seq.decode(memory, options)])
            seconds[name] = (encode_ms + decode_ms) / 1000
        return texts, seconds


# ------------------------------------------------------------------------------------------------ latency

@torch.inference_mode()
def search_latency(seq2seq: WhisperSeq2Seq, waveform, active=None, mode: str = "padded", repeats: int = 5,
                   warmup: int = 1, options: DecodeOptions = DecodeOptions()) -> dict:
    """The text decoder's latency on one clip, on the current torch threads: the median encoder pass in `mode` with
    layer mask `active` and the median search (`options`: greedy by default, or beam) of its output, each over
    `repeats` timed runs after `warmup` (the "clip" mode's padding tail is cached by then), in ms: {"latency_ms"
    (their sum), "encode_ms", "decode_ms", "tokens", "stop", "text"}."""
    memory, encode_runs = timed(lambda: seq2seq.encode([waveform], active, mode), repeats, warmup)
    (hyp,), decode_runs = timed(lambda: seq2seq.decode(memory, options), repeats, warmup)
    encode_ms, decode_ms = float(np.median(encode_runs)), float(np.median(decode_runs))
    return {"latency_ms": encode_ms + decode_ms, "encode_ms": encode_ms, "decode_ms": decode_ms,
            "tokens": len(hyp.tokens), "stop": hyp.stop, "text": hyp.text}


def has_text_decoder(model: DynamicCTCModel) -> bool:
    """Whether `model` is an encoder-decoder student (config.json's model.decoder set), which text_model takes."""
    return getattr(model, "decoder", None) is not None


def timed_transcript(model: DynamicCTCModel, waveform, mask=None, decoder: str = "whisper", mode: str = "padded",
                     beam_size: int = 5, repeats: int = 3, warmup: int = 1) -> dict:
    """One clip by an encoder-decoder student's text decoder with layer mask `mask` (None: every module), search
    `decoder` (TEXT_DECODERS) and input `mode`, timed (search_latency): its dict + "spoken" (the text in the
    references' spelling, spoken_text: what WER and CER are counted on, after normalize_text), "decoder", "mode".
    A model without a text decoder is refused (ValueError)."""
    seq2seq, options = text_model(model), decode_options(decoder, beam_size)
    model.eval()
    result = search_latency(seq2seq, waveform, mask, mode, repeats, warmup, options)
    return {**result, "spoken": spoken_text(result["text"]), "decoder": decoder, "mode": mode}


# ---------------------------------------------------------------------------------- token-level drop-one KL

def forced_log_probs(seq2seq: WhisperSeq2Seq, memory: AudioMemory, tokens: torch.Tensor) -> torch.Tensor:
    """The text decoder's teacher-forced log-probabilities [B, n + 1, V] (whole vocabulary, nothing suppressed)
    of `tokens` (forced_tokens' inputs [B, P + n]) from the last prompt position on."""
    prompt = len(seq2seq.tokenizer.sot_sequence)
    logits = seq2seq.decoder(tokens, seq2seq.decoder.start(memory.states, memory.mask), cache=False)
    return F.log_softmax(logits[:, prompt - 1:].float(), dim=-1)


@torch.inference_mode()
def token_drop_one_kl(model: DynamicCTCModel, waveforms: Sequence, mask=None, mode: str = "clip",
                      reference: Optional[Sequence[str]] = None) -> dict:
    """The text decoder's drop-one view of an encoder-decoder student: for each module kept in `mask` (None: every
    module), the mean per-token KL(p_mask || p_mask without it) of the decoder's posteriors, teacher-forced on the
    greedy hypothesis under `mask` (or on the `reference` texts, one per waveform), and the greedy transcripts
    without it. Tokens are pooled over the clips; <|endoftext|> counts as one.

    -> {"mode", "targets": "hypothesis" | "reference", "kept": [indices], "kept_names", "tokens" (how many),
    "texts" (greedy under `mask`), "modules": [{"index", "name", "kl", "texts"}, one per kept module]}."""
    if not len(waveforms):
        raise ValueError("no clips to compare")
    if reference is not None and len(reference) != len(waveforms):
        raise ValueError(f"{len(reference)} reference texts for {len(waveforms)} clips")
    seq2seq = text_model(model)
    model.eval()
    base = as_bools(mask, model.num_modules)
    kept = [i for i, on in enumerate(base) if on]
    sums, texts, base_texts, count = [0.0] * len(kept), [[] for _ in kept], [], 0
    for start in range(0, len(waveforms), BATCH_CLIPS):
        wavs = list(waveforms[start: start + BATCH_CLIPS])
        memory = seq2seq.encode(wavs, base, mode)
        hyps = seq2seq.decode(memory)
        base_texts += [h.text for h in hyps]
        device = memory.states.device
        tokens, _, lengths = (forced_tokens(seq2seq.tokenizer, [h.tokens for h in hyps], device) if reference is None
                              else token_batch(seq2seq.tokenizer, reference[start: start + BATCH_CLIPS],
                                               model.config.decoder["n_ctx"], device))
        full = forced_log_probs(seq2seq, memory, tokens)
        valid = valid_frames(lengths, full.shape[1])
        count += int(valid.sum())
        for r, i in enumerate(kept):
            dropped = seq2seq.encode(wavs, [on and j != i for j, on in enumerate(base)], mode)
            sums[r] += float(kl_per_frame(full, forced_log_probs(seq2seq, dropped, tokens))[valid].sum())
            texts[r] += [h.text for h in seq2seq.decode(dropped)]
    names = model.module_names
    return {"mode": mode, "targets": "hypothesis" if reference is None else "reference", "kept": kept,
            "kept_names": [names[i] for i in kept], "tokens": count, "texts": base_texts,
            "modules": [{"index": i, "name": names[i], "kl": sums[r] / count, "texts": texts[r]}
                        for r, i in enumerate(kept)]}
