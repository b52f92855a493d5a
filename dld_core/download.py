"""The exported model of one mask as a zip: the app's "Download this model" (Budgets card, Inspect).

The zip holds `python -m dld_core deploy`'s folder as ``model/`` (ONNX by default; ONNX int8 or a
safetensors checkpoint on request) and a README.md that says what the model is (source checkpoint, the
mask, GFLOPs, parameters, how it was verified) and how to run it: for the ONNX forms, with onnxruntime
alone (`RUN_SNIPPET`: transcribe.onnx in three lines; `STEP_SNIPPET`: features.onnx, the model file and greedy
decoding in numpy; the very snippets of the project README, both tested against an exported model).

Export takes seconds, so zips are cached on disk by (checkpoint, mask, format) in a folder the caller
names (the app: DLD_DOWNLOADS_DIR), shared by every session: `cached_zip` looks one up without building,
`prepare_zip` builds it when missing (in a temp folder, then renamed into place; one build at a time in
this process) and keeps the newest `KEEP_ZIPS`. The model is exported from a fresh load of the
checkpoint: nothing is ever set on a model another session uses.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Optional, Sequence

from . import masks as M
from .checkpoint import read_config
from .deploy import DEPLOY_VERSION, ONNX_FILE, deploy
from .safe_io import fsync_dir

# format key -> deploy's (--format, --quantize), and its label
FORMATS = {"onnx": ("onnx", None), "onnx-int8": ("onnx", "int8"), "safetensors": ("safetensors", None)}
LABELS = {"onnx": "ONNX (onnxruntime, float32)", "onnx-int8": "ONNX int8 (smaller, approximate)",
          "safetensors": "safetensors (a DLD Studio checkpoint)"}
DEFAULT_FORMAT = "onnx"
MODEL_DIR = "model"     # the exported folder's name inside the zip (the README's snippet reads model/...)
README = "README.md"
KEEP_ZIPS = 8           # the cache keeps the newest zips only
ZIP_LAYOUT = 2          # what a zip holds (2: with transcribe.onnx); part of the cache key, so older zips are rebuilt

# Run the exported folder with onnxruntime alone: the project README's "Run the exported model without DLD Studio"
# snippets, word for word (a test runs them against a model). RUN_SNIPPET: model/transcribe.onnx, audio -> the greedy
# transcript in one graph; STEP_SNIPPET: the front end (model/features.onnx), the model, greedy decoding in numpy.
RUN_SNIPPET = """\
import onnxruntime as ort, soundfile as sf
audio = sf.read("clip.wav", dtype="float32")[0][None]                  # 16 kHz mono -> [1, samples]
print("".join(ort.InferenceSession("model/transcribe.onnx").run(None, {"audio": audio})[0]))   # greedy transcript
"""
STEP_SNIPPET = """\
import json, numpy as np, onnxruntime as ort, soundfile as sf
audio = sf.read("clip.wav", dtype="float32")[0][None]                  # 16 kHz mono -> [1, samples]
feats = ort.InferenceSession("model/features.onnx").run(None, {"audio": audio, "audio_lengths": np.array([audio.shape[1]])})
log_probs, n = ort.InferenceSession("model/model.onnx").run(None, dict(zip(["features", "lengths"], feats)))
ids, vocab = log_probs[0, :n[0]].argmax(-1), json.load(open("model/config.json"))["model"]["vocab"]
print("".join(vocab[i] for k, i in enumerate(ids) if i and (k == 0 or i != ids[k - 1])))   # greedy CTC (blank 0)
"""

_build_lock = threading.Lock()     # one export at a time in this process (torch.onnx.export keeps global state)


def _check_format(fmt: str) -> tuple[str, Optional[str]]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown download format {fmt!r} (expected {', '.join(FORMATS)})")
    return FORMATS[fmt]


def zip_key(checkpoint, active, fmt: str) -> str:
    """The cache key of (checkpoint, mask, format): the checkpoint's folder and the checksums its config.json
    records (so a retrained checkpoint in the same folder gets new zips), the kept modules, the format."""
    _check_format(fmt)
    info = read_config(checkpoint)
    kept = M.kept(active, len(_module_names(info)))
    parts = [str(Path(checkpoint).resolve()), str(info.get("weights_sha256")), str(info.get("model_sha256")),
             ",".join(map(str, kept)), fmt, f"deploy v{DEPLOY_VERSION}", f"zip v{ZIP_LAYOUT}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _module_names(info: dict) -> list[str]:
    from .config import ModelConfig, from_dict
    return from_dict(ModelConfig, info["model"]).module_names


def file_name(checkpoint, names: Sequence[str], active, fmt: str) -> str:
    """What the browser saves: <checkpoint folder>-<kept modules>-<format>.zip, e.g. dld-A1-M1-M2-A3-onnx.zip."""
    kept = M.kept(active, len(names))
    what = "all" if len(kept) == len(names) else "-".join(names[i] for i in kept)
    return f"{Path(checkpoint).name}-{what}-{fmt}.zip"


def cached_zip(cache_dir, checkpoint, active, fmt: str = DEFAULT_FORMAT) -> Optional[Path]:
    """The cached zip of (checkpoint, mask, format), or None (nothing is built)."""
    path = Path(cache_dir) / f"{zip_key(checkpoint, active, fmt)}.zip"
    return path if path.is_file() else None


def prepare_zip(cache_dir, checkpoint, active, fmt: str = DEFAULT_FORMAT, keep: int = KEEP_ZIPS) -> Path:
    """The zip of (checkpoint, mask, format), built and cached when missing. Raises what deploy raises
    (DeployError, CheckpointError: one-line messages) or OSError."""
    cache_dir = Path(cache_dir)
    key = zip_key(checkpoint, active, fmt)
    with _build_lock:                           # a second session asking for the same zip waits, then finds it
        path = cache_dir / f"{key}.zip"
        if path.is_file():
            os.utime(path)                      # recently used: pruned last
            return path
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{key}.") as tmp:
            built = build_zip(checkpoint, active, fmt, Path(tmp) / "bundle.zip")
            os.replace(built, path)
        fsync_dir(cache_dir)
    prune(cache_dir, keep)
    return path


def prune(cache_dir, keep: int = KEEP_ZIPS) -> None:
    """Delete all but the `keep` most recently used zips."""
    zips = sorted(Path(cache_dir).glob("*.zip"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in zips[keep:]:
        old.unlink(missing_ok=True)


def build_zip(checkpoint, active, fmt: str, out) -> Path:
    """Export the mask's sub-network (dld_core.deploy) and write the zip `out`: README.md and model/..."""
    out = Path(out)
    deploy_fmt, quantize = _check_format(fmt)
    names = _module_names(read_config(checkpoint))
    kept = M.kept(active, len(names))
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export.") as tmp:
        folder = Path(tmp) / MODEL_DIR
        info = deploy(checkpoint, folder, keep=",".join(names[i] for i in kept), fmt=deploy_fmt, quantize=quantize)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(README, readme(info, fmt))
            for p in sorted(folder.iterdir()):
                z.write(p, f"{MODEL_DIR}/{p.name}")
    return out


def step_snippet(model_file: str = ONNX_FILE) -> str:
    """STEP_SNIPPET for the folder's model file (model.onnx or model.int8.onnx)."""
    return STEP_SNIPPET.replace(f"model/{ONNX_FILE}", f"model/{model_file}")


def readme(info: dict, fmt: str) -> str:
    """The zip's README.md: what the model is and how to run it."""
    d = info["deployed"]
    kept, n = d["kept"], len(d["source_module_names"])
    lines = [f"# {Path(d['source_checkpoint']).name}: {' '.join(kept)} ({len(kept)} of {n} modules), "
             f"{LABELS[fmt]}", "",
             f"The sub-network of one layer mask of the DLD Studio checkpoint `{d['source_checkpoint']}` "
             f"(weights sha256 `{d['source_weights_sha256']}`), exported by `python -m dld_core deploy` as a static "
             f"model: it runs the kept modules {' '.join(kept)} and nothing else.", "",
             f"* compute: {d['gflops']:.3f} GFLOPs per {d['gflops_seconds']:g} s of audio, "
             f"{100 * d['gflops_share']:.0f}% of the full model's {d['full_gflops']:.3f}",
             f"* parameters: {d['parameters']:,} of the source's {d['source_parameters']:,}",
             f"* verified: max |log-prob difference| {d['verified']['max_abs_diff']:.2g} to the gated model with "
             f"this mask ({d['verified']['against']})"]
    if "onnxruntime_only_max_abs_diff" in d["verified"]:
        lines.append(f"* run with onnxruntime alone (the step-by-step snippet below): max |log-prob difference| "
                     f"{d['verified']['onnxruntime_only_max_abs_diff']:.2g}")
    if "transcribe" in d["verified"]:
        lines.append(f"* transcribe.onnx gives the greedy transcript of the two files it runs, checked on "
                     f"{d['verified']['transcribe']['against']}")
    lines += ["", f"`{MODEL_DIR}/config.json` records all of it: the source, the mask, the vocabulary "
              "(`model.vocab`, the CTC blank first), checksums.", ""]
    if info.get("format") == "dld-studio-deployed":          # the ONNX forms
        model_file = info["model_file"]
        lines += ["## Files", "",
                  f"* `{MODEL_DIR}/features.onnx`: the front end, 16 kHz mono audio -> features "
                  "(inputs `audio` float32 [batch, samples], `audio_lengths` int64 [batch]; outputs `features`, "
                  "`lengths`)",
                  f"* `{MODEL_DIR}/{model_file}`: the encoder and CTC head, features -> log-probs (inputs `features`, "
                  f"`lengths`; outputs `log_probs` [batch, frames, vocab], `out_lengths`), {info['precision']}",
                  f"* `{MODEL_DIR}/transcribe.onnx`: the two above and greedy decoding in one graph, one clip -> "
                  "its transcript (input `audio` float32 [1, samples]; output `text`, one string per character); it "
                  "reads its weights from the two files above, so keep the three together",
                  f"* `{MODEL_DIR}/config.json`: what the model is", "",
                  "## Run it with onnxruntime only", "",
                  "`pip install onnxruntime soundfile` (numpy comes with onnxruntime), put a 16 kHz mono "
                  "`clip.wav` next to this README, and run:", "",
                  "```python", RUN_SNIPPET.rstrip("\n"), "```", "",
                  "It prints the greedy transcript: the most likely token of every frame, repeats merged, blanks "
                  "dropped. Other sample rates: resample to 16 kHz first.", "",
                  "Step by step (the front end, the model, greedy decoding in numpy), which also takes a batch: "
                  "zero-pad the clips to the longest and pass each one's length in `audio_lengths`.", "",
                  "```python", step_snippet(model_file).rstrip("\n"), "```"]
        if info["model"].get("family") == "whisper":
            lines += ["", f"A clip may be up to {info['model']['max_frames'] / 50:g} s long (the Whisper encoder's "
                          "position table)."]
        if info.get("quantization"):
            lines += ["", f"Int8: {info['quantization']['note']}; its output differs a little from the float model's."]
    else:
        lines += ["## Load it", "",
                  f"`{MODEL_DIR}/` is a DLD Studio checkpoint (config.json + model.safetensors) holding only the kept "
                  "modules: load it with DLD Studio (`dld_core.checkpoint.load_checkpoint(\"model\")`, or "
                  "`python -m dld_core transcribe --checkpoint model clip.wav`). To run a model with onnxruntime "
                  "only, download the ONNX form instead."]
    return "\n".join(lines) + "\n"

