"""Validating the beam decoder on held-out data: the word LM's perplexity, and :func:`tune_decoder`, which
runs a model over a validation manifest (never test) and chooses the decoding parameters that
``dld_core/decoder_params.json`` records (``python -m dld_core tune``). It sits above the decoder and the
inference path; nothing below imports it.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import time
from pathlib import Path
from typing import Iterable, Optional

from .audio import load_audio, load_manifest
from .checkpoint import load_checkpoint
from .decode import beam_decoder_from_files, greedy_decode
from .decoder_files import BOS, DATA_FILES, EOS, UNK, DecoderFiles, load_decoder_files, recipe_key
from .decoder_params import DEFAULT_PARAMS
from .inference import emissions, utterance
from .lm_build import build_decoder_files, default_recipe
from .metrics import wer
from .paths import display_path
from .safe_io import atomic_write_json
from .text import normalize_text
from .tokenizer import CharTokenizer

DEFAULT_GRID = {"order": [1, 2], "lm_weight": [1.0, 1.5, 2.0, 2.5, 3.0], "word_score": [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0],
                "unk_score": [-10.0], "beam_size": [16, 8, 32, 64]}
MAX_MS_PER_AUDIO_S = 10.0     # decoding budget: 100 ms per 10 s clip on one thread


def perplexity(files: DecoderFiles | str | os.PathLike, sentences: Iterable[str]) -> dict:
    """Per-word perplexity (incl. </s>) of normalised sentences under the LM, and the OOV rate."""
    files = files if isinstance(files, DecoderFiles) else load_decoder_files(files)
    total, n, oov, words = 0.0, 0, 0, 0
    for s in sentences:
        prev = BOS
        for w in normalize_text(s).split() + [EOS]:
            if w != EOS:
                words += 1
            if w not in files.unigrams:
                oov += 1
                w = UNK
            total += lm_score(files, prev, w)
            n += 1
            prev = w
    return {"perplexity": 10 ** (-total / max(n, 1)), "oov_rate": oov / max(words, 1), "words": words}


def lm_score(files: DecoderFiles, prev: str, word: str) -> float:
    if files.order == 2:
        p = files.bigrams.get((prev, word))
        if p is not None:
            return p
        return files.backoff.get(prev, 0.0) + files.unigrams[word]
    return files.unigrams[word]


def tune_decoder(checkpoint, manifest, grid: Optional[dict] = None, *, out: Optional[str | os.PathLike] = None,
                 recipes: Optional[dict] = None, root: Optional[str | os.PathLike] = None, active=None,
                 limit: Optional[int] = None, min_gain: float = 0.01,
                 max_ms_per_audio_s: Optional[float] = MAX_MS_PER_AUDIO_S, log=print) -> dict:
    """Choose the LM order, LM weight, word insertion score, <unk> score and beam size on a validation
    manifest (never test). The model runs once over the manifest (full depth unless `active`); then
    stage 1 beam-decodes its log-probs at every (order, lm_weight, word_score, unk_score) of `grid` with
    the first beam size, and stage 2 tries the other beam sizes at the stage-1 best. A bigram (order 2)
    is chosen only when it beats the best unigram by at least `min_gain` absolute WER (it costs about
    twice the decoding time and file size); ties go to the smaller beam and the lower LM weight. Grid
    points slower than `max_ms_per_audio_s` (decoding ms per second of audio, measured here on the
    current threads; 10 = 100 ms per 10 s clip) are not chosen while a faster one exists.

    `recipes` maps an order to the recipe to tune with (default: default_recipe(order, exclude=[manifest]):
    the LM never sees the sentences it is tuned on). The result
    names the *deployment* recipe: the chosen recipe without its exclusions, so that `build-lm` can
    rebuild it anywhere. Returns {"params", "recipe", "key", "tuned": {checkpoint, manifest,
    utterances, greedy_wer, best_wer, best_by_order, grid: [{..., "wer", "ms_per_audio_s"}]}};
    `out` (e.g. decoder_params.PARAMS_PATH) also writes it there."""
    grid = {**DEFAULT_GRID, **(grid or {})}
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model.eval()
    vocab = list(model.config.vocab)
    rows = load_manifest(manifest)[: limit or None]
    if not rows:
        raise ValueError(f"{manifest}: no utterances to tune on")
    refs = [r["text"] for r in rows]
    log_probs, audio_s = _log_probs(model, rows, active)
    tok = CharTokenizer(vocab)
    greedy = [greedy_decode(lp.unsqueeze(0), None, tok)[0] for lp in log_probs]
    greedy_wer = wer(refs, greedy)
    log(f"greedy WER {100 * greedy_wer:.2f}% on {len(rows)} utterances ({audio_s / 60:.1f} min) of {manifest}")
    orders = [int(o) for o in grid["order"]]
    built = {}
    for order in orders:
        recipe = (recipes or {}).get(order) or default_recipe(order=order, exclude=[manifest])
        built[order] = (recipe, build_decoder_files(recipe, root=root, log=log))
    results = []

    def run(order: int, params: dict) -> dict:
        dec = beam_decoder_from_files(built[order][1], vocab, **params)
        start = time.perf_counter()
        hyps = [dec(lp.unsqueeze(0))[0] for lp in log_probs]
        secs = time.perf_counter() - start
        row = {"order": order, **params, "wer": wer(refs, hyps), "ms_per_audio_s": 1000 * secs / audio_s}
        results.append(row)
        log(f"order={order} lm_weight={params['lm_weight']:<5} word_score={params['word_score']:<5} "
            f"unk_score={params['unk_score']:<6} beam={params['beam_size']:<3} WER {100 * row['wer']:.2f}%  "
            f"({row['ms_per_audio_s']:.1f} ms per audio second)")
        return row

    def rank(r: dict) -> tuple:
        slow = max_ms_per_audio_s is not None and r["ms_per_audio_s"] > max_ms_per_audio_s
        return (slow, round(r["wer"], 9), r["beam_size"], r["lm_weight"], abs(r["word_score"]), -r["unk_score"])

    beams = [int(b) for b in grid["beam_size"]]
    for order in orders:
        for lw, ws, us in itertools.product(grid["lm_weight"], grid["word_score"], grid["unk_score"]):
            run(order, {"lm_weight": float(lw), "word_score": float(ws), "unk_score": float(us), "beam_size": beams[0]})
    best_by_order = {o: min((r for r in results if r["order"] == o), key=rank) for o in orders}
    for order in orders:
        b = best_by_order[order]
        for beam in beams[1:]:
            run(order, {**{k: b[k] for k in ("lm_weight", "word_score", "unk_score")}, "beam_size": beam})
        best_by_order[order] = min((r for r in results if r["order"] == order), key=rank)
    best = best_by_order[orders[0]]
    for order in orders[1:]:
        if rank(best_by_order[order])[0] <= rank(best)[0] and best_by_order[order]["wer"] <= best["wer"] - min_gain:
            best = best_by_order[order]
    recipe, folder = built[best["order"]]
    deploy = {**recipe, "exclude": []}
    names = ("lm_weight", "word_score", "unk_score", "beam_size")
    params = {**DEFAULT_PARAMS, **{k: best[k] for k in names}}
    out_obj = {
        "params": params,
        "recipe": deploy,
        "key": recipe_key(deploy),
        "tuned": {
            "checkpoint": display_path(checkpoint), "manifest": display_path(manifest),
            "manifest_sha256": hashlib.sha256(Path(manifest).read_bytes()).hexdigest(),
            "utterances": len(rows), "audio_seconds": round(audio_s, 2),
            "active": None if active is None else list(active),
            "tune_recipe_keys": {str(o): recipe_key(built[o][0]) for o in orders},
            "tune_files_bytes": {n: (folder / n).stat().st_size for n in DATA_FILES},
            "rule": f"order 2 only if its best WER is at least {min_gain} below order 1's; at most "
                    f"{max_ms_per_audio_s} ms decoding per audio second; ties -> smaller beam, lower LM weight",
            "greedy_wer": greedy_wer, "best_wer": best["wer"],
            "best_by_order": {str(o): r for o, r in best_by_order.items()},
            "grid": results,
        },
    }
    if out is not None:
        atomic_write_json(Path(out), out_obj)
    return out_obj


def _log_probs(model, rows: list[dict], active) -> tuple[list, float]:
    """Log-probs [T, V] per utterance (full length, float32, CPU; one utterance at a time through the
    inference path) and the total audio seconds."""
    out, seconds = [], 0.0
    for row in rows:
        clip = load_audio(row["audio_filepath"])
        seconds += clip.duration
        out.append(utterance(emissions(model, [clip.samples], active=active)).float().cpu().contiguous())
    return out, seconds
