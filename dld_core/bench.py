"""CPU latency of the model forward at every depth on a random clip, next to its GFLOPs.

Median over `repeats` timed runs after `warmup` runs, under torch.inference_mode, with a fixed number
of intra-op threads (1 by default: stable numbers on a shared machine). Features are computed once,
outside the timing: the numbers are for the model forward (front end + kept modules + CTC head).
`decode` adds the decoding time of the same length of real speech (the synthetic data_samples clips,
tiled) on the same threads: greedy and the lexicon + word LM beam search (median, decoder prebuilt).
An encoder-decoder student (dld_core/seq2seq.py) adds its text decoder's greedy latency on that speech, per
level and input mode (front end and encoder pass in the mode, then the search: what one transcript costs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checkpoint import Checkpoint, load_checkpoint
from . import masks as M
from .audio import SAMPLE_RATE, sample_speech
from .flops import gflops
from .inference import emissions, featurize, timed
from .paths import repo_path


def _latency(model, feats, lengths, mask, repeats: int, warmup: int):
    """(the forward's output, its median latency in ms over `repeats` runs after `warmup`)."""
    out, runs = timed(lambda: emissions(model, features=(feats, lengths), active=mask), repeats, warmup)
    return out, float(np.median(runs))


@torch.inference_mode()
def decode_ms(model, seconds: float = 10.0, repeats: int = 5) -> dict:
    """Median greedy and beam decoding time (ms) for `seconds` of speech on the current torch threads."""
    from .decode import make_decoder
    out = emissions(model, [sample_speech(seconds)])
    result = {"clip": f"data_samples synth clips tiled to {seconds:g} s", "frames": int(out.lengths[0])}
    for kind in ("greedy", "beam"):
        try:
            dec = make_decoder(kind, model.config.vocab)
        except (ValueError, RuntimeError, OSError) as exc:      # no decoder files / flashlight: say why
            result[f"{kind}_error"] = " ".join(str(exc).split())
            continue
        _, runs = timed(lambda: dec(out.log_probs, out.lengths), repeats, warmup=1)
        result[f"{kind}_ms"] = float(np.median(runs))
    return result


@torch.inference_mode()
def text_decoder_ms(model, rows: Sequence[dict], seconds: float = 10.0, repeats: int = 5, warmup: int = 2) -> dict:
    """An encoder-decoder student's text decoder (dld_core/seq2seq.py): the greedy latency of `seconds` of speech
    (decode_ms's clip) with each of `rows`' masks, in each input mode, on the current torch threads (encoder pass +
    search; seq2seq.search_latency): {"clip", "modes": {mode: [{"kept", "mask", "latency_ms", "encode_ms",
    "decode_ms", "tokens", "stop", "text"}]}}."""
    from .config import STUDENT_INPUT_MODES
    from .seq2seq import search_latency, text_model
    seq2seq, wav = text_model(model), sample_speech(seconds)
    return {"clip": f"data_samples synth clips tiled to {seconds:g} s",
            "modes": {mode: [{"kept": r["kept"], "mask": r["mask"],
                              **search_latency(seq2seq, wav, r["mask"], mode, repeats, warmup)} for r in rows]
                      for mode in STUDENT_INPUT_MODES}}


def bench(checkpoint, seconds: float = 10.0, repeats: int = 5, warmup: int = 2, threads: int = 1,
          policy: str = "first_k", levels=None, seed: int = 0) -> dict:
    """{"seconds", "threads", "policy", "levels": [{"kept", "mask", "latency_ms", "gflops",
    "latency_ratio", "flops_ratio"}], "decode": {"greedy_ms", "beam_ms" (or "beam_error"), ...}} for
    kept = N..1 (or `levels`); ratios are to full depth; decode times are for full-depth log-probs. An
    encoder-decoder student adds "text_decoder" (text_decoder_ms: its greedy latency per level and input mode)."""
    if policy not in ("first_k", "every_other"):
        raise ValueError("bench policy must be 'first_k' or 'every_other'")
    model = checkpoint.model if isinstance(checkpoint, Checkpoint) else (
        checkpoint if isinstance(checkpoint, torch.nn.Module) else load_checkpoint(checkpoint).model)
    model.eval()
    n = model.num_modules
    levels = list(range(n, 0, -1)) if levels is None else [int(k) for k in levels]
    wav = (np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)
    feats, lengths = featurize(model, [wav])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        full_ms = _latency(model, feats, lengths, None, repeats, warmup)[1]
        rows = []
        for k in levels:
            mask = M.level_masks(n, k, policy)[0]
            ms = full_ms if k == n else _latency(model, feats, lengths, mask, repeats, warmup)[1]
            rows.append({"kept": k, "mask": mask, "latency_ms": ms, "gflops": gflops(model, float(seconds), mask)})
        decode = decode_ms(model, seconds, repeats)
        text = (text_decoder_ms(model, rows, seconds, repeats, warmup)
                if getattr(model, "decoder", None) is not None else None)
    finally:
        torch.set_num_threads(old_threads)
    full_gf = gflops(model, float(seconds), None)
    for r in rows:
        r["latency_ratio"] = r["latency_ms"] / full_ms
        r["flops_ratio"] = r["gflops"] / full_gf
    return {"seconds": seconds, "threads": threads, "policy": policy, "levels": rows, "decode": decode,
            **({"text_decoder": text} if text else {})}


def bench_exported(folder, seconds: float = 10.0, repeats: int = 5, warmup: int = 2, threads: int = 1) -> dict:
    """A folder written by `python -m dld_core deploy` next to its source: median forward latency of
    `seconds` of speech (the data_samples clips, tiled) on `threads` threads, GFLOPs, parameters and size
    on disk, for the gated source model at full depth and with the mask, the static PyTorch model, and the
    exported model; plus the exported model's max |log-prob difference| to the gated one on that clip and
    whether their greedy transcripts agree. {"rows": [...], "max_abs_diff", "same_greedy_text", ...}"""
    from .checkpoint import CONFIG_FILE, WEIGHTS_FILE
    from .deploy import folder_bytes, load_exported, read_info, static_subnetwork
    from .inference import decoder_for
    folder = Path(folder)
    info = read_info(folder)
    d = info["deployed"]
    source_path = repo_path(d["source_checkpoint"])          # as given, else relative to the repository
    source = load_checkpoint(source_path)
    if source.info.get("weights_sha256") != d["source_weights_sha256"]:
        raise ValueError(f"{source_path} is not the checkpoint {folder.name} was exported from (its weights' "
                         f"checksum differs)")
    kept = d["kept_indices"]
    exported = load_exported(folder, threads=threads)
    static = static_subnetwork(source.model, kept)
    wav = sample_speech(seconds)
    label = f"exported {info.get('form', 'safetensors')}" + (f" {info.get('precision')}" if info.get("form") == "onnx" else "")
    source_bytes = sum((source_path / name).stat().st_size for name in (CONFIG_FILE, WEIGHTS_FILE))
    entries = [("gated, full depth (PyTorch)", source.model, None, None, source_bytes),     # name, model, mask,
               ("gated, with the mask (PyTorch)", source.model, kept, kept, source_bytes),  # its GFLOPs' mask, bytes
               ("static sub-network (PyTorch)", static, None, kept, None),
               (label, exported, None, kept, folder_bytes(folder))]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows, outputs = [], {}
        for name, model, mask, flops_mask, size in entries:
            feats, lengths = featurize(model, [wav])
            outputs[name], ms = _latency(model, feats, lengths, mask, repeats, warmup)
            params = d["parameters"] if model is exported else sum(p.numel() for p in model.parameters())
            rows.append({"model": name, "latency_ms": ms, "gflops": gflops(source.config, float(seconds), flops_mask),
                         "parameters": params, "bytes": size})
    finally:
        torch.set_num_threads(old_threads)
    gated, ours = outputs[entries[1][0]], outputs[label]
    n = int(gated.lengths[0])
    decode = decoder_for(source.model, "greedy")
    base = rows[0]
    for r in rows:
        r["latency_ratio"] = r["latency_ms"] / base["latency_ms"]
        r["size_ratio"] = r["bytes"] / base["bytes"] if r["bytes"] else None
    return {"exported": str(folder), "source": str(source_path), "kept": d["kept"], "seconds": seconds,
            "threads": threads, "rows": rows,
            "max_abs_diff": float((gated.log_probs[0, :n] - ours.log_probs[0, :n]).abs().max()),
            "same_greedy_text": decode(gated.log_probs, gated.lengths) == decode(ours.log_probs, ours.lengths)}


# ------------------------------------------------------------------------------------------ the deploy table
#
# `deploy_table`: for each GFLOPs budget, the mask deploy --budget picks (budget 1.0: every module), exported by
# dld_core.deploy as a static PyTorch checkpoint (safetensors), ONNX fp32 and ONNX int8; per form its size on disk,
# parameters, one-thread latency of a `seconds` clip (as bench_exported measures it), peak memory in a fresh
# process, and WER on test manifests (greedy and the beam decoder evaluate uses) for the gated model with the mask
# and the two ONNX forms; ratios to the full-depth gated PyTorch model; the targets checked against them.

DEPLOY_BUDGETS = (1.0, 0.75, 0.5, 0.25)
TABLE_DECODERS = ("greedy", "beam")
DEPLOY_FORMS = {"safetensors": ("safetensors", None), "onnx": ("onnx", None), "onnx-int8": ("onnx", "int8")}
FORM_LABELS = {"full": "gated, full depth (PyTorch)", "gated": "gated, with the mask (PyTorch)",
               "safetensors": "static (PyTorch, safetensors)", "onnx": "ONNX fp32", "onnx-int8": "ONNX int8"}
WER_FORMS = ("gated", "onnx", "onnx-int8")      # the forms whose WER the table measures (static == gated)
TARGET_BUDGET = 0.5                              # "half compute": the targets are for this budget
TARGETS = {"onnx_speedup": 1.8,                  # ONNX fp32 at least this many times faster than full-depth PyTorch
           "onnx_size_ratio": 0.55,              # ... and at most this share of its size on disk
           "int8_speedup_over_onnx": 1.5,        # ONNX int8 at least this many times faster than ONNX fp32
           "int8_wer_change_points": 2.0}        # ... with at most this absolute WER change (points), every test set

# A fresh process's peak resident memory (VmHWM, KiB: its own, where getrusage's ru_maxrss would include the size
# of the process that started it) after loading one form and one forward of the clip. The ONNX forms run as a user
# runs them, with onnxruntime and numpy alone (features.onnx, then the model file); the PyTorch forms as DLD Studio
# runs them. Arguments: the folder, its model file or "checkpoint"/"exported", mask (JSON), threads, the clip (.npy).
_PEAK_KIB = """\
def peak_kib():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])
"""
_ONNX_PROBE = _PEAK_KIB + """\
import json, sys
import numpy as np, onnxruntime as ort
folder, model_file, _, threads, clip = sys.argv[1:6]
imported = peak_kib()
options = ort.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = int(threads), 1, 3
audio = np.load(clip)[None]
feats = ort.InferenceSession(folder + "/features.onnx", options, providers=["CPUExecutionProvider"]).run(
    None, {"audio": audio, "audio_lengths": np.array([audio.shape[1]], dtype=np.int64)})
ort.InferenceSession(folder + "/" + model_file, options, providers=["CPUExecutionProvider"]).run(
    None, dict(zip(["features", "lengths"], feats)))
print(json.dumps({"import_kib": imported, "peak_kib": peak_kib()}))
"""
_TORCH_PROBE = _PEAK_KIB + """\
import json, sys
import numpy as np, torch
folder, kind, mask, threads, clip = sys.argv[1:6]
torch.set_num_threads(int(threads))
from dld_core.checkpoint import load_checkpoint
from dld_core.deploy import load_exported
from dld_core.inference import emissions
imported = peak_kib()
model = load_checkpoint(folder).model if kind == "checkpoint" else load_exported(folder)
emissions(model.eval(), [np.load(clip)], active=json.loads(mask))
print(json.dumps({"import_kib": imported, "peak_kib": peak_kib()}))
"""


def peak_memory(folder, kind: str, clip_file, mask=None, threads: int = 1) -> dict:
    """Peak resident memory of a fresh process that loads one form and runs one forward of the clip saved in
    `clip_file` (.npy): {"peak_mib", "import_mib" (the same process after its imports, before loading)}.
    kind: "checkpoint" (a DLD Studio checkpoint; `mask` as the gated model runs it), "exported" (deploy's
    safetensors form) or an ONNX folder's model file name (run with onnxruntime alone)."""
    import json
    import subprocess
    import sys

    from .paths import REPO
    script = _TORCH_PROBE if kind in ("checkpoint", "exported") else _ONNX_PROBE
    done = subprocess.run([sys.executable, "-c", script, str(folder), kind, json.dumps(mask), str(threads),
                           str(clip_file)], cwd=REPO, capture_output=True, text=True, timeout=1800)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the memory probe of {folder} ({kind}) failed: {reason}")
    probe = json.loads(lines[-1])
    return {"peak_mib": probe["peak_kib"] / 1024, "import_mib": probe["import_kib"] / 1024}


def check_table_request(budgets, manifests, limit) -> list[float]:
    """The budgets as floats, largest first; an empty list, a budget outside (0, 1], a missing manifest or a
    limit below 1 is a one-line ValueError."""
    budgets = sorted({float(b) for b in budgets}, reverse=True)
    if not budgets:
        raise ValueError("the deploy table needs at least one budget (e.g. --budgets 1.0,0.5)")
    for b in budgets:
        if not 0 < b <= 1:
            raise ValueError(f"a budget is a share of the full-depth GFLOPs in (0, 1], got {b:g}")
    for m in manifests:
        if not Path(m).is_file():
            raise ValueError(f"manifest {m} not found")
    named = [manifest_name(m) for m in manifests]
    twice = sorted({n for n in named if named.count(n) > 1})
    if twice:
        raise ValueError(f"two test sets are both named {twice[0]} (folder/file): give each once")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    return budgets


def manifest_name(path) -> str:
    """A test set's short name: its folder and file stem (whisper/test, real_dev/real_dev)."""
    p = Path(path)
    return f"{p.parent.name}/{p.stem}"


def table_decoders(model, decoders=TABLE_DECODERS) -> tuple[list[str], dict]:
    """The decoders that can be built here (the beam decoder needs its lexicon and LM), and why any cannot."""
    from .inference import decoder_for
    usable, errors = [], {}
    for d in decoders:
        try:
            decoder_for(model, d)
            usable.append(d)
        except (ValueError, RuntimeError, OSError) as exc:
            errors[d] = " ".join(str(exc).split())
    return usable, errors


def choose_kept(ckpt, budget: float, clips) -> tuple[list[int], dict]:
    """The kept modules of a budget and how they were chosen: every module at 1.0, else deploy --budget's
    chooser (dld_core.deploy.budget_mask: dld_core.recommend on the validation clips)."""
    from .deploy import budget_mask
    if budget >= 1:
        return list(range(ckpt.config.num_modules)), {"by": "every module"}
    best = budget_mask(ckpt, budget, clips)
    return list(best["active"]), {"by": "budget", "chooser": "dld_core.deploy.budget_mask", "valid_wer": best["wer"],
                                  "valid_kl": best["kl"], "limit_gflops": best["limit_gflops"]}


def export_forms(checkpoint, names, kept, root: Path, log) -> dict:
    """deploy the mask `kept` into root/<form> for every DEPLOY_FORMS form: {form: (folder, config.json)}."""
    from .deploy import deploy
    keep = ",".join(names[i] for i in kept)
    return {form: (root / form, deploy(checkpoint, root / form, keep=keep, fmt=fmt, quantize=quantize,
                                       log=lambda message, form=form: log(f"{FORM_LABELS[form]}: {message}")))
            for form, (fmt, quantize) in DEPLOY_FORMS.items()}


class TableRun:
    """What every row of the deploy table is measured with: the source checkpoint, the latency clip (also saved
    for the memory probes), threads and repeats, the test sets and decoders; each measurement is one method."""

    def __init__(self, source, source_path: Path, seconds: float, clip_file: Path, threads: int, repeats: int,
                 warmup: int, tests: dict, decoders: Sequence[str]):
        self.source, self.source_path, self.clip_file = source, source_path, clip_file
        self.threads, self.repeats, self.warmup = threads, repeats, warmup
        self.tests, self.decoders = tests, list(decoders)
        self.wav = sample_speech(seconds)
        np.save(clip_file, self.wav)
        self._waves = {}

    def latency(self, model, mask=None):
        """(the forward's output on the clip, its median latency in ms): features outside the timing."""
        return _latency(model, *featurize(model, [self.wav]), mask, self.repeats, self.warmup)

    def memory(self, folder, kind: str, mask=None) -> dict:
        return peak_memory(folder, kind, self.clip_file, mask, self.threads)

    def _load(self, row):
        path = row["audio_filepath"]
        if path not in self._waves:                 # each clip read once for every form and budget
            from .audio import load_audio
            self._waves[path] = load_audio(path).samples
        return self._waves[path]

    def wer(self, model, mask) -> dict:
        """{test set: {decoder: corpus WER}} of one model with one mask (dld_core.evaluate's loop: length batches,
        every decoder from the same forward passes)."""
        from .evaluate import evaluate_items
        out = {}
        for name, rows in self.tests.items():
            levels = evaluate_items(model, rows, self._load, policy="custom", custom=[list(mask)], num_masks=1,
                                    progress=False, decoder=self.decoders)
            out[name] = {d: levels[d][0]["wer"] for d in self.decoders}
        return out


def _ratios(row: dict, full: dict) -> dict:
    """A form's ratios to the full-depth gated PyTorch model: speedup (its latency / ours), size and memory shares."""
    return {"speedup": full["latency_ms"] / row["latency_ms"], "size_ratio": row["bytes"] / full["bytes"],
            "parameters_ratio": row["parameters"] / full["parameters"],
            "memory_ratio": row["peak_mib"] / full["peak_mib"]}


def full_row(run: TableRun) -> dict:
    """The reference: the gated PyTorch model at full depth (size on disk: its config.json and weights)."""
    from .checkpoint import CONFIG_FILE, WEIGHTS_FILE
    from .model import count_parameters
    from .recommend import mask_gflops
    cfg = run.source.config
    return {"label": FORM_LABELS["full"], "latency_ms": run.latency(run.source.model)[1],
            "parameters": count_parameters(run.source.model),
            "bytes": sum((run.source_path / f).stat().st_size for f in (CONFIG_FILE, WEIGHTS_FILE)),
            "gflops": mask_gflops(cfg, range(cfg.num_modules)), **run.memory(run.source_path, "checkpoint")}


def budget_row(run: TableRun, budget: float, kept: list[int], selection: dict, root: Path, full: dict, log) -> dict:
    """One budget of the deploy table: its mask exported in every form (into root), each form measured."""
    from .deploy import _max_diff, folder_bytes, load_exported
    from .recommend import mask_gflops
    cfg, names = run.source.config, run.source.config.module_names
    forms = export_forms(run.source_path, names, kept, root, log)
    row = {"budget": budget, "kept": [names[i] for i in kept], "kept_indices": kept, "gflops": mask_gflops(cfg, kept),
           "gflops_share": mask_gflops(cfg, kept) / full["gflops"], "selection": selection, "forms": {},
           "max_abs_diff": {}, "verified": {form: info["deployed"]["verified"] for form, (_, info) in forms.items()}}
    gated, ms = run.latency(run.source.model, kept)
    row["forms"]["gated"] = {"label": FORM_LABELS["gated"], "latency_ms": ms, "bytes": full["bytes"],
                             "parameters": full["parameters"], **run.memory(run.source_path, "checkpoint", kept)}
    models = {"gated": (run.source.model, kept)}
    for form, (folder, info) in forms.items():
        model = load_exported(folder, threads=run.threads)
        out, ms = run.latency(model)
        row["forms"][form] = {"label": FORM_LABELS[form], "latency_ms": ms, "bytes": folder_bytes(folder),
                              "parameters": info["deployed"]["parameters"],
                              **run.memory(folder, "exported" if form == "safetensors" else info["model_file"])}
        row["max_abs_diff"][form] = _max_diff(gated.log_probs, gated.lengths, out.log_probs, out.lengths)
        models[form] = (model, list(range(model.num_modules)))
    for r in row["forms"].values():
        r.update(_ratios(r, full))
    for form in WER_FORMS:
        model, mask = models[form]
        row["forms"][form]["wer"] = run.wer(model, mask)
        log(f"budget {budget:g}, {FORM_LABELS[form]}: WER {row['forms'][form]['wer']}")
    onnx, int8 = row["forms"]["onnx"], row["forms"]["onnx-int8"]
    row["int8_speedup_over_onnx"] = onnx["latency_ms"] / int8["latency_ms"]
    row["int8_wer_change_points"] = {name: {d: 100 * (int8["wer"][name][d] - onnx["wer"][name][d])
                                            for d in run.decoders} for name in run.tests}
    return row


def deploy_table(checkpoint, budgets=DEPLOY_BUDGETS, manifests=(), limit=None, seconds: float = 10.0,
                 threads: int = 1, repeats: int = 5, warmup: int = 2, valid=None, clips=None, decoders=TABLE_DECODERS,
                 log=lambda message: None) -> dict:
    """The deploy table (see the section comment above): {"checkpoint", "seconds", "threads", ..., "full": the
    full-depth gated PyTorch model's row, "budgets": [{"budget", "kept", "gflops", "gflops_share", "selection",
    "forms": {form: {"bytes", "parameters", "latency_ms", "peak_mib", ratios, "wer": {test set: {decoder}}}},
    "max_abs_diff": {form: on the clip}, "verified": deploy's record, "int8_speedup_over_onnx",
    "int8_wer_change_points"}], "targets": target_report(...)}. Everything runs on `threads` torch/onnxruntime
    threads (WER too); the exports live in a temporary folder. Bad requests are one-line ValueErrors."""
    import tempfile

    from .audio import load_manifest
    from .deploy import check_budget
    from .recommend import DEFAULT_CLIPS, validation_clips

    budgets = check_table_request(budgets, manifests, limit)
    source_path = repo_path(checkpoint)
    source = load_checkpoint(source_path)
    for b in budgets:
        if b < 1:
            check_budget(source.config, b)              # DeployError (a ValueError): below the cheapest mask
    tests = {manifest_name(m): load_manifest(m)[:limit] for m in manifests}
    for name, rows in tests.items():
        if not rows:
            raise ValueError(f"the test set {name} is empty")
    usable, decoder_errors = table_decoders(source.model, decoders)
    valid_clips = None
    if any(b < 1 for b in budgets):
        valid_clips, valid_name = validation_clips(source, valid, clips or DEFAULT_CLIPS)
        log(f"choosing masks on {len(valid_clips)} clips of {valid_name}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="dld-deploy-table-") as tmp:
            run = TableRun(source, source_path, seconds, Path(tmp) / "clip.npy", threads, repeats, warmup, tests,
                           usable)
            full = full_row(run)
            rows = []
            for budget in budgets:
                kept, selection = choose_kept(source, budget, valid_clips)
                log(f"budget {budget:g}: {' '.join(source.config.module_names[i] for i in kept)}")
                rows.append(budget_row(run, budget, kept, selection, Path(tmp) / f"budget-{budget:g}", full, log))
    finally:
        torch.set_num_threads(old_threads)
    table = {"checkpoint": str(checkpoint), "seconds": seconds, "threads": threads, "repeats": repeats,
             "warmup": warmup, "clip": f"data_samples synth clips tiled to {seconds:g} s",
             "manifests": {manifest_name(m): str(m) for m in manifests}, "limit": limit, "decoders": usable,
             "decoder_errors": decoder_errors, "full": full, "budgets": rows}
    table["targets"] = target_report(table)
    return table


def _target(name: str, value, op: str, limit: float, unit: str = "") -> dict:
    """One target: met (None: not measured) and a line that says it with the numbers."""
    if value is None:
        return {"target": name, "value": None, "op": op, "limit": limit, "met": None,
                "text": f"{name}: not measured (target {op} {limit:g}{unit})"}
    met = value >= limit if op == ">=" else value <= limit
    return {"target": name, "value": value, "op": op, "limit": limit, "met": met,
            "text": f"{name}: {value:.2f}{unit} (target {op} {limit:g}{unit}): {'met' if met else 'MISSED'}"}


def target_report(table: dict) -> list[dict]:
    """The issue's targets at TARGET_BUDGET (half compute), checked against the table's own numbers: ONNX fp32
    speedup and size share against the full-depth PyTorch model, int8's speedup over fp32 ONNX and its largest
    absolute WER change over every test set and decoder."""
    row = next((r for r in table["budgets"] if abs(r["budget"] - TARGET_BUDGET) < 1e-9), None)
    at = f"budget {TARGET_BUDGET:g}"
    if row is None:
        return [{"target": f"the targets at {at}", "value": None, "met": None,
                 "text": f"targets not checked: {at} is not in the table"}]
    onnx = row["forms"]["onnx"]
    changes = [abs(v) for per in row["int8_wer_change_points"].values() for v in per.values()]
    return [_target(f"{at}: ONNX fp32 speedup over full-depth PyTorch", onnx["speedup"], ">=",
                    TARGETS["onnx_speedup"], "x"),
            _target(f"{at}: ONNX fp32 size / full-depth PyTorch", onnx["size_ratio"], "<=", TARGETS["onnx_size_ratio"]),
            _target(f"{at}: ONNX int8 speedup over ONNX fp32", row["int8_speedup_over_onnx"], ">=",
                    TARGETS["int8_speedup_over_onnx"], "x"),
            _target(f"{at}: ONNX int8 WER change vs fp32, largest over test sets and decoders",
                    max(changes) if changes else None, "<=", TARGETS["int8_wer_change_points"], " points")]


def _wer_cells(form: dict, tests, decoders) -> list[str]:
    wer = form.get("wer")
    return [f"{100 * wer[t][d]:.1f}" if wer else "" for t in tests for d in decoders]


def deploy_table_markdown(table: dict) -> str:
    """The deploy table as Markdown: one row per budget and form, then int8 against fp32 and the targets."""
    full, tests, decoders = table["full"], list(table["manifests"]), table["decoders"]
    lines = [f"# Deploy a budget: `{table['checkpoint']}`", "",
             f"Latency: {table['clip']}, {table['threads']} thread(s), median of {table['repeats']} forwards after "
             f"{table['warmup']} warm-ups (features excluded). Peak memory: a fresh process that loads the form and runs "
             "one forward (PyTorch forms: DLD Studio; ONNX forms: onnxruntime and numpy alone). Ratios are to the "
             f"full-depth gated PyTorch model: {full['latency_ms']:.1f} ms, {full['bytes'] / 1e6:.2f} MB, "
             f"{full['parameters']:,} parameters, {full['peak_mib']:.0f} MiB peak. WER (%) on "
             + (", ".join(f"{t} ({table['manifests'][t]})" for t in tests) or "no test set")
             + (f", the first {table['limit']} clips of each" if table["limit"] else "") + ".", ""]
    for d, error in table.get("decoder_errors", {}).items():
        lines += [f"Decoder {d} unavailable: {error}", ""]
    head = ["budget", "kept", "GFLOPs (share)", "form", "size MB (x full)", "parameters", "latency ms (speedup)",
            "peak MiB (x full)"] + [f"{t} {d}" for t in tests for d in decoders]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["budgets"]:
        first = True
        for form, r in row["forms"].items():
            cells = [f"{row['budget']:g}", f"{' '.join(row['kept'])} ({len(row['kept'])})",
                     f"{row['gflops']:.3f} ({row['gflops_share']:.2f})"] if first else ["", "", ""]
            first = False
            cells += [r["label"], f"{r['bytes'] / 1e6:.2f} ({r['size_ratio']:.2f})", f"{r['parameters']:,}",
                      f"{r['latency_ms']:.1f} ({r['speedup']:.2f}x)", f"{r['peak_mib']:.0f} ({r['memory_ratio']:.2f})"]
            lines.append("| " + " | ".join(cells + _wer_cells(r, tests, decoders)) + " |")
    lines += ["", "Int8 against fp32 ONNX, and both against the gated model with the mask (max |log-prob difference| "
              "on the latency clip):", ""]
    for row in table["budgets"]:
        change = "; ".join(f"{t} {d} {row['int8_wer_change_points'][t][d]:+.1f}" for t in tests for d in decoders)
        lines.append(f"* budget {row['budget']:g}: int8 {row['int8_speedup_over_onnx']:.2f}x faster than fp32, WER "
                     f"change (points) {change or 'not measured'}; max |log-prob difference| fp32 "
                     f"{row['max_abs_diff']['onnx']:.2g}, int8 {row['max_abs_diff']['onnx-int8']:.2g}")
    lines += ["", f"Targets (issue 23, at budget {TARGET_BUDGET:g}):", ""]
    lines += [f"* {t['text']}" for t in table["targets"]]
    return "\n".join(lines) + "\n"
