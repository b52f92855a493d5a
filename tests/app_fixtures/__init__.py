"""Tiny random checkpoints, sample clips and evaluation results for the app tests."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 16000


def tone_wav(seconds: float = 2.0, seed: int = 0, freq: float = 220.0) -> bytes:
    """A deterministic voiced-ish signal (harmonics + noise bursts) as 16-bit WAV bytes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = freq * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    x = 0.3 * x * env + 0.02 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, (x / np.max(np.abs(x)) * 0.8).astype(np.float32), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def make_checkpoints(root: Path, n_layers: int = 4, family: str = "conformer") -> dict[str, Path]:
    """checkpoints/{dld,ld,teacher} with tiny random conformers (seeded, so transcripts are stable); family
    "whisper": Whisper-family models whose attention and MLP sub-blocks are gated apart (A1 M1 .. , 2 x n_layers
    modules)."""
    from dld_core.checkpoint import save_checkpoint
    from dld_core.config import ModelConfig
    from dld_core.model import DynamicCTCModel

    out = {}
    for seed, recipe in enumerate(("dld", "ld", "teacher")):
        torch.manual_seed(seed)
        model = DynamicCTCModel(ModelConfig(family=family, d_model=32, n_layers=n_layers, ffn_dim=64, n_heads=2,
                                            dropout=0.0))
        # Scale the head so random posteriors are peaky: transcripts are non-empty and move with the mask.
        with torch.no_grad():
            model.head.weight.mul_(8.0)
        out[recipe] = save_checkpoint(root / recipe, model, recipe=recipe, dtype=torch.float32)
    return out


def make_seq2seq_checkpoints(root: Path) -> dict[str, Path]:
    """checkpoints/{dld,teacher}: a tiny random encoder-decoder student (the gated Whisper encoder, modules A1 M1 A2
    M2, with a 1-block Whisper text decoder; config.json says it was trained on "clip" input) and a tiny Whisper CTC
    teacher. The decoder's cross-attention is scaled up so its (random) transcripts move with the mask."""
    from dld_core.checkpoint import save_checkpoint
    from dld_core.config import ModelConfig
    from dld_core.model import DynamicCTCModel

    encoder = dict(family="whisper", d_model=16, n_layers=2, n_heads=2, ffn_dim=32, max_frames=500, dropout=0.0)
    decoder = dict(n_vocab=51864, n_ctx=32, n_layers=1, n_heads=2, ffn_dim=32)
    out = {}
    for seed, recipe in enumerate(("dld", "teacher")):
        torch.manual_seed(seed)
        model = DynamicCTCModel(ModelConfig(**encoder, decoder=decoder if recipe == "dld" else {}))
        with torch.no_grad():
            model.head.weight.mul_(8.0)
            if model.decoder is not None:
                model.decoder.blocks[0].cross_attn.out.weight.mul_(10.0)
        out[recipe] = save_checkpoint(root / recipe, model, recipe=recipe, dtype=torch.float32,
                                      metadata={"train": {"input_mode": "clip"}} if recipe == "dld" else None)
    return out


def make_text_story_checkpoints(root: Path) -> dict[str, Path]:
    """The How DLD works page's text story (dld_core.story.choose_text_story) in small: `pretrained`, a tiny random
    CTranslate2 Whisper folder (a 2-block encoder, a 1-block text decoder whose cross-attention is scaled up so its
    transcripts follow the encoder, the bundled tiny.en's tokenizer); checkpoints/dld, an encoder-decoder DLD student
    started from it (its encoder blocks moved, so it transcribes otherwise; config.json: trained on "clip" input
    from that folder, train.pretrained); checkpoints/teacher, a tiny Whisper CTC teacher."""
    from dld_core import seq2seq
    from dld_core.checkpoint import save_checkpoint
    from dld_core.config import ModelConfig
    from dld_core.families import whisper as W
    from dld_core.families.whisper_decoder import TextDecoder
    from dld_core.model import DynamicCTCModel
    from tests.test_whisper_decoder import write_whisper_folder

    encoder_cfg = dict(family="whisper", d_model=16, n_layers=2, n_heads=2, ffn_dim=32, max_frames=500, dropout=0.0)
    torch.manual_seed(0)
    encoder = W.Encoder(ModelConfig(**encoder_cfg))
    decoder = TextDecoder(n_vocab=51864, n_ctx=32, d_model=16, n_layers=1, n_heads=2, ffn_dim=32)
    with torch.no_grad():
        decoder.blocks[0].cross_attn.out.weight.mul_(10.0)
    folder = write_whisper_folder(root / "pretrained", encoder, decoder)
    student = DynamicCTCModel(seq2seq.with_decoder(W.config_from_pretrained(folder, dropout=0.0), str(folder)))
    W.load_pretrained(student, folder)
    seq2seq.load_decoder(student, str(folder))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in student.encoder.blocks.parameters():
            p.add_(0.5 * torch.randn_like(p))
    ckpts = root / "checkpoints"
    out = {"pretrained": folder,
           "dld": save_checkpoint(ckpts / "dld", student, recipe="dld", dtype=torch.float32,
                                  metadata={"train": {"input_mode": "clip", "pretrained": str(folder)}})}
    torch.manual_seed(2)
    out["teacher"] = save_checkpoint(ckpts / "teacher", DynamicCTCModel(ModelConfig(**encoder_cfg)), recipe="teacher",
                                     dtype=torch.float32)
    return out


def make_text_story_samples(ckpts: dict[str, Path], root: Path) -> tuple[Path, list[int]]:
    """make_samples, the first clip's reference then made the text story's point (make_text_story_checkpoints): the
    DLD student's own greedy text-decoder transcript (clip input) with the first of the story's half masks (dld_core.
    story.half_masks) on which the pretrained Whisper writes something else. Returns (manifest, that mask's kept
    module indices)."""
    from dld_core import seq2seq, story
    from dld_core.audio import load_audio
    from dld_core.checkpoint import load_checkpoint
    from dld_core.families.whisper_decoding import spoken_text
    from dld_core.text import normalize_text

    manifest = make_samples(root)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    wav = load_audio(str(root / rows[0]["audio_filepath"])).samples
    student = load_checkpoint(ckpts["dld"]).model.eval()
    pretrained = story.pretrained_whisper(str(ckpts["pretrained"]))
    options = seq2seq.decode_options("whisper")
    own = seq2seq.text_transcriber(student, "whisper", "clip")
    for active in story.half_masks(student.num_modules, blocks=student.config.module_blocks):
        text = normalize_text(spoken_text(own([wav], active)[0]))
        theirs = normalize_text(spoken_text(pretrained.transcribe([wav], active, "clip", options)[0].text))
        if len(text.split()) >= story.MIN_WORDS and text != theirs:
            rows[0]["text"] = text
            manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
            return manifest, list(active)
    raise AssertionError("the tiny student writes what the pretrained Whisper writes at every half mask")


def make_samples(root: Path, count: int = 3) -> Path:
    """data_samples-like folder: clips/*.wav + manifest.jsonl (paths relative to the folder)."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    texts = ["the quick brown fox", "seven two nine", "hello studio world"]
    for i in range(count):
        name = f"clips/sample_{i}.wav"
        (root / name).write_bytes(tone_wav(1.5 + 0.5 * i, seed=i, freq=180 + 40 * i))
        rows.append({"audio_filepath": name, "text": texts[i % len(texts)], "duration": 1.5 + 0.5 * i,
                     "source": "test"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def make_eval_results(checkpoints: dict[str, Path], manifest: Path) -> None:
    """Evaluation JSONs as `python -m dld_core evaluate --json` writes them, in each checkpoint folder."""
    from dld_core.evaluate import evaluate

    for recipe, folder in checkpoints.items():
        result = evaluate(folder, manifest, num_masks=2, progress=False)
        (folder / "eval_samples.json").write_text(json.dumps(result, indent=2))


def make_budget_reports(checkpoints: dict[str, Path], manifest: Path) -> None:
    """The Budgets card's data (dld_core.recommend.budget_report: masks chosen on the sample clips as the
    validation set, evaluated on them) in each checkpoint folder, as <checkpoint>/budget_masks.json."""
    from dld_core.recommend import budget_report

    for folder in checkpoints.values():
        report = budget_report(folder, str(manifest), [str(manifest)], ["greedy"], clips=3, num_candidates=2,
                               log=lambda _: None)
        (folder / "budget_masks.json").write_text(json.dumps(report, indent=2))
