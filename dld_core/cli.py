"""Command line: python -m dld_core {synth,train,evaluate,transcribe,bench,import-librispeech}.

Thin over the library. Errors a user can cause print one line on stderr and exit non-zero.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
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
    t.add_argument("--subsampling", type=int, choices=[2, 4], default=4)
    t.add_argument("--pos-enc", choices=["none", "sinusoidal"], default="none")
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

    x = sub.add_parser("export", help="copy a training run's best model into a shippable checkpoint folder")
    x.add_argument("--run", required=True)
    x.add_argument("--out", required=True)

    rp = sub.add_parser("report", help="results table (markdown) + WER-vs-GFLOPs figure from evaluate JSONs")
    rp.add_argument("--results", default="results")
    rp.add_argument("--out", default="results")

    ra = sub.add_parser("report-ablation", help="markdown table of ablation evaluate JSONs")
    ra.add_argument("--results", required=True)
    ra.add_argument("--out", required=True)

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
                            ffn_dim=args.ffn or 4 * args.d_model, conv_kernel=args.kernel, dropout=args.dropout,
                            pos_enc=args.pos_enc, subsampling=args.subsampling)
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


def cmd_transcribe(args) -> int:
    from .audio import AudioError, load_audio
    from .checkpoint import load_checkpoint
    from .features import MIN_SECONDS
    from .inference import transcribe_clips

    ckpt = load_checkpoint(args.checkpoint)
    active = transcribe_mask(ckpt.config.n_layers, args.keep, args.drop)
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
        if clip.duration < MIN_SECONDS:
            fail(path, f"audio is too short to transcribe ({1000 * clip.duration:.0f} ms; at least "
                       f"{1000 * MIN_SECONDS:.0f} ms is needed)")
            continue
        try:
            text = transcribe_clips(ckpt.model, [clip.samples], active)[0]
        except (RuntimeError, ValueError, MemoryError) as exc:     # one bad file must not end the batch
            fail(path, f"cannot transcribe ({type(exc).__name__}: {one_line(exc, 160)})")
            continue
        print(f"{one_line(path)}\t{text}", flush=True)
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


def cmd_export(args) -> int:
    from .checkpoint import export_checkpoint
    print(export_checkpoint(args.run, args.out))
    return 0


def cmd_report(args) -> int:
    from .report import write_report
    for kind, path in write_report(args.results, args.out).items():
        print(f"{kind}: {path}")
    return 0


def cmd_report_ablation(args) -> int:
    from .checkpoint import atomic_write_bytes
    from .report import ablation_table
    table = ablation_table(args.results)
    atomic_write_bytes(Path(args.out), (table + "\n").encode())
    print(table)
    return 0


def cmd_import_librispeech(args) -> int:
    from .librispeech import import_librispeech
    n = import_librispeech(args.root, args.out)
    print(f"wrote {n} utterances to {args.out}")
    return 0


def describe_error(exc: BaseException) -> str:
    """One line for the user: an OSError says what failed on which file (e.g. a full disk while writing a
    checkpoint), anything else its own first line."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return one_line(f"{exc.strerror}{where}")
    return one_line(str(exc).strip()) if str(exc).strip() else exc.__class__.__name__


COMMANDS = {"synth": cmd_synth, "train": cmd_train, "evaluate": cmd_evaluate, "transcribe": cmd_transcribe,
            "bench": cmd_bench, "export": cmd_export, "report": cmd_report, "report-ablation": cmd_report_ablation, "import-librispeech": cmd_import_librispeech}


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
