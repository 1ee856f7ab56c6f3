"""``dynhat run``: the main job on the embedded default (Multi30k, CPU-scale space), step by step, resumable.

Steps so far: fetch Multi30k (from ``$DYNHAT_DATA/multi30k`` when present, else the web), train the
SuperTransformer within a time budget (resuming a run already in the run directory), then score the largest and
smallest SubTransformers on test_2016_flickr. Later steps (latency, search, runtime) join as they land.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from importlib import resources
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the whole pipeline on the embedded default (Multi30k)")
    run.add_argument("--run-dir", default="runs/main", help="where checkpoints and results go (resumed if present)")
    run.add_argument("--minutes", type=float, default=20.0, help="training budget in minutes (default 20)")
    run.add_argument("--cache-dir", default=None, help="dataset cache")
    run.set_defaults(func=_run)


def default_settings_path() -> Path:
    with resources.as_file(resources.files("dynhat") / "configs" / "multi30k-cpu.yml") as path:
        return Path(path)


def _run(args: argparse.Namespace) -> int:
    from dynhat.data.fetch import fetch_multi30k, load_multi30k, shared_data_dir
    from dynhat.space import largest, smallest
    from dynhat.train.run import build_trainer
    from dynhat.train.settings import TrainSettings
    from dynhat.translate.evaluate import evaluate

    mirror = shared_data_dir() / "multi30k"
    print(f"[1/3] Multi30k ({'mirror ' + str(mirror) if mirror.is_dir() else 'download'})")
    root = fetch_multi30k(args.cache_dir, mirror if mirror.is_dir() else None)
    settings = replace(TrainSettings.from_yaml(default_settings_path()), max_minutes=args.minutes)
    print(f"[2/3] SuperTransformer training on {settings.space}, budget {args.minutes:g} min, run dir {args.run_dir}")
    trainer, vocab = build_trainer(settings, args.run_dir, load_multi30k("train", root), load_multi30k("val", root))
    if trainer.state.update < settings.max_updates and trainer.state.elapsed_s < 60 * args.minutes:
        trainer.train()
    print(f"      update {trainer.state.update}, {trainer.state.elapsed_s / 60:.1f} min trained")
    print("[3/3] BLEU on test_2016_flickr (beam 4)")
    model = trainer.model.eval()
    test, valid = load_multi30k("test_2016_flickr", root), load_multi30k("val", root)
    for label, config in (("largest", largest(model.space)), ("smallest", smallest(model.space))):
        result = evaluate(model, vocab, config, test, valid)
        print(f"      {label:<8} {config.id}: sacreBLEU {result.bleu.sacrebleu:.2f}, "
              f"Multi30k-convention BLEU {result.bleu.multi30k:.2f}, valid loss {result.valid_loss:.3f} bits")
    return 0

