"""``dld_core/decoder_params.json``: what ``make_decoder("beam")`` decodes with.

The file holds the decoding parameters (LM weight, word insertion score, ``<unk>`` score, beam size)
chosen by ``dld_core.decoder_tuning.tune_decoder`` on a validation manifest (never test), the recipe of
the decoder files they go with (``python -m dld_core build-lm`` builds them) and the WER at every grid
point. ``$DLD_DECODER_DIR`` makes the decoder use one folder instead.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .decoder_files import cache_root, files_error, recipe_key
from .lm_build import default_recipe

DIR_ENV = "DLD_DECODER_DIR"              # use exactly this folder (skips the recipe lookup)
PARAMS_PATH = Path(__file__).resolve().with_name("decoder_params.json")

# decoding parameters used when decoder_params.json holds none
DEFAULT_PARAMS = {"lm_weight": 1.0, "word_score": 0.0, "unk_score": -10.0, "sil_score": 0.0,
                  "beam_size": 16, "beam_size_token": 12, "beam_threshold": 20.0}


def read_params(path: str | os.PathLike = PARAMS_PATH) -> dict:
    """The committed decoder parameters: {"recipe", "key", "params", "tuned"}; a missing file means
    the default unigram recipe with DEFAULT_PARAMS."""
    path = Path(path)
    if not path.exists():
        return {"recipe": None, "params": dict(DEFAULT_PARAMS)}
    fix = "restore it from git or rerun the tune (`python -m dld_core tune --checkpoint CKPT --manifest VALID`)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        params = {**DEFAULT_PARAMS, **{k: float(v) for k, v in data.get("params", {}).items()}}
        for k in ("beam_size", "beam_size_token"):
            params[k] = int(params[k])
        if not isinstance(data.get("recipe"), (dict, type(None))):
            raise ValueError
    except (OSError, ValueError, UnicodeDecodeError, TypeError, AttributeError):
        raise files_error(path, "decoder parameters are corrupt", fix) from None
    return {**data, "params": params}


def params_recipe(path: str | os.PathLike = PARAMS_PATH) -> dict:
    recipe = read_params(path).get("recipe")
    return recipe if recipe is not None else default_recipe()


def default_decoder_dir(params_path: str | os.PathLike = PARAMS_PATH) -> Path:
    """Where the decoder files of the committed parameters live ($DLD_DECODER_DIR wins)."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    data = read_params(params_path)
    key = data.get("key") or (recipe_key(data["recipe"]) if data.get("recipe") else None)
    if key is None:
        key = recipe_key(default_recipe())
    return cache_root() / key
