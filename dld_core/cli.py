"""Command line: python -m dld_core {synth,train,evaluate,transcribe,bench,import-librispeech}.

Thin over the library. Errors a user can cause print one line on stderr and exit non-zero.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

from .config import ModelConfig, TrainConfig
from .decode import DECODERS
from .families.whisper_decoding import INPUT_MODES
from .masks import LEVEL_POLICIES
from .paths import CHECKPOINTS, REPO
from .recommend import DEFAULT_CLIPS
from .report import default_student
from .seq2seq import TEXT_DECODERS

DEFAULT_FSDD = REPO.parent / "shared" / "data" / "fsdd"
# the shipped DLD student with the lowest real-dev WER at half compute (results/), else checkpoints/dld or the teacher
DEFAULT_CHECKPOINT = default_student(CHECKPOINTS, REPO / "results")


def parse_int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_config_options(parser, cls, required=()) -> None:
    """One option per scalar field of a config dataclass, named after the field (or its `flag`), with the
    field's help, type and choices. Defaults stay in the dataclass: an option not given is not set."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kw = {"dest": f.name, "help": f"{meta.get('help', '')} (default: {default})"}
        if f.name in required:
            kw.update(required=True, help=meta.get("help", ""))
        else:
            kw["default"] = argparse.SUPPRESS
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(flag, type=type(default), choices=meta.get("choices"), **kw)


def given_options(args, cls) -> dict:
    """The config fields set on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def add_text_decoder_options(parser, beam: bool = True) -> None:
    """An encoder-decoder student's text decoder options: --input-mode and (beam) --beam-size."""
    parser.add_argument("--input-mode", choices=INPUT_MODES, default=None,
                        help="text decoder: the encoder's input (default: the mode the student was trained with)")
    if beam:
        parser.add_argument("--beam-size", type=int, default=5, help="text decoder: whisper-beam's and whisper-joint's beam size")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dld_core", description="DLD Studio: dynamic CTC speech models")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="build a multi-engine synthetic corpus (+ FSDD real speech)")
    s.add_argument("--out", required=True)
    s.add_argument("--hours", type=float, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fsdd", default=str(DEFAULT_FSDD), help="FSDD folder ('' to leave it out)")
    s.add_argument("--exclude", nargs="*", default=[], metavar="MANIFEST",
                   help="never draw the sentences of these manifests (e.g. another corpus's valid and test sets)")

    t = sub.add_parser("train", help="train a teacher, LD or DLD model",
                       description="Model options default to the teacher's architecture for students "
                                   "(--teacher), else to dld_core.config.ModelConfig.")
    t.add_argument("--train", required=True, help="training manifest (JSONL)")
    t.add_argument("--valid", required=True, help="validation manifest (JSONL)")
    t.add_argument("--out", required=True, help="output checkpoint folder")
    t.add_argument("--teacher", help="teacher checkpoint (dld recipe, --init-from-teacher; a student "
                                     "inherits its architecture)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/resume")
    t.add_argument("--device", default="cpu", help="cpu or cuda (torchrun: cuda picks LOCAL_RANK)")
    t.add_argument("--stop-after-epochs", type=int, default=None, help="pause (resumably) after this many epochs")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_options(t.add_argument_group("training (TrainConfig)"), TrainConfig, required=("recipe",))
    add_config_options(t.add_argument_group("model (ModelConfig)"), ModelConfig)

    e = sub.add_parser("evaluate", help="WER/CER/GFLOPs at every dropping level")
    e.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    e.add_argument("--manifest", required=True)
    e.add_argument("--keep", type=parse_int_list, default=None, help="kept-module counts, e.g. 12,9,6,3 (default N..1)")
    e.add_argument("--masks", type=int, default=4, help="random masks per level")
    e.add_argument("--policy", choices=LEVEL_POLICIES, default="random")
    e.add_argument("--custom", type=parse_int_list, default=None, help="kept indices for --policy custom")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--decoder", type=parse_decoders, default=["greedy"],
                   help="greedy, beam (lexicon + word LM: python -m dld_core build-lm), or both as greedy,beam "
                        "(one forward pass per mask, decoded twice; --json then needs a {decoder} placeholder); "
                        "an encoder-decoder student (train --objective seq2seq) also has Whisper's text decoder: "
                        "whisper (greedy), whisper-beam, whisper-joint (beam rescored with the CTC head), or a list, e.g. whisper,whisper-beam")
    add_text_decoder_options(e)
    e.add_argument("--json", required=True, help="output JSON path (with several decoders: e.g. out.{decoder}.json)")

    im = sub.add_parser("importance", help="layer importance over a manifest: drop-one ΔWER (bootstrap "
                        "interval) and ΔKL per module, and the greedy drop path")
    im.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    im.add_argument("--teacher", default=None, help="teacher checkpoint for ΔKL (default: none, WER only)")
    im.add_argument("--manifest", required=True)
    im.add_argument("--drop", default=None, help="start from the full mask without these modules (names or indices)")
    im.add_argument("--criterion", choices=["kl", "wer"], default="wer", help="greedy path: drop what raises this least")
    im.add_argument("--decoder", choices=DECODERS, default="greedy")
    im.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples over utterances")
    im.add_argument("--limit", type=int, default=None, help="use the first N rows only")
    im.add_argument("--token-kl", nargs="?", const="hypothesis", choices=["hypothesis", "reference"], default=None,
                    help="an encoder-decoder student's text decoder instead: per module kept (after --drop), the mean "
                         "per-token KL(posteriors with the mask || without the module), teacher-forced on the greedy "
                         "hypothesis with the mask (default) or on the manifest's reference texts, and the greedy "
                         "transcripts without it (--teacher, --criterion, --decoder, --resamples do not apply)")
    add_text_decoder_options(im, beam=False)
    im.add_argument("--json", required=True, help="output JSON path")

    kp = sub.add_parser("keep-probs", help="per-module keep probabilities for train --keep-probs from an importance "
                        "JSON: a module's drop-one ΔWER mapped linearly onto [--low, --high]")
    kp.add_argument("--importance", required=True, help="JSON written by `importance`")
    kp.add_argument("--protected", default="", help="modules left out (trained never to drop them)")
    kp.add_argument("--low", type=float, default=0.6, help="keep probability of the cheapest module to drop")
    kp.add_argument("--high", type=float, default=0.9, help="keep probability of the costliest module to drop")

    r = sub.add_parser("transcribe", help="transcribe audio files with a layer mask")
    r.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    g = r.add_mutually_exclusive_group()
    g.add_argument("--keep", type=int, help="keep K modules spread evenly over the depth (the every_other policy)")
    g.add_argument("--drop", help="modules to drop: names (e.g. L2,L10 or A4,M4) or 0-based indices (1,5,9)")
    r.add_argument("--decoder", choices=DECODERS + TEXT_DECODERS, default="greedy",
                   help="greedy, or beam: lexicon + word LM (python -m dld_core build-lm); an encoder-decoder student "
                        "(train --objective seq2seq) also has Whisper's text decoder, which writes Whisper's cased, "
                        "punctuated text: whisper (greedy), whisper-beam or whisper-joint (beam rescored with the CTC head)")
    add_text_decoder_options(r)
    r.add_argument("audio", nargs="+")

    b = sub.add_parser("bench", help="CPU latency vs GFLOPs at every kept level")
    b.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    b.add_argument("--seconds", type=float, default=10.0)
    b.add_argument("--json", default=None)
    b.add_argument("--exported", default=None, help="a folder written by deploy: its latency, size and parameters "
                                                     "next to the gated model it came from (one thread)")
    b.add_argument("--deploy-table", action="store_true",
                   help="per budget, deploy's mask exported as safetensors, ONNX fp32 and ONNX int8: size, parameters, "
                        "one-thread latency, peak memory and WER next to the full-depth model, and the issue's targets")
    b.add_argument("--budgets", default="1.0,0.75,0.5,0.25", help="--deploy-table: GFLOPs shares (1.0: every module)")
    b.add_argument("--manifest", action="append", default=[], help="--deploy-table: a test set for WER (repeatable)")
    b.add_argument("--limit", type=int, default=None, help="--deploy-table: the first N clips of each test set")
    b.add_argument("--valid", default=None, help="--deploy-table: the set budgets choose masks on (default: the "
                                                  "checkpoint's validation set, as deploy --budget)")
    b.add_argument("--md", default=None, help="--deploy-table: also write the table as Markdown")

    dp = sub.add_parser("deploy", help="export the sub-network of one mask as a small static model (ONNX or safetensors)",
                        description="The folder holds only the kept modules' weights, the front end, the head and a "
                                    "config.json that records the source checkpoint, its checksum, the mask and GFLOPs.")
    dp.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    dg = dp.add_mutually_exclusive_group(required=True)
    dg.add_argument("--keep", help="modules to keep: names (e.g. A1,M1,A3 or L1,L4) or 0-based indices")
    dg.add_argument("--budget", type=float, help="share of the full-depth GFLOPs (e.g. 0.5): the mask the Budgets page "
                                                  "recommends for it (dld_core.recommend, on the model's validation set)")
    dp.add_argument("--out", required=True, help="output folder (must not exist)")
    dp.add_argument("--format", choices=["onnx", "safetensors"], default="onnx",
                    help="onnx (onnxruntime, CPU) or safetensors (a checkpoint this project loads)")
    dp.add_argument("--quantize", choices=["int8"], default=None, help="onnx: dynamic int8 quantization of the linear layers")
    dp.add_argument("--valid", default=None, help="--budget: validation manifest (default: the one the checkpoint records)")
    dp.add_argument("--clips", type=int, default=DEFAULT_CLIPS, help="--budget: validation clips that choose the mask")

    x = sub.add_parser("export", help="copy a training run's best model into a shippable checkpoint folder")
    x.add_argument("--run", required=True)
    x.add_argument("--out", required=True)

    rp = sub.add_parser("report", help="results table (markdown) + WER-vs-GFLOPs figure from evaluate JSONs")
    rp.add_argument("--results", default="results")
    rp.add_argument("--out", default="results")
    rp.add_argument("--checkpoints", default="checkpoints",
                    help="folder of the LD/DLD pairs whose training time is tabled (ld+dld, conformer_ld+conformer_dld)")

    ra = sub.add_parser("report-ablation", help="markdown table + WER-vs-GFLOPs figure (OUT with .png) of ablation evaluate JSONs")
    ra.add_argument("--results", required=True)
    ra.add_argument("--out", required=True)

    rd = sub.add_parser("real-dev", help="the real read-speech dev set (Debian pocketsphinx-testdata) -> manifest")
    rd.add_argument("--out", required=True)

    li = sub.add_parser("import-librispeech", help="LibriSpeech-layout folder -> manifest")
    li.add_argument("root")
    li.add_argument("--out", required=True)

    bl = sub.add_parser("build-lm", help="build the lexicon + word LM of beam decoding (cached by recipe)",
                        description="Without options: the recipe dld_core/decoder_params.json names (what "
                                    "make_decoder('beam') loads). With options: a custom recipe.")
    bl.add_argument("--order", type=int, choices=[1, 2], default=None, help="1 = unigram prior, 2 = bigram")
    bl.add_argument("--sources", default=None, help="comma-separated: wordfreq,kjv,wordnet_examples,wordnet_glosses,numbers")
    bl.add_argument("--numbers", type=int, default=None, help="generated number phrases (default 20000)")
    bl.add_argument("--text", action="append", default=[], help="training text: a manifest or a text file (repeatable)")
    bl.add_argument("--exclude", action="append", default=[], help="manifest whose sentences the LM must not see (repeatable)")
    bl.add_argument("--root", default=None, help="cache folder (default $DLD_DECODER_CACHE or ~/.cache/dld_studio/decoder)")
    bl.add_argument("--force", action="store_true", help="rebuild even when the cached files verify")

    tu = sub.add_parser("tune", help="choose the beam decoder's parameters on a validation manifest "
                                     "(writes dld_core/decoder_params.json)")
    tu.add_argument("--checkpoint", required=True)
    tu.add_argument("--manifest", required=True, help="validation manifest (never test)")
    tu.add_argument("--grid", default=None, help='JSON, e.g. {"lm_weight": [0, 1, 2], "order": [1]}')
    tu.add_argument("--text", action="append", default=[], help="training text for the LM (manifest or text)")
    tu.add_argument("--exclude", action="append", default=[],
                    help="more manifests whose sentences the LM must not see (the tuning manifest always is)")
    tu.add_argument("--limit", type=int, default=None)
    tu.add_argument("--min-gain", type=float, default=0.01, help="WER gain a bigram needs over the unigram")
    tu.add_argument("--max-ms", type=float, default=10.0,
                    help="decoding time cap in ms per audio second (0 = none: on a busy machine the timing here "
                         "is inflated; check the choice with python -m dld_core bench on an idle one)")
    tu.add_argument("--out", default=None, help="where to write the chosen parameters "
                                                "(default dld_core/decoder_params.json; '' = nowhere)")

    px = sub.add_parser("perplexity", help="word LM perplexity and OOV rate on a manifest's transcripts")
    px.add_argument("--manifest", required=True)
    px.add_argument("--order", type=int, default=None)
    return p


def cmd_synth(args) -> int:
    from .synth import build_corpus
    from .synth.corpus import excluded_texts
    info = build_corpus(args.out, hours=args.hours, seed=args.seed, fsdd_dir=args.fsdd or None,
                        exclude=excluded_texts(args.exclude))
    print(json.dumps({k: info[k] for k in info if k in ("hours", "utterances", "splits")}, indent=2))
    return 0


def cmd_train(args) -> int:
    import torch
    from .train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        import torch.distributed as dist
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available")
    train_options = given_options(args, TrainConfig)
    if args.resume and "epochs" not in train_options:
        train_options["epochs"] = 0                   # keep the resumed run's own number of epochs
    train_cfg = TrainConfig(**train_options)
    try:
        metrics = train(args.train, args.valid, args.out, train_cfg=train_cfg,
                        model_overrides=given_options(args, ModelConfig),
                        teacher=args.teacher, resume=args.resume, device=device,
                        stop_after_epochs=args.stop_after_epochs, progress=not args.quiet)
    finally:
        if distributed:
            import torch.distributed as dist
            dist.destroy_process_group()
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}))
    return 0


def parse_decoders(text: str) -> list[str]:
    """CTC decoders (greedy, beam) or the text decoder's (whisper, whisper-beam, whisper-joint), comma-separated."""
    names = [d.strip() for d in text.split(",") if d.strip()]
    kinds = [set(DECODERS), set(TEXT_DECODERS)]
    if not names or len(set(names)) != len(names) or not any(set(names) <= kind for kind in kinds):
        raise argparse.ArgumentTypeError(f"expected one or more of {', '.join(DECODERS)} or of "
                                         f"{', '.join(TEXT_DECODERS)}, comma-separated; got {text!r}")
    return names


def check_beam_size(args) -> None:
    """A text decoder's --beam-size (evaluate, transcribe): a one-line error below 1."""
    if args.beam_size < 1:
        raise ValueError(f"--beam-size must be at least 1, got {args.beam_size}")


def cmd_evaluate(args) -> int:
    from .safe_io import atomic_write_json
    from .evaluate import evaluate
    if len(args.decoder) > 1 and "{decoder}" not in args.json:
        raise ValueError("with several decoders, --json needs a {decoder} placeholder (e.g. out.{decoder}.json)")
    check_beam_size(args)
    results = evaluate(args.checkpoint, args.manifest, keep=args.keep, num_masks=args.masks, policy=args.policy,
                       seed=args.seed, custom=args.custom, decoder=args.decoder, input_mode=args.input_mode,
                       beam_size=args.beam_size)
    for name, result in results.items():
        path = Path(args.json.replace("{decoder}", name))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, result)
        for level in result["levels"]:
            print(f"{name:>6}  kept={level['kept']:>2}  WER={100 * level['wer']:6.2f}%  CER={100 * level['cer']:6.2f}%  "
                  f"GFLOPs={level['gflops']:.3f}")
    if result["skipped"]:
        print(f"error: skipped {len(result['skipped'])} of {len(result['skipped']) + result['utterances']} rows "
              f"whose audio could not be read (listed above; the results leave them out)", file=sys.stderr)
        return 1
    return 0


def cmd_importance(args) -> int:
    from .audio import load_audio, load_manifest
    from .checkpoint import load_checkpoint
    from .safe_io import atomic_write_json
    from .layers import importance_report
    from .masks import describe, from_keep_drop
    student = load_checkpoint(args.checkpoint)
    names = student.model.module_names
    rows = load_manifest(args.manifest)[:args.limit]
    clips = [(load_audio(r["audio_filepath"]).samples, str(r.get("text", ""))) for r in rows]
    start = from_keep_drop(names, drop=args.drop)
    if args.token_kl:
        return importance_token_kl(args, student, clips, start)
    teacher = load_checkpoint(args.teacher) if args.teacher else None
    report = importance_report(student.model, teacher.model if teacher else None, clips, base_active=start,
                               criterion=args.criterion if teacher else "wer", resamples=args.resamples,
                               decoder=args.decoder)
    atomic_write_json(Path(args.json), {"checkpoint": args.checkpoint, "teacher": args.teacher,
                                        "manifest": args.manifest, "utterances": len(rows), "decoder": args.decoder,
                                        "module_names": list(names), **report})
    imp = report["importance"]
    print(f"start mask {describe(start, names)}: WER {100 * imp['base_wer']:.1f}%")
    for i, name in enumerate(names):
        if imp["delta_wer"][i] is None:
            continue
        lo, hi = (imp.get("delta_wer_ci") or [None] * len(names))[i] or (float("nan"), float("nan"))
        kl = imp["delta_kl"][i]
        print(f"drop {name:>4}: ΔWER {100 * imp['delta_wer'][i]:+6.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]"
              + (f"  ΔKL {kl:+.3f}" if kl is not None else ""))
    print("greedy path: " + " -> ".join(names[s["dropped"]] for s in report["path"] if s["dropped"] is not None))
    return 0


def importance_token_kl(args, ckpt, clips, start) -> int:
    """importance --token-kl: the text decoder's token-level drop-one KL (seq2seq.token_drop_one_kl) over the
    manifest's clips -> --json, and one line per kept module (its KL, how many transcripts dropping it changes)."""
    from .masks import describe
    from .safe_io import atomic_write_json
    from .seq2seq import input_mode_of, token_drop_one_kl
    names = ckpt.model.module_names
    mode = args.input_mode or input_mode_of(ckpt.info)
    reference = [text for _, text in clips] if args.token_kl == "reference" else None
    report = token_drop_one_kl(ckpt.model, [wav for wav, _ in clips], start, mode, reference)
    atomic_write_json(Path(args.json), {"checkpoint": args.checkpoint, "manifest": args.manifest,
                                        "utterances": len(clips), "module_names": list(names), **report})
    print(f"start mask {describe(start, names)}; {mode} input; token KL over {report['tokens']} tokens of the "
          f"{'greedy hypotheses' if reference is None else 'references'}")
    for m in report["modules"]:
        changed = sum(a != b for a, b in zip(report["texts"], m["texts"]))
        print(f"drop {m['name']:>4}: token KL {m['kl']:.4f}  transcripts changed {changed} of {len(clips)}")
    return 0


def cmd_keep_probs(args) -> int:
    from .safe_io import json_object, read_regular_file
    from .masks import Mask, keep_probabilities_from_costs
    report = json_object(read_regular_file(Path(args.importance), 1 << 24, args.importance), args.importance)
    names = report["module_names"]
    probs = keep_probabilities_from_costs(report["importance"]["delta_wer"], Mask.parse(args.protected, names),
                                          args.low, args.high)
    print(",".join(f"{names[i]}={p:.2f}" for i, p in probs.items()))
    return 0


def one_line(text, limit: int = 500) -> str:
    """Text safe to print as exactly one line: newlines and other control characters (a file name may
    hold them) are escaped, and very long text is cut."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[:limit] + "..."


@contextlib.contextmanager
def native_stderr_silenced():
    """Native decoders (libmpg123 inside libsndfile) print diagnostics straight to file descriptor 2; while
    decoding one file, send them to a scratch file so the user sees only our one line per bad file. Only
    used by the single-threaded CLI. DLD_DEBUG=1 leaves them visible."""
    if os.environ.get("DLD_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def transcriber(ckpt, args):
    """transcribe's (waveforms, active) -> texts: the CTC head (--decoder greedy | beam) or an encoder-decoder
    student's text decoder (whisper | whisper-beam | whisper-joint, in --input-mode); a model without one is refused here."""
    if args.decoder in TEXT_DECODERS:
        from .seq2seq import input_mode_of, text_transcriber
        check_beam_size(args)
        return text_transcriber(ckpt.model, args.decoder, args.input_mode or input_mode_of(ckpt.info), args.beam_size)
    from .inference import transcribe
    return lambda waveforms, active: transcribe(ckpt.model, waveforms, active, decoder=args.decoder)


def cmd_transcribe(args) -> int:
    from .audio import AudioError, load_audio
    from .checkpoint import load_checkpoint
    from .features import MIN_SECONDS
    from .masks import from_keep_drop

    ckpt = load_checkpoint(args.checkpoint)
    active = from_keep_drop(ckpt.config.module_names, args.keep, args.drop)
    transcribe = transcriber(ckpt, args)
    failed = 0

    def fail(path, message: str) -> None:
        nonlocal failed
        failed += 1
        print(f"{one_line(path)}: error: {one_line(message)}", file=sys.stderr, flush=True)

    for path in args.audio:
        try:
            with native_stderr_silenced():
                clip = load_audio(path)
        except AudioError as exc:
            fail(path, exc)
            continue
        except OSError as exc:
            fail(path, f"cannot read file ({exc.strerror or exc})")
            continue
        if clip.warning:
            print(f"{one_line(path)}: warning: {one_line(clip.warning)}", file=sys.stderr, flush=True)
        if clip.duration < MIN_SECONDS:
            fail(path, f"audio is too short to transcribe ({1000 * clip.duration:.0f} ms; at least "
                       f"{1000 * MIN_SECONDS:.0f} ms is needed)")
            continue
        try:
            text = transcribe([clip.samples], active)[0]
        except (RuntimeError, ValueError, MemoryError) as exc:     # one bad file must not end the batch
            fail(path, f"cannot transcribe ({type(exc).__name__}: {one_line(exc, 160)})")
            continue
        print(f"{one_line(path)}\t{text}", flush=True)
    return 1 if failed else 0


def cmd_bench_exported(args) -> int:
    from .bench import bench_exported
    result = bench_exported(args.exported, seconds=args.seconds)
    if args.json:
        from .safe_io import atomic_write_json
        atomic_write_json(Path(args.json), result)
    print(f"{args.exported}: kept {' '.join(result['kept'])}; {args.seconds:g} s of speech, 1 thread")
    for r in result["rows"]:
        size = f"{r['bytes'] / 1e6:7.2f} MB ({r['size_ratio']:.2f})" if r["bytes"] else " " * 17
        print(f"{r['model']:<34} {r['latency_ms']:8.1f} ms ({r['latency_ratio']:.2f})  {r['gflops']:7.3f} GFLOPs  "
              f"{r['parameters']:>11,} params  {size}")
    print(f"max |log-prob difference| exported vs gated: {result['max_abs_diff']:.2g}; "
          f"greedy transcripts {'identical' if result['same_greedy_text'] else 'DIFFER'}")
    return 0


def parse_budgets(text: str) -> list[float]:
    """--budgets "1.0,0.5" -> [1.0, 0.5]; a non-number is a one-line error."""
    try:
        return [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--budgets takes comma-separated GFLOPs shares such as 1.0,0.5, got {text!r}") from None


def cmd_bench_deploy_table(args) -> int:
    import time

    from .bench import deploy_table, deploy_table_markdown
    from .safe_io import atomic_write_json
    start = time.monotonic()
    table = deploy_table(args.checkpoint, parse_budgets(args.budgets), args.manifest, args.limit, args.seconds,
                         valid=args.valid,
                         log=lambda m: print(f"[{time.monotonic() - start:6.0f} s] {m}", file=sys.stderr, flush=True))
    markdown = deploy_table_markdown(table)
    for path, write in ((args.json, lambda p: atomic_write_json(p, table)), (args.md, lambda p: p.write_text(markdown))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write(Path(path))
    print(markdown, end="")
    return 0


def cmd_bench(args) -> int:
    if args.deploy_table:
        return cmd_bench_deploy_table(args)
    if args.exported:
        return cmd_bench_exported(args)
    from .bench import bench
    result = bench(args.checkpoint, seconds=args.seconds)
    if args.json:
        from .safe_io import atomic_write_json
        atomic_write_json(Path(args.json), result)
    for level in result["levels"]:
        print(f"kept={level['kept']:>2}  latency={level['latency_ms']:8.1f} ms  ratio={level['latency_ratio']:.3f}  "
              f"GFLOPs={level['gflops']:.3f}  ratio={level['flops_ratio']:.3f}")
    decode = result.get("decode", {})
    if decode:
        beam = f"{decode['beam_ms']:.1f} ms" if "beam_ms" in decode else f"unavailable ({decode.get('beam_error', '?')})"
        print(f"decoding {args.seconds:g} s: greedy {decode.get('greedy_ms', float('nan')):.2f} ms, beam {beam}")
    text = result.get("text_decoder")
    if text:
        print(f"text decoder, greedy, {args.seconds:g} s of speech, {result['threads']} thread(s): front end + encoder "
              f"pass + search")
        for mode, rows in text["modes"].items():
            for r in rows:
                print(f"  {mode:<6}  kept={r['kept']:>2}  latency={r['latency_ms']:8.1f} ms  (encode "
                      f"{r['encode_ms']:.1f} + decode {r['decode_ms']:.1f} ms, {r['tokens']} tokens, stop {r['stop']})")
    return 0


def cmd_export(args) -> int:
    from .checkpoint import export_checkpoint
    print(export_checkpoint(args.run, args.out))
    return 0


def cmd_deploy(args) -> int:
    from .deploy import deploy
    info = deploy(args.checkpoint, args.out, keep=args.keep, budget=args.budget, fmt=args.format,
                  quantize=args.quantize, valid=args.valid, clips=args.clips, log=lambda m: print(m, file=sys.stderr))
    d = info["deployed"]
    print(f"{args.out}: {args.format}{' int8' if args.quantize else ''}, kept {' '.join(d['kept'])} "
          f"({len(d['kept'])} of {len(d['source_module_names'])}), {d['gflops']:.3f} GFLOPs per {d['gflops_seconds']:g} s "
          f"({100 * d['gflops_share']:.0f}% of full depth), {d['parameters']:,} parameters, "
          f"max |log-prob difference| to the gated model {d['verified']['max_abs_diff']:.2g}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report
    for kind, path in write_report(args.results, args.out, args.checkpoints).items():
        print(f"{kind}: {path}")
    return 0


def cmd_report_ablation(args) -> int:
    from .safe_io import atomic_write_bytes
    from .report import ablation_figure, ablation_table
    table = ablation_table(args.results)
    atomic_write_bytes(Path(args.out), (table + "\n").encode())
    print(table)
    png = ablation_figure(args.results, Path(args.out).with_suffix(".png"))
    print(f"figure: {png}")
    return 0


def cmd_import_librispeech(args) -> int:
    from .librispeech import import_librispeech
    n = import_librispeech(args.root, args.out)
    print(f"wrote {n} utterances to {args.out}")
    return 0


def cmd_build_lm(args) -> int:
    from .decoder_files import read_build_info
    from .decoder_params import DIR_ENV, params_recipe
    from .lm_build import build_decoder_files, default_recipe
    custom = args.order is not None or args.sources or args.numbers is not None or args.text or args.exclude
    if custom:
        kw = {"order": args.order or 1, "text": args.text, "exclude": args.exclude}
        if args.sources:
            kw["sources"] = [s.strip() for s in args.sources.split(",") if s.strip()]
        if args.numbers is not None:
            kw["numbers"] = args.numbers
        recipe = default_recipe(**kw)
    else:
        recipe = params_recipe()
    folder = build_decoder_files(recipe, root=args.root, force=args.force, log=lambda m: print(m, file=sys.stderr))
    info = read_build_info(folder)
    print(f"order {info['stats']['order']}, {info['stats']['words']} words, {info['stats']['bigrams']} bigrams, "
          f"{sum(f['bytes'] for f in info['files'].values()) / 1e6:.1f} MB")
    if custom:
        print(f"(a custom recipe: decode with it via {DIR_ENV}={folder})")
    print(f"decoder files: {folder}")
    return 0


def cmd_tune(args) -> int:
    from .decoder_params import PARAMS_PATH
    from .decoder_tuning import DEFAULT_GRID, tune_decoder
    from .lm_build import default_recipe
    grid = json.loads(args.grid) if args.grid else None
    orders = (grid or {}).get("order", DEFAULT_GRID["order"])
    recipes = {o: default_recipe(order=o, text=args.text, exclude=[args.manifest, *args.exclude]) for o in orders}
    out = PARAMS_PATH if args.out is None else args.out or None
    res = tune_decoder(args.checkpoint, args.manifest, grid, out=out, recipes=recipes, limit=args.limit,
                       min_gain=args.min_gain, max_ms_per_audio_s=args.max_ms or None)
    print(json.dumps({"params": res["params"], "greedy_wer": res["tuned"]["greedy_wer"],
                      "best_wer": res["tuned"]["best_wer"]}, indent=2))
    return 0


def cmd_perplexity(args) -> int:
    from .decoder_params import params_recipe
    from .decoder_tuning import perplexity
    from .lm_build import build_decoder_files, default_recipe, read_text_file
    recipe = params_recipe() if args.order is None else default_recipe(order=args.order)
    folder = build_decoder_files(recipe, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(perplexity(folder, read_text_file(args.manifest)), indent=2))
    return 0


def cmd_real_dev(args) -> int:
    from .synth.real_dev import build_real_dev
    print(build_real_dev(args.out))
    return 0


def describe_error(exc: BaseException) -> str:
    """One line for the user: an OSError says what failed on which file (e.g. a full disk while writing a
    checkpoint), anything else its own first line."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return one_line(f"{exc.strerror}{where}")
    return one_line(str(exc).strip()) if str(exc).strip() else exc.__class__.__name__


COMMANDS = {"synth": cmd_synth, "train": cmd_train, "evaluate": cmd_evaluate, "transcribe": cmd_transcribe,
            "bench": cmd_bench, "export": cmd_export, "report": cmd_report, "report-ablation": cmd_report_ablation, "import-librispeech": cmd_import_librispeech,
            "real-dev": cmd_real_dev}
COMMANDS["build-lm"] = cmd_build_lm
COMMANDS["tune"] = cmd_tune
COMMANDS["perplexity"] = cmd_perplexity
COMMANDS["importance"] = cmd_importance
COMMANDS["keep-probs"] = cmd_keep_probs
COMMANDS["deploy"] = cmd_deploy


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .safe_io import CheckpointError
    from .train import Interrupted, TrainingBusyError
    try:
        return COMMANDS[args.command](args)
    except Interrupted:
        print("interrupted: a resumable checkpoint was written; continue with --resume", file=sys.stderr)
        return 130
    except (CheckpointError, TrainingBusyError, ValueError, FileNotFoundError, PermissionError, OSError) as exc:
        print(f"error: {describe_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (a resumable checkpoint was written where training was running)", file=sys.stderr)
        return 130
    except Exception as exc:           # a bug, not a user error: still one line unless asked for more
        if os.environ.get("DLD_DEBUG"):
            raise
        print(f"error: unexpected {exc.__class__.__name__}: {describe_error(exc)[:300]} "
              f"(set DLD_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
