"""Deploy a budget: the sub-network of one layer mask as a small static model (safetensors or ONNX).

    python -m dld_core deploy --checkpoint DIR (--keep A1,M1,... | --budget 0.5) --out OUT
                              [--format onnx|safetensors] [--quantize int8]

The dynamic checkpoint carries every gated module; a deployed model holds only the kept modules' weights,
the encoder front end (subsampling / Whisper's convolutions), the final norm and the CTC head, and runs
them all: it is an ordinary static model. An encoder-decoder student's text decoder is kept by the safetensors form
(its GFLOPs count the encoder, as everywhere) and left out of the ONNX form, which says so in config.json.

* **The static model** (`static_subnetwork`): a conformer keeps its kept layers, renumbered (n_layers = the
  number kept: L1..Lk). A Whisper encoder keeps its block numbering and lists in ``ModelConfig.sub_blocks``
  the sub-blocks each block still holds ("AM", "A", "M" or "": dld_core/families/whisper.py), so a mask
  such as A1 M1 M2 A3 becomes a model whose modules are still named A1 M1 M2 A3. The weights are the
  source's, untouched (same dtype), so the static model computes exactly what the gated one does.
* **safetensors** form: a DLD Studio checkpoint folder (config.json + model.safetensors) that
  `dld_core.checkpoint.load_checkpoint` loads like any other.
* **ONNX** form: model.onnx (or model.int8.onnx) + config.json; ``torch.onnx.export`` (the TorchScript
  exporter: no extra dependency) of the static model, inputs ``features`` [batch, frames, n_mels] (the
  family's log-mel front end, ``dld_core.features.feature_extractor``) and ``lengths`` [batch], outputs
  ``log_probs`` [batch, frames', vocab] and ``out_lengths`` [batch], batch and time axes dynamic. It is
  traced on a padded batch, so padding masks are part of the graph. `load_exported` runs it with
  onnxruntime on CPU behind the model interface, so the one inference path (dld_core.inference:
  featurize -> forward -> greedy or beam decoding) runs it like a PyTorch model.
* ``--quantize int8``: dynamic int8 quantization of the linear layers (MatMul/Gemm weights,
  onnxruntime.quantization.quantize_dynamic); the file is named model.int8.onnx and config.json says so.
* ``--budget B``: the mask the Budgets page recommends for B x the full-depth GFLOPs (10 s clip): the one
  chooser, `dld_core.recommend` (`validated_masks` on the model's validation set, then `recommend`:
  validation WER first, KL to the full-depth model breaking ties).
* The ONNX form also holds the family's front end as features.onnx (`dld_core.onnx_features`: 16 kHz
  audio -> model.onnx's inputs), so the folder runs with onnxruntime alone (README: "Run the exported
  model without DLD Studio"); `run_onnx` is that path, and it is verified too.
* It also holds transcribe.onnx (`dld_core.onnx_transcribe`): front end, model and greedy CTC decoding in one graph,
  one 16 kHz clip -> its transcript as a string tensor, reading its weights from the other two files (no
  second copy); its transcript is checked against DLD Studio's greedy decoding of the exported model on a few
  seconds of speech (`transcribe_check`).

config.json records where the model came from: the source checkpoint, its weights' and config's
checksums, the mask (names, indices, bools), how it was chosen, GFLOPs (and the share of full depth),
parameters, and the measured difference to the gated model (`verified`).

Nothing is half-written: the folder is assembled in a temp folder next to OUT, verified (the exported
model, loaded back the way a user loads it, against the gated model on a padded batch), then renamed
into place. Every user error is one line (`DeployError` or the checkpoint loader's `CheckpointError`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import masks as M
from .audio import SAMPLE_RATE
from .checkpoint import CONFIG_FILE, Checkpoint, config_digest, load_checkpoint, save_checkpoint
from .config import ModelConfig, from_dict, to_dict
from .model import CTCModel, DynamicCTCModel, ModelOutput, count_parameters
from .onnx_features import (FEATURES_FILE, INPUTS as FEATURES_INPUTS, OUTPUTS as FEATURES_OUTPUTS, export_features,
                            run_features)
from .onnx_transcribe import (INPUTS as TRANSCRIBE_INPUTS, OUTPUTS as TRANSCRIBE_OUTPUTS, TRANSCRIBE_FILE,
                              export_transcribe, run_transcribe)
from .recommend import (CHOOSER, CRITERION, DEFAULT_CLIPS, FLOPS_SECONDS, NUM_CANDIDATES, mask_gflops, recommend,
                        validated_masks, validation_clips)
from .safe_io import CheckpointError, atomic_write_json, fsync_dir, json_object, read_regular_file, sha256_file

FORMATS = ("onnx", "safetensors")
QUANTIZATIONS = ("int8",)
FAMILIES = ("conformer", "whisper")          # wavlm: its relative position bias lives in layer 0's weights
DEPLOY_FORMAT = "dld-studio-deployed"        # config.json of the ONNX form (the safetensors form is a checkpoint)
DEPLOY_VERSION = 1
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
MAX_DIFF_FP32 = 1e-3                         # a float32 export further than this from the gated model is refused
MAX_ONNX_BYTES = 1 << 30
OPSET = 17
VERIFY_SECONDS = (1.3, 0.8)                  # the padded batch every export is checked on (not the traced shapes)
TRANSCRIBE_CHECK_SECONDS = 4.0               # speech transcribe.onnx is checked on (audio.sample_speech)


class DeployError(ValueError):
    """A deploy request that cannot be done; the message is one line meant for the user."""


# ------------------------------------------------------------------------------------------ the mask

def parse_keep(text: str, names: Sequence[str]) -> list[int]:
    """--keep "A1,M1,A3" (names or 0-based indices) -> sorted kept indices; unknown names and an empty
    mask are refused."""
    kept = M.parse_modules(text or "", names)        # ValueError: unknown module 'X' (expected ...)
    if not kept:
        raise DeployError(f"the mask keeps no module: --keep needs at least one of {' '.join(names)}")
    return kept


def check_budget(cfg: ModelConfig, budget: float) -> float:
    """The GFLOPs limit of a --budget share; refused outside (0, 1] or below the cheapest one-module mask."""
    if not 0 < budget <= 1:
        raise DeployError(f"--budget is a share of the full-depth GFLOPs in (0, 1], got {budget:g}")
    n, names = cfg.num_modules, cfg.module_names
    full = mask_gflops(cfg, range(n))
    single = [mask_gflops(cfg, [i]) for i in range(n)]
    cheapest = min(range(n), key=lambda i: single[i])
    if single[cheapest] > budget * full * (1 + 1e-9):
        raise DeployError(f"--budget {budget:g} is below the cheapest mask ({names[cheapest]} alone: "
                          f"{single[cheapest] / full:.3f} of full depth, {single[cheapest]:.3f} of {full:.3f} GFLOPs "
                          f"per {FLOPS_SECONDS:g} s)")
    return budget * full


def budget_mask(ckpt: Checkpoint, budget: float, clips, num_candidates: int = NUM_CANDIDATES, seed: int = 0) -> dict:
    """The Budgets page's mask for `budget` x the full-depth GFLOPs (dld_core.recommend, scoring only the
    candidates within the budget). Returns {"active", "wer", "kl", "gflops", "limit_gflops", "depths": the best
    mask of each depth that fits [{kept, active, wer, kl, gflops}]}."""
    limit = check_budget(ckpt.config, budget)
    table = validated_masks(ckpt.model, clips, num_candidates, seed, limit_gflops=limit)
    chosen = recommend(table, limit)
    if chosen is None:
        raise DeployError(f"no mask fits in --budget {budget:g}")
    depths = sorted({e["kept"] for e in table}, reverse=True)
    return {**chosen, "limit_gflops": limit,                     # the best of each depth, for the record
            "depths": [recommend([e for e in table if e["kept"] == k], limit) for k in depths]}


# ---------------------------------------------------------------------------------- the static model

def static_subnetwork(model: DynamicCTCModel, kept: Sequence[int]) -> DynamicCTCModel:
    """An ordinary model holding only the kept modules (and the front end, final norm and head), with the
    source's weights: its full-depth forward is the source's forward with mask `kept`."""
    cfg = model.config
    kept = M.kept(list(kept), cfg.num_modules)
    if not kept:
        raise DeployError("the mask keeps no module")
    state = model.state_dict()
    if cfg.family == "conformer":
        new_cfg = dataclasses.replace(cfg, n_layers=len(kept))
        renamed = {}
        for key, value in state.items():
            if key.startswith("encoder.layers."):
                i = int(key.split(".")[2])
                if i in kept:
                    renamed[f"encoder.layers.{kept.index(i)}." + key.split(".", 3)[3]] = value
            else:
                renamed[key] = value
        state = renamed
    elif cfg.family == "whisper":
        from .families.whisper import block_parts, module_parts
        held = [set() for _ in block_parts(cfg)]
        parts = module_parts(cfg)
        for i in kept:
            b, kind = parts[i]
            held[b].update(kind)
        layout = ["".join(k for k in "AM" if k in h) for h in held]
        new_cfg = dataclasses.replace(cfg, sub_blocks=[] if all(p == "AM" for p in layout) else layout)
    else:
        raise DeployError(f"deploy supports the {' and '.join(FAMILIES)} families, not {cfg.family!r}")
    static = DynamicCTCModel(new_cfg)
    wanted = static.state_dict()
    static.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return static.eval().to(next(model.parameters()).device)


# ------------------------------------------------------------------------------------------- writing

class _Traced(nn.Module):
    """The static model as the exported graph sees it: (features, lengths) -> (log_probs, out_lengths)."""

    def __init__(self, model: DynamicCTCModel):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        out = self.model(features, lengths)
        return out.log_probs, out.lengths


class _TraceableSelfAttention(nn.Module):
    """nn.MultiheadAttention's self-attention (packed in-projection, key padding mask, sequence first) with
    the same weights, written so that the TorchScript ONNX exporter keeps the time and batch axes dynamic
    (torch's own forward bakes the traced sizes into a Reshape). Same arithmetic up to float rounding;
    only swapped in while exporting (the conformer family's torchaudio ConformerLayers)."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if (not mha._qkv_same_embed_dim or mha.batch_first or mha.bias_k is not None or mha.add_zero_attn
                or mha.in_proj_bias is None):
            raise DeployError("cannot export this attention layer to ONNX (an unsupported nn.MultiheadAttention variant)")
        self.mha = mha

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None):
        if attn_mask is not None or need_weights or not (query is key is value):
            raise DeployError("cannot export this attention layer to ONNX (only plain self-attention is supported)")
        m = self.mha
        heads, head_dim = m.num_heads, m.head_dim
        q, k, v = nn.functional.linear(query, m.in_proj_weight, m.in_proj_bias).chunk(3, dim=-1)   # [T, B, D] each
        q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, head_dim).permute(1, 2, 0, 3) for t in (q, k, v))
        mask = None if key_padding_mask is None else ~key_padding_mask.bool()[:, None, None, :]   # True: attend
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)              # [B, H, T, hd]
        out = out.permute(2, 0, 1, 3).flatten(2)                                               # [T, B, D]
        return nn.functional.linear(out, m.out_proj.weight, m.out_proj.bias), None


def _traceable(model: DynamicCTCModel) -> DynamicCTCModel:
    """A copy of the model whose nn.MultiheadAttention layers export with dynamic shapes."""
    import copy
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, _TraceableSelfAttention(child))
    return model


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)


def _example_batch(model, seconds: Sequence[float], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from .inference import featurize
    return featurize(model, [_noise(s, seed + i) for i, s in enumerate(seconds)])


def export_onnx(model: DynamicCTCModel, path: Path) -> None:
    """torch.onnx.export of a static model, traced on a padded batch of two (so the padding masks are in
    the graph), with dynamic batch and time axes."""
    feats, lengths = _example_batch(model, (1.0, 0.6), seed=7)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")                 # TracerWarnings; the TorchScript exporter's deprecation
        torch.onnx.export(_Traced(_traceable(model)).eval(), (feats.cpu(), lengths.cpu()), str(path), dynamo=False,
                          input_names=["features", "lengths"], output_names=["log_probs", "out_lengths"],
                          dynamic_axes={"features": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
                                        "log_probs": {0: "batch", 1: "out_frames"}, "out_lengths": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True)


def store_exact_fp16(path: Path, min_elements: int = 1024) -> int:
    """Halve an exported file without changing a single value: every float32 initializer that float16 holds
    exactly (the weights of a float16 checkpoint are such) is stored as float16 behind a Cast to float32,
    which onnxruntime folds once when it loads the model; arithmetic stays float32. Returns how many
    initializers were converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    model = onnx.load(str(path))
    graph, casts, kept = model.graph, [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and np.prod(init.dims) >= min_elements:
            value = numpy_helper.to_array(init)
            half = value.astype(np.float16)
            if np.array_equal(half.astype(np.float32), value):
                kept.append(numpy_helper.from_array(half, f"{init.name}.fp16"))
                casts.append(helper.make_node("Cast", [f"{init.name}.fp16"], [init.name], to=TensorProto.FLOAT,
                                              name=f"{init.name}.cast"))
                continue
        kept.append(init)
    if casts:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        nodes = casts + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(path))
    return len(casts)


def quantize_int8(src: Path, dst: Path) -> dict:
    """Dynamic int8 quantization of the MatMul/Gemm weights (the linear layers); activations stay float
    and are quantized on the fly. Returns what config.json records."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    op_types = ["MatMul", "Gemm"]
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)          # its advice to pre-process (whose shape inference fails on these graphs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=op_types)
    finally:
        logging.disable(disabled)
    return {"type": "int8", "method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
            "op_types": op_types, "note": "linear-layer weights int8, activations quantized at run time; "
                                          "convolutions, norms and the rest stay float32"}


def _weights_dtype(info: dict) -> torch.dtype:
    return {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(str(info.get("weights_dtype")), torch.float32)


def write_safetensors(folder: Path, static: DynamicCTCModel, ckpt: Checkpoint, provenance: dict) -> None:
    save_checkpoint(folder, static, recipe=ckpt.recipe, dtype=_weights_dtype(ckpt.info),
                    metadata={"deployed": {**provenance, "form": "safetensors", "precision": "fp32"}})


def write_onnx(folder: Path, static: DynamicCTCModel, provenance: dict, quantize: Optional[str]) -> dict:
    export_onnx(static, folder / ONNX_FILE)
    name, quantization, storage = ONNX_FILE, None, "float32"
    if quantize == "int8":
        quantization = quantize_int8(folder / ONNX_FILE, folder / ONNX_INT8_FILE)
        (folder / ONNX_FILE).unlink()
        name = ONNX_INT8_FILE
        storage = "int8 linear-layer weights" + (", the other float16 where exact (cast to float32 when loaded)"
                                                 if store_exact_fp16(folder / name) else ", the rest float32")
    elif store_exact_fp16(folder / ONNX_FILE):
        storage = "float16 where exact (the source's float16 weights), cast to float32 when loaded"
    export_features(static.config, folder / FEATURES_FILE, OPSET)
    shared = export_transcribe(folder, name, FEATURES_FILE, static.config.vocab, OPSET)
    model_cfg = to_dict(static.config)
    info = {
        "format": DEPLOY_FORMAT, "version": DEPLOY_VERSION, "form": "onnx",
        "model_file": name, "model_file_sha256": sha256_file(folder / name),
        "precision": "int8 (dynamic)" if quantization else "fp32", "quantization": quantization,
        "weights_storage": storage,
        "opset": OPSET,
        "inputs": {"features": f"float32 [batch, frames, {static.config.n_mels}]: the {static.config.family} "
                               f"family's front end on 16 kHz audio ({FEATURES_FILE}, or "
                               "dld_core.features.feature_extractor(config))",
                   "lengths": "int64 [batch]: valid feature frames of each row"},
        "outputs": {"log_probs": f"float32 [batch, frames', {static.config.vocab_size}]: CTC log-posteriors over "
                                 "model.vocab (blank first)",
                    "out_lengths": "int64 [batch]: valid output frames"},
        "front_end": {"file": FEATURES_FILE, "sha256": sha256_file(folder / FEATURES_FILE), "inputs": FEATURES_INPUTS,
                      "outputs": FEATURES_OUTPUTS, "graph": "the family's feature extractor, its STFT as a "
                                                            "convolution (dld_core.onnx_features)"},
        "transcribe": {"file": TRANSCRIBE_FILE, "sha256": sha256_file(folder / TRANSCRIBE_FILE),
                       "inputs": TRANSCRIBE_INPUTS, "outputs": TRANSCRIBE_OUTPUTS,
                       "graph": f"{FEATURES_FILE}, {name} and greedy CTC decoding in one graph "
                                "(dld_core.onnx_transcribe); run it by path from this folder",
                       "reads_weights_from": [name, FEATURES_FILE], "shared_initializers": shared},
        "model": model_cfg, "model_sha256": config_digest(model_cfg),
        "deployed": {**provenance, "form": "onnx"},
    }
    atomic_write_json(folder / CONFIG_FILE, info)
    return info


# ------------------------------------------------------------------------------------------- loading

class OnnxCTCModel(CTCModel):
    """An exported ONNX model behind DynamicCTCModel's interface (config, module_names, forward ->
    ModelOutput), run by onnxruntime on CPU: featurize / recognize / the decoders use it unchanged. It is
    static: it runs every module it holds (a mask other than "all" is refused)."""

    def __init__(self, session, config: ModelConfig, info: dict):
        super().__init__()
        self.session = session
        self.config = config
        self.info = info

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, active=None,
                return_hidden: bool = False) -> ModelOutput:
        if not all(M.as_bools(active, self.num_modules)):
            raise ValueError("an exported model is static: it runs the modules it holds, without a layer mask")
        if return_hidden:
            raise ValueError("an exported ONNX model gives log-probs only (no hidden states)")
        if self.config.family == "whisper" and features.shape[1] > 2 * self.config.max_frames:
            frames = features.shape[1]        # the position table's length, as the PyTorch encoder says it
            raise ValueError(f"input of {frames} mel frames ({frames / 100:.1f} s) is longer than this Whisper "
                             f"encoder's {2 * self.config.max_frames} frames ({self.config.max_frames / 50:.0f} s)")
        lp, out_lengths = self.session.run(None, {
            "features": np.ascontiguousarray(features.detach().cpu().numpy(), dtype=np.float32),
            "lengths": np.ascontiguousarray(torch.as_tensor(lengths).cpu().numpy(), dtype=np.int64)})
        return ModelOutput(torch.from_numpy(lp), torch.from_numpy(out_lengths), None)


def read_info(folder) -> dict:
    """config.json of an exported folder (either form), checked: format, and the model config's checksum."""
    folder = Path(folder)
    info = json_object(read_regular_file(folder / CONFIG_FILE, 1 << 20, f"{folder.name}: {CONFIG_FILE}"),
                       f"{folder.name}: {CONFIG_FILE}")
    if info.get("format") not in (DEPLOY_FORMAT, "dld-studio-checkpoint") or not isinstance(info.get("deployed"), dict):
        raise CheckpointError(f"{folder.name}: not a folder written by `python -m dld_core deploy`")
    if info["format"] == DEPLOY_FORMAT and info.get("version") != DEPLOY_VERSION:
        raise CheckpointError(f"{folder.name}: unsupported deployed-model version {str(info.get('version'))[:20]}")
    if info.get("model_sha256") != config_digest(info.get("model")):
        raise CheckpointError(f"{folder.name}: the model config in {CONFIG_FILE} does not match its checksum")
    return info


def load_exported(folder, threads: Optional[int] = None) -> nn.Module:
    """The model in an exported folder: a DynamicCTCModel (safetensors form, through the checkpoint loader)
    or an OnnxCTCModel (ONNX form; `threads` = onnxruntime's intra-op threads, default its own)."""
    folder = Path(folder)
    info = read_info(folder)
    if info["format"] != DEPLOY_FORMAT:
        return load_checkpoint(folder).model
    import onnxruntime as ort
    try:
        config = from_dict(ModelConfig, info["model"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder.name}: invalid model config ({str(exc).splitlines()[0][:160]})") from None
    name = info.get("model_file")
    if name not in (ONNX_FILE, ONNX_INT8_FILE):
        raise CheckpointError(f"{folder.name}: {CONFIG_FILE} names no model file")
    data = read_regular_file(folder / name, MAX_ONNX_BYTES, f"{folder.name}: {name}")
    if hashlib.sha256(data).hexdigest() != info.get("model_file_sha256"):
        raise CheckpointError(f"{folder.name}: {name} does not match the checksum in {CONFIG_FILE} (corrupt or altered)")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return OnnxCTCModel(session, config, info).eval()


# -------------------------------------------------------------------------------------------- deploy

def run_onnx(folder, waveforms) -> tuple[np.ndarray, np.ndarray]:
    """An exported ONNX folder run with onnxruntime alone, as the README does: features.onnx on the padded
    16 kHz waveforms, then the model file. Returns (log_probs, out_lengths)."""
    import onnxruntime as ort
    folder = Path(folder)
    info = read_info(folder)
    if info["format"] != DEPLOY_FORMAT or not isinstance(info.get("front_end"), dict):
        raise CheckpointError(f"{folder.name}: not an ONNX folder with a front end (features.onnx)")
    features = run_features(folder / FEATURES_FILE, waveforms)
    session = ort.InferenceSession(str(folder / info["model_file"]), providers=["CPUExecutionProvider"])
    return tuple(session.run(None, dict(zip(["features", "lengths"], features))))


def _max_diff(a_log_probs, a_lengths, b_log_probs, b_lengths) -> float:
    """max |log-prob difference| over the valid frames of two outputs of a batch (inf if their lengths differ)."""
    a_lengths, b_lengths = torch.as_tensor(a_lengths).cpu(), torch.as_tensor(b_lengths).cpu()
    if not torch.equal(a_lengths, b_lengths):
        return float("inf")
    a, b = torch.as_tensor(a_log_probs).cpu(), torch.as_tensor(b_log_probs).cpu()
    return max(float((a[i, :n] - b[i, :n]).abs().max()) for i, n in enumerate(a_lengths.tolist()))


@torch.no_grad()
def _gated_reference(gated: DynamicCTCModel, kept: Sequence[int], seconds: Sequence[float], seed: int):
    """A padded batch of noise clips and the gated model's output on it with mask `kept`."""
    from .inference import featurize
    wavs = [_noise(s, seed + i) for i, s in enumerate(seconds)]
    return wavs, gated(*featurize(gated, wavs), active=list(kept))


@torch.no_grad()
def max_abs_diff(gated: DynamicCTCModel, kept: Sequence[int], exported: nn.Module,
                 seconds: Sequence[float] = VERIFY_SECONDS, seed: int = 11) -> float:
    """max |log-prob difference| over the valid frames of a padded batch of noise clips, the gated model with
    mask `kept` against the exported model."""
    from .inference import featurize
    wavs, a = _gated_reference(gated, kept, seconds, seed)
    b = exported(*featurize(exported, wavs))
    return _max_diff(a.log_probs, a.lengths, b.log_probs, b.lengths)


def onnx_only_diff(gated: DynamicCTCModel, kept: Sequence[int], folder,
                   seconds: Sequence[float] = VERIFY_SECONDS, seed: int = 11) -> float:
    """The same, for the exported folder run with onnxruntime alone (`run_onnx`: its own front end)."""
    wavs, a = _gated_reference(gated, kept, seconds, seed)
    return _max_diff(a.log_probs, a.lengths, *map(torch.from_numpy, run_onnx(folder, wavs)))


def transcribe_check(gated: DynamicCTCModel, kept: Sequence[int], folder,
                     seconds: float = TRANSCRIBE_CHECK_SECONDS) -> dict:
    """transcribe.onnx on `seconds` of speech (the data_samples clips, tiled) against DLD Studio's greedy
    decoding of the folder's front end and model file run with onnxruntime (`run_onnx`: the same arithmetic,
    so the same text is required), and whether it is also the gated model's greedy transcript with `kept`."""
    from .audio import sample_speech
    from .inference import decoder_for, transcribe
    wav = sample_speech(seconds)
    text = run_transcribe(Path(folder) / TRANSCRIBE_FILE, wav)
    log_probs, lengths = run_onnx(folder, [wav])
    exported = decoder_for(gated, "greedy")(torch.from_numpy(log_probs), torch.from_numpy(lengths))[0]
    return {"text": text, "same_as_model_file_greedy": text == exported,
            "same_as_gated_greedy": text == transcribe(gated, [wav], active=list(kept))[0],
            "against": f"{seconds:g} s of speech (data_samples synth clips, tiled)"}


def deploy(checkpoint, out, *, keep: Optional[str] = None, budget: Optional[float] = None, fmt: str = "onnx",
           quantize: Optional[str] = None, valid: Optional[str] = None, clips: int = DEFAULT_CLIPS,
           log: Optional[Callable[[str], None]] = None) -> dict:
    """Export the sub-network of one mask (`keep`: names or indices; or the best within `budget`) of a
    checkpoint to the new folder `out`. Returns the written config.json."""
    log = log or (lambda message: None)
    out = Path(out)
    if (keep is None) == (budget is None):
        raise DeployError("give exactly one of --keep (the modules to keep) and --budget (a share of full-depth GFLOPs)")
    if fmt not in FORMATS:
        raise DeployError(f"unknown --format {fmt!r} (expected {' or '.join(FORMATS)})")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise DeployError(f"unknown --quantize {quantize!r} (expected {' or '.join(QUANTIZATIONS)})")
    if quantize and fmt != "onnx":
        raise DeployError(f"--quantize {quantize} needs --format onnx (the safetensors form holds the source's weights)")
    if budget is not None and not 0 < budget <= 1:
        raise DeployError(f"--budget is a share of the full-depth GFLOPs in (0, 1], got {budget:g}")
    if out.exists() or out.is_symlink():
        raise DeployError(f"{out} already exists: choose a new output folder")
    ckpt = load_checkpoint(checkpoint)                   # CheckpointError: checksum, config, shapes, ...
    cfg = ckpt.config
    if cfg.family not in FAMILIES:
        raise DeployError(f"deploy supports the {' and '.join(FAMILIES)} families, not {cfg.family!r}")
    names = cfg.module_names
    if keep is not None:
        kept = parse_keep(keep, names)
        selection = {"by": "keep", "keep": keep}
    else:
        check_budget(cfg, budget)
        clip_list, manifest = validation_clips(ckpt, valid, clips)
        log(f"choosing the best mask within {budget:g} of full-depth GFLOPs on {len(clip_list)} clips of {manifest}")
        best = budget_mask(ckpt, budget, clip_list)
        kept = best["active"]
        selection = {"by": "budget", "budget": budget, "limit_gflops": best["limit_gflops"],
                     "valid_manifest": manifest, "clips": len(clip_list), "criterion": CRITERION,
                     "chooser": CHOOSER, "wer": best["wer"], "kl": best["kl"], "depths": best["depths"]}
    static = static_subnetwork(ckpt.model, kept)
    full_gf, gf = mask_gflops(cfg, range(cfg.num_modules)), mask_gflops(cfg, kept)
    provenance = {
        "source_checkpoint": str(Path(checkpoint)), "source_recipe": ckpt.recipe,
        "source_weights_sha256": ckpt.info.get("weights_sha256"), "source_model_sha256": ckpt.info.get("model_sha256"),
        "source_module_names": list(names), "kept": [names[i] for i in kept], "kept_indices": list(kept),
        "mask": M.as_bools(kept, cfg.num_modules), "module_names": list(static.module_names),
        "selection": selection,
        "gflops_seconds": FLOPS_SECONDS, "gflops": gf, "full_gflops": full_gf, "gflops_share": gf / full_gf,
        "static_gflops": mask_gflops(static.config, range(static.num_modules)),
        "parameters": count_parameters(static), "source_parameters": count_parameters(ckpt.model),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if static.decoder is not None and fmt == "onnx":       # the ONNX graph is features -> CTC log-probs
        provenance["parameters"] -= count_parameters(static.decoder)
        provenance["text_decoder"] = ("not exported: the ONNX files hold the encoder and its CTC head (--format "
                                      "safetensors keeps the text decoder)")
        log(f"the text decoder is {provenance['text_decoder']}")
    log(f"keeping {M.describe(kept, names)}: {gf:.3f} of {full_gf:.3f} GFLOPs per {FLOPS_SECONDS:g} s "
        f"({100 * gf / full_gf:.0f}%), {provenance['parameters']:,} of {provenance['source_parameters']:,} parameters")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        if fmt == "safetensors":
            write_safetensors(tmp, static, ckpt, provenance)
        else:
            write_onnx(tmp, static, provenance, quantize)
        diff = max_abs_diff(ckpt.model, kept, load_exported(tmp))
        if not quantize and not diff <= MAX_DIFF_FP32:
            raise DeployError(f"the exported model does not match the gated model (max |log-prob difference| "
                              f"{diff:.3g} > {MAX_DIFF_FP32:g}); nothing was written")
        verified = {"max_abs_diff": diff, "against": f"the gated model with this mask, on a padded batch of "
                    f"{len(VERIFY_SECONDS)} noise clips ({', '.join(f'{s:g} s' for s in VERIFY_SECONDS)})"}
        if fmt == "onnx":
            alone = onnx_only_diff(ckpt.model, kept, tmp)
            if not quantize and not alone <= MAX_DIFF_FP32:
                raise DeployError(f"the exported model run with onnxruntime alone ({FEATURES_FILE} and {ONNX_FILE}) "
                                  f"does not match the gated model (max |log-prob difference| {alone:.3g} > "
                                  f"{MAX_DIFF_FP32:g}); nothing was written")
            verified["onnxruntime_only_max_abs_diff"] = alone   # with its own front end, as the README runs it
            check = transcribe_check(ckpt.model, kept, tmp)
            if not check["same_as_model_file_greedy"]:
                raise DeployError(f"{TRANSCRIBE_FILE} does not give the greedy transcript of {FEATURES_FILE} and the "
                                  f"model file ({check['text'][:60]!r}); nothing was written")
            verified["transcribe"] = check
        info = json_object(read_regular_file(tmp / CONFIG_FILE, 1 << 20, CONFIG_FILE), CONFIG_FILE)
        info["deployed"]["verified"] = verified
        info["deployed"]["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.name != CONFIG_FILE}
        atomic_write_json(tmp / CONFIG_FILE, info)      # the checksums it records are of files not rewritten
        if out.exists() or out.is_symlink():
            raise DeployError(f"{out} already exists: choose a new output folder")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)                    # mkdtemp made it private
        os.rename(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
