"""Server-side latency of the Inspect page for a 10 s clip.

    nice python -m app.bench_toggle [--checkpoints DIR] [--seconds 10] [--repeats 5] [--threads N]

Measures, with the app's own code paths (app.state + app.views.plots, figures serialised to JSON as the
server sends them):
  * toggle: a new mask -> transcript + GFLOPs + posteriorgram + depth (logit-lens) heatmap  (goal <= 300 ms)
  * drop-one: the N-row drop-one KL heatmap for a new mask                                 (goal <= 2 s)
  * apptest: a whole script rerun after a toggle (streamlit.testing AppTest), drop-one included
Uses checkpoints/dld + checkpoints/teacher when they exist, else random models of the default size.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
logging.getLogger("streamlit").setLevel(logging.ERROR)


def clip_of(seconds: float) -> bytes:
    """A 10 s speech-like clip: the sample clips tiled, or a voiced tone."""
    import numpy as np
    import soundfile as sf
    from dld_core.audio import SAMPLE_RATE, load_audio, load_manifest
    manifest = REPO / "data_samples" / "manifest.jsonl"
    parts, total = [], 0
    if manifest.is_file():
        for row in load_manifest(manifest):
            x = load_audio(row["audio_filepath"]).samples
            parts.append(x)
            total += len(x)
            if total >= seconds * SAMPLE_RATE:
                break
    if not parts:
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        parts = [0.3 * np.sin(2 * np.pi * 150 * t * (1 + 0.1 * np.sin(2 * np.pi * t)))]
    x = np.concatenate(parts)
    while len(x) < seconds * SAMPLE_RATE:
        x = np.concatenate([x, x])
    buf = io.BytesIO()
    sf.write(buf, x[: int(seconds * SAMPLE_RATE)].astype("float32"), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def ensure_checkpoints(root: Path | None) -> Path:
    if root is not None and (root / "dld").is_dir():
        return root
    shipped = REPO / "checkpoints"
    if (shipped / "dld").is_dir() and (shipped / "teacher").is_dir():
        return shipped
    import torch
    from dld_core.checkpoint import save_checkpoint
    from dld_core.config import ModelConfig
    from dld_core.model import DynamicCTCModel
    tmp = Path(tempfile.mkdtemp(prefix="dld-bench-"))
    for recipe in ("dld", "teacher"):
        torch.manual_seed(0)
        save_checkpoint(tmp / recipe, DynamicCTCModel(ModelConfig()), recipe=recipe)
    print(f"(no shipped checkpoints: random default-size models in {tmp})")
    return tmp


def ms(xs) -> str:
    return f"median {statistics.median(xs):7.1f} ms  (min {min(xs):.1f}, max {max(xs):.1f}, n={len(xs)})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: the app's, DLD_TORCH_THREADS or 1)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import numpy as np
    import torch
    if args.threads:
        os.environ["DLD_TORCH_THREADS"] = str(args.threads)
    root = ensure_checkpoints(args.checkpoints)
    os.environ["DLD_CHECKPOINTS_DIR"] = str(root)

    # Cold first render: a fresh session of the Inspect page with the default sample clip; models are
    # loaded (st.cache_resource) and every view computed, drop-one heatmap included.
    from streamlit.testing.v1 import AppTest
    cold = None
    if (REPO / "data_samples" / "manifest.jsonl").is_file():
        at = AppTest.from_file(str(REPO / "app" / "streamlit_app.py"), default_timeout=120)
        t0 = time.perf_counter()
        at.run()
        cold = (time.perf_counter() - t0) * 1000
        assert not at.exception, at.exception
        print(f"cold first render of Inspect (model load + sample clip + all views): {cold:.0f} ms")

    from app.state.checkpoints import checkpoint_key, get_checkpoint
    from app.state.clips import load_clip_bytes
    from app.state.results import drop_one_result, logmel, student_result, teacher_result
    from app.state.torch_setup import configure_torch
    from app.views import plots

    configure_torch()
    student = get_checkpoint(root / "dld")
    teacher = get_checkpoint(root / "teacher")
    clip = load_clip_bytes(clip_of(args.seconds), "bench.wav")
    n = student.model.num_modules
    skey, tkey = checkpoint_key(student.path), checkpoint_key(teacher.path)
    print(f"model: {student.path} ({n} modules, d={student.config.d_model}), clip {clip.duration:.1f} s, "
          f"torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    t_res = teacher_result(tkey, clip.digest, teacher, clip.samples)
    spec = logmel(clip.digest, clip.samples)
    student_result(skey, clip.digest, (True,) * n, tkey, student, clip.samples, t_res["log_probs"])
    first = (time.perf_counter() - t0) * 1000

    rng = np.random.default_rng(0)
    toggles, drops, fig_ms = [], [], []
    seen = set()
    for _ in range(args.repeats):
        while True:                                   # a mask not seen before: a cache miss, like a real toggle
            mask = tuple(bool(b) for b in rng.random(n) < 0.6)
            if mask not in seen and any(mask):
                seen.add(mask)
                break
        t0 = time.perf_counter()
        res = student_result(skey, clip.digest, mask, tkey, student, clip.samples, t_res["log_probs"])
        f1 = plots.spectrogram_posteriorgram(spec, 0.01, res["posteriors"], res["frame_sec"], student.config.vocab)
        f2 = plots.kl_heatmap(res["depth_kl"], res["frame_sec"], "depth", student.model.module_names, active=mask)
        t_fig = time.perf_counter()
        f1.to_json(), f2.to_json()
        toggles.append((time.perf_counter() - t0) * 1000)
        fig_ms.append((time.perf_counter() - t_fig) * 1000)
        t0 = time.perf_counter()
        drop = drop_one_result(skey, clip.digest, mask, tkey, student, clip.samples, t_res["log_probs"])
        plots.kl_heatmap(drop, res["frame_sec"], "drop-one", student.model.module_names, active=mask).to_json()
        drops.append((time.perf_counter() - t0) * 1000)
    full_rows = []
    for k in range(max(1, args.repeats // 2)):
        # all modules on: the full n-row drop-one heatmap; vary the reference digest so each is a cache miss
        t0 = time.perf_counter()
        drop = drop_one_result(skey, f"{clip.digest}-{k}", (True,) * n, tkey, student, clip.samples,
                               t_res["log_probs"])
        plots.kl_heatmap(drop, 0.04, "drop-one", student.model.module_names, active=(True,) * n).to_json()
        full_rows.append((time.perf_counter() - t0) * 1000)
    print(f"first clip (teacher + spectrogram + full-depth student): {first:.0f} ms")
    print(f"toggle -> transcript + GFLOPs + posteriorgram + depth heatmap: {ms(toggles)}")
    print(f"   of which figure JSON serialisation:                      {ms(fig_ms)}")
    print(f"drop-one heatmap, random masks (as many rows as modules on): {ms(drops)}")
    print(f"drop-one heatmap, all {n} modules on ({n} rows):               {ms(full_rows)}")

    # A full script rerun after a toggle, through Streamlit's AppTest (server-side, no browser).
    at = AppTest.from_file(str(REPO / "app" / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.segmented_control(key="audio_source").set_value("Upload").run()
    t0 = time.perf_counter()
    at.file_uploader(key="upload").upload("bench.wav", clip_of(args.seconds), "audio/wav").run()
    first_run = (time.perf_counter() - t0) * 1000
    reruns = []
    for i in range(min(args.repeats, n)):
        t0 = time.perf_counter()
        at.toggle(key=f"layer_{i}").set_value(False).run()
        reruns.append((time.perf_counter() - t0) * 1000)
        assert not at.exception, at.exception
    print(f"AppTest: first run with the clip {first_run:.0f} ms; rerun after a toggle (all views incl. drop-one): {ms(reruns)}")
    if args.json:
        args.json.write_text(json.dumps({"toggle_ms": toggles, "drop_one_ms": drops, "drop_one_full_ms": full_rows, "apptest_rerun_ms": reruns,
                                         "first_ms": first, "cold_first_render_ms": cold, "model": str(student.path), "seconds": clip.duration}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
