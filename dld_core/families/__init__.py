"""Model families: one module per family says how its encoder is fed and built.

Every family module (``conformer``, ``wavlm``, ``whisper``) defines the same small interface:

    Features(cfg)            nn.Module: (wavs [B, S] 16 kHz float, wav_lengths [B]) -> (features, lengths);
                             stateless, run without grad (log-mel, normalised waveform, ...)
    Encoder(cfg)             nn.Module with the gated-module API the model and the layer views use:
                               embed(features, lengths) -> (x [B, T', D], out_lengths [B], context)
                               layer(i, x, context) -> x      gated module i, the whole residual update
                                                              y + f_i(y); skipping it = not calling it
                               finish(x) -> x                 after the last module (e.g. a final norm)
    module_names(cfg)        one short display name per gated module (L1..L12, A1 M1 .. A4 M4);
                             their number is the mask length everywhere
    module_roles(cfg)        (block index, role) per gated module, role "attention" | "mlp" (a sub-block:
                             only an attention + MLP pair makes a block) or "block" (a whole block). Mask
                             presets keep whole blocks (dld_core.masks.preset), the app says what a module is
    dummy_features(cfg, n)   (features [1, ...], lengths [1]) shaped like Features' output for a clip of n
                             samples (zeros; used to count FLOPs on the meta device)
    frame_rate(cfg)          encoder output frames per second
    INPUT                    "log-mel" or "waveform" (SpecAugment applies to log-mel input)
    validate(cfg)            family-specific config checks (raise ValueError with one line)
    load_pretrained(model, source)        optional: initialise the encoder from external weights
    config_from_pretrained(path, **kw)    optional: a ModelConfig with a pretrained model's dims

The whisper family also has Whisper's own text decoder (``whisper_decoder.py``: the model and tokenizer;
``whisper_decoding.py``: ``WhisperSeq2Seq(encoder, decoder, tokenizer).transcribe(wavs, active=mask)``, greedy
and beam search): it attends to the gated encoder's output, so the same layer mask drives it.

Adding a family means adding one module here and its name to ``FAMILIES``. Families share the frame grid
of ``dld_core/frames.py`` and reach one another only through :func:`get_family` (the conformer's
``front_end="whisper"`` borrows the whisper family's ``Features``).
"""
from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = ("conformer", "wavlm", "whisper")


ROLE_TEXT = {"attention": "self-attention of block {b}", "mlp": "MLP (feed-forward) of block {b}",
             "block": "encoder block {b}"}


def describe_role(block: int, role: str) -> str:
    """What a gated module is, in words: "self-attention of block 2" (block: 0-based)."""
    return ROLE_TEXT.get(role, "gated module").format(b=block + 1)


def get_family(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (expected one of {', '.join(FAMILIES)})")
    return importlib.import_module(f"{__name__}.{name}")
