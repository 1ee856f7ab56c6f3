"""``dynhat train`` (single process, or under ``torchrun`` for DistributedDataParallel)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from dynhat.cli.args import integer, real


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a SuperTransformer (or one fixed SubTransformer) on Multi30k")
    train.add_argument("--config", default=None, help="training settings YAML (keys of dynhat.train.TrainSettings)")
    train.add_argument("--run-dir", default="runs/multi30k", help="checkpoints and log; resumed if present")
    train.add_argument("--cache-dir", default=None, help="dataset cache (see `dynhat data fetch`)")
    train.add_argument("--from", dest="mirror", default=None, help="local Multi30k mirror folder")
    train.add_argument("--space", default=None, help="design space name or YAML (default multi30k-cpu)")
    train.add_argument("--max-updates", type=integer(1), default=None)
    train.add_argument("--update-freq", type=integer(1), default=None,
                       help="micro-batches per update and rank: N ranks at F equal 1 process at N x F")
    train.add_argument("--max-minutes", type=real(0, strict=True), default=None,
                       help="wall-clock budget; saves and stops")
    train.add_argument("--piece-minutes", type=real(0, strict=True), default=None,
                       help="stop this call after so many minutes (saved; the next call resumes): runs in pieces")
    train.add_argument("--max-cpu-minutes", type=real(0, strict=True), default=None,
                       help="CPU-time budget of the updates (process time, all threads); saves and stops")
    train.add_argument("--patience", type=integer(1), default=None,
                       help="stop (saved) after N validations in a row without a new best: trained to convergence")
    train.add_argument("--sampling", choices=["uniform", "sandwich", "ladder", "fixed"], default=None)
    train.add_argument("--fixed-config", default=None, help="SubTransformer YAML for --sampling fixed")
    train.add_argument("--largest-first-updates", type=integer(0), default=None,
                       help="first updates train only the largest SubTransformer (progressive shrinking)")
    train.add_argument("--distill", type=real(0, 1), default=None,
                       help="in-place distillation weight (sandwich: the largest teaches the others)")
    train.add_argument("--init-from", default=None,
                       help="start from another run's checkpoint (also on a reduced space of the same shapes)")
    train.add_argument("--threads", type=integer(1), default=None, help="torch intra-op threads")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="auto: CUDA when present")
    train.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                       help="bf16: bfloat16 autocast; auto: bf16 where the GPU or CPU runs it natively")
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    import torch

    from dynhat.train.prepare import train_multi30k
    from dynhat.train.settings import TrainSettings
    from dynhat.train.trainer import init_distributed

    settings = TrainSettings.from_yaml(args.config) if args.config else TrainSettings()
    overrides = {k: v for k, v in {"space": args.space, "max_updates": args.max_updates,
                                   "update_freq": args.update_freq, "max_minutes": args.max_minutes,
                                   "sampling": args.sampling,
                                   "fixed_config": args.fixed_config, "threads": args.threads,
                                   "largest_first_updates": args.largest_first_updates,
                                   "distill": args.distill, "init_from": args.init_from,
                                   "max_cpu_minutes": args.max_cpu_minutes, "device": args.device,
                                   "precision": args.precision, "patience": args.patience}.items()
                 if v is not None}
    settings = replace(settings, **overrides)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    init_distributed()
    trainer = train_multi30k(settings, args.run_dir, args.cache_dir, args.mirror, piece_minutes=args.piece_minutes)
    state = trainer.state
    if trainer.rank == 0:
        status = "finished" if trainer.finished else "stopped (resume with the same command)"
        print(f"{status} at update {state.update} (epoch {state.epoch}) after {state.elapsed_s / 60:.1f} min; "
              f"best mean validation loss {state.best_valid:.3f} bits/token; checkpoints in {args.run_dir}")
    return 0
