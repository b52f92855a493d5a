"""Command line: python -m dld_core {synth,train,evaluate,transcribe,bench,import-librispeech}.

Thin over the library. Errors a user can cause print one line on stderr and exit non-zero.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FSDD = REPO.parent / "shared" / "data" / "fsdd"
DEFAULT_CHECKPOINT = REPO / "checkpoints" / "dld"


def parse_int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dld_core", description="DLD Studio: dynamic CTC speech models")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="build a multi-engine synthetic corpus (+ FSDD real speech)")
    s.add_argument("--out", required=True)
    s.add_argument("--hours", type=float, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fsdd", default=str(DEFAULT_FSDD), help="FSDD folder ('' to leave it out)")

    t = sub.add_parser("train", help="train a teacher, LD or DLD model")
    t.add_argument("--recipe", choices=["teacher", "ld", "dld"], required=True)
    t.add_argument("--train", required=True, help="training manifest (JSONL)")
    t.add_argument("--valid", required=True, help="validation manifest (JSONL)")
    t.add_argument("--out", required=True, help="output checkpoint folder")
    t.add_argument("--teacher", help="teacher checkpoint (dld recipe, or --init-from-teacher)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--resume", action="store_true", help="continue from OUT/resume")
    t.add_argument("--device", default="cpu", help="cpu or cuda (torchrun: cuda picks LOCAL_RANK)")
    t.add_argument("--family", choices=["conformer", "wavlm"], default="conformer")
    t.add_argument("--layers", type=int, default=12)
    t.add_argument("--d-model", type=int, default=144)
    t.add_argument("--heads", type=int, default=4)
    t.add_argument("--ffn", type=int, default=None, help="FFN width (default 4 x d-model)")
    t.add_argument("--kernel", type=int, default=15)
    t.add_argument("--dropout", type=float, default=0.1)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--batch-seconds", type=float, default=120.0)
    t.add_argument("--keep-prob", type=float, default=0.5)
    t.add_argument("--lambda", dest="kd_lambda", type=float, default=1.0)
    t.add_argument("--tau", type=float, default=1.0)
    t.add_argument("--init-from-teacher", action="store_true")
    t.add_argument("--no-spec-augment", action="store_true")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-steps", type=int, default=0)
    t.add_argument("--stop-after-epochs", type=int, default=None, help="pause (resumably) after this many epochs")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="WER/CER/GFLOPs at every dropping level")
    e.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    e.add_argument("--manifest", required=True)
    e.add_argument("--keep", type=parse_int_list, default=None, help="kept-module counts, e.g. 12,9,6,3 (default N..1)")
    e.add_argument("--masks", type=int, default=4, help="random masks per level")
    e.add_argument("--policy", choices=["random", "every_other", "first_k", "custom"], default="random")
    e.add_argument("--custom", type=parse_int_list, default=None, help="kept indices for --policy custom")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", required=True, help="output JSON path")

    r = sub.add_parser("transcribe", help="transcribe audio files with a layer mask")
    r.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    g = r.add_mutually_exclusive_group()
    g.add_argument("--keep", type=int, help="keep the first K modules... spread evenly (every_other style)")
    g.add_argument("--drop", type=parse_int_list, help="0-based indices of modules to drop, e.g. 1,5,9")
    r.add_argument("audio", nargs="+")

    b = sub.add_parser("bench", help="CPU latency vs GFLOPs at every kept level")
    b.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    b.add_argument("--seconds", type=float, default=10.0)
    b.add_argument("--json", default=None)

    li = sub.add_parser("import-librispeech", help="LibriSpeech-layout folder -> manifest")
    li.add_argument("root")
    li.add_argument("--out", required=True)
    return p


def cmd_synth(args) -> int:
    from .synth import build_corpus
    info = build_corpus(args.out, hours=args.hours, seed=args.seed, fsdd_dir=args.fsdd or None)
    print(json.dumps({k: info[k] for k in info if k in ("hours", "utterances", "splits")}, indent=2))
    return 0


def cmd_train(args) -> int:
    import torch
    from .config import ModelConfig, TrainConfig
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
    model_cfg = ModelConfig(family=args.family, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                            ffn_dim=args.ffn or 4 * args.d_model, conv_kernel=args.kernel, dropout=args.dropout)
    train_cfg = TrainConfig(recipe=args.recipe, epochs=args.epochs, lr=args.lr, warmup_steps=args.warmup,
                            batch_seconds=args.batch_seconds, keep_prob=args.keep_prob, kd_lambda=args.kd_lambda,
                            kd_tau=args.tau, init_from_teacher=args.init_from_teacher,
                            spec_augment=not args.no_spec_augment, seed=args.seed, max_steps=args.max_steps)
    try:
        metrics = train(args.train, args.valid, args.out, train_cfg=train_cfg, model_cfg=model_cfg,
                        teacher=args.teacher, resume=args.resume, device=device,
                        stop_after_epochs=args.stop_after_epochs, progress=not args.quiet)
    finally:
        if distributed:
            import torch.distributed as dist
            dist.destroy_process_group()
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate
    result = evaluate(args.checkpoint, args.manifest, keep=args.keep, num_masks=args.masks, policy=args.policy,
                      seed=args.seed, custom=args.custom)
    from .checkpoint import atomic_write_json
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.json), result)
    for level in result["levels"]:
        print(f"kept={level['kept']:>2}  WER={100 * level['wer']:6.2f}%  CER={100 * level['cer']:6.2f}%  GFLOPs={level['gflops']:.3f}")
    return 0


def transcribe_mask(n_layers: int, keep, drop) -> list[bool]:
    if drop:
        bad = [i for i in drop if not 0 <= i < n_layers]
        if bad:
            raise ValueError(f"--drop index {bad[0]} is out of range for a {n_layers}-module model")
        return [i not in set(drop) for i in range(n_layers)]
    if keep is not None:
        if not 0 <= keep <= n_layers:
            raise ValueError(f"--keep must be between 0 and {n_layers}")
        from .evaluate import make_masks
        kept = set(make_masks(n_layers, keep, "every_other", 1, 0)[0])
        return [i in kept for i in range(n_layers)]
    return [True] * n_layers


def cmd_transcribe(args) -> int:
    from .audio import AudioError, load_audio
    from .checkpoint import load_checkpoint
    from .inference import transcribe_clips

    ckpt = load_checkpoint(args.checkpoint)
    active = transcribe_mask(ckpt.config.n_layers, args.keep, args.drop)
    failed = 0
    for path in args.audio:
        try:
            clip = load_audio(path)
        except AudioError as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        except OSError as exc:
            print(f"{path}: error: cannot read file ({exc.strerror or exc})", file=sys.stderr)
            failed += 1
            continue
        text = transcribe_clips(ckpt.model, [clip.samples], active)[0]
        print(f"{path}\t{text}", flush=True)
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from .bench import bench
    result = bench(args.checkpoint, seconds=args.seconds)
    if args.json:
        from .checkpoint import atomic_write_json
        atomic_write_json(Path(args.json), result)
    for level in result["levels"]:
        print(f"kept={level['kept']:>2}  latency={level['latency_ms']:8.1f} ms  ratio={level['latency_ratio']:.3f}  "
              f"GFLOPs={level['gflops']:.3f}  ratio={level['flops_ratio']:.3f}")
    return 0


def cmd_import_librispeech(args) -> int:
    from .librispeech import import_librispeech
    n = import_librispeech(args.root, args.out)
    print(f"wrote {n} utterances to {args.out}")
    return 0


COMMANDS = {"synth": cmd_synth, "train": cmd_train, "evaluate": cmd_evaluate, "transcribe": cmd_transcribe,
            "bench": cmd_bench, "import-librispeech": cmd_import_librispeech}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .train import Interrupted, TrainingBusyError
    try:
        return COMMANDS[args.command](args)
    except Interrupted:
        print("interrupted: a resumable checkpoint was written; continue with --resume", file=sys.stderr)
        return 130
    except (CheckpointError, TrainingBusyError, ValueError, FileNotFoundError, PermissionError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (a resumable checkpoint was written where training was running)", file=sys.stderr)
        return 130
